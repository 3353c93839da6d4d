"""Each output format rendered from the fixed report matches its checked-in snapshot."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion.findings import Report
from bastion.render import FORMATS, render
from bastion.render.interface import RenderOptions

SNAPSHOT_NAMES = {
    "table": "report.txt",
    "json": "report.json",
    "sarif": "report.sarif",
    "markdown": "report.md",
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_matches_snapshot(
    fmt: str, report: Report, render_options: RenderOptions, snapshot: Callable[[str, str], None]
) -> None:
    snapshot(SNAPSHOT_NAMES[fmt], render(report, fmt, render_options))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_rendering_is_deterministic(fmt: str, report: Report, render_options: RenderOptions) -> None:
    assert render(report, fmt, render_options) == render(report, fmt, render_options)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_empty_report_renders(fmt: str, render_options: RenderOptions) -> None:
    text = render(Report(tool="bastion", version="0.0.0-test"), fmt, render_options)
    assert text.endswith("\n")


def test_table_lists_findings_most_severe_first(report: Report, render_options: RenderOptions) -> None:
    text = render(report, "table", render_options)
    assert text.index("critical") < text.index("high") < text.index("medium")
    assert "models/evil.pkl@42" in text
    assert "models/ckpt.pt!archive/data.pkl@7" in text
    assert "1 malicious, 2 suspicious, 1 clean, 1 error" in text
    assert "\x1b[" not in text


def test_table_colours_only_when_asked(report: Report) -> None:
    from bastion.render.interface import RenderOptions as Options

    coloured = render(report, "table", Options(color=True, width=110))
    assert "\x1b[" in coloured


def test_markdown_escapes_pipes_and_links_rules(report: Report, render_options: RenderOptions) -> None:
    text = render(report, "markdown", render_options)
    assert "`mylib.Layer` \\| not on the safe list" in text
    assert "[BST-TEST-001](https://" in text
    assert "#bst-test-001-dangerous-global)" in text
    assert "## Suppressed" in text
    assert "## Skipped" in text
    assert "## Notices" in text


def test_unknown_format_is_a_usage_error(report: Report) -> None:
    from bastion.errors import UsageError

    with pytest.raises(UsageError, match="unknown format 'xml'"):
        render(report, "xml")
