"""Keras configs: Lambda layers, custom modules, safe-mode toggles, TFSMLayer, paths (nothing is loaded)."""

from __future__ import annotations

import base64
import json
import marshal
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Finding, Location, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.context import ScanContext
from bastion.scan.formats import Format
from bastion.scan.keras_config import check_keras_config
from bastion.scan.registry import scanners_for


def _lambda_code() -> str:
    # Compiled, never run: the bytecode Keras would unmarshal (harmless command).
    code = compile("lambda x: __import__('os').system('echo bastion-test') or x", "<cfg>", "eval")
    return base64.b64encode(marshal.dumps(code)).decode()


def _layer(class_name: str, config: dict[str, Any], module: str = "keras.layers") -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _model(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "seq", "layers": list(layers)},
        "registered_name": None,
        "build_config": {"input_shape": [None, 8]},
        "compile_config": {
            "optimizer": _layer("Adam", {"learning_rate": 0.001}, "keras.optimizers"),
            "loss": "mse",
        },
    }


BENIGN = _model(
    _layer("InputLayer", {"batch_shape": [None, 28, 28, 1], "dtype": "float32", "name": "input"}),
    _layer(
        "Conv2D",
        {
            "name": "conv",
            "filters": 8,
            "kernel_size": [3, 3],
            "activation": "relu",
            "kernel_initializer": _layer("GlorotUniform", {"seed": None}, "keras.initializers"),
            "dtype": {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": "float32"},
                "registered_name": None,
            },
        },
    ),
    _layer("Dense", {"name": "dense", "units": 10, "activation": "softmax"}),
)

LAMBDA = _layer(
    "Lambda",
    {
        "name": "evil",
        "function": {
            "class_name": "__lambda__",
            "config": {"code": _lambda_code(), "defaults": None, "closure": None},
        },
    },
)


def _check(obj: object) -> list[Finding]:
    ctx = ScanContext()
    assert check_keras_config(obj, Location("config.json"), ctx)
    return ctx.findings


def _rules(findings: list[Finding]) -> set[tuple[str, Severity]]:
    return {(f.rule_id, f.severity) for f in findings}


def test_benign_config_is_clean() -> None:
    assert _check(BENIGN) == []


def test_lambda_layer_is_critical_with_bytecode_evidence() -> None:
    findings = _check(_model(LAMBDA))
    (hit,) = findings
    assert (hit.rule_id, hit.severity) == ("BST-KER-001", Severity.CRITICAL)
    assert "system" in hit.evidence_map["bytecode_names"]
    assert hit.evidence_map["layer"] == "evil"


def test_legacy_tf_keras_lambda() -> None:
    legacy = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {
                    "class_name": "Lambda",
                    "config": {
                        "name": "l",
                        "function": [_lambda_code(), None, None],
                        "function_type": "lambda",
                    },
                }
            ]
        },
    }
    assert _rules(_check(legacy)) == {("BST-KER-001", Severity.CRITICAL)}


def test_custom_module_is_high() -> None:
    # CVE-2025-1550: the module is imported and the class instantiated even in safe mode.
    custom = {
        "module": "attacker_pkg.layers",
        "class_name": "Backdoor",
        "config": {},
        "registered_name": "attacker_pkg>Backdoor",
    }
    findings = _check(_model(custom))
    assert _rules(findings) == {("BST-KER-002", Severity.HIGH)}
    assert findings[0].evidence_map["module"] == "attacker_pkg.layers"


