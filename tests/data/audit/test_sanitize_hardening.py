"""``bastion data sanitize`` refuses bad requests before any work and never leaves partial outputs."""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bastion.cli import data_audit
from bastion.cli.main import main
from bastion.data.audit.base import LABEL, RowFlag
from bastion.data.audit.load import from_arrays
from bastion.data.audit.run import join_flags
from bastion.data.manifest import load_manifest
from bastion.data.sanitize import SanitizeOutputs, Staging, split_dataset, staged
from bastion.data.validate import ValidationResult, validate_sanitization
from bastion.errors import InputError, UsageError


def _write_table(path: Path, n: int = 300) -> Path:
    """The tester's table: zero-padded ids, two features, a note with a comma and quotes, 5% flipped."""
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = np.where(x1 + x2 > 0, "pos", "neg").astype(object)
    flip = rng.random(n) < 0.05
    y[flip] = np.where(y[flip] == "pos", "neg", "pos")
    notes = ['café, "q"' if i % 7 == 0 else "" for i in range(n)]
    frame = pd.DataFrame({"id": [f"{i:06d}" for i in range(n)], "x1": x1, "x2": x2, "note": notes, "y": y})
    frame.loc[3, "x1"] = np.nan
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BASTION_DATABASE_URL", f"sqlite:///{tmp_path / 'ev.db'}")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    return _write_table(work / "rin.csv")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["data", "sanitize", *argv])
    return code, capsys.readouterr().err.strip()


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def no_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the audit starts: these requests must be refused before any work."""

    def audit(*_: Any) -> Any:
        raise AssertionError("the audit ran before the request was checked")

    monkeypatch.setattr(data_audit, "_audit", audit)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--report", "{in}"], "--report {in}: an output would overwrite the input"),
        (["-o", "{d}/same.csv", "--quarantine", "{d}/same.csv"], "-o/--output and --quarantine are the same"),
        (["-o", "{d}/mc.csv", "--manifest", "{d}/mc.csv"], "-o/--output and --manifest are the same"),
        (["--manifest", "{d}/r.json", "--report", "{d}/./r.json"], "--manifest and --report are the same"),
        (["--quarantine", "{d}/link.csv"], "an output would overwrite the input"),
        (["--manifest", "{d}/nodir/m.json"], "directory {d}/nodir does not exist"),
        (["-o", "{d}/out.parquet", "--quarantine", "{d}/q.jsonl"], "out.parquet: must end in .csv"),
        (["-o", "{d}/adir.csv"], "adir.csv: is a directory"),
        (["--tolerance", "nan"], "--tolerance: expected a finite number of points >= 0"),
        (["--tolerance", "-1"], "--tolerance: expected a finite number of points >= 0"),
        (["--tolerance", "inf"], "--tolerance: expected a finite number of points >= 0"),
    ],
)
def test_bad_requests_are_refused_before_any_work(
    table: Path, capsys: pytest.CaptureFixture[str], no_audit: None, extra: list[str], message: str
) -> None:
    d = table.parent
    (d / "link.csv").symlink_to(table)
    (d / "adir.csv").mkdir()
    before = table.read_bytes()
    names = _names(d)
    fill = {"in": str(table), "d": str(d)}
    code, err = _run(capsys, str(table), "--label", "y", *[e.format(**fill) for e in extra])
    assert code == 2
    assert message.format(**fill) in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert "internal error" not in err
    assert table.read_bytes() == before
    assert _names(d) == names


def test_tsv_input_is_refused_before_the_audit(
    table: Path, capsys: pytest.CaptureFixture[str], no_audit: None
) -> None:
    tsv = table.with_suffix(".tsv")
    tsv.write_text(table.read_text().replace(",", "\t"))
    code, err = _run(capsys, str(tsv), "--label", "y", "--report", str(table.parent / "r.json"))
    assert code == 2
    assert "not .tsv" in err
    assert not (table.parent / "r.json").exists()


def test_existing_outputs_need_force(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = table.parent
    quarantine = d / "rin.quarantine.csv"
    quarantine.write_text("evidence from an earlier run\n")
    code, err = _run(capsys, str(table), "--label", "y")
    assert code == 2
    assert f"--quarantine {quarantine}: already exists; pass --force" in err
    assert quarantine.read_text() == "evidence from an earlier run\n"
    assert not (d / "rin.clean.csv").exists()
    code, _ = _run(capsys, str(table), "--label", "y", "--force")
    assert code == 0
    assert "bastion_row" in quarantine.read_text()
    # Clean data, quarantine, manifest: no temporaries left, and the mode a plain open() gives.
    assert _names(d) == ["rin.clean.csv", "rin.clean.manifest.json", "rin.csv", "rin.quarantine.csv"]
    mask = os.umask(0)
    os.umask(mask)
    for name in ("rin.clean.csv", "rin.quarantine.csv", "rin.clean.manifest.json"):
        assert (d / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_lineage_names_the_input_in_memory_and_streaming(
    table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = table.parent
    assert main(["data", "fingerprint", str(table), "--output", str(d / "in.manifest.json")]) == 0
    fingerprint = load_manifest(d / "in.manifest.json")
    records = {}
    for mode in ([], ["--stream"]):
        code, err = _run(capsys, str(table), "--label", "y", "--force", "--report", str(d / "r.json"), *mode)
        assert code == 0, err
        (records[bool(mode)],) = json.loads((d / "rin.clean.manifest.json").read_text())["lineage"]
    for record in records.values():
        consumed = record["consumed"]
        assert consumed["data_root"] == f"merkle-sha256:{fingerprint.root}"
        assert consumed["data_sha256"] == f"sha256:{fingerprint.files[0].sha256}"
    argv = [str(table), "--label", "y", "--force", "--input-manifest", str(d / "in.manifest.json")]
    code, err = _run(capsys, *argv)
    assert code == 0, err
    (record,) = json.loads((d / "rin.clean.manifest.json").read_text())["lineage"]
    assert record["consumed"]["data"] == f"manifest-sha256:{fingerprint.digest()}"
    table.write_bytes(table.read_bytes().replace(b"pos", b"neg", 1))
    code, err = _run(capsys, *argv)
    assert code == 2
    assert "differs from the file it fingerprinted" in err


def test_rejected_validation_writes_nothing_not_even_the_report(
    table: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rejected = ValidationResult("mlp", "held", 10, 100, 90, 90.0, 80.0, 1.0, verdict="rejected: worse")
    monkeypatch.setattr("bastion.data.validate.validate_sanitization", lambda *a, **k: rejected)
    code, _ = _run(capsys, str(table), "--label", "y", "--validate", "--report", str(table.parent / "r.json"))
    assert code == 1
    assert _names(table.parent) == ["rin.csv"]


def test_holdout_errors_name_the_holdout(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holdout = table.parent / "hold.csv"
    holdout.write_text(table.read_text().replace("000003,,", "000003,abc,"))
    code, err = _run(capsys, str(table), "--label", "y", "--validate", "--holdout", str(holdout))
    assert code == 2
    assert str(holdout) in err
    assert "column 'x1' mixes numbers and text" in err
    assert len(err.splitlines()) == 1
    assert _names(table.parent) == ["hold.csv", "rin.csv"]


def test_failure_after_the_split_leaves_nothing(table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.data.audit.run import AuditResult
    from bastion.data.sanitize import write_sanitized

    def broken(*_: Any) -> Any:
        raise InputError("fingerprint failed")

    monkeypatch.setattr("bastion.data.manifest.fingerprint_file", broken)
    result = AuditResult(
        "rin.csv", "tabular", 300, ["neg", "pos"], rows=join_flags([RowFlag(1, LABEL, "cl", 0.9, "r", "a")])
    )
    with pytest.raises(InputError, match="fingerprint failed"):
        write_sanitized(table, result, SanitizeOutputs.beside(table), consumed={}, parameters={})
    assert _names(table.parent) == ["rin.csv"]


def test_commit_failure_restores_earlier_outputs_and_names_the_users_path(tmp_path: Path) -> None:
    clean, quarantine = tmp_path / "c.csv", tmp_path / "q.csv"
    clean.write_text("old clean\n")
    staging = Staging()
    staging.write(clean, b"new clean\n")
    staging.write(quarantine, b"new quarantine\n")
    quarantine.mkdir()  # appears after the up-front checks: the second rename fails
    with pytest.raises(InputError, match=f"^{quarantine}: cannot write it"):
        staging.commit()
    assert clean.read_text() == "old clean\n"
    assert _names(tmp_path) == ["c.csv", "q.csv"]


def _stage_then_terminate(target: Path) -> None:
    with data_audit._sigterm_as_exit(), staged() as staging:
        staging.write(target, b"x\n")
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_removes_staged_files(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        _stage_then_terminate(tmp_path / "c.csv")
    assert stopped.value.code == 128 + signal.SIGTERM
    assert _names(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == previous


def test_csv_keeps_crlf_and_quoted_line_breaks_byte_for_byte(tmp_path: Path) -> None:
    source = tmp_path / "d.csv"
    source.write_bytes(b'x,note\r\n1,"a\r\nb"\r\n2,plain\r\n3,"c\nd"\r\n4,last')
    out = SanitizeOutputs.beside(source)
    with staged() as staging:
        split_dataset(source, join_flags([RowFlag(1, LABEL, "cl", 0.9, "why", "a")]), staging, out)
    assert out.clean.read_bytes() == b'x,note\r\n1,"a\r\nb"\r\n3,"c\nd"\r\n4,last'
    assert out.quarantine.read_bytes() == (
        b"x,note,bastion_row,bastion_channels,bastion_score,bastion_reason\r\n2,plain,1,label,0.9000,why\r\n"
    )


def _tiny(n: int = 80) -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return from_arrays(x, (x[:, 0] > 0).astype(int), path="tiny.csv")


RECIPES = """
import numpy as np
class Boom:
    def fit(self, X, y): raise RuntimeError("fit exploded")
    def predict(self, X): return np.zeros(len(X))
