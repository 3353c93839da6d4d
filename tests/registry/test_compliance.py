"""The compliance report: the control map as data, evidence from records and events, gaps stated plainly.

docs/compliance.md is generated: run `python scripts/gen_compliance_docs.py` after editing controls.yaml.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bastion.errors import ConfigError, InputError
from bastion.registry.compliance import (
    CHECKS,
    CONTROLS_PATH,
    EVIDENCED,
    GAP,
    PARTIAL,
    ComplianceReport,
    compliance_report,
    load_control_map,
    parse_control_map,
    render_json,
    render_markdown,
    render_table,
)
from bastion.registry.record import (
    Approval,
    ArtifactFile,
    DatasetRef,
    ScanSummary,
    SignatureInfo,
    VersionRecord,
)

ROOT = Path(__file__).resolve().parents[2]
T = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = T + timedelta(days=200)
FULL_META = {
    "description": "Fraud scorer",
    "license": "Apache-2.0",
    "intended_use": "Rank transactions",
    "out_of_scope": "Account closure",
    "limitations": "EU data only",
    "risks": "New-customer bias",
    "metrics": {"auc": 0.94},
    "fairness": {"dpd": 0.03},
    "privacy": {"dp_epsilon": 3},
    "authors": "Risk ML",
    "contact": "ml@example.com",
    "task": "tabular-classification",
    "architecture": "gbdt",
}


def dataset(tag: str, *, audit: bool = True) -> DatasetRef:
    """A signed dataset manifest, audited unless told otherwise."""
    return DatasetRef(
        digest="manifest-sha256:" + tag * 64,
        source=f"s3://bucket/{tag}",
        rows=100,
        files=1,
        signed=True,
        signer="MCowBQYDK2VwAyEA",
        audit={"flagged_rows": 4} if audit else None,
    )


def version(n: int, **kw: Any) -> VersionRecord:
    """``fraud@n``: scanned clean, signed and verified, trained on an audited dataset, deployed."""
    fields: dict[str, Any] = {
        "name": "fraud",
        "version": n,
        "created_at": T,
        "created_by": "alice",
        "location": "/srv/models/fraud",
        "digest": "sha256:" + str(n) * 64,
        "format": "safetensors",
        "framework": "pytorch",
        "size": 10,
        "files": (ArtifactFile("model.safetensors", "e" * 64, 10),),
        "datasets": (dataset("b"),),
        "scan": ScanSummary("clean", {}, (), "0.1.0", T, "sha256:" + "d" * 64),
        "signature": SignatureInfo(
            "key", "sha256:" + "f" * 64, "model.sig", T, "sha256:" + str(n) * 64, True, T
        ),
        "state": "deployed",
        "approvals": (
            Approval("approved", "bob", "reviewed", T, 5),
            Approval("deployed", "bob", "gate passed", T, 7),
        ),
        "aliases": ("production",),
        "metadata": dict(FULL_META),
    }
    fields.update(kw)
    return VersionRecord(**fields)


class Log:
    """Builds an event list with increasing ids and times."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, action: str, subject: str = "", **payload: Any) -> int:
        """Append an event and return its id."""
        eid = len(self.events) + 1
        at = T + timedelta(days=eid)
        self.events.append(
            {"id": eid, "at": at, "actor": "alice", "action": action, "subject": subject, "payload": payload}
        )
        return eid


def healthy(log: Log, ref: str = "fraud@1") -> None:
    """The events of a version that went through every step."""
    log.add("data.fingerprinted", "manifest-sha256:" + "b" * 64)
    log.add("data.audited", "manifest-sha256:" + "b" * 64, flagged_rows=4)
    log.add("model.registered", ref)
    log.add("model.scanned", ref, verdict="clean")
    log.add("model.signed", ref)
    log.add("model.verified", ref, ok=True)
    log.add("gate.evaluated", ref, passed=True, policy="prod.yaml", digest="sha256:" + "9" * 64)
    log.add("model.state", ref, **{"from": "registered", "to": "approved", "reason": "reviewed"})
    log.add("model.state", ref, **{"from": "approved", "to": "deployed", "reason": "gate passed"})
    log.add(
        "alias.moved", "fraud@production", alias="production", to=int(ref.split("@")[1]), **{"from": None}
    )
    log.add("card.written", ref)
    log.add("bom.written", "", digest="sha256:" + "8" * 64)


