"""The engine: walking, dispatch that fails closed, and verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import InputError, MalformedInput
from bastion.findings import Finding, Location, Severity, Target, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan import registry as scan_registry
from bastion.scan.context import ScanContext, Source
from bastion.scan.engine import iter_files, scan_file, settle_verdicts, verdict_of
from bastion.scan.formats import Format


def _f(rule: str, sev: Severity, display: str = "a") -> Finding:
    path, *members = display.split("!")
    return Finding.make(rule, sev, "m", Location(path, tuple(members)))


def test_verdict_precedence() -> None:
    assert verdict_of([]) is Verdict.CLEAN
    assert verdict_of([_f("BST-FMT-001", Severity.LOW)]) is Verdict.CLEAN
    assert verdict_of([_f("BST-FMT-001", Severity.MEDIUM)]) is Verdict.SUSPICIOUS
    assert verdict_of([_f("BST-SCAN-001", Severity.HIGH)]) is Verdict.ERROR
    both = [_f("BST-SCAN-001", Severity.HIGH), _f("BST-FMT-001", Severity.CRITICAL)]
    assert verdict_of(both) is Verdict.MALICIOUS


def test_archive_verdict_includes_its_members() -> None:
    targets = [
        Target(Location("x.zip"), "zip", 10, Verdict.CLEAN),
        Target(Location("x.zip", ("a.pkl",)), "pickle", 5, Verdict.CLEAN),
        Target(Location("x.zip", ("b.pkl",)), "pickle", 5, Verdict.CLEAN),
        Target(Location("x.zipper"), "zip", 5, Verdict.CLEAN),
    ]
    settled = settle_verdicts(targets, [_f("BST-FMT-001", Severity.CRITICAL, "x.zip!a.pkl")])
    assert [t.verdict for t in settled] == [
        Verdict.MALICIOUS,
        Verdict.MALICIOUS,
        Verdict.CLEAN,
        Verdict.CLEAN,
    ]


def test_scanner_crash_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: Source, location: Location, ctx: ScanContext) -> None:
        raise ZeroDivisionError("boom")

    def malformed(source: Source, location: Location, ctx: ScanContext) -> None:
        raise MalformedInput("header truncated at byte 3")

    scan_registry.load_all()  # so that no lazy import registers into the patched list
    monkeypatch.setitem(scan_registry._SCANNERS, Format.DATA, [broken, malformed])
    path = tmp_path / "notes.txt"
    path.write_text("plain text")
    result = scan_file(path, "notes.txt", ScanOptions())
    reasons = sorted(f.evidence_map["reason"] for f in result.findings)
    assert reasons == ["header truncated at byte 3", "scanner error (ZeroDivisionError: boom)"]
    assert all(f.rule_id == "BST-SCAN-001" and f.severity is Severity.HIGH for f in result.findings)


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        scan_paths([str(tmp_path / "absent.pt")])


def test_directory_walk_honours_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.pkl", "b.txt", "sub/c.pkl", "sub/d.bin"):
        (tmp_path / name).write_bytes(b"x")
    given = str(tmp_path)
    found = [d for _, d in iter_files([given], ScanOptions(include=("*.pkl", "*.bin"), exclude=("sub/d.*",)))]
    assert found == [f"{given}/a.pkl", f"{given}/sub/c.pkl"]


def test_text_files_are_examined_and_clean(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# a model card\n")
    report = scan_paths([str(tmp_path)], ScanOptions(jobs=1, digest=True))
    [target] = report.targets
    assert target.format == "data"
    assert target.verdict is Verdict.CLEAN
    assert target.sha256 is not None
    assert len(target.sha256) == 64
    assert report.findings == []


def test_parallel_and_serial_scans_agree(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"f{i}.txt").write_text(f"file {i}")
    serial = scan_paths([str(tmp_path)], ScanOptions(jobs=1))
    parallel = scan_paths([str(tmp_path)], ScanOptions(jobs=2))
    assert serial.targets == parallel.targets


def test_every_format_has_scanners_and_modules_load_lazily() -> None:
    for fmt in Format:
        assert scan_registry.scanners_for(fmt), fmt
    assert set(scan_registry.ALL_MODULES) <= {
        m for mods in scan_registry.FORMAT_MODULES.values() for m in mods
    }
