"""ONNX scanning: external-data containment, custom domains, local functions (samples from onnx.helper)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from protobuf_encode import lfield

from bastion.findings import Finding, Location, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.context import ScanContext, Source
from bastion.scan.engine import dispatch


def _mlp(nodes: list[onnx.NodeProto] | None = None, **kwargs: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    b = numpy_helper.from_array(np.zeros((2,), np.float32), "B")
    body = nodes or [helper.make_node("Gemm", ["X", "W", "B"], ["H"]), helper.make_node("Relu", ["H"], ["Y"])]
    return helper.make_model(helper.make_graph(body, "mlp", [x], [y], [w, b]), **kwargs)


def _with_external(tmp_path: Path, location: str = "weights.data") -> onnx.ModelProto:
    model = _mlp()
    onnx.save_model(
        model, tmp_path / "tmp.onnx", save_as_external_data=True, location="weights.data", size_threshold=0
    )
    (tmp_path / "tmp.onnx").unlink()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return model


def _scan(path: Path) -> tuple[list[Finding], Verdict]:
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return report.findings, report.targets[0].verdict


def _medium_or_above(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity >= Severity.MEDIUM]


def test_benign_mlp_is_clean(tmp_path: Path) -> None:
    onnx.save(_mlp(), tmp_path / "mlp.onnx")
    findings, verdict = _scan(tmp_path / "mlp.onnx")
    assert findings == []
    assert verdict == Verdict.CLEAN


def test_benign_mlp_with_external_data_is_clean(tmp_path: Path) -> None:
    onnx.save_model(
        _mlp(), tmp_path / "mlp.onnx", save_as_external_data=True, location="mlp.data", size_threshold=0
    )
    assert (tmp_path / "mlp.data").is_file()
    findings, verdict = _scan(tmp_path / "mlp.onnx")
    assert findings == []
    assert verdict == Verdict.CLEAN


@pytest.mark.parametrize(
    "location", ["../../etc/passwd", "data/../../../etc/passwd", "/etc/passwd", "C:\\Windows\\win.ini"]
)
def test_escaping_locations_are_critical(tmp_path: Path, location: str) -> None:
    onnx.save(_with_external(tmp_path, location), tmp_path / "bad.onnx")
    findings, verdict = _scan(tmp_path / "bad.onnx")
    assert {f.rule_id for f in findings} == {"BST-ONNX-001"}
    assert all(f.severity == Severity.CRITICAL and f.evidence_map["location"] == location for f in findings)
    assert verdict == Verdict.MALICIOUS


def test_symlinked_external_data(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"\0" * 64)
    (model_dir / "weights.data").symlink_to(secret)
    onnx.save(_with_external(tmp_path), model_dir / "model.onnx")
    findings, verdict = _scan(model_dir / "model.onnx")
    assert {(f.rule_id, f.severity) for f in findings} == {("BST-ONNX-002", Severity.HIGH)}
    assert "symbolic link" in findings[0].evidence_map["reason"]
    assert verdict == Verdict.MALICIOUS


def test_symlinked_parent_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.data").write_bytes(b"\0" * 64)
    (model_dir / "sub").symlink_to(tmp_path / "outside")
    onnx.save(_with_external(tmp_path, "sub/w.data"), model_dir / "model.onnx")
    findings, _ = _scan(model_dir / "model.onnx")
    assert {f.rule_id for f in findings} == {"BST-ONNX-002"}


def test_hardlinked_external_data(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"\0" * 64)
    os.link(tmp_path / "secret.txt", model_dir / "weights.data")
    onnx.save(_with_external(tmp_path), model_dir / "model.onnx")
    findings, _ = _scan(model_dir / "model.onnx")
    assert {(f.rule_id, f.severity) for f in findings} == {("BST-ONNX-002", Severity.HIGH)}
    assert "hard link" in findings[0].evidence_map["reason"]


def test_missing_external_data_is_low(tmp_path: Path) -> None:
    onnx.save(_with_external(tmp_path, "absent.data"), tmp_path / "m.onnx")
    findings, verdict = _scan(tmp_path / "m.onnx")
    assert {(f.rule_id, f.severity) for f in findings} == {("BST-ONNX-005", Severity.LOW)}
    assert verdict == Verdict.CLEAN


def test_custom_domain_is_medium(tmp_path: Path) -> None:
    nodes = [helper.make_node("Run", ["X"], ["Y"], domain="evil.ops")]
    model = _mlp(nodes, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)])
    onnx.save(model, tmp_path / "c.onnx")
    findings, verdict = _scan(tmp_path / "c.onnx")
    (hit,) = findings
    assert (hit.rule_id, hit.severity, hit.evidence_map["domain"]) == (
        "BST-ONNX-003",
        Severity.MEDIUM,
        "evil.ops",
    )
    assert verdict == Verdict.SUSPICIOUS


def test_local_function_is_info_not_custom_op(tmp_path: Path) -> None:
    fn = helper.make_function(
        "local.fns",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [helper.make_node("Twice", ["X"], ["Y"], domain="local.fns")]
    model = _mlp(
        nodes,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fns", 1)],
        functions=[fn],
    )
    onnx.save(model, tmp_path / "f.onnx")
    findings, verdict = _scan(tmp_path / "f.onnx")
    assert [(f.rule_id, f.severity) for f in findings] == [("BST-ONNX-004", Severity.INFO)]
    assert verdict == Verdict.CLEAN


def test_external_data_inside_subgraph_attribute(tmp_path: Path) -> None:
    tensor = numpy_helper.from_array(np.ones((2,), np.float32), "C")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../root/.ssh/id_rsa"
    tensor.ClearField("raw_data")
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["Y"], value=tensor)],
        "then",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
    )
    nodes = [helper.make_node("If", ["X"], ["Y"], then_branch=then, else_branch=then)]
    onnx.save(_mlp(nodes), tmp_path / "s.onnx")
    findings, _ = _scan(tmp_path / "s.onnx")
    assert {f.rule_id for f in findings} == {"BST-ONNX-001"}


def test_reordered_fields_are_still_onnx(tmp_path: Path) -> None:
    # Protobuf accepts fields in any order, so a model whose graph comes first still loads.
    model = _with_external(tmp_path, "/etc/passwd")
    graph = model.graph.SerializeToString()
    model.ClearField("graph")
    (tmp_path / "r.onnx").write_bytes(lfield(7, graph) + model.SerializeToString())  # 7: ModelProto.graph
    findings, verdict = _scan(tmp_path / "r.onnx")
    assert {f.rule_id for f in findings} == {"BST-ONNX-001"}
    assert verdict == Verdict.MALICIOUS


SAMPLE = _mlp().SerializeToString()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_mutated_onnx(data: st.DataObject) -> None:
    blob = bytearray(SAMPLE[: data.draw(st.integers(1, len(SAMPLE)))])
    for _ in range(data.draw(st.integers(0, 4))):
        blob[data.draw(st.integers(1, len(blob) - 1 if len(blob) > 1 else 1)) % len(blob)] = data.draw(
            st.integers(0, 255)
        )
    ctx = ScanContext(dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(blob), "fuzz.onnx"), Location("fuzz"), ctx)
    assert not [f for f in ctx.findings if "scanner error" in f.message]
