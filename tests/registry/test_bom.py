"""The AI-BOM: CycloneDX 1.6 JSON checked against the bundled schema, and the SPDX 3.0.1 AI/Dataset export."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bastion.errors import InputError
from bastion.registry.bom import bom_json, build_bom, data_ref, model_ref, validate_bom
from bastion.registry.record import (
    Approval,
    ArtifactFile,
    DatasetRef,
    ScanSummary,
    SignatureInfo,
    VersionRecord,
)
from bastion.registry.spdx import build_spdx, read_spdx, spdx_json

T = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SERIAL = "3e671687-395b-41f5-a30f-a58921a69b79"
NS = "https://example.com/spdx/ai-bom"
LOCATION = "/srv/models/fraud"
DS_B = DatasetRef(
    digest="manifest-sha256:" + "b" * 64,
    source="https://data.example.com/transactions",
    path="/home/alice/train.manifest.json",
    rows=1000,
    files=2,
    signed=True,
    signer="MCowBQYDK2VwAyEA",
    audit={"flagged_rows": 12, "quarantine_rows": 3},
)
DS_C = DatasetRef(digest="manifest-sha256:" + "c" * 64, path="/home/alice/extra.manifest.json", files=1)
SERVICE = {
    "provider": "OpenAI",
    "name": "chat-completions",
    "endpoints": ["https://api.openai.com/v1/chat/completions"],
    "authenticated": True,
    "trust_boundary": True,
    "evidence": "src/app.py:12",
}


def record(name: str, version: int, **kw: Any) -> VersionRecord:
    """A registered version with plain defaults."""
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "created_at": T,
        "created_by": "alice",
        "location": LOCATION,
        "digest": "sha256:" + format(version, "x") * 64,
        "format": "safetensors",
        "framework": "pytorch",
        "size": 100,
        "files": (ArtifactFile("model.safetensors", "e" * 64, 100),),
    }
    fields.update(kw)
    return VersionRecord(**fields)


def records() -> list[VersionRecord]:
    """A base model and its fine-tune sharing one dataset, the fine-tune fully described."""
    base = record("fraud", 1, datasets=(DS_C,))
    tuned = record(
        "fraud",
        2,
        datasets=(DS_B, DS_C),
        parent="fraud@1",
        scan=ScanSummary("clean", {"info": 1, "high": 0}, (), "0.1.0", T, "sha256:" + "d" * 64),
        signature=SignatureInfo(
            "key", "sha256:" + "f" * 64, "/srv/sig/model.sig", T, "sha256:" + "2" * 64, True, T
        ),
        state="deployed",
        approvals=(Approval("deployed", "bob", "gate passed", T, 9),),
        aliases=("production", "staging"),
        metadata={
            "description": "Fraud scorer",
            "license": "Apache-2.0",
            "task": "tabular-classification",
            "architecture": "gradient-boosted-trees",
            "approach": "supervised",
            "metrics": {"auc": 0.94, "recall": 0.81},
            "intended_use": "Rank transactions for review",
            "limitations": ["EU data only"],
            "risks": ["Bias against new customers"],
            "fairness": {
                "new customers": {"harms": "more false positives", "mitigation": "review"},
                "dpd": 0.03,
            },
            "privacy": {"dp_epsilon": 3},
            "out_of_scope": "Account closure",
            "services": [
                {
                    "provider": "OpenAI",
                    "name": "chat-completions",
                    "endpoints": ["https://api.openai.com/v1/x"],
                },
                "Anthropic/messages",
            ],
        },
    )
    return [base, tuned]


def bom() -> dict[str, Any]:
    """The BOM of :func:`records` with the caller's service, pinned serial and time."""
    return build_bom(records(), services=[SERVICE], serial=SERIAL, now=T)


