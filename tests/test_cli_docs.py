"""docs/rules.md matches the catalogue, and the CI integration files say what users rely on.

docs/rules.md is generated: run `python scripts/gen_rule_docs.py` after adding or editing a rule.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from bastion.render.interface import rule_anchor
from bastion.rules import all_rules

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_rule_docs", ROOT / "scripts" / "gen_rule_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rules_doc_is_up_to_date() -> None:
    fresh = _generator().rules_markdown()
    current = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert current == fresh, "docs/rules.md is stale: run python scripts/gen_rule_docs.py"


def test_rules_doc_has_every_page_and_anchor() -> None:
    text = _generator().rules_markdown()
    for rule in all_rules():
        assert f"\n## {rule.code}: {rule.name}\n" in text
        assert f"(#{rule_anchor(rule)})" in text
        assert "### Why is this bad?" in text


def test_pre_commit_hook() -> None:
    yaml = pytest.importorskip("yaml")
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "bastion-scan"
    assert hook["entry"].startswith("bastion scan")
    assert hook["pass_filenames"] is True
    files = re.compile(hook["files"])
    for name in ("model.pkl", "w.PT", "a/b.safetensors", "m.gguf", "x.onnx", "k.keras", "d.npz", "c.joblib"):
        assert files.search(name), name
    for name in ("README.md", "setup.py", "model.pkl.txt"):
        assert not files.search(name), name


def test_github_action() -> None:
    yaml = pytest.importorskip("yaml")
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert set(action["inputs"]) >= {"paths", "fail-on", "python-version", "version"}
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert "github/codeql-action/upload-sarif@v3" in uses
    scan = next(s for s in steps if s.get("id") == "scan")
    assert "bastion scan" in scan["run"]
    assert "--format sarif" in scan["run"]
    assert "--output" in scan["run"]
    assert "${{" not in scan["run"], "inputs must reach scripts through env, not be spliced in"
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    assert "always()" in upload["if"]
    last = steps[-1]
    assert "exit" in last["run"]
    assert last["if"]
    install = next(s for s in steps if "pip install" in s.get("run", ""))
    assert "bastion-ai" in install["run"]
