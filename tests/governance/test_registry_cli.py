"""The registry through the command line: listings, aliases in time, diffs, bad input; and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from governance_builders import make_model

from bastion.cli.main import main
from bastion.registry.versions import Registry
from bastion.store.database import open_store
from bastion.store.events import verify_log


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_show_diff_and_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.db")
    for i in range(3):
        assert (
            main(["registry", "add", "fraud", str(make_model(tmp_path / f"m{i}", seed=i)), "--db", db]) == 0
        )
    assert main(["registry", "add", "churn", str(make_model(tmp_path / "c")), "--db", db]) == 0
    capsys.readouterr()

    code, out, _ = _run(capsys, "registry", "list", "--db", db)  # piped: tab-separated, header first
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("\t") == ["VERSION", "STATE", "FORMAT", "BYTES", "SCAN", "SIGNED", "CREATED"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["churn@1", "fraud@1", "fraud@2", "fraud@3"]
    code, out, _ = _run(capsys, "registry", "list", "fraud", "--format", "json", "--db", db)
    listed = json.loads(out)
    assert [(v["name"], v["version"], v["signed"], v["verdict"]) for v in listed] == [
        ("fraud", 1, False, "clean"),
        ("fraud", 2, False, "clean"),
        ("fraud", 3, False, "clean"),
    ]

    assert (
        _run(capsys, "registry", "approve", "fraud@2", "--reason", "ok", "--actor", "rev", "--db", db)[0] == 0
    )
    before = dt.datetime.now(dt.UTC).isoformat()
    assert _run(capsys, "registry", "alias", "fraud@2", "production", "--reason", "go", "--db", db)[0] == 0
    code, out, _ = _run(
        capsys, "registry", "aliases", "fraud", "--alias", "production", "--at", before, "--db", db
    )
    assert out.strip().endswith(": nothing")
    now = dt.datetime.now(dt.UTC).isoformat()
    code, out, _ = _run(
        capsys,
        "registry",
        "aliases",
        "fraud",
        "--alias",
        "production",
        "--at",
        now,
        "--format",
        "json",
        "--db",
        db,
    )
    assert json.loads(out)["version"] == 2
    code, out, _ = _run(capsys, "registry", "show", "fraud@production", "--format", "json", "--db", db)
    shown = json.loads(out)
    assert shown["ref"] == "fraud@2"
    assert shown["state"] == "deployed"
    assert shown["aliases"] == ["production"]

    code, out, _ = _run(capsys, "registry", "diff", "fraud@1", "fraud@3", "--db", db)
    assert code == 0
    assert "~ model.safetensors" in out

    code, _, err = _run(capsys, "registry", "show", "fraud@9", "--db", db)
    assert code == 2
    assert err.strip() == "bastion: error: fraud@9: no such version"
    code, _, err = _run(capsys, "registry", "add", "x", str(tmp_path / "nope"), "--db", db)
    assert code == 2
    assert "nope: no such file or directory" in err
    code, _, err = _run(capsys, "registry", "add", "x", str(tmp_path / "m0"), "--meta", "oops", "--db", db)
    assert code == 2
    assert "KEY=VALUE" in err


def test_data_commands_record_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.db")
    data = tmp_path / "train.csv"
    data.write_text("x,y,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(60)), "utf-8")
    assert main(["data", "fingerprint", str(data), "--output", str(tmp_path / "m.json"), "--db", db]) == 0
    main(["data", "audit", str(data), "--label", "label", "--db", db, "--format", "json"])
    capsys.readouterr()
    _, out, _ = _run(capsys, "events", "list", "--action", "data.*", "--format", "json", "--db", db)
    found = json.loads(out)
    assert [e["action"] for e in found] == ["data.fingerprinted", "data.audited"]
    # Both name the data by its content root, so the audit is tied to the fingerprint of the same bytes.
    assert found[0]["subject"] == found[1]["subject"]
    assert found[0]["subject"].startswith("merkle-sha256:")
    assert found[1]["payload"]["rows"] == 60


def test_registry_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    store = open_store(postgres_url)
    registry = Registry(store)
    ref = registry.add("fraud", make_model(tmp_path / "m"), actor="alice").ref
    registry.transition(ref, "approved", actor="bob", reason="reviewed")
    registry.set_alias(ref, "production", actor="bob", reason="launch")
    record = registry.transition(ref, "quarantined", actor="sec", reason="suspicious drift")
    assert record.aliases == ()
    assert [v.state for v in registry.list_versions()] == ["quarantined"]
    assert registry.alias_at("fraud", "production", dt.datetime.now(dt.UTC)) is None
    assert [e.action for e in registry.history("fraud")] == [
        "model.registered",
        "model.scanned",
        "model.state",
        "alias.moved",
        "model.state",
        "model.state",
        "alias.removed",
    ]
    assert verify_log(store).ok
    store.close()
