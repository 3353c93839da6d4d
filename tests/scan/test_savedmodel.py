"""SavedModel / GraphDef scanning with hand-built protobufs (no TensorFlow needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from protobuf_encode import lfield, varint

from bastion.findings import Finding, Location, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.context import ScanContext, Source
from bastion.scan.engine import dispatch
from bastion.scan.savedmodel import scan_savedmodel


def func_attr(name: str) -> bytes:
    return lfield(10, lfield(1, name))  # AttrValue.func = NameAttrList(name)


def string_attr(value: bytes) -> bytes:
    return lfield(2, value)  # AttrValue.s


def const_strings(*values: bytes) -> bytes:
    return lfield(8, b"".join(lfield(8, v) for v in values))  # AttrValue.tensor = TensorProto(string_val)


def node(name: str, op: str, **attrs: bytes) -> bytes:
    body = lfield(1, name) + lfield(2, op)
    for key, value in attrs.items():
        body += lfield(5, lfield(1, key) + lfield(2, value))
    return body


def function(name: str, *nodes: bytes) -> bytes:
    return lfield(1, lfield(1, name)) + b"".join(lfield(3, n) for n in nodes)


def graph(nodes: Sequence[bytes], functions: Sequence[bytes] = ()) -> bytes:
    body = b"".join(lfield(1, n) for n in nodes)
    if functions:
        body += lfield(2, b"".join(lfield(1, f) for f in functions))
    return body


def saved_model(graph_def: bytes, saver: tuple[str, str, str] | None = None) -> bytes:
    meta = lfield(2, graph_def)
    if saver:
        meta += lfield(3, b"".join(lfield(i + 1, s) for i, s in enumerate(saver)))
    return varint(1 << 3) + varint(1) + lfield(2, meta)


def _benign_graph(extra_nodes: Sequence[bytes] = (), extra_functions: Sequence[bytes] = ()) -> bytes:
    return graph(
        [
            node("serving_default_x", "Placeholder"),
            node(
                "StatefulPartitionedCall",
                "StatefulPartitionedCall",
                f=func_attr("__inference_signature_wrapper_10"),
            ),
            node("saver_filename", "Placeholder"),
            node(
                "StatefulPartitionedCall_1",
                "StatefulPartitionedCall",
                f=func_attr("__inference__traced_save_45"),
            ),
            node(
                "StatefulPartitionedCall_2",
                "StatefulPartitionedCall",
                f=func_attr("__inference__traced_restore_60"),
            ),
            *extra_nodes,
        ],
        [
            function("__inference_signature_wrapper_10", node("MatMul", "MatMul"), node("Relu", "Relu")),
            function(
                "__inference__traced_save_45",
                node("StringJoin", "StringJoin"),
                node("ShardedFilename", "ShardedFilename"),
                node("SaveV2", "SaveV2"),
                node("MergeV2Checkpoints", "MergeV2Checkpoints"),
            ),
            function(
                "__inference__traced_restore_60",
                node("RestoreV2", "RestoreV2"),
                node("Assign", "AssignVariableOp"),
            ),
            *extra_functions,
        ],
    )


SAVER = ("saver_filename:0", "StatefulPartitionedCall_1:0", "StatefulPartitionedCall_2")


def _scan(tmp_path: Path, data: bytes, name: str = "saved_model.pb") -> tuple[list[Finding], Verdict]:
    path = tmp_path / name
    path.write_bytes(data)
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return report.findings, report.targets[0].verdict


def test_benign_savedmodel_with_standard_saver_is_clean(tmp_path: Path) -> None:
    findings, verdict = _scan(tmp_path, saved_model(_benign_graph(), SAVER))
    assert verdict == Verdict.CLEAN
    assert not [f for f in findings if f.severity >= Severity.MEDIUM]


def test_tf1_saver_scope_is_allowed(tmp_path: Path) -> None:
    g = graph([node("x", "Placeholder"), node("save/SaveV2", "SaveV2"), node("save/RestoreV2", "RestoreV2")])
    findings, verdict = _scan(
        tmp_path, saved_model(g, ("save/Const:0", "save/control_dependency:0", "save/restore_all"))
    )
    assert verdict == Verdict.CLEAN, findings


def test_read_and_write_file_at_top_level(tmp_path: Path) -> None:
    g = _benign_graph([node("steal", "ReadFile"), node("plant", "WriteFile")])
    findings, verdict = _scan(tmp_path, saved_model(g, SAVER))
    hits = {(f.rule_id, f.severity, f.evidence_map["op"]) for f in findings if f.rule_id == "BST-TF-002"}
    assert hits == {
        ("BST-TF-002", Severity.CRITICAL, "ReadFile"),
        ("BST-TF-002", Severity.CRITICAL, "WriteFile"),
    }
    assert verdict == Verdict.MALICIOUS


def test_write_file_hidden_in_function_library(tmp_path: Path) -> None:
    hidden = function("__inference_while_body_99", node("w", "WriteFile"))
    findings, _ = _scan(tmp_path, saved_model(_benign_graph(extra_functions=[hidden]), SAVER))
    (hit,) = [f for f in findings if f.rule_id == "BST-TF-002"]
    assert hit.severity == Severity.CRITICAL
    assert hit.evidence_map["in"] == "function __inference_while_body_99"
    assert hit.location.offset is not None


def test_pyfunc_is_critical(tmp_path: Path) -> None:
    findings, _ = _scan(tmp_path, saved_model(_benign_graph([node("cb", "EagerPyFunc")]), SAVER))
    assert [(f.rule_id, f.severity) for f in findings if f.rule_id == "BST-TF-001"] == [
        ("BST-TF-001", Severity.CRITICAL)
    ]


def test_savev2_in_serving_function_is_flagged(tmp_path: Path) -> None:
    bad = function("__inference_signature_wrapper_77", node("SaveV2", "SaveV2"))
    findings, verdict = _scan(tmp_path, saved_model(_benign_graph(extra_functions=[bad]), SAVER))
    (hit,) = [f for f in findings if f.rule_id == "BST-TF-003"]
    assert hit.severity == Severity.HIGH
    assert verdict == Verdict.MALICIOUS


def test_print_to_file_and_frozen_graphdef(tmp_path: Path) -> None:
    g = graph([node("p", "PrintV2", output_stream=string_attr(b"file:///tmp/x")), node("m", "MatMul")])
    findings, _ = _scan(tmp_path, g, name="frozen.pb")
    assert [f.rule_id for f in findings if f.severity >= Severity.MEDIUM] == ["BST-TF-002"]


def test_graph_serialized_for_dataset_from_graph(tmp_path: Path) -> None:
    inner = graph([node("w", "WriteFile")])
    g = graph([node("blob", "Const", value=const_strings(inner)), node("ds", "DatasetFromGraph")])
    findings, _ = _scan(tmp_path, saved_model(g))
    (hit,) = [f for f in findings if f.rule_id == "BST-TF-002"]
    assert "serialized" in hit.evidence_map["in"]


def test_uncommon_ops_are_info_only(tmp_path: Path) -> None:
    findings, verdict = _scan(tmp_path, saved_model(_benign_graph([node("t", "LookupTableImportV2")]), SAVER))
    (info,) = [f for f in findings if f.rule_id == "BST-TF-004"]
    assert info.severity == Severity.INFO
    assert "LookupTableImportV2" in info.evidence_map["ops"]
    assert verdict == Verdict.CLEAN


def test_truncated_file_is_incomplete(tmp_path: Path) -> None:
    data = saved_model(_benign_graph(), SAVER)
    findings, verdict = _scan(tmp_path, data[:-7])
    assert verdict == Verdict.ERROR
    assert [f.rule_id for f in findings] == ["BST-SCAN-001"]


LAMBDA_LAYER = json.dumps(
    {"class_name": "Lambda", "config": {"name": "evil", "function": ["4wAAAA==", None, None]}, "name": "evil"}
)
MODEL_META = json.dumps({"class_name": "Sequential", "config": {"layers": [json.loads(LAMBDA_LAYER)]}})


def test_keras_metadata_pb_lambda_reported_once(tmp_path: Path) -> None:
    objects = [lfield(3, "root") + lfield(5, MODEL_META), lfield(3, "root.layer-0") + lfield(5, LAMBDA_LAYER)]
    findings, verdict = _scan(tmp_path, b"".join(lfield(1, o) for o in objects), name="keras_metadata.pb")
    assert [(f.rule_id, f.severity) for f in findings] == [("BST-KER-001", Severity.CRITICAL)]
    assert verdict == Verdict.MALICIOUS


def test_user_object_metadata_in_saved_model(tmp_path: Path) -> None:
    saved_object = lfield(4, lfield(1, "_tf_keras_layer") + lfield(3, LAMBDA_LAYER))
    meta = lfield(2, _benign_graph()) + lfield(7, lfield(1, saved_object))
    data = varint(1 << 3) + varint(1) + lfield(2, meta)
    findings, _ = _scan(tmp_path, data)
    assert [f.rule_id for f in findings if f.severity >= Severity.MEDIUM] == ["BST-KER-001"]


def test_asset_path_escape(tmp_path: Path) -> None:
    meta = (
        lfield(2, _benign_graph())
        + lfield(6, lfield(2, "../../etc/passwd"))
        + lfield(6, lfield(2, "vocab.txt"))
    )
    findings, _ = _scan(tmp_path, varint(1 << 3) + varint(1) + lfield(2, meta))
    hits = [
        (f.rule_id, f.severity, f.evidence_map["asset"]) for f in findings if f.severity >= Severity.MEDIUM
    ]
    assert hits == [("BST-TF-005", Severity.HIGH, "../../etc/passwd")]


def test_graph_def_split_over_two_occurrences_is_merged(tmp_path: Path) -> None:
    # Protobuf merges repeated occurrences of a singular message: both halves are loaded.
    hidden = graph([node("plant", "WriteFile")])
    meta = lfield(2, hidden) + lfield(2, _benign_graph())
    findings, _ = _scan(tmp_path, varint(1 << 3) + varint(1) + lfield(2, meta))
    assert [f.evidence_map["op"] for f in findings if f.rule_id == "BST-TF-002"] == ["WriteFile"]


def test_saved_model_with_bogus_first_field_is_still_a_saved_model(tmp_path: Path) -> None:
    bogus = lfield(1, b"\x0a\x00")  # the loader skips a mismatched field 1; a GraphDef reading would not
    data = bogus + lfield(2, lfield(2, graph([node("cb", "PyFunc")])))
    findings, _ = _scan(tmp_path, data)
    assert [f.rule_id for f in findings if f.severity >= Severity.MEDIUM] == ["BST-TF-001"]


def test_fingerprint_pb_is_ignored(tmp_path: Path) -> None:
    data = (
        varint(1 << 3)
        + varint(123456789)
        + varint(2 << 3)
        + varint(42)
        + lfield(6, varint(1 << 3) + varint(1))
    )
    assert _scan(tmp_path, data, name="fingerprint.pb") == ([], Verdict.CLEAN)


PBTXT = b"""saved_model_schema_version: 1
meta_graphs {
  graph_def {
    node { name: "x" op: "Placeholder" }
    node { name: "save/SaveV2" op: "SaveV2" }
    library {
      function {
        signature { name: "__inference__traced_save_45" }
        node_def { name: "SaveV2" op: "SaveV2" }
      }
      function {
        signature { name: "__inference_serve_9" }
        node_def { name: "w" op: "WriteFile" }
        node_def { name: "s" op: "SaveV2" }
      }
    }
  }
}
"""


def test_text_format_savedmodel() -> None:
    ctx = ScanContext(dispatch=dispatch)
    scan_savedmodel(Source.from_bytes(PBTXT, "saved_model.pbtxt"), Location("saved_model.pbtxt"), ctx)
    hits = sorted((f.rule_id, f.evidence_map["op"], f.evidence_map["in"]) for f in ctx.findings)
    assert hits == [
        ("BST-TF-002", "WriteFile", "function __inference_serve_9"),
        ("BST-TF-003", "SaveV2", "function __inference_serve_9"),
    ]


def test_text_format_savedmodel_through_engine(tmp_path: Path) -> None:
    findings, verdict = _scan(tmp_path, PBTXT, name="saved_model.pbtxt")
    assert {f.rule_id for f in findings} == {"BST-TF-002", "BST-TF-003"}
    assert verdict == Verdict.MALICIOUS


def test_text_format_graph_named_pb(tmp_path: Path) -> None:
    findings, verdict = _scan(tmp_path, b'node {\n  name: "cb"\n  op: "PyFunc"\n}\n', name="frozen.pb")
    assert [(f.rule_id, f.severity) for f in findings] == [("BST-TF-001", Severity.CRITICAL)]
    assert verdict == Verdict.MALICIOUS


SAMPLE = saved_model(_benign_graph([node("plant", "WriteFile")]), SAVER)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_mutated_savedmodel(data: st.DataObject) -> None:
    blob = bytearray(SAMPLE[: data.draw(st.integers(0, len(SAMPLE)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    ctx = ScanContext(dispatch=dispatch)
    dispatch(Source.from_bytes(bytes(blob), "saved_model.pb"), Location("fuzz"), ctx)
    assert not [f for f in ctx.findings if "scanner error" in f.message]