def test_function_reference_to_dangerous_module_is_critical() -> None:
    fn = {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    findings = _check(_model(_layer("Dense", {"name": "d", "units": 1, "activation": fn})))
    assert _rules(findings) == {("BST-KER-003", Severity.CRITICAL)}


def test_function_reference_to_unknown_module_is_high() -> None:
    fn = {"module": "mylib.acts", "class_name": "function", "config": "swishy", "registered_name": "swishy"}
    assert _rules(_check(_model(_layer("Dense", {"name": "d", "activation": fn})))) == {
        ("BST-KER-003", Severity.HIGH)
    }


def test_keras_get_file_gadget_is_critical() -> None:
    # CVE-2025-8747: an allowed Keras module, but a helper that downloads and writes files.
    gadget = {
        "module": "keras.utils",
        "class_name": "get_file",
        "config": {"origin": "https://example.invalid/x"},
    }
    findings = _check(_model(gadget))
    assert ("BST-KER-003", Severity.CRITICAL) in _rules(findings)


def test_enable_unsafe_deserialization_then_lambda() -> None:
    # CVE-2025-9906: the config switches safe mode off before the Lambda is rebuilt.
    toggle = {
        "module": "keras.config",
        "class_name": "function",
        "config": "enable_unsafe_deserialization",
        "registered_name": None,
    }
    findings = _check(_model(_layer("Activation", {"name": "a", "activation": toggle}), LAMBDA))
    assert _rules(findings) == {("BST-KER-004", Severity.CRITICAL), ("BST-KER-001", Severity.CRITICAL)}


def test_safe_mode_false_with_lambda_is_critical() -> None:
    obj = _model(LAMBDA)
    obj["config"]["safe_mode"] = False
    assert ("BST-KER-004", Severity.CRITICAL) in _rules(_check(obj))


def test_tfsmlayer_is_critical() -> None:
    # CVE-2026-1462: TFSMLayer loads an external SavedModel despite safe mode.
    findings = _check(
        _model(
            _layer("TFSMLayer", {"name": "t", "filepath": "/tmp/evil_savedmodel", "call_endpoint": "serve"})
        )
    )
    (hit,) = findings
    assert (hit.rule_id, hit.severity, hit.evidence_map["filepath"]) == (
        "BST-KER-005",
        Severity.CRITICAL,
        "/tmp/evil_savedmodel",
    )


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "../../secret.txt", "https://example.invalid/vocab.txt", "C:\\data\\v.txt"]
)
def test_path_like_values_are_medium(value: str) -> None:
    findings = _check(_model(_layer("TextVectorization", {"name": "tv", "vocabulary": value})))
    assert _rules(findings) == {("BST-KER-006", Severity.MEDIUM)}


def test_non_keras_json_is_ignored() -> None:
    assert not check_keras_config(
        {"model_type": "bert", "architectures": ["BertModel"]}, Location("c"), ScanContext()
    )


def test_deep_nesting_does_not_recurse() -> None:
    inner: dict[str, Any] = LAMBDA
    for _ in range(50_000):
        inner = {"wrapped": [inner]}
    findings = _check(_model(inner))
    assert _rules(findings) == {("BST-KER-001", Severity.CRITICAL)}


def _scan(path: Path) -> tuple[list[Finding], Verdict]:
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    verdicts = {t.verdict for t in report.targets}
    worst = next(
        (v for v in (Verdict.MALICIOUS, Verdict.ERROR, Verdict.SUSPICIOUS) if v in verdicts), Verdict.CLEAN
    )
    return report.findings, worst


def test_config_json_through_engine(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(_model(LAMBDA)))
    (tmp_path / "good.json").write_text(json.dumps(BENIGN))
    bad, verdict = _scan(tmp_path / "bad.json")
    assert [f.rule_id for f in bad] == ["BST-KER-001"]
    assert verdict == Verdict.MALICIOUS
    good, verdict = _scan(tmp_path / "good.json")
    assert good == []
    assert verdict == Verdict.CLEAN


def test_truncated_keras_json_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_model(LAMBDA))[:200])
    findings, verdict = _scan(tmp_path / "config.json")
    assert [f.rule_id for f in findings] == ["BST-SCAN-001"]
    assert verdict == Verdict.ERROR


def _keras_archive(path: Path, config: dict[str, Any]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "metadata.json", json.dumps({"keras_version": "3.8.0", "date_saved": "2026-01-01@00:00:00"})
        )
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")


@pytest.mark.skipif(not scanners_for(Format.ZIP), reason="the zip scanner has not landed yet")
def test_keras_archive_lambda_through_zip_routing(tmp_path: Path) -> None:
    _keras_archive(tmp_path / "evil.keras", _model(LAMBDA))
    _keras_archive(tmp_path / "good.keras", BENIGN)
    findings, verdict = _scan(tmp_path / "evil.keras")
    assert "BST-KER-001" in {f.rule_id for f in findings}
    assert verdict == Verdict.MALICIOUS
    findings, _ = _scan(tmp_path / "good.keras")
    assert not [f for f in findings if f.severity >= Severity.MEDIUM]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["class_name", "config", "module", "function", "registered_name", "safe_mode", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_fuzz_walker_only_reports(obj: object) -> None:
    ctx = ScanContext()
    check_keras_config(obj, Location("f"), ctx, assume_keras=True)
    assert all(f.rule_id.startswith("BST-KER-") for f in ctx.findings)
