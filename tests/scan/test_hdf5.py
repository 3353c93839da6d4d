"""Legacy Keras .h5 files: configs in attributes; weights are never read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Finding, Location, Severity, Verdict
from bastion.scan import ScanOptions, hdf5_scan, scan_paths
from bastion.scan.context import ScanContext, Source
from bastion.scan.engine import dispatch

LAMBDA_MODEL = {
    "class_name": "Sequential",
    "config": {
        "name": "seq",
        "layers": [
            {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "name": "in"}},
            {
                "class_name": "Lambda",
                "config": {"name": "evil", "function": ["4wAAAA==", None, None], "function_type": "lambda"},
            },
        ],
    },
}
BENIGN_MODEL = {
    "class_name": "Sequential",
    "config": {
        "name": "seq",
        "layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "relu"}}],
    },
}


def _write_keras_h5(path: Path, config: Mapping[str, object]) -> None:
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["model_config"] = json.dumps(config).encode()
        h5.attrs["training_config"] = json.dumps(
            {"loss": "mse", "optimizer_config": {"class_name": "Adam", "config": {}}}
        )
        weights = h5.create_group("model_weights/dense")
        weights.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        weights.create_dataset("kernel", data=np.ones((4, 2), np.float32))


def _scan(path: Path) -> tuple[list[Finding], Verdict]:
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return report.findings, report.targets[0].verdict


def test_lambda_in_model_config_is_critical(tmp_path: Path) -> None:
    # CVE-2025-9905: .h5 loading ignores safe_mode, so the Lambda runs.
    _write_keras_h5(tmp_path / "m.h5", LAMBDA_MODEL)
    findings, verdict = _scan(tmp_path / "m.h5")
    (hit,) = findings
    assert (hit.rule_id, hit.severity) == ("BST-KER-001", Severity.CRITICAL)
    assert "model_config" in hit.evidence_map["container"]
    assert verdict == Verdict.MALICIOUS


def test_benign_keras_h5_is_clean(tmp_path: Path) -> None:
    _write_keras_h5(tmp_path / "m.h5", BENIGN_MODEL)
    findings, verdict = _scan(tmp_path / "m.h5")
    assert findings == []
    assert verdict == Verdict.CLEAN


def test_keras_free_hdf5_is_clean(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5.create_dataset("x", data=np.arange(100.0))
        h5.create_group("g").attrs["note"] = "plain data {not json"
        h5["g"].attrs["meta"] = json.dumps({"rows": 100})
    findings, verdict = _scan(tmp_path / "data.h5")
    assert findings == []
    assert verdict == Verdict.CLEAN


def test_keras_config_in_nested_attribute(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "n.h5", "w") as h5:
        h5.create_group("a/b").attrs["layer_config"] = json.dumps(
            {"module": "evil_pkg", "class_name": "X", "config": {}}
        )
    findings, _ = _scan(tmp_path / "n.h5")
    assert [(f.rule_id, f.evidence_map["container"]) for f in findings] == [
        ("BST-KER-002", "/a/b/@layer_config")
    ]


def test_external_links_are_not_followed(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_group("g").attrs["cfg"] = json.dumps(LAMBDA_MODEL)
    with h5py.File(tmp_path / "main.h5", "w") as h5:
        h5["link"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/g")
    findings, _ = _scan(tmp_path / "main.h5")
    assert findings == []


def test_hard_link_cycle_terminates(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "loop.h5", "w") as h5:
        group = h5.create_group("a")
        group["self"] = group
        h5["b"] = group
        group.attrs["cfg"] = json.dumps(LAMBDA_MODEL)
    findings, _ = _scan(tmp_path / "loop.h5")
    assert [f.rule_id for f in findings] == ["BST-KER-001"]


def test_object_cap_fails_closed_only_for_keras_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hdf5_scan, "_MAX_OBJECTS", 3)
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        for i in range(10):
            h5.create_dataset(f"d{i}", data=np.arange(3))
    _write_keras_h5(tmp_path / "model.h5", BENIGN_MODEL)
    with h5py.File(tmp_path / "model.h5", "a") as h5:
        for i in range(10):
            h5.create_group(f"extra{i}")
    assert _scan(tmp_path / "data.h5") == ([], Verdict.CLEAN)
    findings, verdict = _scan(tmp_path / "model.h5")
    assert [f.rule_id for f in findings] == ["BST-SCAN-001"]
    assert verdict == Verdict.ERROR


def test_corrupt_hdf5_is_incomplete(tmp_path: Path) -> None:
    _write_keras_h5(tmp_path / "m.h5", BENIGN_MODEL)
    data = (tmp_path / "m.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:600])
    findings, verdict = _scan(tmp_path / "cut.h5")
    assert verdict == Verdict.ERROR
    assert {f.rule_id for f in findings} == {"BST-SCAN-001"}


def test_superblock_address_beyond_any_offset_is_malformed() -> None:
    # Found by the fuzz test below: h5py's file-object driver raised OverflowError for an end-of-file
    # address past what a C ssize_t holds, which the scan reported as its own failure.
    import io

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.attrs["model_config"] = json.dumps(LAMBDA_MODEL)
    blob = bytearray(buf.getvalue()[:5000])
    blob[48] = 0
    ctx = ScanContext(dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(blob), "m.h5"), Location("cut"), ctx)
    reasons = [dict(f.evidence).get("reason", "") for f in ctx.findings]
    assert reasons
    assert all("not a readable HDF5 file" in str(r) for r in reasons), reasons


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fuzz_mutated_hdf5(data: st.DataObject) -> None:
    import io

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.attrs["model_config"] = json.dumps(LAMBDA_MODEL)
    blob = bytearray(buf.getvalue())
    blob = blob[: data.draw(st.integers(9, len(blob)))]
    for _ in range(data.draw(st.integers(0, 4))):
        blob[data.draw(st.integers(8, len(blob) - 1))] = data.draw(st.integers(0, 255))
    ctx = ScanContext(dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(blob), "m.h5"), Location("fuzz"), ctx)
    assert not [f for f in ctx.findings if "scanner error" in f.message]
