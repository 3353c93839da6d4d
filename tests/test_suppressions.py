"""Suppressions need a target, a reason and an expiry; expired ones stop working and are reported."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.findings import Finding, Location, Report, Severity
from bastion.suppressions import apply_suppressions, load_suppressions

TODAY = dt.date(2026, 6, 1)


def _finding(rule: str, path: str, *members: str) -> Finding:
    return Finding.make(rule, Severity.HIGH, "Bad.", Location(path, members, 10), {"global": "os.system"})


def _report(*findings: Finding) -> Report:
    return Report(tool="bastion", version="0", findings=list(findings))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suppress.toml"
    path.write_text(text)
    return path


def test_path_glob_and_rule_suppress(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[suppress]]\nrule = "BST-PKL-002"\npath = "models/legacy/*.pkl"\n'
        'reason = "legacy, replaced in Q3"\nexpires = 2026-12-31\n',
    )
    hit = _finding("BST-PKL-002", "models/legacy/a.pkl")
    other_rule = _finding("BST-PKL-001", "models/legacy/a.pkl")
    other_path = _finding("BST-PKL-002", "models/new/a.pkl")
    report = _report(hit, other_rule, other_path)
    reasons = apply_suppressions(report, load_suppressions(path), TODAY)
    assert report.suppressed == [hit]
    assert report.findings == [other_rule, other_path]
    assert reasons[hit.fingerprint].startswith("legacy, replaced in Q3")
    assert report.notices == []


def test_glob_on_a_file_covers_its_members(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[[suppress]]\npath = "models/ckpt.pt"\nreason = "vendor"\nexpires = 2026-12-31\n'
    )
    nested = _finding("BST-PKL-001", "models/ckpt.pt", "archive/data.pkl")
    report = _report(nested)
    apply_suppressions(report, load_suppressions(path), TODAY)
    assert report.suppressed == [nested]


def test_family_prefix_matches(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[[suppress]]\nrule = "bst-pkl"\npath = "*"\nreason = "r"\nexpires = 2026-12-31\n'
    )
    report = _report(_finding("BST-PKL-007", "a.pkl"), _finding("BST-PKLX-001", "a.pkl"))
    apply_suppressions(report, load_suppressions(path), TODAY)
    assert [f.rule_id for f in report.suppressed] == ["BST-PKL-007"]


def test_fingerprint_suppresses_exactly_one_finding(tmp_path: Path) -> None:
    target = _finding("BST-PKL-001", "a.pkl")
    other = _finding("BST-PKL-001", "b.pkl")
    path = _write(
        tmp_path, f'[[suppress]]\nfingerprint = "{target.fingerprint}"\nreason = "r"\nexpires = 2026-12-31\n'
    )
    report = _report(target, other)
    apply_suppressions(report, load_suppressions(path), TODAY)
    assert report.suppressed == [target]
    assert report.findings == [other]


def test_expired_entry_stops_suppressing_and_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[[suppress]]\nrule = "BST-PKL-001"\npath = "*"\nreason = "r"\nexpires = 2026-05-31\n'
    )
    report = _report(_finding("BST-PKL-001", "a.pkl"))
    apply_suppressions(report, load_suppressions(path), TODAY)
    assert report.suppressed == []
    assert len(report.findings) == 1
    assert len(report.notices) == 1
    assert "suppression #1" in report.notices[0]
    assert "expired on 2026-05-31" in report.notices[0]


def test_expiry_day_itself_still_suppresses(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[suppress]]\npath = "*"\nreason = "r"\nexpires = 2026-06-01\n')
    report = _report(_finding("BST-PKL-001", "a.pkl"))
    apply_suppressions(report, load_suppressions(path), TODAY)
    assert len(report.suppressed) == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('path = "*"\nexpires = 2026-12-31', "entry #2: a reason is required"),
        ('path = "*"\nreason = "  "\nexpires = 2026-12-31', "entry #2: reason must be a non-empty string"),
        ('path = "*"\nreason = "r"', "entry #2: an expires date is required"),
        ('path = "*"\nreason = "r"\nexpires = "2026-12-31"', "entry #2: expires must be a TOML date"),
        (
            'rule = "BST-PKL-001"\nreason = "r"\nexpires = 2026-12-31',
            "entry #2: give a path glob or a fingerprint",
        ),
        ('path = "*"\nreason = "r"\nexpires = 2026-12-31\nuntil = 1', "entry #2: unknown key 'until'"),
    ],
)
def test_bare_entries_are_config_errors(tmp_path: Path, entry: str, message: str) -> None:
    ok = '[[suppress]]\npath = "x"\nreason = "fine"\nexpires = 2026-12-31\n'
    path = _write(tmp_path, ok + "[[suppress]]\n" + entry + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_suppressions(path)
    assert str(path) in info.value.diagnostics()


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="suppressions file not found"):
        load_suppressions(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_suppressions(_write(tmp_path, "[[suppress]\n"))
    with pytest.raises(ConfigError, match="unknown key 'ignore'"):
        load_suppressions(_write(tmp_path, 'ignore = ["x"]\n'))


def test_glob_matches_dot_slash_paths(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[suppress]]\npath = "models/*.pkl"\nreason = "r"\nexpires = 2026-12-31\n')
    report = _report(_finding("BST-PKL-001", "./models/a.pkl"))
    apply_suppressions(report, load_suppressions(path), TODAY)
    assert len(report.suppressed) == 1
