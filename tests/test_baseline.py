"""Baselines record fingerprints so that only new findings fail; a missing or corrupt baseline is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.baseline import apply_baseline, load_baseline, write_baseline
from bastion.errors import ConfigError
from bastion.findings import Finding, Location, Report, Severity


def _finding(path: str, offset: int = 5) -> Finding:
    return Finding.make(
        "BST-PKL-001", Severity.CRITICAL, "Bad.", Location(path, (), offset), {"global": "os.system"}
    )


def test_round_trip_and_filtering(tmp_path: Path) -> None:
    old = _finding("a.pkl")
    base = tmp_path / "baseline.json"
    assert write_baseline(base, [old, old]) == 1
    doc = json.loads(base.read_text())
    assert doc["findings"] == [
        {"fingerprint": old.fingerprint, "rule_id": "BST-PKL-001", "location": "a.pkl", "message": "Bad."}
    ]
    fingerprints = load_baseline(base)
    moved = _finding("a.pkl", offset=999)  # same finding after unrelated bytes moved it
    new = _finding("b.pkl")
    report = Report(tool="bastion", version="0", findings=[moved, new])
    reasons = apply_baseline(report, fingerprints, str(base))
    assert report.findings == [new]
    assert report.suppressed == [moved]
    assert reasons[moved.fingerprint] == f"in baseline {base}"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    base = tmp_path / "baseline.json"
    base.write_text("stale")
    write_baseline(base, [])
    assert json.loads(base.read_text())["findings"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]


def test_write_into_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write baseline"):
        write_baseline(tmp_path / "no" / "dir.json", [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "baseline file not found"),
        ("{not json", "corrupt baseline, not valid JSON"),
        ('["a"]', "expected an object with a 'findings' list"),
        ('{"findings": [{"rule_id": "x"}]}', "entry #1 has no fingerprint"),
        (b"\xff\xfe", "corrupt baseline"),
    ],
)
def test_missing_or_corrupt_baseline(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    base = tmp_path / "baseline.json"
    if isinstance(content, bytes):
        base.write_bytes(content)
    elif content is not None:
        base.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_baseline(base)
