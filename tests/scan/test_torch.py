"""Legacy PyTorch formats: the stacked-pickle torch.save format, the old tar format, misnamed pickles."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Location, Report, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths, torch_legacy
from bastion.scan.context import Limits, ScanContext, Source
from bastion.scan.engine import dispatch
from bastion.scan.torch_legacy import legacy_extent


class Payload:
    """Pickles to a call of os.system with a harmless command; never unpickled here."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo bastion-test",))


MALICIOUS = pickle.dumps(Payload(), protocol=2)


def legacy_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def scan(tmp_path: Path, data: bytes, name: str) -> Report:
    path = tmp_path / name
    path.write_bytes(data)
    return scan_paths([str(path)], ScanOptions(jobs=1))


def critical_globals(report: Report) -> set[str]:
    return {f.evidence_map.get("global", "") for f in report.findings if f.severity is Severity.CRITICAL}


def test_legacy_state_dict_is_clean(tmp_path: Path) -> None:
    # Storage bytes that open like a pickle must not be parsed: only the five pickles are.
    tensor = torch.tensor([0x80, 0x02, 0x63, 0x6F, 0x73, 0x0A, 0x2E] * 9, dtype=torch.uint8)
    report = scan(tmp_path, legacy_bytes({"w": tensor, "lin": torch.nn.Linear(3, 2).state_dict()}), "old.pt")
    assert report.targets[0].format == "pytorch-legacy"
    assert [f for f in report.findings if f.severity >= Severity.MEDIUM] == []
    assert report.targets[0].verdict is Verdict.CLEAN


def test_legacy_malicious_object(tmp_path: Path) -> None:
    report = scan(tmp_path, legacy_bytes({"model": Payload()}), "old.pt")
    assert any("system" in g for g in critical_globals(report))
    assert report.targets[0].verdict is Verdict.MALICIOUS


def test_legacy_extent_stops_before_storage_bytes() -> None:
    data = legacy_bytes({"w": torch.ones(1000)})
    ends = legacy_extent(Source.from_bytes(data, "old.pt"))
    assert len(ends) == 5
    assert 0 < ends[0] < ends[-1] < len(data) - 4000  # 1000 float32 storage bytes follow the pickles


def test_legacy_without_stream_analyser_still_finds_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_legacy, "_pickle_stream_fn", lambda: None)
    ctx = ScanContext(dispatch=dispatch)
    dispatch(Source.from_bytes(legacy_bytes([Payload()]), "old.pt"), Location("old.pt"), ctx)
    assert any("system" in f.evidence_map.get("global", "") for f in ctx.findings)


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin", "weights.pth"])
def test_cve_2025_10155_plain_pickle_with_torch_name(tmp_path: Path, name: str) -> None:
    report = scan(tmp_path, MALICIOUS, name)
    assert report.targets[0].format == "pickle"
    assert any("system" in g for g in critical_globals(report))


def test_legacy_tar_format_with_malicious_pickle(tmp_path: Path) -> None:
    buf = io.BytesIO()
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
        "pickle": MALICIOUS,
        "storages": pickle.dumps(0, protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
    }
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    report = scan(tmp_path, buf.getvalue(), "ancient.pt")
    assert report.targets[0].format == "pytorch-tar"
    hits = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert hits
    assert hits[0].location.members == ("pickle",)
    assert report.targets[0].verdict is Verdict.MALICIOUS


LEGACY_SAMPLE = legacy_bytes({"w": torch.ones(4), "p": Payload()})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(LEGACY_SAMPLE)),
    flips=st.lists(st.tuples(st.integers(0, len(LEGACY_SAMPLE) - 1), st.integers(0, 255)), max_size=6),
)
def test_fuzz_legacy_only_reports(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(LEGACY_SAMPLE)
    for pos, value in flips:
        data[pos] = value
    ctx = ScanContext(limits=Limits(max_member_bytes=1 << 20), dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(data[:cut]), "old.pt"), Location("old.pt"), ctx)
    assert [f for f in ctx.findings if "scanner error" in f.evidence_map.get("reason", "")] == []
