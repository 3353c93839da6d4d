"""safetensors scanner: files from the safetensors package are clean; every spec violation is reported."""

from __future__ import annotations

import functools
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from bastion.findings import Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.engine import scan_file


def scan(path: Path) -> tuple[list[tuple[str, Severity]], Verdict]:
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return sorted((f.rule_id, f.severity) for f in report.findings), report.targets[0].verdict


def raw(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_library_written_files_are_clean(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "w": np.ones((3, 4), np.float32),
            "empty": np.zeros((0, 5), np.int64),
            "also_empty": np.zeros((0,), np.float16),
            "flags": np.array([True, False]),
            "scalar": np.array(3.0, np.float64),
        },
        str(path),
        metadata={"format": "np", "note": "trained on public data"},
    )
    assert scan(path) == ([], Verdict.CLEAN)
    only_empty = tmp_path / "empty.safetensors"
    save_file({"e": np.zeros((0,), np.float32)}, str(only_empty))
    assert scan(only_empty) == ([], Verdict.CLEAN)


def test_sub_byte_and_new_dtypes_are_known(tmp_path: Path) -> None:
    header = {"a": entry("F4", [4], 0, 2), "b": entry("F8_E8M0", [2], 2, 4), "c": entry("F6_E2M3", [4], 4, 7)}
    assert scan(raw(tmp_path / "f4.safetensors", header, b"\0" * 7))[0] == []


def test_header_length_overflow_is_high(tmp_path: Path) -> None:
    header = {"a": entry("F32", [2], 0, 8)}
    assert scan(raw(tmp_path / "o.safetensors", header, b"\0" * 8, length=1 << 62)) == (
        [("BST-ST-001", Severity.HIGH)],
        Verdict.MALICIOUS,
    )
    assert scan(raw(tmp_path / "o2.safetensors", header, b"\0" * 8, length=10_000))[0] == [
        ("BST-ST-001", Severity.HIGH)
    ]


def test_invalid_json_and_utf8(tmp_path: Path) -> None:
    assert scan(raw(tmp_path / "j.safetensors", b'{"a": ', b"\0" * 8))[0] == [("BST-ST-002", Severity.HIGH)]
    assert scan(raw(tmp_path / "u.safetensors", b'{"\xff": 1}', b""))[0] == [("BST-ST-002", Severity.HIGH)]
    assert scan(raw(tmp_path / "n.safetensors", b'{"a": NaN}', b""))[0] == [("BST-ST-002", Severity.HIGH)]
    assert scan(raw(tmp_path / "deep.safetensors", b"{" + b'"a":[' * 100_000, b""))[0] == [
        ("BST-ST-002", Severity.HIGH)
    ]


def test_duplicate_keys_are_high(tmp_path: Path) -> None:
    first = b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    second = b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}'
    blob = b"{" + first + b", " + second + b"}"
    assert ("BST-ST-003", Severity.HIGH) in scan(raw(tmp_path / "d.safetensors", blob, b"\0" * 16))[0]


def test_unknown_dtype_is_high(tmp_path: Path) -> None:
    assert scan(raw(tmp_path / "t.safetensors", {"a": entry("OBJ", [2], 0, 8)}, b"\0" * 8))[0] == [
        ("BST-ST-004", Severity.HIGH)
    ]


def test_malformed_entries(tmp_path: Path) -> None:
    cases = [
        entry("F32", [2, 2], 0, 8),  # 16 bytes expected
        entry("F32", [-1], 0, 8),
        {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
        {"dtype": "F32", "shape": [2], "data_offsets": [0]},
        {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]},  # 12 bits: not a whole byte
    ]
    for i, bad in enumerate(cases):
        findings = scan(raw(tmp_path / f"m{i}.safetensors", {"a": bad}, b"\0" * 8))[0]
        assert ("BST-ST-005", Severity.HIGH) in findings, (bad, findings)


def test_out_of_bounds_overlap_and_gaps(tmp_path: Path) -> None:
    oob = {"a": entry("F32", [4], 0, 16)}
    assert ("BST-ST-006", Severity.HIGH) in scan(raw(tmp_path / "oob.safetensors", oob, b"\0" * 8))[0]
    overlap = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}
    assert ("BST-ST-007", Severity.HIGH) in scan(raw(tmp_path / "ov.safetensors", overlap, b"\0" * 12))[0]
    gap = {"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}
    assert scan(raw(tmp_path / "gap.safetensors", gap, b"\0" * 12)) == (
        [("BST-ST-008", Severity.MEDIUM)],
        Verdict.SUSPICIOUS,
    )


def test_trailing_pickle_is_scanned_as_its_own_content(tmp_path: Path) -> None:
    payload = b"cos\nsystem\n(S'echo bastion-test'\ntR."
    findings, verdict = scan(
        raw(tmp_path / "poly.safetensors", {"a": entry("F32", [1], 0, 4)}, b"\0" * 4 + payload)
    )
    assert ("BST-ST-008", Severity.MEDIUM) in findings
    # The appended pickle is handed to the pickle scanner as a member of its own.
    report = scan_paths([str(tmp_path / "poly.safetensors")], ScanOptions(jobs=1))
    assert any(
        f.location.members == ("<trailing bytes>",) and f.severity is Severity.CRITICAL
        for f in report.findings
    )
    assert verdict is Verdict.MALICIOUS


def test_metadata_must_be_string_map(tmp_path: Path) -> None:
    header = {"__metadata__": {"format": {"nested": 1}}, "a": entry("F32", [1], 0, 4)}
    assert scan(raw(tmp_path / "meta.safetensors", header, b"\0" * 4))[0] == [("BST-ST-009", Severity.HIGH)]
    header = {"__metadata__": ["x"], "a": entry("F32", [1], 0, 4)}
    assert scan(raw(tmp_path / "meta2.safetensors", header, b"\0" * 4))[0] == [("BST-ST-009", Severity.HIGH)]


@functools.cache
def _seed() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "seed.safetensors"
        save_file(
            {"w": np.ones((2, 3), np.float32), "b": np.zeros((3,), np.int8)}, str(path), metadata={"k": "v"}
        )
        return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_truncated_and_mutated_files(tmp_path: Path, data: st.DataObject) -> None:
    seed = _seed()
    blob = bytearray(seed[: data.draw(st.integers(0, len(seed)))])
    for _ in range(data.draw(st.integers(0, 6))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(blob))
    result = scan_file(path, "fuzz.safetensors", ScanOptions(jobs=1))
    mine = [f for f in result.findings if not f.location.members]
    assert not any("scanner error" in f.message for f in mine), [f.message for f in mine]
