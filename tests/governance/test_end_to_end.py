"""The whole governance story through the CLI, as issue 4 asks for it.

Fingerprint data, register a model trained on it, sign it, gate it (pass), tamper with one weight file
(verify fails, the gate blocks, the event log records both), revoke it, and read the whole history.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from governance_builders import make_dataset, make_model

from bastion.cli.main import main

POLICY = """\
version: 1
name: production
rules:
  - id: scanned-clean
    require: scan.present && scan.counts.critical == 0 && scan.counts.high == 0
    severity: critical
  - id: signed-by-release-key
    require: signature.verified && signature.signer == "{signer}"
    severity: critical
  - id: artifact-intact
    require: integrity.checked && integrity.ok
    severity: critical
  - id: trained-on-fingerprinted-data
    require: datasets_count > 0 && datasets.all(d, d.signed)
    severity: high
  - id: not-blocked
    require: "!(model.state in ['revoked', 'quarantined'])"
    severity: critical
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_register_sign_gate_tamper_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "store.db")
    data_key = tmp_path / "data-key.pem"
    assert _run(capsys, "data", "keygen", str(data_key))[0] == 0
    _, manifest = make_dataset(tmp_path / "data", sign_key=data_key)
    model = make_model(tmp_path / "model")

    code, out, _ = _run(
        capsys,
        "registry",
        "add",
        "fraud",
        str(model),
        "--data",
        str(manifest),
        "--db",
        db,
        "--meta",
        "license=apache-2.0",
        "--format",
        "json",
    )
    assert code == 0
    registered = json.loads(out)
    assert registered["ref"] == "fraud@1"

    key = tmp_path / "release.pem"
    assert _run(capsys, "registry", "keygen", str(key))[0] == 0
    code, out, _ = _run(
        capsys, "registry", "sign", "fraud@1", "--key", str(key), "--db", db, "--format", "json"
    )
    assert code == 0
    signer = json.loads(out)["signature"]["signer"]
    assert signer.startswith("sha256:")

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(signer=signer), "utf-8")
    code, out, _ = _run(capsys, "gate", "fraud@1", "--policy", str(policy), "--db", db, "--format", "json")
    assert code == 0, out
    assert json.loads(out)["passed"] is True

    code, out, _ = _run(capsys, "verify", "fraud@1", "--db", db)
    assert code == 0
    assert out.startswith("VERIFIED: fraud@1")

    # One byte of one weight file changes.
    weights = model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))

    code, out, _ = _run(capsys, "verify", "fraud@1", "--db", db)
    assert code == 1
    assert out.startswith("FAILED: fraud@1")
    assert "changed: model.safetensors" in out
    code, out, _ = _run(capsys, "gate", "fraud@1", "--policy", str(policy), "--db", db, "--format", "json")
    assert code == 1
    blocked = {o["id"] for o in json.loads(out)["outcomes"] if o["status"] == "fail"}
    assert {"artifact-intact", "signed-by-release-key"} <= blocked

    assert _run(capsys, "registry", "revoke", "fraud@1", "--reason", "weights tampered", "--db", db)[0] == 0
    code, _, err = _run(capsys, "registry", "approve", "fraud@1", "--reason", "looks fine", "--db", db)
    assert code == 2
    assert "unless reinstated" in err

    code, out, _ = _run(capsys, "registry", "history", "fraud@1", "--db", db, "--format", "json")
    assert code == 0
    history = json.loads(out)
    actions = [e["action"] for e in history]
    assert actions == [
        "model.registered",
        "model.scanned",
        "model.signed",
        "model.verified",
        "gate.evaluated",
        "model.verified",
        "model.verified",
        "model.verified",
        "gate.evaluated",
        "model.state",
    ]
    verified = [e["payload"]["ok"] for e in history if e["action"] == "model.verified"]
    assert verified == [True, True, False, False]  # gate, verify | verify, gate after the tamper
    gates = [e["payload"]["passed"] for e in history if e["action"] == "gate.evaluated"]
    assert gates == [True, False]
    assert history[-1]["payload"]["to"] == "revoked"
    assert _run(capsys, "events", "verify", "--db", db)[0] == 0


def test_gate_errors_never_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "store.db")
    assert main(["registry", "add", "m", str(make_model(tmp_path / "m")), "--db", db]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nrules:\n  - id: a\n    require: scan.counts.critical ==\n", "utf-8")
    capsys.readouterr()
    code, _, err = _run(capsys, "gate", "m@1", "--policy", str(bad), "--db", db)
    assert code == 2
    assert "bad.yaml:5" in err
    assert len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.yaml"
    empty.write_text("version: 1\nname: x\nrules: []\n", "utf-8")
    assert _run(capsys, "gate", "m@1", "--policy", str(empty), "--db", db)[0] == 2
    code, _, err = _run(capsys, "gate", "m@1", "--policy", str(tmp_path / "nope.yaml"), "--db", db)
    assert code == 2
    assert "nope.yaml" in err


def test_missing_key_and_wrong_signer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "store.db")
    model = make_model(tmp_path / "m")
    assert main(["registry", "add", "m", str(model), "--db", db]) == 0
    code, _, err = _run(capsys, "registry", "sign", "m@1", "--key", str(tmp_path / "missing.pem"), "--db", db)
    assert code == 2
    assert "missing.pem" in err
    assert not (model / "model.sig").exists()  # nothing half-written
    mine, theirs = tmp_path / "mine.pem", tmp_path / "theirs.pem"
    assert main(["registry", "keygen", str(mine)]) == 0
    assert main(["registry", "keygen", str(theirs)]) == 0
    assert main(["registry", "sign", "m@1", "--key", str(mine), "--db", db]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, "verify", "m@1", "--public-key", str(tmp_path / "theirs.pub.pem"), "--db", db)
    assert code == 1
    assert "signature" in out
    assert "INVALID" in out
