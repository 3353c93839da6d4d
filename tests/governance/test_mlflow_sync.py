"""The MLflow connector against a real MLflow (SQLite backend, local artifact store, no server)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from governance_builders import make_model
from mlflow import MlflowClient

from bastion.cli import mlflow as mlflow_cli
from bastion.cli.common import Parser
from bastion.errors import ConfigError, InputError, UsageError
from bastion.registry.artifacts import hash_artifact
from bastion.registry.mlflow_sync import (
    CHANGED,
    IMPORTED,
    INSTALL_HINT,
    MISSING,
    UNCHANGED,
    WRITTEN,
    bastion_name,
    import_from_mlflow,
    public_uri,
    write_back,
)
from bastion.registry.versions import Registry
from bastion.store.events import EventFilter, list_events, verify_log

# MLflow 3.17's SQLAlchemy tracking store configures its mappers with the `noload` loader strategy, which
# SQLAlchemy 2.1 deprecates; the suite turns warnings into errors, so this one (MLflow's, not ours) is let
# through by its exact message.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)


@dataclass
class MlflowWorld:
    """A real MLflow tracking + registry store in a SQLite file, with artifacts in a local folder."""

    uri: str
    client: Any
    experiment: str
    artifacts: Path

    def register(
        self, name: str, model_dir: Path, *, tags: dict[str, str] | None = None, auc: float = 0.9
    ) -> Any:
        """Log ``model_dir`` as a run's ``model`` artifacts and register it as the next version."""
        run = self.client.create_run(self.experiment)
        run_id = run.info.run_id
        self.client.log_metric(run_id, "auc", auc)
        self.client.log_artifacts(run_id, str(model_dir), "model")
        self.client.set_terminated(run_id)
        if not self.client.search_registered_models(f"name = '{name}'"):
            self.client.create_registered_model(name, tags={"team": "risk"}, description="fraud scoring")
        return self.client.create_model_version(
            name, f"runs:/{run_id}/model", run_id=run_id, tags=tags or {}, description=f"{name} build"
        )

    def stored_model(self, version: Any) -> Path:
        """Where MLflow keeps a version's artifact files (to change them behind MLflow's back)."""
        return self.artifacts / str(version.run_id) / "artifacts" / "model"


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, created once: MLflow's own migrations take seconds."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return path


