"""Hugging Face folders: auto_map remote code, trust_remote_code, and dangerous calls in shipped Python."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Finding, Location, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.context import ScanContext, Source
from bastion.scan.engine import dispatch

EVIL_MODELING = """\
import os
import subprocess as sp
from transformers import PreTrainedModel

os.system("echo bastion-test")


class EvilModel(PreTrainedModel):
    def forward(self, x):
        sp.run(["echo", "bastion-test"])
        return eval("x")
"""
BENIGN_MODELING = """\
import math
import os

import torch
from torch import nn
from transformers import PreTrainedModel


class TinyModel(PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(4, 4)
        self.cache = os.path.join("a", "b")

    def forward(self, x):
        return torch.relu(self.proj(x)) * math.sqrt(2)
"""


def _scan(path: Path) -> list[Finding]:
    return scan_paths([str(path)], ScanOptions(jobs=1)).findings


def _by_file(findings: list[Finding]) -> dict[str, set[tuple[str, Severity]]]:
    out: dict[str, set[tuple[str, Severity]]] = {}
    for f in findings:
        out.setdefault(Path(f.location.path).name, set()).add((f.rule_id, f.severity))
    return out


def test_auto_map_with_malicious_modeling_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "architectures": ["EvilModel"],
                "auto_map": {"AutoModel": "modeling_evil.EvilModel"},
            }
        )
    )
    (tmp_path / "modeling_evil.py").write_text(EVIL_MODELING)
    findings = _scan(tmp_path)
    files = _by_file(findings)
    assert files["config.json"] == {("BST-HF-001", Severity.HIGH)}
    assert files["modeling_evil.py"] == {("BST-HF-004", Severity.HIGH)}
    calls = {
        f.evidence_map.get("call") or f.evidence_map.get("import")
        for f in findings
        if f.rule_id == "BST-HF-004"
    }
    assert {"os.system", "subprocess.run", "eval", "subprocess"} <= calls
    auto = next(f for f in findings if f.rule_id == "BST-HF-001")
    assert auto.evidence_map["file"] == "modeling_evil.py"


def test_auto_map_referenced_file_with_plain_name_is_remote_code(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "x", "auto_map": {"AutoModel": "custom.Net"}})
    )
    # A docstring first: a tiny file starting with `import` also parses as a protocol-0 pickle prefix.
    (tmp_path / "custom.py").write_text('"""Net."""\nimport os\nos.popen("echo bastion-test")\n')
    (tmp_path / "helper.py").write_text('"""Helper."""\nimport os\nos.popen("echo bastion-test")\n')
    files = _by_file(_scan(tmp_path))
    assert files["custom.py"] == {("BST-HF-004", Severity.HIGH)}
    assert files["helper.py"] == {("BST-HF-004", Severity.MEDIUM)}


def test_missing_code_file_and_other_repo(tmp_path: Path) -> None:
    cfg = {
        "model_type": "x",
        "auto_map": {"AutoModel": "modeling_gone.M", "AutoTokenizer": ["other/repo--tok.T", None]},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    findings = _scan(tmp_path / "config.json")
    assert sorted((f.rule_id, f.evidence_map["reference"]) for f in findings) == [
        ("BST-HF-001", "modeling_gone.M"),
        ("BST-HF-001", "other/repo--tok.T"),
        ("BST-HF-003", "modeling_gone.M"),
    ]


def test_custom_pipeline_impl_is_remote_code(tmp_path: Path) -> None:
    cfg = {"model_type": "x", "custom_pipelines": {"text-classification": {"impl": "pipe.MyPipeline"}}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "pipe.py").write_text('"""Pipeline."""\nimport subprocess\n')
    files = _by_file(_scan(tmp_path))
    assert files["config.json"] == {("BST-HF-001", Severity.HIGH)}
    assert files["pipe.py"] == {("BST-HF-004", Severity.HIGH)}


def test_trust_remote_code_in_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "X", "kwargs": {"trust_remote_code": True}})
    )
    findings = _scan(tmp_path)
    assert [(f.rule_id, f.severity) for f in findings] == [("BST-HF-002", Severity.HIGH)]


def test_benign_hf_folder_is_clean(tmp_path: Path) -> None:
    cfg = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_size": 8,
        "transformers_version": "4.50.0",
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    (tmp_path / "modeling_tiny.py").write_text(BENIGN_MODELING)
    report = scan_paths([str(tmp_path)], ScanOptions(jobs=1))
    assert [(f.rule_id, f.severity) for f in report.findings] == [("BST-HF-006", Severity.INFO)]
    assert all(t.verdict == Verdict.CLEAN for t in report.targets)


def test_syntax_error_is_low(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert [(f.rule_id, f.severity) for f in _scan(tmp_path / "broken.py")] == [("BST-HF-005", Severity.LOW)]


def test_getattr_on_os_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text(
        '"""X."""\nimport os as o\nfrom subprocess import Popen as P\n'
        'getattr(o, "system")("echo")\nP(["echo"])\n'
    )
    calls = {f.evidence_map.get("call") or f.evidence_map.get("import") for f in _scan(tmp_path / "x.py")}
    assert calls == {"getattr(os, ...)", "subprocess.Popen", "subprocess"}


def test_exec_of_decoded_payload_is_high_anywhere(tmp_path: Path) -> None:
    (tmp_path / "setup_utils.py").write_text(
        '"""Utils."""\nimport base64 as b\nexec(b.b64decode("cHJpbnQoJ2Jhc3Rpb24tdGVzdCcp"))\n'
    )
    (hit,) = _scan(tmp_path / "setup_utils.py")
    assert (hit.rule_id, hit.severity) == ("BST-HF-004", Severity.HIGH)
    assert hit.evidence_map["decodes_with"] == "base64.b64decode"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_python_and_json(text: str) -> None:
    for name in ("modeling_x.py", "config.json"):
        ctx = ScanContext(dispatch=dispatch)
        dispatch(Source.from_bytes(text.encode("utf-8", "surrogatepass"), name), Location("fuzz"), ctx)
        assert not [f for f in ctx.findings if "scanner error" in f.message]


def test_tokenizer_chat_template_ssti_is_critical(tmp_path: Path) -> None:
    """transformers renders tokenizer_config.json chat templates: a sandbox escape there runs code."""
    evil = "{{ cycler.__init__.__globals__.os.popen('echo bastion-test').read() }}"
    ordinary = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "X",
                "chat_template": [
                    {"name": "default", "template": ordinary},
                    {"name": "tool_use", "template": evil},
                ],
            }
        )
    )
    report = scan_paths([str(folder)], ScanOptions(jobs=1))
    critical = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert critical
    assert {f.rule_id[:7] for f in critical} == {"BST-TPL"}


def test_tokenizer_ordinary_chat_template_is_clean(tmp_path: Path) -> None:
    ordinary = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"tokenizer_class": "X", "chat_template": ordinary}))
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    assert [f for f in report.findings if f.severity >= Severity.MEDIUM] == []
