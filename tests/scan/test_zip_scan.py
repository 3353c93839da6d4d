"""Zip archives through the engine: PyTorch, TorchScript, .npz, and every zip trick loaders tolerate."""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Location, Report, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.context import INCOMPLETE_RULE, Limits, ScanContext, Source
from bastion.scan.engine import dispatch
from bastion.scan.zip_reader import ZipView
from bastion.scan.zip_scan import classify


class Payload:
    """Pickles to a call of os.system with a harmless command; never unpickled here."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo bastion-test",))


MALICIOUS = pickle.dumps(Payload(), protocol=2)


class Tiny(torch.nn.Module):
    """A TorchScript-able module."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + 1


def torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


STATE_DICT = torch_bytes(torch.nn.Linear(3, 2).state_dict())


def rebuild(data: bytes, replace: dict[str, bytes | None], extra: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """Copy an archive, replacing (or, with None, dropping) members and appending ``extra``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                new = replace.get(info.filename, src.read(info.filename))
                if new is not None:
                    dst.writestr(info.filename, new)
            for name, body in extra:
                dst.writestr(name, body)
    return out.getvalue()


def data_pkl_name(data: bytes) -> str:
    return next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith("/data.pkl"))


def scan(tmp_path: Path, data: bytes, name: str = "model.pt") -> Report:
    path = tmp_path / name
    path.write_bytes(data)
    return scan_paths([str(path)], ScanOptions(jobs=1))


def rule_ids(report: Report, minimum: Severity = Severity.INFO) -> set[str]:
    return {f.rule_id for f in report.findings if f.severity >= minimum}


def verdict(report: Report) -> Verdict:
    return report.targets[0].verdict


def assert_payload_found(report: Report) -> None:
    hits = [f for f in report.findings if f.rule_id.startswith("BST-PKL") and f.severity is Severity.CRITICAL]
    assert hits, [(f.rule_id, f.message) for f in report.findings]
    assert any("system" in f.evidence_map.get("global", "") for f in hits)
    assert verdict(report) is Verdict.MALICIOUS


def patch_central(data: bytes, member: str, offset: int, value: bytes) -> bytes:
    """Overwrite bytes at ``offset`` inside ``member``'s central record."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        (name_len,) = struct.unpack_from("<H", out, pos + 28)
        if out[pos + 46 : pos + 46 + name_len] == member.encode():
            out[pos + offset : pos + offset + len(value)] = value
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(member)


def local_offset(data: bytes, member: str) -> int:
    return next(i.header_offset for i in zipfile.ZipFile(io.BytesIO(data)).infolist() if i.filename == member)


# -- benign archives --------------------------------------------------------------------------------


def test_torch_state_dict_is_clean(tmp_path: Path) -> None:
    report = scan(tmp_path, STATE_DICT)
    assert rule_ids(report, Severity.MEDIUM) == set()
    assert report.targets[0].format == "pytorch"
    assert verdict(report) is Verdict.CLEAN


def test_storages_are_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A uint8 tensor whose bytes open like a pickle: parsing the storage would raise a false alarm.
    tensor = torch.tensor([0x80, 0x02, 0x63, 0x6F, 0x73, 0x0A] + [7] * 58, dtype=torch.uint8)
    data = torch_bytes({"w": tensor})
    touched: list[str] = []
    for method in ("peek_member", "read_member", "member_source"):
        original = getattr(ZipView, method)

        def spy(self: ZipView, entry: object, *args: object, _orig: object = original) -> object:
            touched.append(entry.name)  # type: ignore[attr-defined]
            return _orig(self, entry, *args)  # type: ignore[operator]

        monkeypatch.setattr(ZipView, method, spy)
    report = scan(tmp_path, data)
    assert report.findings == []
    assert touched
    assert not any("/data/" in name for name in touched)


def test_torchscript_archive_is_clean(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    report = scan(tmp_path, buf.getvalue())
    assert report.targets[0].format == "torchscript"
    assert rule_ids(report, Severity.MEDIUM) == set()


def test_torchscript_with_malicious_constants_is_flagged(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    data = buf.getvalue()
    constants = next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith("constants.pkl"))
    report = scan(tmp_path, rebuild(data, {constants: MALICIOUS}))
    assert_payload_found(report)


def test_npz_clean_and_object_array(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(10.0), b=np.ones((3, 3)))
    clean = scan(tmp_path, buf.getvalue(), "clean.npz")
    assert clean.targets[0].format == "npz"
    assert rule_ids(clean, Severity.MEDIUM) == set()
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = Payload(), 1
    buf = io.BytesIO()
    np.savez(buf, a=objects)
    assert_payload_found(scan(tmp_path, buf.getvalue(), "objects.npz"))


def test_classify() -> None:
    assert classify(["m/data.pkl", "m/data/0", "m/version"]).kind == "pytorch"
    assert classify(["m/data.pkl", "m/constants.pkl", "m/code/__torch__.py"]).kind == "torchscript"
    assert classify(["a.npy", "b.npy"]).kind == "npz"
    assert classify(["config.json", "metadata.json", "model.weights.h5"]).kind == "keras"
    assert classify(["readme.txt"]).kind == "zip"


# -- malicious and tampered archives ----------------------------------------------------------------


def test_malicious_data_pkl(tmp_path: Path) -> None:
    report = scan(tmp_path, rebuild(STATE_DICT, {data_pkl_name(STATE_DICT): MALICIOUS}))
    assert_payload_found(report)


def test_pickle_content_under_any_name_is_scanned(tmp_path: Path) -> None:
    data = rebuild(STATE_DICT, {}, extra=[("model/notes.txt", MALICIOUS)])
    assert_payload_found(scan(tmp_path, data))


def test_cve_2025_1944_local_central_name_mismatch(tmp_path: Path) -> None:
    name = data_pkl_name(STATE_DICT)
    data = rebuild(STATE_DICT, {name: MALICIOUS})
    data = data.replace(name.encode(), name[:-1].encode() + b"X", 1)  # the local header comes first
    report = scan(tmp_path, data)
    assert "BST-ZIP-003" in rule_ids(report)
    assert_payload_found(report)


def test_cve_2025_1945_flag_bits(tmp_path: Path) -> None:
    name = data_pkl_name(STATE_DICT)
    data = bytearray(rebuild(STATE_DICT, {name: MALICIOUS}))
    lh = local_offset(bytes(data), name)
    data[lh + 6 : lh + 8] = struct.pack("<H", 0x0001)
    report = scan(tmp_path, patch_central(bytes(data), name, 8, struct.pack("<H", 0x0001)))
    assert "BST-ZIP-005" in rule_ids(report)
    assert_payload_found(report)


def test_cve_2025_10156_bad_crc(tmp_path: Path) -> None:
    name = data_pkl_name(STATE_DICT)
    data = patch_central(rebuild(STATE_DICT, {name: MALICIOUS}), name, 16, b"\xde\xad\xbe\xef")
    report = scan(tmp_path, data)
    assert "BST-ZIP-004" in rule_ids(report)
    assert_payload_found(report)


def test_modelscan_354_corrupt_entry_before_data_pkl(tmp_path: Path) -> None:
    name = data_pkl_name(STATE_DICT)
    data = bytearray(rebuild(STATE_DICT, {name: None}, extra=[(name, MALICIOUS)]))
    data[0:4] = b"PK\x03\x05"  # the first member's local header is broken
    report = scan(tmp_path, bytes(data), "model.bin")
    assert INCOMPLETE_RULE in rule_ids(report)
    assert_payload_found(report)


def test_duplicate_names_scan_every_copy(tmp_path: Path) -> None:
    name = data_pkl_name(STATE_DICT)
    report = scan(tmp_path, rebuild(STATE_DICT, {}, extra=[(name, MALICIOUS)]))
    assert "BST-ZIP-006" in rule_ids(report)
    assert_payload_found(report)


def test_polyglot_pickle_prefix(tmp_path: Path) -> None:
    report = scan(tmp_path, MALICIOUS + STATE_DICT)
    polyglot = [f for f in report.findings if f.rule_id == "BST-ZIP-001"]
    assert polyglot
    assert polyglot[0].severity is Severity.CRITICAL
    assert polyglot[0].evidence_map["prefix_length"] == str(len(MALICIOUS))
    assert_payload_found(report)
    # The archive behind the prefix was scanned too.
    assert any(t.location.members and t.location.members[0].endswith("data.pkl") for t in report.targets)


def test_polyglot_with_trailing_bytes(tmp_path: Path) -> None:
    report = scan(tmp_path, MALICIOUS + STATE_DICT + b"padding after the archive")
    assert "BST-ZIP-001" in rule_ids(report, Severity.CRITICAL)
    assert "BST-ZIP-007" in rule_ids(report)


def test_pickle_embedding_a_zip_is_not_a_polyglot(tmp_path: Path) -> None:
    report = scan(tmp_path, pickle.dumps({"archive": STATE_DICT}, protocol=4), "blob.pkl")
    assert "BST-ZIP-001" not in rule_ids(report)
    assert "BST-ZIP-002" not in rule_ids(report)


def test_benign_pickle_prefix_is_still_critical(tmp_path: Path) -> None:
    report = scan(tmp_path, pickle.dumps({"a": 1}, protocol=2) + STATE_DICT)
    assert "BST-ZIP-001" in rule_ids(report, Severity.CRITICAL)


def test_other_prefix_is_high(tmp_path: Path) -> None:
    report = scan(tmp_path, b"\x00JUNK" * 100 + STATE_DICT, "model.keras")
    assert "BST-ZIP-002" in rule_ids(report, Severity.HIGH)


def test_trailing_data(tmp_path: Path) -> None:
    report = scan(tmp_path, STATE_DICT + b"appended bytes")
    assert "BST-ZIP-007" in rule_ids(report, Severity.MEDIUM)


def test_missing_storage(tmp_path: Path) -> None:
    names = zipfile.ZipFile(io.BytesIO(STATE_DICT)).namelist()
    storage = sorted(n for n in names if "/data/" in n)[-1]
    report = scan(tmp_path, rebuild(STATE_DICT, {storage: None}))
    assert [f.rule_id for f in report.findings] == ["BST-TORCH-001"]
    assert report.findings[0].severity is Severity.LOW


def test_nesting_beyond_the_limit_is_incomplete(tmp_path: Path) -> None:
    data = MALICIOUS
    for level in range(7):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{level}.bin", data)
        data = buf.getvalue()
    report = scan(tmp_path, data, "nested.zip")
    reasons = [f.evidence_map.get("reason", "") for f in report.findings if f.rule_id == INCOMPLETE_RULE]
    assert any("nesting" in r for r in reasons)
    assert verdict(report) is not Verdict.CLEAN


def test_zip_bomb_is_incomplete(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.pkl", b"\x80\x04" + bytes(8 << 20))
    report = scan(tmp_path, buf.getvalue(), "bomb.zip")
    reasons = [f.evidence_map.get("reason", "") for f in report.findings if f.rule_id == INCOMPLETE_RULE]
    assert any("zip bomb" in r for r in reasons)
    assert verdict(report) is Verdict.ERROR


# -- fuzz -------------------------------------------------------------------------------------------

FUZZ_BASE = rebuild(STATE_DICT, {}, extra=[("extra/cfg.json", b'{"a": 1}'), ("extra/p.pkl", MALICIOUS)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(FUZZ_BASE)),
    flips=st.lists(st.tuples(st.integers(0, len(FUZZ_BASE) - 1), st.integers(0, 255)), max_size=8),
)
def test_fuzz_zip_scan_only_reports(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(FUZZ_BASE)
    for pos, value in flips:
        data[pos] = value
    ctx = ScanContext(limits=Limits(max_member_bytes=1 << 20), dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(data[:cut]), "model.pt"), Location("model.pt"), ctx)
    bugs = [f for f in ctx.findings if "scanner error" in f.evidence_map.get("reason", "")]
    assert bugs == []


def test_keras_archive_members_are_routed_by_content(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", b'{"class_name": "Sequential", "config": {"layers": []}}')
        zf.writestr("metadata.json", b'{"keras_version": "3.5.0"}')
        zf.writestr("model.weights.h5", b"")
    report = scan(tmp_path, buf.getvalue(), "model.keras")
    assert report.targets[0].format == "keras"
    assert {t.location.members for t in report.targets} >= {("config.json",), ("metadata.json",)}
