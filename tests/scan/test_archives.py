"""Tar, 7z and compression wrappers, including compressed joblib dumps and a 7z re-pack (nullifAI)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import tarfile
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import py7zr
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bastion.findings import Location, Report, Severity, Verdict
from bastion.scan import ScanOptions, archives, scan_paths
from bastion.scan.archives import inner_name
from bastion.scan.context import INCOMPLETE_RULE, Limits, ScanContext, Source
from bastion.scan.engine import dispatch


class Payload:
    """Pickles to a call of os.system with a harmless command; never unpickled here."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo bastion-test",))


MALICIOUS = pickle.dumps(Payload(), protocol=2)


def scan(tmp_path: Path, data: bytes, name: str) -> Report:
    path = tmp_path / name
    path.write_bytes(data)
    return scan_paths([str(path)], ScanOptions(jobs=1))


def assert_payload_found(report: Report) -> None:
    hits = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert any("system" in f.evidence_map.get("global", "") for f in hits), report.findings
    assert report.targets[0].verdict is Verdict.MALICIOUS


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "name"), [("w", "m.tar"), ("w:gz", "m.tar.gz"), ("w:bz2", "m.tar.bz2"), ("w:xz", "m.txz")]
)
def test_tar_family_with_malicious_pickle(tmp_path: Path, mode: str, name: str) -> None:
    report = scan(tmp_path, tar_bytes({"readme.txt": b"hello", "model/model.pkl": MALICIOUS}, mode), name)
    assert_payload_found(report)
    hit = next(f for f in report.findings if f.severity is Severity.CRITICAL)
    assert hit.location.members[-1] == "model/model.pkl"


def test_tar_link_outside_is_low(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("weights.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "../../home/user/.ssh/id_rsa"
        tar.addfile(link)
        inside = tarfile.TarInfo("alias.bin")
        inside.type, inside.linkname = tarfile.SYMTYPE, "weights.bin"
        tar.addfile(inside)
    report = scan(tmp_path, buf.getvalue(), "m.tar")
    assert [(f.rule_id, f.severity) for f in report.findings] == [("BST-ARC-001", Severity.LOW)]


def test_corrupt_tar_is_incomplete(tmp_path: Path) -> None:
    data = tar_bytes({"a.pkl": MALICIOUS, "b.txt": b"x" * 2000})
    report = scan(tmp_path, data[:1700], "m.tar")
    assert INCOMPLETE_RULE in {f.rule_id for f in report.findings}


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        (lambda d: gzip.compress(d), "model.pkl.gz"),
        (lambda d: bz2.compress(d), "model.pkl.bz2"),
        (lambda d: lzma.compress(d), "model.pkl.xz"),
        (lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE), "model.pkl.lzma"),
        (lambda d: zlib.compress(d), "model.joblib"),
    ],
)
def test_single_stream_wrappers(tmp_path: Path, compress: object, name: str) -> None:
    report = scan(tmp_path, compress(MALICIOUS), name)  # type: ignore[operator]
    assert_payload_found(report)


def test_decompression_bomb_is_incomplete(tmp_path: Path) -> None:
    report = scan(tmp_path, gzip.compress(b"\x80\x04" + bytes(8 << 20)), "bomb.pkl.gz")
    reasons = [f.evidence_map.get("reason", "") for f in report.findings if f.rule_id == INCOMPLETE_RULE]
    assert any("bomb" in r for r in reasons)