def second(log: Log) -> VersionRecord:
    """``fraud@2``: registered, carded, everything else in order except that it is not signed."""
    log.add("card.written", "fraud@2")
    return version(2, signature=None, state="registered", approvals=(), aliases=())


def report(records: list[VersionRecord], log: Log, *, verified: bool | None = True) -> ComplianceReport:
    """The report at NOW."""
    return compliance_report(records, log.events, now=NOW, log_verified=verified)


def status(rep: ComplianceReport, control: str) -> str:
    """The status of ``control``."""
    return next(r.status for r in rep.controls if r.control.id == control)


def result(rep: ComplianceReport, control: str) -> Any:
    """The result of ``control``."""
    return next(r for r in rep.controls if r.control.id == control)


# -- the control map -----------------------------------------------------------------------------------------


def test_control_map_lists_the_controls_and_frameworks() -> None:
    cmap = load_control_map()
    ids = [c.id for c in cmap.controls]
    assert ids == [
        "artifact-scanning",
        "model-signing",
        "registry-approvals",
        "lineage-provenance",
        "data-audit",
        "policy-gates",
        "event-log",
        "ai-bom",
        "model-cards",
        "inference-gateway",
        "shadow-ai-discovery",
        "monitoring",
    ]
    assert {c.check for c in cmap.controls if c.check} == set(CHECKS)
    assert [c.id for c in cmap.controls if c.check is None] == [
        "inference-gateway",
        "shadow-ai-discovery",
        "monitoring",
    ]
    assert [f.key for f in cmap.frameworks] == [
        "owasp-llm-2025",
        "owasp-ml-2023",
        "mitre-atlas",
        "nist-ai-rmf",
        "eu-ai-act",
    ]
    assert list(cmap.framework("owasp-llm-2025").items) == [f"LLM{i:02}" for i in range(1, 11)]
    assert list(cmap.framework("owasp-ml-2023").items) == [f"ML{i:02}" for i in range(1, 11)]
    assert cmap.framework("owasp-llm-2025").items["LLM03"] == "Supply Chain"
    # Every evidenced control maps to NIST AI RMF and the EU AI Act, with the function in the item id.
    for c in cmap.controls:
        assert c.maps["nist-ai-rmf"], c.id
        assert c.maps["eu-ai-act"], c.id
        assert all(i.split()[0] in {"GOVERN", "MAP", "MEASURE", "MANAGE"} for i in c.maps["nist-ai-rmf"])


def _map_data() -> dict[str, Any]:
    data = yaml.safe_load(CONTROLS_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["controls"][0]["maps"]["owasp-llm-2025"].append("LLM99"),
            "artifact-scanning: owasp-llm-2025 has no item 'LLM99'",
        ),
        (
            lambda d: d["controls"][0].update(check="no_such_check"),
            "artifact-scanning: unknown check 'no_such_check'",
        ),
        (
            lambda d: d["controls"][-1].pop("gap"),
            "monitoring: a control without a check needs a 'gap' reason",
        ),
        (lambda d: d["controls"][1].update(id="artifact-scanning"), "artifact-scanning: duplicate id"),
        (lambda d: d["controls"][0]["maps"].update(iso=["A.1"]), "unknown framework 'iso'"),
        (lambda d: d.update(format="other"), "not a control map"),
        (lambda d: d["controls"][0].pop("title"), "'title' is missing"),
    ],
)
def test_bad_control_map_is_a_config_error(mutate: Any, message: str) -> None:
    data = _map_data()
    mutate(data)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_control_map(data, "controls.yaml")


