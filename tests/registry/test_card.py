"""Model cards: filled from the registry record, every unknown section marked missing, never invented."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from bastion.registry.card import (
    card_huggingface,
    card_markdown,
    lineage_chain,
    meta_mapping,
    missing_sections,
    model_card,
)
from bastion.registry.record import (
    Approval,
    ArtifactFile,
    DatasetRef,
    ScanSummary,
    SignatureInfo,
    VersionRecord,
)

T = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MACHINE_PATHS = ("/srv/models/fraud", "/home/alice/train.manifest.json", "/srv/models/fraud.sig")

FULL_META: dict[str, Any] = {
    "description": "Scores card transactions for fraud",
    "license": "Apache-2.0",
    "intended_use": ["Rank transactions for analyst review"],
    "out_of_scope": "Automatic account closure",
    "limitations": ["EU card data only", "No merchant features"],
    "risks": "Higher false-positive rate for new customers",
    "metrics": {"auc": 0.94, "recall": 0.81},
    "fairness": {"demographic_parity_difference": 0.03},
    "privacy": {"dp_epsilon": 3.0},
    "authors": ["Risk ML team"],
    "contact": "ml-risk@example.com",
    "task": "tabular-classification",
    "architecture": "gradient-boosted-trees",
}


def dataset(tag: str = "b", **kw: Any) -> DatasetRef:
    """A dataset reference whose digest is built from ``tag``."""
    fields: dict[str, Any] = {
        "digest": "manifest-sha256:" + tag * 64,
        "source": f"s3://bucket/{tag}",
        "path": MACHINE_PATHS[1],
        "rows": 1000,
        "files": 2,
        "signed": True,
        "signer": "MCowBQYDK2VwAyEA",
        "audit": {"flagged_rows": 12, "quarantine_rows": 3},
    }
    fields.update(kw)
    return DatasetRef(**fields)


def full_record(**kw: Any) -> VersionRecord:
    """A version the registry knows everything about."""
    fields: dict[str, Any] = {
        "name": "fraud",
        "version": 2,
        "created_at": T,
        "created_by": "alice",
        "location": MACHINE_PATHS[0],
        "digest": "sha256:" + "a" * 64,
        "format": "safetensors",
        "framework": "pytorch",
        "size": 2048,
        "files": (
            ArtifactFile("model.safetensors", "c" * 64, 2000),
            ArtifactFile("config.json", "d" * 64, 48),
        ),
        "datasets": (dataset(),),
        "parent": "fraud@1",
        "scan": ScanSummary("clean", {"info": 1}, (), "0.1.0", T, "sha256:" + "e" * 64),
        "signature": SignatureInfo(
            "key", "sha256:" + "f" * 64, MACHINE_PATHS[2], T, "sha256:" + "a" * 64, True, T
        ),
        "state": "approved",
        "approvals": (Approval("approved", "bob", "reviewed the gate report", T, 7),),
        "aliases": ("production",),
        "metadata": dict(FULL_META),
    }
    fields.update(kw)
    return VersionRecord(**fields)


def bare_record(**kw: Any) -> VersionRecord:
    """A version registered with nothing but its artifact."""
    fields: dict[str, Any] = {
        "name": "bare",
        "version": 1,
        "created_at": T,
        "created_by": "alice",
        "location": MACHINE_PATHS[0],
        "digest": "sha256:" + "1" * 64,
        "format": "pickle",
        "framework": None,
        "size": 10,
        "files": (ArtifactFile("model.pkl", "2" * 64, 10),),
    }
    fields.update(kw)
    return VersionRecord(**fields)


def test_full_record_has_no_missing_section() -> None:
    card = model_card(full_record(), lineage=[bare_record(name="fraud", version=1)])
    assert missing_sections(card) == []
    text = card_markdown(card)
    assert "Missing:" not in text
    for value in ("Scores card transactions for fraud", "Automatic account closure", "No merchant features"):
        assert value in text
    assert "| auc | 0.94 |" in text
    assert "| dp_epsilon | 3.0 |" in text


def test_bare_record_marks_every_unknown_section_missing() -> None:
    card = model_card(bare_record())
    assert missing_sections(card) == [
        "Model Details / Description",
        "Model Details / Developed by",
        "Model Details / Contact",
        "Model Details / Task",
        "Model Details / Architecture",
        "Model Details / License",
        "Uses / Direct Use",
        "Uses / Out-of-Scope Use",
        "Bias, Risks, and Limitations / Risks",
        "Bias, Risks, and Limitations / Limitations",
        "Training Details / Training Data",
        "Training Details / Data Audit",
        "Evaluation / Metrics",
        "Evaluation / Fairness",
        "Evaluation / Privacy",
        "Security / Artifact Scan",
        "Security / Signature",
    ]
    text = card_markdown(card)
    # One Missing line per missing entry, each saying how to fill it.
    assert text.count("Missing:") == len(missing_sections(card))
    for key in ("description", "intended_use", "out_of_scope", "limitations", "risks", "metrics", "license"):
        assert f"--meta {key}=" in text
    assert "bastion data fingerprint" in text
    assert "bastion registry sign bare@1" in text
    # Known facts are still stated, not marked missing.
    assert "pickle (framework not detected)" in text
    assert "No state change recorded since registration." in text


def test_one_missing_key_is_marked_and_the_rest_kept() -> None:
    meta = {k: v for k, v in FULL_META.items() if k != "intended_use"}
    card = model_card(full_record(metadata=meta))
    assert missing_sections(card) == ["Uses / Direct Use"]
    assert "Missing: the intended use" in card_markdown(card)


def test_empty_values_count_as_missing() -> None:
    meta = dict(FULL_META, description="  ", risks=[], metrics={})
    lacks = missing_sections(model_card(full_record(metadata=meta)))
    assert lacks == [
        "Model Details / Description",
        "Bias, Risks, and Limitations / Risks",
        "Evaluation / Metrics",
    ]


def test_partial_audit_is_marked_per_dataset() -> None:
    record = full_record(datasets=(dataset("b"), dataset("c", audit=None)))
    card = model_card(record)
    assert missing_sections(card) == []  # one dataset is audited: the section exists...
    text = card_markdown(card)
    # ...and the other is marked missing inline.
    assert f"`manifest-sha256:{'c' * 64}`): Missing: no `bastion data audit` result" in text
    assert "flagged_rows: 12" in text


def test_security_and_provenance_sections() -> None:
    text = card_markdown(model_card(full_record()))
    assert "Verdict: **clean** (1 info)" in text
    assert f"Report digest: `sha256:{'e' * 64}`" in text
    assert f"Signed by: `sha256:{'f' * 64}` (key)" in text
    assert "Verification: verified" in text
    assert "approved by bob: reviewed the gate report (event 7)" in text
    assert "Aliases: `production`" in text
    assert f"`model.safetensors` sha256 `{'c' * 64}` (2000 bytes)" in text
    signature = full_record().signature
    assert signature is not None
    failed = dataclasses.replace(signature, verified=False)
    assert "verification FAILED" in card_markdown(model_card(full_record(signature=failed)))


def test_no_machine_path_leaves_the_registry() -> None:
    card = model_card(full_record())
    for text in (card_markdown(card), card_huggingface(card)):
        for path in MACHINE_PATHS:
            assert path not in text
    # Without a source, a dataset is named by its manifest's file name only.
    text = card_markdown(model_card(full_record(datasets=(dataset(source=None),))))
    assert "| train.manifest.json |" in text
    assert "/home/alice" not in text


def test_lineage_chain_follows_parents() -> None:
    grandparent = bare_record(name="fraud", version=0, digest="sha256:" + "0" * 64)
    parent = bare_record(name="fraud", version=1, parent="fraud@0", datasets=(dataset("9"),))
    record = full_record()
    chain = lineage_chain(record, [grandparent, parent])
    assert [(ref, r.ref if r else None) for ref, r in chain] == [
        ("fraud@1", "fraud@1"),
        ("fraud@0", "fraud@0"),
    ]
    text = card_markdown(model_card(record, lineage=[parent, grandparent]))
    assert f"fine-tuned from `fraud@0` (`sha256:{'0' * 64}`" in text
    assert f"trained on `manifest-sha256:{'9' * 64}`" in text
    # A parent whose record was not provided is named, not described.
    alone = card_markdown(model_card(record))
    assert "fine-tuned from `fraud@1` (its registry record was not provided)" in alone
    # A cycle (a store bug) does not loop.
    looped = bare_record(name="fraud", version=1, parent="fraud@2")
    assert [ref for ref, _ in lineage_chain(record, [looped])] == ["fraud@1"]


def test_huggingface_front_matter() -> None:
    text = card_huggingface(model_card(full_record()))
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["license"] == "apache-2.0"
    assert meta["library_name"] == "pytorch"
    assert meta["tags"] == ["bastion", "safetensors", "pytorch", "tabular-classification"]
    assert meta["datasets"] == ["s3://bucket/b"]
    assert meta["base_model"] == "fraud@1"
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert entry["name"] == "fraud"
    assert result["task"] == {"type": "tabular-classification"}
    assert result["dataset"]["type"] == "manifest-sha256:" + "b" * 64
    assert result["metrics"] == [
        {"type": "auc", "value": 0.94, "name": "auc"},
        {"type": "recall", "value": 0.81, "name": "recall"},
    ]
    # The body follows the Hugging Face template's section order.
    headings = [line for line in body.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Model Details",
        "## Uses",
        "## Bias, Risks, and Limitations",
        "## Training Details",
        "## Evaluation",
        "## Security",
        "## Provenance",
    ]


def test_huggingface_front_matter_without_metadata_invents_nothing() -> None:
    text = card_huggingface(model_card(bare_record()))
    meta = yaml.safe_load(text[4:].split("\n---\n", 1)[0])
    assert meta == {"tags": ["bastion", "pickle"]}


def test_metrics_given_as_json_text() -> None:
    assert meta_mapping({"metrics": '{"auc": 0.9}'}, "metrics") == {"auc": 0.9}
    assert meta_mapping({"metrics": "auc 0.9"}, "metrics") == {"value": "auc 0.9"}
    assert meta_mapping({"metrics": ""}, "metrics") is None
    card = model_card(full_record(metadata=dict(FULL_META, metrics='{"auc": 0.9}')))
    assert "| auc | 0.9 |" in card_markdown(card)


def test_many_files_are_summarised() -> None:
    files = tuple(ArtifactFile(f"shard-{i:03}.safetensors", "c" * 64, 1) for i in range(25))
    text = card_markdown(model_card(full_record(files=files)))
    assert "shard-019.safetensors" in text
    assert "shard-020.safetensors" not in text
    assert "... and 5 more (`bastion registry show fraud@2`)" in text


def test_markdown_is_deterministic_and_table_safe() -> None:
    record = full_record(metadata=dict(FULL_META, metrics={"a|b": "<1%"}))
    first = card_markdown(model_card(record))
    assert first == card_markdown(model_card(record))
    assert r"| a\|b | &lt;1% |" in first


@pytest.mark.parametrize("value", [["one", "two"], ("one", "two")])
def test_list_metadata_renders_as_bullets(value: Any) -> None:
    text = card_markdown(model_card(full_record(metadata=dict(FULL_META, limitations=value))))
    assert "### Limitations\n\n- one\n- two\n" in text
