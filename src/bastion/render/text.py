"""The human report: a rich table of findings, then verdict counts, skips and notices."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from bastion.findings import Finding, Report, Severity, sort_findings
from bastion.render.interface import RenderOptions, location_text, summary

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _console(options: RenderOptions) -> Console:
    from rich.console import Console

    return Console(
        file=io.StringIO(),
        width=options.width,
        force_terminal=options.color,
        color_system="standard" if options.color else None,
        no_color=not options.color,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )


def findings_table(findings: list[Finding], title: str) -> Table:
    """A table with one row per finding, most severe first."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Rule", no_wrap=True)
    table.add_column("Location", overflow="fold")
    table.add_column("Message", overflow="fold")
    for f in sort_findings(findings):
        table.add_row(
            Text(f.severity.label, style=SEVERITY_STYLE[f.severity]),
            Text(f.rule_id),
            Text(location_text(f.location)),
            Text(f.message),
        )
    return table


def _targets_line(report: Report) -> str:
    s = summary(report)
    verdicts = ", ".join(f"{n} {v}" for v, n in s["verdicts"].items())
    return f"Targets: {s['targets']} ({verdicts})"


def render_text(report: Report, options: RenderOptions) -> str:
    """Render ``report`` for a person reading a terminal."""
    if not (report.findings or report.suppressed or report.notices):
        # Nothing to lay out or colour: plain lines spare every clean CI run the import of rich.
        lines = [
            "No findings.",
            *(f"skipped {location_text(sk.location)}: {sk.reason}" for sk in report.skipped),
        ]
        return "\n".join([*lines, _targets_line(report)]) + "\n"
    from rich.text import Text

    console = _console(options)
    if report.findings:
        console.print(findings_table(report.findings, "Findings"))
    else:
        console.print("No findings.")
    if report.suppressed:
        console.print(findings_table(report.suppressed, "Suppressed (not counted)"))
    for sk in report.skipped:
        console.print(Text(f"skipped {location_text(sk.location)}: {sk.reason}"))
    for notice in report.notices:
        console.print(Text(f"notice: {notice}", style="yellow"))
    console.print(Text(_targets_line(report)))
    out = console.file
    assert isinstance(out, io.StringIO)
    # Rich pads table titles to the full width; trailing blanks only make diffs noisy.
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"