@pytest.fixture
def world(tmp_path: Path, mlflow_template: Path) -> MlflowWorld:
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(mlflow_template, db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    artifacts = tmp_path / "mlflow" / "artifacts"
    experiment = client.create_experiment("fraud", artifact_location=str(artifacts))
    return MlflowWorld(uri, client, experiment, artifacts)


def test_import_records_what_mlflow_knows_and_is_idempotent(
    registry: Registry, world: MlflowWorld, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "model")
    version = world.register("fraud", model, tags={"license": "apache-2.0", "owner": "risk-ml"})
    world.client.set_registered_model_alias("fraud", "champion", version.version)

    [result] = import_from_mlflow(registry, world.uri, actor="alice")
    assert (result.mlflow_name, result.mlflow_version, result.ref, result.status) == (
        "fraud",
        "1",
        "fraud@1",
        IMPORTED,
    )
    record = registry.get("fraud@1")
    assert result.digest == record.digest == hash_artifact(model).digest  # the bytes MLflow holds
    assert [f.path for f in record.files] == ["config.json", "model.safetensors"]
    assert record.format == "safetensors"
    assert record.scan is not None
    assert record.scan.verdict == "clean"
    meta = record.metadata["mlflow"]
    assert meta["tracking_uri"] == world.uri
    assert (meta["name"], meta["version"], meta["run_id"]) == ("fraud", "1", version.run_id)
    assert meta["source"] == f"runs:/{version.run_id}/model"
    assert meta["tags"] == {"license": "apache-2.0", "owner": "risk-ml"}
    assert meta["model_tags"] == {"team": "risk"}
    assert meta["aliases"] == ["champion"]
    assert record.metadata["license"] == "apache-2.0"
    assert record.metadata["metrics"] == {"auc": 0.9}
    assert record.metadata["description"] == "fraud build"
    assert record.aliases == ()  # MLflow's alias is recorded, not copied past Bastion's approvals
    # The artifact is kept in the cache folder beside the store, where `bastion verify` re-hashes it.
    location = Path(record.location)
    assert location.is_relative_to(tmp_path / "mlflow-artifacts" / "fraud" / "1")
    assert hash_artifact(location).digest == record.digest

    [again] = import_from_mlflow(registry, world.uri, actor="alice")
    assert (again.ref, again.status, again.digest) == ("fraud@1", UNCHANGED, record.digest)
    assert [r.ref for r in registry.records("fraud")] == ["fraud@1"]
    assert not list((tmp_path / "mlflow-artifacts").rglob(".incoming-*"))  # no download left behind
    registered = list_events(registry.store, EventFilter(action="model.registered"))
    assert [(e.subject, e.actor) for e in registered] == [("fraud@1", "alice")]


def test_new_and_changed_mlflow_versions_become_new_bastion_versions(
    registry: Registry, world: MlflowWorld, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = world.register("fraud", make_model(tmp_path / "m1"))
    import_from_mlflow(registry, world.uri, actor="a", artifacts_dir=cache)
    world.register("fraud", make_model(tmp_path / "m2", seed=1), auc=0.95)

    results = import_from_mlflow(registry, world.uri, actor="a", artifacts_dir=cache)
    assert [(r.mlflow_version, r.ref, r.status) for r in results] == [
        ("1", "fraud@1", UNCHANGED),
        ("2", "fraud@2", IMPORTED),
    ]
    assert registry.get("fraud@2").metadata["metrics"] == {"auc": 0.95}

    # Someone overwrites version 1's weights in MLflow's artifact store: same MLflow version, other bytes.
    make_model(world.stored_model(first), seed=7)
    results = import_from_mlflow(registry, world.uri, actor="a", artifacts_dir=cache)
    assert [(r.mlflow_version, r.ref, r.status) for r in results] == [
        ("1", "fraud@3", CHANGED),
        ("2", "fraud@2", UNCHANGED),
    ]
    assert "changed in MLflow since fraud@1" in results[0].detail
    old, new = registry.get("fraud@1"), registry.get("fraud@3")
    assert new.digest != old.digest
    assert new.metadata["mlflow"]["previous"] == "fraud@1"
    assert new.metadata["mlflow"]["version"] == "1"
    # The first import's bytes stay where they were registered, so it can still be verified.
    assert hash_artifact(Path(old.location)).digest == old.digest
    assert Path(new.location) != Path(old.location)

    # The write-back speaks for the newest import of each MLflow version.
    tagged = {r.mlflow_version: r.ref for r in write_back(registry, world.uri, actor="a")}
    assert tagged == {"1": "fraud@3", "2": "fraud@2"}
    assert world.client.get_model_version("fraud", "1").tags["bastion.ref"] == "fraud@3"


def test_write_back_sets_verdict_tags_and_blocks_revoked_versions(
    registry: Registry, world: MlflowWorld, tmp_path: Path
) -> None:
    from bastion.registry.signing import generate_key, sign_model

    version = world.register("fraud", make_model(tmp_path / "model"), tags={"license": "mit"})
    world.client.set_registered_model_alias("fraud", "champion", version.version)
    import_from_mlflow(registry, world.uri, actor="alice")
    ref = "fraud@1"
    key = tmp_path / "key.pem"
    generate_key(key)
    info = sign_model(Path(registry.get(ref).location), key=key)
    registry.record_signature(ref, info, actor="alice")
    registry.record_check(ref, "model.verified", {"ok": False, "detail": "first try"}, actor="ci")
    registry.record_check(ref, "model.verified", {"ok": True}, actor="ci")
    registry.record_check(
        ref, "gate.evaluated", {"policy": "baseline", "verdict": "passed", "passed": True}, actor="ci"
    )

    [result] = write_back(registry, world.uri, actor="alice")
    record = registry.get(ref)
    expected = {
        "bastion.ref": ref,
        "bastion.digest": record.digest,
        "bastion.state": "registered",
        "bastion.scan": "clean",
        "bastion.signature": info.signer,
        "bastion.verified": "true",  # the latest verification, not the first
        "bastion.gate": "passed",
        "bastion.gate.policy": "baseline",
    }
    assert result.status == WRITTEN
    assert dict(result.tags) == expected
    tags = world.client.get_model_version("fraud", "1").tags
    assert tags == {"license": "mit", **expected}
    [event] = list_events(registry.store, EventFilter(action="mlflow.tags_written"))
    assert event.subject == ref
    assert event.actor == "alice"
    assert event.payload["tags"] == expected

    # Nothing changed in Bastion: nothing is written and no event is added.
    [same] = write_back(registry, world.uri, [ref], actor="alice")
    assert (same.status, same.changed) == (UNCHANGED, ())
    assert len(list_events(registry.store, EventFilter(action="mlflow.tags_written"))) == 1

    registry.transition(ref, "revoked", actor="bob", reason="weights leaked")
    registry.record_check(
        ref, "gate.evaluated", {"policy": "baseline", "verdict": "blocked", "passed": False}, actor="ci"
    )
    [blocked] = write_back(registry, world.uri, actor="bob", unalias_blocked=True)
    assert set(blocked.changed) == {"bastion.state", "bastion.gate", "bastion.blocked"}
    assert blocked.removed_aliases == ("champion",)
    mv = world.client.get_model_version("fraud", "1")
    assert (mv.tags["bastion.state"], mv.tags["bastion.gate"], mv.tags["bastion.blocked"]) == (
        "revoked",
        "blocked",
        "true",
    )
    assert world.client.get_registered_model("fraud").aliases == {}  # models:/fraud@champion is gone

    # Reinstated: Bastion no longer vouches for the block, so the tag goes.
    registry.transition(ref, "approved", actor="dan", reason="keys rotated", reinstate=True)
    [back] = write_back(registry, world.uri, actor="dan")
    assert "bastion.blocked" in back.changed
    tags = world.client.get_model_version("fraud", "1").tags
    assert "bastion.blocked" not in tags
    assert tags["bastion.state"] == "approved"
    assert verify_log(registry.store).ok


def test_write_back_reports_versions_gone_from_mlflow_and_refuses_foreign_refs(
    registry: Registry, world: MlflowWorld, tmp_path: Path
) -> None:
    world.register("fraud", make_model(tmp_path / "model"))
    import_from_mlflow(registry, world.uri, actor="a")
    local = registry.add("local", make_model(tmp_path / "local", seed=3), actor="a")
    with pytest.raises(InputError, match="local@1: not imported from MLflow"):
        write_back(registry, world.uri, [local.ref], actor="a")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    shutil.copyfile(Path(world.uri.removeprefix("sqlite:///")), tmp_path / "other.db")
    with pytest.raises(InputError, match="fraud@1: imported from the MLflow registry at"):
        write_back(registry, other, ["fraud@1"], actor="a")
    world.client.delete_model_version("fraud", "1")
    [gone] = write_back(registry, world.uri, actor="a")
    assert (gone.ref, gone.status) == ("fraud@1", MISSING)


def test_errors_are_one_line(
    registry: Registry, world: MlflowWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.register("fraud", make_model(tmp_path / "model"))
    with pytest.raises(InputError, match="'ghost': not found in the MLflow registry"):
        import_from_mlflow(registry, world.uri, actor="a", names=["ghost"])
    # MLflow would create an empty database at a mistyped path; the connector refuses instead.
    missing = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(ConfigError, match="no MLflow store there"):
        import_from_mlflow(registry, f"sqlite:///{missing}", actor="a")
    assert not missing.parent.exists()
    with pytest.raises(ConfigError, match="not an MLflow tracking or registry URI"):
        import_from_mlflow(registry, "ftp://example.invalid/registry", actor="a")
    with pytest.raises(UsageError, match="--tracking-uri"):
        import_from_mlflow(registry, " ", actor="a")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    with pytest.raises(ConfigError, match=r"http://127\.0\.0\.1:9: cannot reach the MLflow tracking server"):
        import_from_mlflow(registry, "http://127.0.0.1:9", actor="a")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as caught:
        write_back(registry, world.uri, actor="a")
    assert str(caught.value) == INSTALL_HINT
    assert registry.records() == []  # no failed call registered anything


def test_uris_are_recorded_without_credentials_and_names_fit_bastion(tmp_path: Path) -> None:
    assert public_uri("https://bob:s3cret@mlflow.example:5000/api?x=1&token=abc") == (
        "https://bob@mlflow.example:5000/api?x=1"
    )
    assert public_uri("postgresql://ml:pw@db/mlflow?sslmode=require&password=pw") == (
        "postgresql://ml@db/mlflow?sslmode=require"
    )
    assert public_uri("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"
    assert public_uri("databricks") == "databricks"
    assert bastion_name("fraud-detector") == "fraud-detector"
    assert bastion_name("main.risk.fraud") == "main.risk.fraud"  # Unity Catalog names keep their dots
    assert bastion_name("Fraud model (EU)") == "Fraud-model-EU"
    with pytest.raises(InputError, match="Bastion cannot use"):
        bastion_name("!!!")


def _run_cli(argv: list[str]) -> int:
    parser = Parser(prog="bastion")
    mlflow_cli.add_parser(parser.add_subparsers(dest="command"))
    args: argparse.Namespace = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_cli_import_and_sync_tags(
    world: MlflowWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    world.register("fraud", make_model(tmp_path / "model"))
    db = str(tmp_path / "cli.db")
    cache = tmp_path / "cache"
    common = ["--tracking-uri", world.uri, "--db", db, "--actor", "ci"]
    assert _run_cli(["mlflow", "import", *common, "--artifacts-dir", str(cache), "--format", "json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert (item["mlflow_name"], item["mlflow_version"], item["ref"], item["status"]) == (
        "fraud",
        "1",
        "fraud@1",
        "imported",
    )
    assert _run_cli(["mlflow", "import", *common, "--model", "fraud", "--artifacts-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split()[:2] == ["unchanged", "fraud@1"]
    assert "0 registered" in captured.err
    assert _run_cli(["mlflow", "sync-tags", *common, "fraud@1"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("written")
    assert "state=registered scan=clean" in line
    assert world.client.get_model_version("fraud", "1").tags["bastion.state"] == "registered"
    with pytest.raises(UsageError, match="--tracking-uri"):
        _run_cli(["mlflow", "import", "--db", db])
