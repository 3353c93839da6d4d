"""The registry: immutable versions, datasets and scans, approvals, aliases and their history, diffs."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from governance_builders import make_dataset, make_malicious, make_model

from bastion.errors import InputError, UsageError
from bastion.registry.versions import Registry
from bastion.store.events import list_events, verify_log


def test_add_records_digests_format_datasets_and_scan(registry: Registry, tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    _, manifest = make_dataset(tmp_path / "d")
    record = registry.add(
        "fraud", model, actor="alice", datasets=[manifest], metadata={"license": "apache-2.0"}
    )
    assert record.ref == "fraud@1"
    assert record.state == "registered"
    assert record.digest.startswith("sha256:")
    assert [f.path for f in record.files] == ["config.json", "model.safetensors"]
    assert record.format == "safetensors"
    assert record.size == sum(f.size for f in record.files)
    assert record.scan is not None
    assert record.scan.verdict == "clean"
    [ds] = record.datasets
    assert ds.digest.startswith("manifest-sha256:")
    assert ds.rows == 40
    assert ds.source == "unit-test feed"
    assert record.metadata == {"license": "apache-2.0"}
    actions = [e.action for e in list_events(registry.store)]
    assert actions == ["model.registered", "model.scanned"]
    assert registry.add("fraud", model, actor="alice").version == 2


def test_scan_of_a_malicious_artifact_is_recorded(registry: Registry, tmp_path: Path) -> None:
    record = registry.add("evil", make_malicious(tmp_path / "evil"), actor="alice")
    assert record.scan is not None
    assert record.scan.verdict == "malicious"
    assert record.scan.counts["critical"] + record.scan.counts["high"] >= 1
    assert all(not f["location"].startswith("/") for f in record.scan.findings)


def test_given_scan_report_is_used_instead_of_scanning(registry: Registry, tmp_path: Path) -> None:
    from bastion.cli.main import main

    model = make_malicious(tmp_path / "evil")
    report = tmp_path / "scan.json"
    main(["scan", str(model), "--format", "json", "--output", str(report), "--no-progress"])
    record = registry.add("evil", model, actor="alice", scan_report=report)
    assert record.scan is not None
    assert record.scan.verdict == "malicious"
    assert record.scan.report_digest is not None
    bad = tmp_path / "bad.json"
    bad.write_text("[]", "utf-8")
    with pytest.raises(InputError, match="not a `bastion scan --format json` report"):
        registry.add("evil", model, actor="alice", scan_report=bad)


def test_parent_must_exist_and_aliases_resolve(registry: Registry, tmp_path: Path) -> None:
    base = registry.add("base", make_model(tmp_path / "b"), actor="a")
    registry.transition(base.ref, "approved", actor="a", reason="reviewed")
    registry.set_alias(base.ref, "production", actor="a", reason="launch")
    child = registry.add("tuned", make_model(tmp_path / "t", seed=1), actor="a", parent="base@production")
    assert child.parent == "base@1"
    with pytest.raises(InputError, match="no such model"):
        registry.add("tuned", make_model(tmp_path / "t2", seed=2), actor="a", parent="nope@1")


def test_state_machine_and_blocked_versions(registry: Registry, tmp_path: Path) -> None:
    ref = registry.add("m", make_model(tmp_path / "m"), actor="a").ref
    with pytest.raises(UsageError, match="approve the version first"):
        registry.set_alias(ref, "production", actor="a", reason="too early")
    registry.transition(ref, "approved", actor="bob", reason="security review passed")
    record = registry.set_alias(ref, "production", actor="bob", reason="go live")
    assert record.state == "deployed"  # serving it makes it deployed
    assert record.aliases == ("production",)
    revoked = registry.transition(ref, "revoked", actor="carol", reason="weights tampered")
    assert revoked.state == "revoked"
    assert revoked.aliases == ()  # a revoked version stops serving
    with pytest.raises(UsageError, match="cannot become approved again unless reinstated"):
        registry.transition(ref, "approved", actor="bob", reason="oops")
    with pytest.raises(UsageError, match="reinstate it before pointing an alias"):
        registry.set_alias(ref, "staging", actor="bob", reason="try")
    with pytest.raises(UsageError, match="say why"):
        registry.transition(ref, "approved", actor="bob", reason=" ", reinstate=True)
    back = registry.transition(ref, "approved", actor="dan", reason="re-signed after audit", reinstate=True)
    assert back.state == "approved"
    assert [a.state for a in back.approvals] == ["approved", "deployed", "revoked", "approved"]
    actions = [e.action for e in registry.history(ref)]
    assert "model.reinstated" in actions
    assert actions.count("alias.moved") == 1
    assert actions.count("alias.removed") == 1
    assert verify_log(registry.store).ok


def test_which_version_served_production_when(registry: Registry, tmp_path: Path) -> None:
    refs = []
    for i in range(3):
        ref = registry.add("svc", make_model(tmp_path / f"v{i}", seed=i), actor="a").ref
        registry.transition(ref, "approved", actor="a", reason="ok")
        refs.append(ref)
    moments = []
    for ref in refs:
        registry.set_alias(ref, "production", actor="ops", reason=f"promote {ref}")
        time.sleep(0.01)
        moments.append(dt.datetime.now(dt.UTC))
    before = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert registry.alias_at("svc", "production", before) is None
    assert [registry.alias_at("svc", "production", m) for m in moments] == [1, 2, 3]
    moves = registry.alias_history("svc", "production")
    assert [(m["previous"], m["version"]) for m in moves] == [(None, 1), (1, 2), (2, 3)]


def test_diff(registry: Registry, tmp_path: Path) -> None:
    a = registry.add("m", make_model(tmp_path / "a"), actor="x", metadata={"license": "mit"})
    other = make_model(tmp_path / "b", seed=5)
    (other / "tokenizer.json").write_text("{}", "utf-8")
    b = registry.add("m", other, actor="x", metadata={"license": "apache-2.0"})
    diff = registry.diff(a.ref, b.ref)
    assert diff.files_added == ("tokenizer.json",)
    assert diff.files_changed == ("model.safetensors",)
    assert ("metadata.license", "mit", "apache-2.0") in diff.fields
    assert any(f[0] == "digest" for f in diff.fields)


def test_bad_inputs(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        registry.add("m", tmp_path / "missing", actor="a")
    with pytest.raises(UsageError, match="model name"):
        registry.add("bad@name", make_model(tmp_path / "m"), actor="a")
    with pytest.raises(InputError, match="no such model"):
        registry.get("ghost@1")
    registry.add("m", make_model(tmp_path / "m"), actor="a")
    with pytest.raises(InputError, match="m@7: no such version"):
        registry.get("m@7")
    with pytest.raises(InputError, match="no such version or alias"):
        registry.get("m@production")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", "utf-8")
    with pytest.raises(InputError):
        registry.add("m", make_model(tmp_path / "m2"), actor="a", datasets=[broken])
    # Nothing half-written: the failed additions left no version behind.
    assert [r.version for r in registry.list_versions("m")] == [1]


def test_edited_unsigned_manifest_is_refused(registry: Registry, tmp_path: Path) -> None:
    _, manifest = make_dataset(tmp_path / "d")
    doc = json.loads(manifest.read_text("utf-8"))
    [entry] = [f for f in doc["files"] if f.get("row_hashes")]
    # A row hash edited without its file's sha256 or the roots: only recomputing the roots can tell.
    entry["row_hashes"][0] = "0" * 64
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc), "utf-8")
    with pytest.raises(InputError, match=r"edited\.json: .*row_root is not the Merkle root"):
        registry.add("m", make_model(tmp_path / "m"), actor="a", datasets=[edited])
    # Nothing was registered: the first version is the one with the intact manifest.
    assert registry.add("m", make_model(tmp_path / "m2"), actor="a", datasets=[manifest]).version == 1


def test_audit_report_attaches_to_its_dataset(registry: Registry, tmp_path: Path) -> None:
    from bastion.cli.main import main

    data, manifest = make_dataset(tmp_path / "d")
    report = tmp_path / "audit.json"
    main(["data", "audit", str(data), "--label", "label", "--format", "json", "--output", str(report)])
    record = registry.add("m", make_model(tmp_path / "m"), actor="a", datasets=[manifest], audits=[report])
    audit = record.datasets[0].audit
    assert audit is not None
    assert audit["source"] == "audit"
    assert audit["rows"] == 40
    assert audit["report_digest"].startswith("sha256:")
    other = tmp_path / "other.json"
    doc = json.loads(report.read_text("utf-8"))
    doc["lineage"]["consumed"]["data_root"] = "merkle-sha256:" + "0" * 64
    other.write_text(json.dumps(doc), "utf-8")
    with pytest.raises(InputError, match="no --data manifest names"):
        registry.add("m", make_model(tmp_path / "m3"), actor="a", datasets=[manifest], audits=[other])
