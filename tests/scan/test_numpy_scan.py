"""The .npy scanner: header validation, object arrays as pickles, truncation fails closed."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Finding, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.engine import scan_file


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo bastion-test",))


def _scan(path: Path) -> tuple[list[Finding], Verdict]:
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return report.findings, report.targets[0].verdict


def _npy(header: str, payload: bytes = b"", version: int = 1) -> bytes:
    raw = header.encode("latin-1" if version < 3 else "utf-8")
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + payload
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(raw)) + raw + payload


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(3, 4),
        np.arange(5, dtype="<i2"),
        np.ones((2, 2), dtype=">f4", order="F"),
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.array([b"xy"]),
        np.array([1 + 2j], dtype="c8"),
        np.array(["2020-01-01"], dtype="M8[D]"),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.zeros((0, 5)),
        np.array(7.0),
    ],
)
def test_numeric_arrays_are_clean(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "a.npy"
    np.save(path, array)
    findings, verdict = _scan(path)
    assert findings == []
    assert verdict is Verdict.CLEAN


def test_object_array_of_ints_is_info_only(tmp_path: Path) -> None:
    path = tmp_path / "o.npy"
    np.save(path, np.array([1, 2, 3], dtype=object), allow_pickle=True)
    findings, verdict = _scan(path)
    assert [(f.rule_id, f.severity) for f in findings] == [("BST-NPY-001", Severity.LOW)]
    assert verdict is Verdict.CLEAN


def test_object_array_with_payload_is_malicious(tmp_path: Path) -> None:
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_Evil()], dtype=object), allow_pickle=True)
    findings, verdict = _scan(path)
    assert verdict is Verdict.MALICIOUS
    rules = {f.rule_id: f.severity for f in findings}
    assert rules["BST-PKL-001"] is Severity.CRITICAL
    assert rules["BST-NPY-001"] is Severity.LOW


def test_structured_object_field_is_pickle(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.array([(1, _Evil())], dtype=[("a", "<i4"), ("b", "O")]), allow_pickle=True)
    findings, _ = _scan(path)
    assert any(f.rule_id == "BST-PKL-001" for f in findings)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_header_versions(tmp_path: Path, version: int) -> None:
    path = tmp_path / "v.npy"
    path.write_bytes(_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", b"\0" * 16, version))
    findings, verdict = _scan(path)
    assert findings == []
    assert verdict is Verdict.CLEAN


def test_truncated_data_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    path.write_bytes(_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }\n", b"\0" * 16))
    findings, verdict = _scan(path)
    assert [f.rule_id for f in findings] == ["BST-SCAN-001"]
    assert verdict is Verdict.ERROR


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<f8', 'fortran_order': False}",
        "{'descr': 'nonsense', 'fortran_order': False, 'shape': (1,)}",
        "{'descr': '<f8', 'fortran_order': 'no', 'shape': (1,)}",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}",
        "__import__('os').system('echo bastion-test')",
        "[" * 5000,
    ],
)
def test_bad_headers_fail_closed(tmp_path: Path, header: str) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(_npy(header, b"\0" * 8))
    findings, verdict = _scan(path)
    assert verdict is Verdict.ERROR
    assert {f.rule_id for f in findings} == {"BST-SCAN-001"}


def test_oversized_header_length(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + b"{}")
    assert _scan(path)[1] is Verdict.ERROR


_SAMPLE = _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n", b"\x80\x02K\x01\x85.")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(0, 80), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3)
)
def test_fuzz_never_raises(tmp_path: Path, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(_SAMPLE[: len(_SAMPLE) - cut])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    path = tmp_path / "f.npy"
    path.write_bytes(bytes(data))
    result = scan_file(path, "f.npy", ScanOptions(jobs=1))
    assert all("scanner error" not in f.message for f in result.findings)