class Scalar:
    def fit(self, X, y): return self
    def predict(self, X): return np.array(0)
class Column:
    def fit(self, X, y): return self
    def predict(self, X): return np.zeros((len(X), 1), dtype=int)
"""


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            "hardening_recipes:Boom",
            "--recipe 'hardening_recipes:Boom': fit failed (RuntimeError: fit exploded)",
        ),
        ("hardening_recipes:Scalar", "predict returned shape () for 16 rows"),
        ("hardening_recipes:Column", "predict returned shape (16, 1) for 16 rows"),
        ("hardening_broken:X", "--recipe 'hardening_broken:X': cannot build it (RuntimeError: import boom)"),
    ],
)
def test_broken_recipes_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipe: str, message: str
) -> None:
    (tmp_path / "hardening_recipes.py").write_text(RECIPES)
    (tmp_path / "hardening_broken.py").write_text("raise RuntimeError('import boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError) as caught:
        validate_sanitization(_tiny(), [1, 2], [], recipe=recipe)
    assert message in caught.value.diagnostics()


def test_validation_messages_name_the_input_and_mlp_stays_quiet() -> None:
    data = _tiny()
    too_small = from_arrays(np.arange(8.0).reshape(4, 2), np.array([0, 0, 1, 1]), path="tiny.csv")
    with pytest.raises(UsageError, match=r"^tiny\.csv: --validate: too few rows"):
        validate_sanitization(too_small, [], [])
    with pytest.raises(UsageError, match="--tolerance"):
        validate_sanitization(data, [1], [], tolerance_points=float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the clipped batch_size warning must not reach the user
        assert validate_sanitization(data, [1], [], recipe="mlp").holdout_rows == 16