def component(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    """The component with bom-ref ``ref``."""
    return next(c for c in doc["components"] if c["bom-ref"] == ref)


def props(item: dict[str, Any]) -> dict[str, str]:
    """A component's properties as a dict (last value wins)."""
    return {p["name"]: p.get("value", "") for p in item.get("properties", [])}


# -- CycloneDX ---------------------------------------------------------------------------------------------


def test_bom_validates_against_the_1_6_schema() -> None:
    doc = bom()
    validate_bom(doc)
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"] == "1.6"
    assert doc["serialNumber"] == f"urn:uuid:{SERIAL}"
    assert doc["metadata"]["timestamp"].startswith("2025-03-01T12:00:00")
    assert doc["metadata"]["tools"]["components"][0]["name"] == "bastion"


def test_bom_is_deterministic_given_serial_and_time() -> None:
    assert bom_json(bom()) == bom_json(bom())
    # Without them, each BOM gets its own serial.
    assert build_bom(records())["serialNumber"] != build_bom(records())["serialNumber"]


def test_model_component() -> None:
    doc = bom()
    model = component(doc, "model:fraud@2")
    assert model["type"] == "machine-learning-model"
    assert (model["name"], model["version"]) == ("fraud", "2")
    assert model["hashes"] == [{"alg": "SHA-256", "content": "2" * 64}]
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    p = props(model)
    assert p["bastion:state"] == "deployed"
    assert p["bastion:aliases"] == "production,staging"
    assert p["bastion:scan.verdict"] == "clean"
    assert p["bastion:signature.signer"] == "sha256:" + "f" * 64
    assert p["bastion:format"] == "safetensors"
    assert p["bastion:framework"] == "pytorch"


def test_model_card_holds_only_what_is_known() -> None:
    doc = bom()
    card = component(doc, "model:fraud@2")["modelCard"]
    params = card["modelParameters"]
    assert params["approach"] == {"type": "supervised"}
    assert params["task"] == "tabular-classification"
    assert params["modelArchitecture"] == "gradient-boosted-trees"
    assert params["datasets"] == [{"ref": data_ref(DS_B.digest)}, {"ref": data_ref(DS_C.digest)}]
    assert card["quantitativeAnalysis"]["performanceMetrics"] == [
        {"type": "auc", "value": "0.94"},
        {"type": "recall", "value": "0.81"},
    ]
    considerations = card["considerations"]
    assert considerations["useCases"] == ["Rank transactions for review"]
    assert considerations["technicalLimitations"] == ["EU data only"]
    assert considerations["ethicalConsiderations"] == [{"name": "Bias against new customers"}]
    assert considerations["fairnessAssessments"] == [
        {"groupAtRisk": "new customers", "harms": "more false positives", "mitigationStrategy": "review"}
    ]
    card_props = props(card)
    assert card_props["bastion:fairness.dpd"] == "0.03"
    assert card_props["bastion:privacy.dp_epsilon"] == "3"
    assert card_props["bastion:out_of_scope"] == "Account closure"
    # The base model's card knows its dataset and nothing else.
    assert component(doc, "model:fraud@1")["modelCard"] == {
        "modelParameters": {"datasets": [{"ref": data_ref(DS_C.digest)}]}
    }


def test_unknown_approach_is_kept_as_a_property_not_emitted_invalid() -> None:
    base, tuned = records()
    tuned = VersionRecord(**{**_fields(tuned), "metadata": {**tuned.metadata, "approach": "guessing"}})
    doc = build_bom([base, tuned], serial=SERIAL, now=T)
    validate_bom(doc)
    card = component(doc, "model:fraud@2")["modelCard"]
    assert "approach" not in card["modelParameters"]
    assert props(card)["bastion:approach"] == "guessing"


def _fields(r: VersionRecord) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}


def test_datasets_are_data_components_deduplicated_by_digest() -> None:
    doc = bom()
    data = [c for c in doc["components"] if c["type"] == "data"]
    assert sorted(c["bom-ref"] for c in data) == sorted([data_ref(DS_B.digest), data_ref(DS_C.digest)])
    b = component(doc, data_ref(DS_B.digest))
    assert b["hashes"] == [{"alg": "SHA-256", "content": "b" * 64}]
    (entry,) = b["data"]
    assert entry["type"] == "dataset"
    assert entry["name"] == "https://data.example.com/transactions"
    assert entry["contents"]["url"] == "https://data.example.com/transactions"
    contents = props(entry["contents"])
    assert contents["bastion:manifest.digest"] == DS_B.digest
    assert contents["bastion:rows"] == "1000"
    assert contents["bastion:manifest.signed"] == "true"
    assert contents["bastion:audit.flagged_rows"] == "12"
    # A dataset without a source is named by its manifest's file name, never its machine path.
    assert component(doc, data_ref(DS_C.digest))["name"] == "extra.manifest.json"