def test_truncated_gzip_is_incomplete(tmp_path: Path) -> None:
    data = gzip.compress(MALICIOUS + bytes(5000))
    report = scan(tmp_path, data[: len(data) // 2], "x.pkl.gz")
    assert INCOMPLETE_RULE in {f.rule_id for f in report.findings}


def test_inner_name() -> None:
    assert inner_name("model.pkl.gz") == "model.pkl"
    assert inner_name("data.tgz") == "data.tar"
    assert inner_name("model.joblib") == "model.joblib"


# -- joblib -----------------------------------------------------------------------------------------

PIPELINE = make_pipeline(StandardScaler(), LogisticRegression()).fit(
    np.random.default_rng(0).random((20, 3)), np.arange(20) % 2
)
COMPRESSIONS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_compressed_joblib_pipeline_is_clean(tmp_path: Path, method: str) -> None:
    path = tmp_path / f"pipe_{method}.joblib"
    joblib.dump(PIPELINE, path, compress=(method, 3))
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    assert [f for f in report.findings if f.severity >= Severity.MEDIUM] == []
    assert any(t.format == "pickle" for t in report.targets)


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_compressed_joblib_payload_is_flagged(tmp_path: Path, method: str) -> None:
    path = tmp_path / f"evil_{method}.joblib"
    joblib.dump({"model": Payload()}, path, compress=(method, 3))
    assert_payload_found(scan_paths([str(path)], ScanOptions(jobs=1)))


def test_lz4_missing_is_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "_have_lz4", lambda: False)
    path = tmp_path / "x.joblib"
    joblib.dump([1, 2], path, compress=("lz4", 3))
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    reasons = [f.evidence_map.get("reason", "") for f in report.findings if f.rule_id == INCOMPLETE_RULE]
    assert any("scan" in r and "LZ4" in r for r in reasons)


# -- 7z ---------------------------------------------------------------------------------------------


def seven_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        for name, body in members.items():
            archive.writestr(body, name)
    return buf.getvalue()


def test_nullifai_7z_repack_of_torch_archive(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    members = {}
    with zipfile.ZipFile(buf) as zf:
        for name in zf.namelist():
            members[name] = zf.read(name)
    data_pkl = next(n for n in members if n.endswith("/data.pkl"))
    broken = MALICIOUS[:-1]  # the stream stops right after REDUCE, as in nullifAI
    members[data_pkl] = broken
    report = scan(tmp_path, seven_zip(members), "model.7z")
    assert_payload_found(report)


def test_7z_of_clean_checkpoint(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 2).state_dict(), buf)
    report = scan(tmp_path, seven_zip({"model.pt": buf.getvalue(), "config.json": b'{"a": 1}'}), "m.7z")
    assert [f for f in report.findings if f.severity >= Severity.MEDIUM] == []
    assert {t.format for t in report.targets} >= {"7z", "pytorch", "pickle"}


def test_7z_declared_bomb_is_incomplete(tmp_path: Path) -> None:
    report = scan(tmp_path, seven_zip({"zeros.bin": bytes(3 << 20)}), "bomb.7z")
    reasons = [f.evidence_map.get("reason", "") for f in report.findings if f.rule_id == INCOMPLETE_RULE]
    assert any("bomb" in r for r in reasons)


def test_7z_missing_py7zr_is_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_py7zr(name: str, *args: object, **kwargs: object) -> object:
        if name == "py7zr":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_py7zr)
    ctx = ScanContext(dispatch=dispatch)
    dispatch(Source.from_bytes(seven_zip({"a.pkl": MALICIOUS}), "m.7z"), Location("m.7z"), ctx)
    assert any("7z support" in f.evidence_map.get("reason", "") for f in ctx.findings)


# -- fuzz -------------------------------------------------------------------------------------------

SAMPLES = {
    "m.tar.gz": tar_bytes({"a.pkl": MALICIOUS, "b.txt": b"hello" * 40}, "w:gz"),
    "m.tar": tar_bytes({"a.pkl": MALICIOUS}),
    "m.7z": seven_zip({"a.pkl": MALICIOUS, "b.txt": b"hello"}),
    "m.joblib": zlib.compress(MALICIOUS),
    "m.pkl.bz2": bz2.compress(MALICIOUS),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
)
def test_fuzz_archives_only_report(name: str, cut: float, flips: list[tuple[float, int]]) -> None:
    data = bytearray(SAMPLES[name])
    for where, value in flips:
        data[int(where * len(data))] = value
    ctx = ScanContext(limits=Limits(max_member_bytes=1 << 20), dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(data[: int(cut * len(data))]), name), Location(name), ctx)
    assert [f for f in ctx.findings if "scanner error" in f.evidence_map.get("reason", "")] == []
