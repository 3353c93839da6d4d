"""Scanning never runs what it scans: payloads that would leave a canary file leave none."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Severity, Verdict
from bastion.scan import ScanOptions, scan_paths


class _Touch:
    """Pickles to a call that would create the canary file if anything unpickled it."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.canary}",))


class _Exec:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.canary)!r}, 'w').close()",))


def _write_samples(folder: Path, canary: Path) -> list[Path]:
    payload = pickle.dumps(_Touch(canary), protocol=2)
    samples: dict[str, bytes] = {
        "raw.pkl": payload,
        "exec.pkl": pickle.dumps(_Exec(canary), protocol=4),
        "proto0.pkl": pickle.dumps(_Touch(canary), protocol=0),
        "weights.safetensors": payload,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    samples["model.pt"] = buf.getvalue()
    samples["polyglot.pt"] = payload + buf.getvalue()
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        info = tarfile.TarInfo("inner/model.pkl")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    samples["bundle.tar.gz"] = tbuf.getvalue()
    nbuf = io.BytesIO()
    np.save(nbuf, np.array([_Touch(canary)], dtype=object), allow_pickle=True)
    samples["objects.npy"] = nbuf.getvalue()
    paths = []
    for name, data in samples.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.parametrize("jobs", [1, 2])
def test_library_scan_blocks_everything_and_runs_nothing(tmp_path: Path, jobs: int) -> None:
    canary = tmp_path / "canary"
    folder = tmp_path / "samples"
    folder.mkdir()
    paths = _write_samples(folder, canary)
    report = scan_paths([str(folder)], ScanOptions(jobs=jobs))
    top = {t.location.display: t for t in report.targets if not t.location.members}
    assert len(top) == len(paths)
    for display, target in top.items():
        assert target.verdict is Verdict.MALICIOUS, display
    assert any(f.severity is Severity.CRITICAL for f in report.findings)
    assert not canary.exists()


def test_cli_scan_runs_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    folder = tmp_path / "samples"
    folder.mkdir()
    _write_samples(folder, canary)
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "scan", str(folder), "--format", "json", "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert not canary.exists()