def test_services_from_caller_and_metadata_are_merged() -> None:
    doc = bom()
    services = {s["bom-ref"]: s for s in doc["services"]}
    assert set(services) == {"service:OpenAI/chat-completions", "service:Anthropic/messages"}
    openai = services["service:OpenAI/chat-completions"]
    assert openai["provider"] == {"name": "OpenAI"}
    assert openai["endpoints"] == [
        "https://api.openai.com/v1/chat/completions",
        "https://api.openai.com/v1/x",
    ]
    assert openai["authenticated"] is True
    assert openai["x-trust-boundary"] is True
    assert props(openai) == {"bastion:evidence": "src/app.py:12"}
    assert "authenticated" not in services["service:Anthropic/messages"]


def test_dependencies_link_models_to_data_parents_and_services() -> None:
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in bom()["dependencies"]}
    assert deps[model_ref("fraud@2")] == {
        data_ref(DS_B.digest),
        data_ref(DS_C.digest),
        model_ref("fraud@1"),
        "service:OpenAI/chat-completions",
        "service:Anthropic/messages",
    }
    assert deps[model_ref("fraud@1")] == {data_ref(DS_C.digest)}


def test_parent_outside_the_export_becomes_a_stub() -> None:
    _, tuned = records()
    doc = build_bom([tuned], serial=SERIAL, now=T)
    validate_bom(doc)
    stub = component(doc, "model:fraud@1")
    assert (stub["type"], stub["name"], stub["version"]) == ("machine-learning-model", "fraud", "1")
    assert "modelCard" not in stub
    assert "not in this BOM" in props(stub)["bastion:inventory"]


def test_parent_named_without_a_version() -> None:
    _, tuned = records()
    odd = VersionRecord(**{**_fields(tuned), "parent": "basemodel"})
    doc = build_bom([odd], serial=SERIAL, now=T)
    validate_bom(doc)
    stub = component(doc, "model:basemodel")
    assert stub["name"] == "basemodel"
    assert "version" not in stub
    elements = graph(build_spdx([odd], now=T, namespace=NS))
    assert elements[f"{NS}/model/basemodel"]["name"] == "basemodel"
    assert "software_packageVersion" not in elements[f"{NS}/model/basemodel"]


def test_no_machine_path_in_the_bom() -> None:
    text = bom_json(bom())
    for path in (LOCATION, "/home/alice", "/srv/sig"):
        assert path not in text


def test_empty_bom_is_valid() -> None:
    doc = build_bom([], serial=SERIAL, now=T)
    validate_bom(doc)
    assert "components" not in doc or doc["components"] == []


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (
            lambda d: _model(d)["modelCard"]["modelParameters"].update(approach={"type": "guessing"}),
            "approach/type",
        ),
        (lambda d: _model(d).update(type="neural-net"), "components/"),
        (lambda d: _model(d)["hashes"][0].update(content="xyz"), "hashes/0/content"),
        (lambda d: _model(d)["modelCard"].update(colour="blue"), "modelCard"),
        (lambda d: d.update(specVersion=1.6), "specVersion"),
    ],
)
def test_broken_bom_is_rejected(mutate: Any, where: str) -> None:
    doc = copy.deepcopy(bom())
    mutate(doc)
    with pytest.raises(InputError, match=r"CycloneDX 1\.6 schema") as info:
        validate_bom(doc)
    assert where in str(info.value)
    assert "\n" not in str(info.value)


