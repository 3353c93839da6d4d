"""A table rewritten while it is audited or sanitized is refused, and nothing is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bastion.cli.main import main
from bastion.data import sanitize
from bastion.data.audit import run

ROWS = 300


def _table(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, ROWS)
    frame = pd.DataFrame(rng.normal(0.0, 1.0, (ROWS, 3)) + 2.0 * y[:, None], columns=["a", "b", "c"])
    frame["label"] = np.where(y == 0, "neg", "pos")
    frame.loc[:9, "label"] = np.where(frame.loc[:9, "label"] == "neg", "pos", "neg")  # something to remove
    frame.to_csv(path, index=False)
    return path


def _edit(path: Path) -> None:
    """Rewrite ``path`` in place with one row fewer: every row after the first shifts up by one."""
    lines = path.read_bytes().splitlines(keepends=True)
    with path.open("wb") as fh:  # same inode, as an editor or a writer appending in place would leave it
        fh.writelines([lines[0], *lines[2:]])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse clocks: a visible change


def _edit_after(monkeypatch: pytest.MonkeyPatch, splitter: str, target: Path) -> None:
    """Make sanitize's ``splitter`` edit ``target`` once it has copied the rows."""
    real = getattr(sanitize, splitter)

    def split_then_edit(*args: Any) -> None:
        real(*args)
        _edit(target)

    monkeypatch.setattr(sanitize, splitter, split_then_edit)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_audit_of_a_file_rewritten_meanwhile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _table(tmp_path / "d.csv")
    real = run.run_audit

    def audit_then_edit(*args: Any, **kwargs: Any) -> run.AuditResult:
        result = real(*args, **kwargs)
        _edit(data)  # after the rows were read, before the fingerprint the lineage records
        return result

    monkeypatch.setattr(run, "run_audit", audit_then_edit)
    report = tmp_path / "report.json"
    code, err = _run(["data", "audit", str(data), "--label", "label", "-o", str(report)], capsys)
    assert code == 2
    assert (
        err
        == f"bastion: error: {data}: the file changed while it was audited; audit it again once it is written"
    )
    assert not report.exists()


def test_sanitize_of_a_file_rewritten_during_the_copy_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _table(tmp_path / "d.csv")
    _edit_after(monkeypatch, "split_dataset", data)
    code, err = _run(["data", "sanitize", str(data), "--label", "label", "--format", "json"], capsys)
    assert code == 2
    said = "the file changed while it was audited; audit it again once it is written"
    assert err == f"bastion: error: {data}: {said}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]  # no output, no staged file left


def test_sanitize_of_an_unchanged_file_still_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _table(tmp_path / "d.csv")
    code, _ = _run(["data", "sanitize", str(data), "--label", "label", "--format", "json"], capsys)
    assert code == 0
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"d.csv", "d.clean.csv", "d.quarantine.csv", "d.clean.manifest.json"}
    quarantined = pd.read_csv(tmp_path / "d.quarantine.csv")
    assert len(quarantined) >= 5  # most of the ten flipped rows
    assert len(pd.read_csv(tmp_path / "d.clean.csv")) + len(quarantined) == ROWS
    assert json.loads((tmp_path / "d.clean.manifest.json").read_text())["lineage"][0]["step"] == "sanitize"


def _folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls, level in (("dark", 40), ("light", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(30):
            pixels = np.clip(rng.normal(level, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    return root


def test_sanitize_of_a_folder_whose_image_is_edited_in_place_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The listing (names) stays the same, so only the image's own state tells the edit.
    data = _folder(tmp_path / "images")
    _edit_after(monkeypatch, "split_image_folder", data / "dark" / "007.png")
    code, err = _run(["data", "sanitize", str(data), "--label", "class", "--format", "json"], capsys)
    assert code == 2
    said = "the folder changed while it was audited; audit it again once it is written"
    assert err.splitlines()[-1] == f"bastion: error: {data}: {said}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