def test_control_map_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_control_map(path) == load_control_map()
    path.write_text("format: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"controls.yaml: line \d+ not valid YAML"):
        load_control_map(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_control_map(tmp_path / "missing.yaml")


# -- evidence ------------------------------------------------------------------------------------------------


def test_a_healthy_registry_evidences_every_implemented_control() -> None:
    log = Log()
    healthy(log)
    rep = report([version(1)], log)
    for r in rep.controls:
        expected = GAP if r.control.check is None else EVIDENCED
        assert r.status == expected, (r.control.id, r.missing)
    assert rep.counts() == {EVIDENCED: 9, PARTIAL: 0, GAP: 3}
    signing = result(rep, "model-signing")
    assert "event 5: model.signed fraud@1" in signing.evidence
    assert "event 6: model.verified fraud@1 (ok: True)" in signing.evidence
    assert signing.event_ids == (5, 6)
    assert "1 of 1 active version signed" in signing.evidence
    assert "fraud@1: clean, report sha256:" + "d" * 64 in result(rep, "artifact-scanning").evidence
    assert (
        "event 10: alias.moved fraud@production (production: none -> fraud@1)"
        in result(rep, "registry-approvals").evidence
    )
    assert "event 7: gate.evaluated fraud@1 (passed)" in result(rep, "policy-gates").evidence
    assert "hash chain verified intact (`bastion events verify`)" in result(rep, "event-log").evidence
    assert result(rep, "inference-gateway").missing[0].startswith("Bastion has no inference gateway yet")


def test_empty_registry_is_all_gaps() -> None:
    rep = compliance_report([], [], now=NOW)
    assert {r.status for r in rep.controls} == {GAP}
    assert "no active model versions are registered" in result(rep, "model-signing").missing
    assert "the event log is empty" in result(rep, "event-log").missing


def test_signing_partial_and_gap() -> None:
    log = Log()
    healthy(log)
    unsigned = version(2, signature=None)
    rep = report([version(1), unsigned], log)
    assert status(rep, "model-signing") == PARTIAL
    assert "not signed: fraud@2" in result(rep, "model-signing").missing
    assert "1 of 2 active versions signed" in result(rep, "model-signing").evidence
    rep = report([version(1, signature=None)], Log())
    assert status(rep, "model-signing") == GAP


def test_failed_verification_is_named_with_its_event() -> None:
    log = Log()
    healthy(log)
    failed = log.add("model.verified", "fraud@1", ok=False)
    rep = report([version(1)], log)
    assert status(rep, "model-signing") == PARTIAL
    assert (
        f"fraud@1 failed verification (event {failed}) and is still deployed"
        in result(rep, "model-signing").missing
    )
    # Once revoked, the version leaves the active scope and the control no longer flags it.
    rep = report([version(1, state="revoked"), version(2)], log)
    assert not any("fraud@1" in m for m in result(rep, "model-signing").missing)


def test_signed_but_never_verified() -> None:
    sig = SignatureInfo("key", "sha256:" + "f" * 64, "model.sig", T, "sha256:" + "1" * 64)
    rep = report([version(1, signature=sig)], Log())
    assert "signed but never verified: fraud@1" in result(rep, "model-signing").missing


def test_scanning_flags_unscanned_and_shipped_malicious_versions() -> None:
    bad = ScanSummary("malicious", {"critical": 1}, (), "0.1.0", T, "sha256:" + "6" * 64)
    rep = report([version(1, scan=None), version(2, scan=bad)], Log())
    missing = result(rep, "artifact-scanning").missing
    assert "not scanned: fraud@1" in missing
    assert "fraud@2 is deployed although its scan verdict is malicious" in missing
    assert status(rep, "artifact-scanning") == PARTIAL
    # A quarantined malicious version is the control working: reported as evidence, out of scope.
    rep = report([version(1), version(2, scan=bad, state="quarantined")], Log())
    assert status(rep, "artifact-scanning") == EVIDENCED
    assert "fraud@2: malicious, now quarantined" in result(rep, "artifact-scanning").evidence
    assert status(report([version(1, scan=None)], Log()), "artifact-scanning") == GAP


def test_approvals_and_alias_history() -> None:
    log = Log()
    rep = report([version(1, approvals=(), aliases=())], log)
    missing = result(rep, "registry-approvals").missing
    assert "fraud@1 is deployed but no approval with an actor and a reason is recorded" in missing
    assert status(rep, "registry-approvals") == GAP  # nothing recorded at all
    rep = report([version(1)], log)
    assert status(rep, "registry-approvals") == PARTIAL
    not_set = "alias production -> fraud@1 was not set by the latest recorded alias.moved event"
    assert not_set in result(rep, "registry-approvals").missing
    # A move may name the version by number (as the registry records it) or by ref.
    log.add("alias.moved", "fraud@production", alias="production", to="fraud@1")
    assert status(report([version(1)], log), "registry-approvals") == EVIDENCED
    # A later move away (the database then edited back by hand) leaves the alias unexplained.
    log.add("alias.moved", "fraud@production", alias="production", to=2, **{"from": 1})
    assert not_set in result(report([version(1)], log), "registry-approvals").missing
    log.add("alias.moved", "fraud@production", alias="production", to=1, **{"from": 2})
    assert status(report([version(1)], log), "registry-approvals") == EVIDENCED
    # The same alias of another model does not count.
    other = Log()
    other.add("model.state", "fraud@1", **{"from": "registered", "to": "approved"})
    other.add("alias.moved", "scoring@production", alias="production", to=1)
    assert not_set in result(report([version(1)], other), "registry-approvals").missing


def test_lineage_needs_data_and_known_parents() -> None:
    rep = report([version(1, datasets=()), version(2, parent="fraud@0")], Log())
    missing = result(rep, "lineage-provenance").missing
    assert "no training data recorded: fraud@1" in missing
    assert "fraud@2's parent fraud@0 is not among the versions in this report" in missing
    assert "fraud@2 fine-tuned from fraud@0" in result(rep, "lineage-provenance").evidence
    assert status(rep, "lineage-provenance") == PARTIAL
    assert status(report([version(1, datasets=())], Log()), "lineage-provenance") == GAP


def test_data_audit_coverage() -> None:
    rep = report([version(1, datasets=(dataset("b"), dataset("c", audit=False)))], Log())
    assert status(rep, "data-audit") == PARTIAL
    assert f"not audited: s3://bucket/c (manifest-sha256:{'c' * 64})" in result(rep, "data-audit").missing
    assert "1 of 2 training datasets carry an audit result" in result(rep, "data-audit").evidence
    log = Log()
    log.add("data.audited", "manifest-sha256:" + "9" * 64)
    rep = report([version(1, datasets=(dataset("c", audit=False),))], log)
    assert status(rep, "data-audit") == PARTIAL  # audits ran, but none is tied to a model
    assert status(report([version(1, datasets=(dataset("c", audit=False),))], Log()), "data-audit") == GAP


def test_gates_must_pass_for_released_versions() -> None:
    log = Log()
    healthy(log)
    blocked = log.add("gate.evaluated", "fraud@1", passed=False, policy="prod.yaml")
    rep = report([version(1), version(2, state="approved")], log)
    missing = result(rep, "policy-gates").missing
    assert f"fraud@1 is deployed but its latest gate decision (event {blocked}) blocked it" in missing
    assert "fraud@2 is approved without a recorded gate decision" in missing
    assert "2 gate decisions recorded (1 passed, 1 blocked)" in result(rep, "policy-gates").evidence
    assert "policies: prod.yaml" in result(rep, "policy-gates").evidence
    assert status(rep, "policy-gates") == PARTIAL
    assert status(report([version(1)], Log()), "policy-gates") == GAP


def test_event_log_status_follows_verification() -> None:
    log = Log()
    healthy(log)
    assert status(report([version(1)], log, verified=True), "event-log") == EVIDENCED
    unverified = report([version(1)], log, verified=None)
    assert status(unverified, "event-log") == PARTIAL
    assert "run `bastion events verify`" in result(unverified, "event-log").missing[0]
    assert status(report([version(1)], log, verified=False), "event-log") == GAP
    evidence = result(unverified, "event-log").evidence
    assert evidence[0] == "12 events, ids 1 to 12"
    assert evidence[1] == "from 2025-03-02 to 2025-03-13 (11 days)"


def test_stale_bom_is_partial() -> None:
    log = Log()
    healthy(log)
    later = log.add("model.registered", "fraud@2")
    rep = report([version(1)], log)
    assert status(rep, "ai-bom") == PARTIAL
    assert (
        f"the latest AI-BOM (event 12) predates 1 registration (events {later})"
        in result(rep, "ai-bom").missing
    )
    assert status(report([version(1)], Log()), "ai-bom") == GAP


def test_model_cards_need_writing_and_content() -> None:
    log = Log()
    healthy(log)
    rep = report([version(1), version(2, metadata={})], log)
    missing = result(rep, "model-cards").missing
    assert "no card written: fraud@2" in missing
    assert any(m.startswith("fraud@2's card lacks 13 sections: Model Details / Description") for m in missing)
    assert status(rep, "model-cards") == PARTIAL


def test_bad_events_are_input_errors() -> None:
    with pytest.raises(InputError, match="event #2: needs an integer 'id' and an 'action'"):
        compliance_report([], [{"id": 1, "action": "model.registered"}, {"action": "x"}], now=NOW)


# -- the frameworks view -----------------------------------------------------------------------------------


def test_framework_items_show_their_controls() -> None:
    log = Log()
    healthy(log)
    rep = report([version(1)], log)
    items = {(i.framework, i.id): i for i in rep.frameworks}
    llm03 = items[("owasp-llm-2025", "LLM03")]
    assert llm03.title == "Supply Chain"
    assert ("artifact-scanning", EVIDENCED) in llm03.controls
    assert ("shadow-ai-discovery", GAP) in llm03.controls
    assert llm03.status == PARTIAL  # evidence for part of it, a gap for the rest
    llm07 = items[("owasp-llm-2025", "LLM07")]
    assert llm07.controls == (("inference-gateway", GAP),)
    assert llm07.status == GAP
    manage = items[("nist-ai-rmf", "MANAGE 1.1")]
    assert manage.status == EVIDENCED
    assert {c for c, _ in manage.controls} == {"registry-approvals", "policy-gates"}
    uncovered = items[("nist-ai-rmf", "MEASURE 2.10")]
    assert (uncovered.controls, uncovered.status) == ((), GAP)


# -- renderers -----------------------------------------------------------------------------------------------


def test_json_rendering() -> None:
    log = Log()
    healthy(log)
    data = json.loads(render_json(report([version(1), second(log)], log)))
    assert data["format"] == "bastion.compliance"
    assert data["scope"] == {"versions": 2, "active_versions": 2, "events": 13, "log_verified": True}
    # fraud@2 is unsigned: signing is partial, and so is its card, whose Signature section is missing.
    assert data["summary"] == {EVIDENCED: 7, PARTIAL: 2, GAP: 3}
    signing = next(c for c in data["controls"] if c["id"] == "model-signing")
    assert signing["status"] == PARTIAL
    assert signing["missing"] == ["not signed: fraud@2"]
    assert signing["maps"]["owasp-llm-2025"] == ["LLM03", "LLM04"]
    llm = next(f for f in data["frameworks"] if f["id"] == "owasp-llm-2025")
    assert [i["id"] for i in llm["items"]] == [f"LLM{i:02}" for i in range(1, 11)]


def test_markdown_rendering() -> None:
    log = Log()
    healthy(log)
    text = render_markdown(report([version(1), second(log)], log))
    assert "Controls: 7 evidenced, 2 partial, 3 gap." in text
    assert "## Model signing and verification: partial" in text
    assert "- not signed: fraud@2" in text
    assert "- event 5: model.signed fraud@1" in text
    assert "### OWASP Top 10 for LLM Applications 2025" in text
    assert "| LLM07 System Prompt Leakage | gap | inference-gateway (gap) |" in text
    assert "| MEASURE 2.10 Privacy risk is examined and documented | gap | no Bastion control |" in text
    assert "/srv/models" not in text


def test_long_evidence_is_shortened_in_markdown_only() -> None:
    log = Log()
    for _ in range(30):
        log.add("model.signed", "fraud@1")
    rep = report([version(1)], log)
    assert len(result(rep, "model-signing").evidence) == 33
    assert "- ... and 21 more (the JSON report lists all)" in render_markdown(rep)


def test_table_rendering() -> None:
    log = Log()
    healthy(log)
    text = render_table(report([version(1)], log), width=160)
    assert "\x1b[" not in text
    for title in ("Model artifact scanning", "Inference gateway", "OWASP Top 10 for LLM Applications 2025"):
        assert title in text
    coloured = render_table(report([version(1)], log), width=160, color=True)
    assert "\x1b[" in coloured


# -- docs ----------------------------------------------------------------------------------------------------


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_compliance_docs", ROOT / "scripts" / "gen_compliance_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compliance_doc_is_up_to_date() -> None:
    fresh = _generator().compliance_markdown()
    current = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
    assert current == fresh, "docs/compliance.md is stale: run python scripts/gen_compliance_docs.py"


def test_compliance_doc_covers_every_control_and_item() -> None:
    text = _generator().compliance_markdown()
    cmap = load_control_map()
    for c in cmap.controls:
        assert f'<a id="{c.id}"></a>' in text
        assert f"### {c.title} (`{c.id}`)" in text
    for fw in cmap.frameworks:
        for item, title in fw.items.items():
            assert f"| {item} {title} |" in text