def _model(doc: dict[str, Any]) -> dict[str, Any]:
    return component(doc, "model:fraud@2")


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ([{"provider": "OpenAI"}], "service #1: a service needs a name"),
        ([42], "service #1: a service must be a mapping"),
    ],
)
def test_bad_services_are_input_errors(services: list[Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        build_bom(records(), services=services, serial=SERIAL, now=T)


def test_bad_serial_is_an_input_error() -> None:
    with pytest.raises(InputError, match="not a UUID"):
        build_bom(records(), serial="nope", now=T)


# -- SPDX 3.0.1 --------------------------------------------------------------------------------------------


def spdx_doc() -> dict[str, Any]:
    """The SPDX document of :func:`records`."""
    return build_spdx(records(), now=T, namespace=NS)


def graph(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The document's elements by spdxId."""
    return {e["spdxId"]: e for e in doc["@graph"] if "spdxId" in e}


def test_spdx_elements_and_relationships() -> None:
    doc = spdx_doc()
    assert doc["@context"] == "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
    elements = graph(doc)
    models = {k for k, e in elements.items() if e["type"] == "ai_AIPackage"}
    datasets = {k for k, e in elements.items() if e["type"] == "dataset_DatasetPackage"}
    assert models == {f"{NS}/model/fraud@1", f"{NS}/model/fraud@2"}
    assert datasets == {f"{NS}/dataset/{'b' * 64}", f"{NS}/dataset/{'c' * 64}"}
    tuned = elements[f"{NS}/model/fraud@2"]
    assert tuned["software_packageVersion"] == "2"
    assert tuned["software_primaryPurpose"] == "model"
    assert tuned["verifiedUsing"][0]["hashValue"] == "2" * 64
    assert tuned["ai_domain"] == ["tabular-classification"]
    assert tuned["ai_typeOfModel"] == ["gradient-boosted-trees"]
    assert {m["key"]: m["value"] for m in tuned["ai_metric"]} == {"auc": "0.94", "recall": "0.81"}
    assert tuned["ai_limitation"] == "EU data only"
    relations = {
        (e["from"], e["relationshipType"]): e["to"] for e in elements.values() if e["type"] == "Relationship"
    }
    assert sorted(relations[(f"{NS}/model/fraud@2", "trainedOn")]) == sorted(datasets)
    assert relations[(f"{NS}/model/fraud@1", "trainedOn")] == [f"{NS}/dataset/{'c' * 64}"]
    assert relations[(f"{NS}/model/fraud@2", "descendantOf")] == [f"{NS}/model/fraud@1"]
    assert relations[(f"{NS}/model/fraud@2", "hasDeclaredLicense")] == [f"{NS}/license/Apache-2.0"]
    document = next(e for e in elements.values() if e["type"] == "SpdxDocument")
    assert set(document["profileConformance"]) == {"core", "software", "ai", "dataset"}
    assert set(document["rootElement"]) == models
    audited = elements[f"{NS}/dataset/{'b' * 64}"]
    assert "flagged_rows: 12" in audited["dataset_datasetNoise"]


def test_spdx_reads_back_with_the_bindings() -> None:
    from spdx_python_model import load_data
    from spdx_python_model import v3_0_1 as spdx

    doc = json.loads(spdx_json(spdx_doc()))
    objects = read_spdx(doc)
    tuned = objects.find_by_id(f"{NS}/model/fraud@2")
    assert isinstance(tuned, spdx.ai_AIPackage)
    assert tuned.name == "fraud"
    relationships = [o for o in objects.foreach_type(spdx.Relationship)]
    trained = next(
        r
        for r in relationships
        if r.relationshipType == spdx.RelationshipType.trainedOn and r.from_.get_id() == tuned.get_id()
    )
    assert all(isinstance(t, spdx.dataset_DatasetPackage) for t in trained.to)
    assert len(trained.to) == 2
    # The package's own loader recognises the 3.0.1 context.
    model, _ = load_data(doc)
    assert model.__name__.endswith("v3_0_1")


def test_spdx_is_deterministic_and_has_no_machine_path() -> None:
    first = spdx_json(spdx_doc())
    assert first == spdx_json(spdx_doc())
    for path in (LOCATION, "/home/alice", "/srv/sig"):
        assert path not in first


def test_spdx_parent_outside_the_export_is_a_stub() -> None:
    _, tuned = records()
    elements = graph(build_spdx([tuned], now=T, namespace=NS + "/"))
    stub = elements[f"{NS}/model/fraud@1"]
    assert stub["type"] == "ai_AIPackage"
    assert "not part of this document" in stub["comment"]


def test_spdx_non_spdx_licence_becomes_a_licence_ref() -> None:
    base, _ = records()
    odd = VersionRecord(**{**_fields(base), "metadata": {"license": "Proprietary, internal use"}})
    elements = graph(build_spdx([odd], now=T, namespace=NS))
    expressions = {
        e["simplelicensing_licenseExpression"]
        for e in elements.values()
        if "simplelicensing_licenseExpression" in e
    }
    assert expressions == {"CC0-1.0", "LicenseRef-Proprietary-internal-use"}


def test_spdx_bad_namespace_is_an_input_error() -> None:
    with pytest.raises(InputError, match="not a URI"):
        build_spdx(records(), now=T, namespace="my namespace")


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ({"type": "ai_AIPackage", "spdxId": "https://x.example/a", "releaseTime": "yesterday"}, "datetime"),
        ({"type": "Relationship", "spdxId": "https://x.example/r", "relationshipType": "lovedBy"}, "lovedBy"),
    ],
)
def test_read_spdx_rejects_bad_documents(element: dict[str, Any], message: str) -> None:
    doc = {"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": [element]}
    with pytest.raises(InputError, match=f"^SPDX document: .*{message}") as info:
        read_spdx(doc)
    assert len(str(info.value)) < 200
