"""Policies: loading with precise errors, CEL evaluation over real facts, composition, the example policy."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ConfigError
from bastion.registry.facts import version_facts
from bastion.registry.gate import ERROR, FAIL, PASS, SKIPPED
from bastion.registry.policy import Policy, evaluate, load_policy, parse_policy
from bastion.registry.record import (
    APPROVED,
    QUARANTINED,
    REGISTERED,
    REVOKED,
    Approval,
    ArtifactFile,
    DatasetRef,
    ScanSummary,
    SignatureInfo,
    VersionRecord,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policy.yaml"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
RELEASE_KEY = "sha256:5b1c3a0c2d6f4e8a9b7c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708"


def record(**changes: Any) -> VersionRecord:
    """A version that meets examples/policy.yaml; ``changes`` replace fields."""
    base = VersionRecord(
        name="fraud-detector",
        version=7,
        created_at=NOW - timedelta(days=10),
        created_by="alice",
        location="/models/fraud-detector",
        digest=DIGEST,
        format="safetensors",
        framework="transformers",
        size=1234,
        files=(ArtifactFile("model.safetensors", "ab" * 32, 1234),),
        datasets=(
            DatasetRef(
                digest="manifest-sha256:" + "cd" * 32,
                source="transactions-2025",
                rows=1000,
                files=2,
                signed=True,
                signer="key",
                # the shape bastion.registry.versions.audit_summary records
                audit={
                    "source": "audit",
                    "verdict": "clean",
                    "at": (NOW - timedelta(days=20)).isoformat().replace("+00:00", "Z"),
                    "rows": 1000,
                    "flagged": 12,
                    "flagged_share": 0.012,
                    "high": 0,
                },
            ),
        ),
        scan=ScanSummary(
            verdict="clean",
            counts={"low": 1},
            findings=({"rule": "BST-PKL-010", "severity": "low", "message": "m", "location": "model"},),
            tool_version="0.1.0",
            scanned_at=NOW - timedelta(days=1),
        ),
        signature=SignatureInfo(
            method="key",
            signer=RELEASE_KEY,
            bundle_path="model.sig",
            signed_at=NOW - timedelta(days=2),
            digest=DIGEST,
            verified=True,
        ),
        state=APPROVED,
        approvals=(Approval(APPROVED, "bob", "evaluation reviewed", NOW - timedelta(days=1)),),
        metadata={"license": "Apache-2.0"},
    )
    return dataclasses.replace(base, **changes)


def _signature() -> SignatureInfo:
    sig = record().signature
    assert sig is not None
    return sig


def facts(**changes: Any) -> dict[str, Any]:
    return version_facts(record(**changes), now=NOW)


def policy(rules: str, name: str = "test") -> Policy:
    return parse_policy(f"version: 1\nname: {name}\nrules:\n{rules}", "policy.yaml")


def load_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "policy.yaml")
    message = info.value.diagnostics()
    assert "\n" not in message
    return message


HEAD = "version: 1\nname: x\nrules:\n"


# --- facts ---------------------------------------------------------------------------------------------


def _plain_types(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_types(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def test_facts_are_plain_json_data_with_the_documented_layout() -> None:
    f = version_facts(
        record(
            metadata={"license": "MIT", "when": NOW, "tags": ("a", "b"), "set": {2, 1}, "nan": float("nan")}
        ),
        now=NOW,
    )
    assert _plain_types(f)
    assert set(f) == {
        "now", "model", "scan", "signature", "datasets", "datasets_count", "lineage", "approvals", "approved",
        "approvers", "metrics", "fairness", "privacy", "integrity",
    }  # fmt: skip
    assert f["now"] == "2025-06-01T12:00:00Z"
    model = f["model"]
    assert model["ref"] == "fraud-detector@7"
    assert model["created_at"] == "2025-05-22T12:00:00Z"
    assert model["age_days"] == pytest.approx(10.0)
    assert model["metadata"] == {"license": "MIT", "when": "2025-06-01T12:00:00Z", "tags": ["a", "b"],
                                 "set": [1, 2], "nan": None}  # fmt: skip
    assert "location" not in model  # a machine path has no business in a policy decision
    assert f["scan"]["counts"] == {"critical": 0, "high": 0, "medium": 0, "low": 1, "info": 0}
    assert f["scan"]["rules_by_severity"]["low"] == ["BST-PKL-010"]
    assert f["datasets"][0]["audit"] == {
        "verdict": "clean", "flagged": 12, "flagged_share": 0.012, "high": 0, "age_days": pytest.approx(20.0),
    }  # fmt: skip
    assert f["lineage"] == {"complete": True, "missing": [], "parent": None}
    assert f["integrity"]["checked"] is False
    assert f["metrics"] == {}
    assert f["fairness"] == {}


def test_facts_without_scan_or_signature() -> None:
    f = facts(scan=None, signature=None)
    assert f["scan"]["present"] is False
    assert f["scan"]["counts"] == dict.fromkeys(("critical", "high", "medium", "low", "info"), 0)
    assert f["scan"]["verdict"] is None
    assert f["signature"] == {
        "present": False, "method": None, "signer": None, "verified": False, "matches_artifact": False,
        "age_days": None, "digest": None, "detail": "not signed",
    }  # fmt: skip


def test_counts_missing_from_the_record_are_counted_from_the_findings() -> None:
    findings = tuple({"rule": f"R{i}", "severity": "HIGH" if i % 2 else "low"} for i in range(5))
    f = facts(scan=ScanSummary("suspicious", {"critical": 0}, findings))
    assert f["scan"]["counts"] == {"critical": 0, "high": 2, "medium": 0, "low": 3, "info": 0}
    assert f["scan"]["findings"][1] == {"rule": "R1", "severity": "high", "message": "", "location": ""}
    assert f["scan"]["rules"] == ["R0", "R1", "R2", "R3", "R4"]


def test_signature_never_checked_is_not_verified() -> None:
    f = facts(signature=dataclasses.replace(_signature(), verified=None))
    assert f["signature"]["verified"] is False
    assert f["signature"]["detail"] == "never verified"
    assert f["signature"]["matches_artifact"] is True
    assert facts(digest="sha256:" + "00" * 32)["signature"]["matches_artifact"] is False


def test_approvals_before_a_revocation_no_longer_count() -> None:
    day = timedelta(days=1)
    history = (
        Approval(APPROVED, "bob", "ok", NOW - 5 * day),
        Approval(REVOKED, "sec", "CVE in tokenizer", NOW - 4 * day),
        Approval(REGISTERED, "sec", "reinstated after the fix", NOW - 3 * day),
    )
    f = facts(approvals=history, state=REGISTERED)
    assert (f["approved"], f["approvers"]) == (False, [])
    assert [a["state"] for a in f["approvals"]] == [APPROVED, REVOKED, REGISTERED]
    again = facts(approvals=(*history, Approval(APPROVED, "carol", "re-reviewed", NOW - day)), state=APPROVED)
    assert (again["approved"], again["approvers"]) == (True, ["carol"])
    # Approved, but the version is quarantined now: not approved.
    assert facts(state=QUARANTINED)["approved"] is False


def test_approvals_are_ordered_by_time_and_approvers_are_distinct() -> None:
    history = (
        Approval("deployed", "bob", "ship", NOW - timedelta(hours=1)),
        Approval(APPROVED, "bob", "ok", NOW - timedelta(days=1)),
        Approval(APPROVED, "carol", "ok", NOW - timedelta(hours=2)),
    )
    f = facts(approvals=history)
    assert [a["state"] for a in f["approvals"]] == [APPROVED, APPROVED, "deployed"]
    assert f["approvers"] == ["bob", "carol"]


def test_lineage_says_what_is_missing() -> None:
    assert facts(datasets=())["lineage"]["missing"] == ["no training dataset recorded"]
    unaudited = DatasetRef(digest="manifest-sha256:" + "ee" * 32)
    nameless = DatasetRef(digest="sha256:" + "ff" * 32, audit={"verdict": "clean"})
    f = facts(datasets=(unaudited, nameless), parent="base-model")
    assert f["lineage"]["complete"] is False
    assert f["lineage"]["missing"] == [
        "manifest-sha256:eeeeeeeeeeee was not audited",
        "dataset 2 has no manifest digest",
        "parent 'base-model' is not named as MODEL@VERSION",
    ]
    assert f["datasets"][0]["audit"] is None
    assert f["datasets"][0]["audited"] is False
    assert facts(parent="base-model@3")["lineage"] == {
        "complete": True,
        "missing": [],
        "parent": "base-model@3",
    }


def test_audit_facts_from_a_full_audit_report() -> None:
    report = {
        "dataset": {"rows": 200},
        "summary": {"flagged_rows": 10},
        "findings": [{"severity": "high"}, {"severity": "critical"}, {"severity": "low"}],
        "lineage": {"created": "2025-05-31T12:00:00Z"},
    }
    (ds,) = record().datasets
    f = facts(datasets=(dataclasses.replace(ds, rows=200, audit=report),))
    assert f["datasets"][0]["audit"] == {
        "verdict": None, "flagged": 10, "flagged_share": 0.05, "high": 2, "age_days": pytest.approx(1.0),
    }  # fmt: skip


def test_metrics_fairness_privacy_and_integrity() -> None:
    meta = {"metrics": {"auc": 0.91}, "fairness": {"gap": 0.02}, "privacy": {"epsilon": 3}, "license": "MIT"}
    f = version_facts(
        record(metadata=meta),
        now=NOW,
        verification={"ok": False, "detail": "a.bin: hash mismatch", "changed": ("a.bin",), "extra": ["b"]},
    )
    assert (f["metrics"], f["fairness"], f["privacy"]) == ({"auc": 0.91}, {"gap": 0.02}, {"epsilon": 3})
    assert f["integrity"] == {
        "checked": True, "ok": False, "detail": "a.bin: hash mismatch", "changed": ["a.bin"], "missing": [],
        "extra": ["b"],
    }  # fmt: skip


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None) - timedelta(days=2)
    f = facts(created_at=naive)
    assert f["model"]["created_at"] == "2025-05-30T12:00:00Z"
    assert f["model"]["age_days"] == pytest.approx(2.0)


# --- load-time errors -----------------------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line() -> None:
    text = HEAD + "  - id: a\n    require: approved\n   bad: 1\n"
    assert load_error(text).startswith("policy.yaml:6: ")


def test_tab_indentation_names_the_line() -> None:
    assert load_error(HEAD + "\t- id: a\n").startswith("policy.yaml:4: ")


def test_cel_syntax_error_names_file_line_rule_and_problem() -> None:
    text = (
        HEAD
        + "  - id: ok\n    require: approved\n  - id: no-critical\n    require: scan.counts.critical = 0\n"
    )
    message = load_error(text)
    assert message.startswith("policy.yaml:7: rule no-critical: require: CEL syntax error")
    assert "column" in message


def test_cel_syntax_error_in_when_names_when() -> None:
    text = HEAD + "  - id: a\n    when: model.format ==\n    require: approved\n"
    assert load_error(text).startswith("policy.yaml:5: rule a: when: CEL syntax error")


def test_unknown_fact_root_is_a_load_error() -> None:
    message = load_error(HEAD + "  - id: a\n    require: signatures.verified\n")
    assert message.startswith("policy.yaml:5: rule a: require: unknown name 'signatures'")


def test_misspelt_field_is_a_load_error_with_the_known_fields() -> None:
    message = load_error(HEAD + "  - id: a\n    require: scan.count.critical == 0\n")
    assert "unknown fact 'scan.count'" in message
    assert "counts" in message


def test_field_of_a_scalar_fact_is_a_load_error() -> None:
    assert "model.name has no field 'first'" in load_error(
        HEAD + "  - id: a\n    require: model.name.first == 'x'\n"
    )


def test_free_dictionaries_and_methods_and_macro_variables_are_not_flagged() -> None:
    p = policy(
        "  - id: a\n"
        "    require: >-\n"
        "      model.name.startsWith('fraud') && datasets.all(d, d.audited)\n"
        "      && (!has(model.metadata.team) || model.metadata.team.owner == 'x')\n"
        "      && (!has(fairness.gap) || fairness.gap < 0.1) && privacy == {}\n"
    )
    assert p.roots == {"model", "datasets", "fairness", "privacy"}


def test_string_literals_are_not_mistaken_for_facts() -> None:
    p = policy("  - id: a\n    require: model.name != 'scan.count.critical'\n")
    assert evaluate(p, facts()).passed


def test_type_error_is_found_at_load() -> None:
    message = load_error(HEAD + '  - id: a\n    require: model.size + "MB" == "1234MB"\n')
    assert message.startswith("policy.yaml:5: rule a: require: type error")


def test_non_boolean_require_is_found_at_load() -> None:
    assert "gives int" in load_error(HEAD + "  - id: a\n    require: scan.counts.critical\n")


def test_unquoted_bang_gets_a_quoting_hint() -> None:
    message = load_error(HEAD + "  - id: a\n    require: !signature.verified\n")
    assert message.startswith("policy.yaml:5:")
    assert "quote" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "policy.yaml:1: the policy is empty"),
        ("version: 1\nname: x\n", "policy.yaml:1: missing 'rules'"),
        (HEAD, "policy.yaml:3: the policy has no rules"),
        ("version: 1\nname: x\nrules: []\n", "policy.yaml:3: the policy has no rules"),
        (HEAD + "  - any-of: []\n", "policy.yaml:4: composition any-of@4 has no rules"),
        (HEAD + "  - all-of:\n      id: g\n      rules:\n", "policy.yaml:6: composition g has no rules"),
        ("- a\n", "policy.yaml:1: a policy is a mapping"),
        ("name: x\nrules: []\n", "missing 'version: 1'"),
        ("version: 2\nname: x\nrules: []\n", "policy.yaml:1: unsupported policy version 2"),
        ("version: true\nname: x\nrules: []\n", "unsupported policy version True"),
        ("version: 1\nrules: []\n", "missing 'name'"),
        ("version: 1\nname: x\nowner: me\nrules: []\n", "policy.yaml:3: unknown key 'owner'"),
        ("version: 1\nname: x\nname: y\n", "policy.yaml:3: duplicate key 'name'"),
        (HEAD + "  - id: a\n    requires: approved\n", "policy.yaml:5: rule a: unknown key 'requires'"),
        (HEAD + "  - id: a\n    require: approved\n    sevrity: low\n", "unknown key 'sevrity'"),
        (HEAD + "  - any_of: [{id: a, require: approved}]\n", "did you mean 'any-of'?"),
        (HEAD + "  - require: approved\n", "policy.yaml:4: missing 'id'"),
        (HEAD + "  - id: a\n    when: approved\n", "rule a: missing 'require'"),
        (HEAD + "  - id: a b\n    require: approved\n", "id 'a b' must be"),
        (HEAD + "  - id: a\n    require: true\n", "require must be a CEL expression in text"),
        (HEAD + "  - id: a\n    require: approved\n    severity: huge\n", "unknown severity 'huge'"),
        (HEAD + "  - id: a\n    require: approved\n    controls: LLM03\n", "controls must be a list"),
        (HEAD + "  - id: a\n    require: approved\n    message: {x: 1}\n", "quote it"),
        (HEAD + "  - id: a\n    require: approved\n    message: 'a {approved'\n", "unclosed '{'"),
        (HEAD + "  - id: a\n    require: approved\n    message: 'a } b'\n", "unmatched '}'"),
        (HEAD + "  - id: a\n    require: approved\n    message: '{scan.cnt}'\n", "unknown fact 'scan.cnt'"),
        (
            HEAD + "  - id: g\n    any-of: [{id: a, require: approved}]\n",
            "policy.yaml:4: any-of takes its settings",
        ),
        (HEAD + "  - all-of: 3\n", "all-of takes a list of rules"),
        (HEAD + "  - just text\n", "each rule is a mapping"),
        (
            HEAD + "  - {id: a, require: approved}\n  - {id: b, require: approved, when: 1 +}\n",
            "rule b: when:",
        ),
    ],
)
def test_load_errors(text: str, expected: str) -> None:
    assert expected in load_error(text)


def test_duplicate_ids_name_both_lines_even_inside_compositions() -> None:
    text = HEAD + "  - id: a\n    require: approved\n  - any-of:\n      - id: a\n        require: approved\n"
    assert load_error(text) == "policy.yaml:7: duplicate id 'a' (first used on line 4)"


def test_load_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_policy(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:2: policy file is not UTF-8"):
        load_policy(bad)


# --- CEL values: booleans, nulls, numbers -----------------------------------------------------------------


@pytest.mark.parametrize("verified", [True, False, None])
def test_booleans_reach_cel_as_booleans(verified: bool | None) -> None:
    """The Rego wheel the research tried turned Python bools into numbers; CEL must not."""
    f = facts(signature=dataclasses.replace(_signature(), verified=verified))
    p = policy(
        "  - id: negated\n    require: '!signature.verified'\n"
        "  - id: is-bool\n    require: type(signature.verified) == bool && type(approved) == bool\n"
        "  - id: not-a-number\n    require: '!(signature.verified == 1) && !(signature.verified == 0)'\n"
        "  - id: equals-false\n    require: signature.verified == false\n"
    )
    status = {o.rule_id: o.status for o in evaluate(p, f).outcomes}
    expected = PASS if verified is not True else FAIL
    assert status == {"negated": expected, "is-bool": PASS, "not-a-number": PASS, "equals-false": expected}


def test_null_int_and_double_facts() -> None:
    p = policy(
        "  - id: parent-null\n    require: model.parent == null && type(model.parent) == null_type\n"
        "  - id: ints\n    require: type(model.size) == int && model.size == 1234\n"
        "  - id: doubles\n"
        "    require: type(model.age_days) == double && model.age_days > 9.9 && model.age_days < 10.1\n"
        "  - id: mixed-compare\n    require: model.age_days < 11 && datasets[0].audit.flagged_share < 1\n"
    )
    assert [o.status for o in evaluate(p, facts()).outcomes] == [PASS] * 4


# --- evaluation ------------------------------------------------------------------------------------------


def test_pass_and_fail_with_message_placeholders() -> None:
    p = policy(
        "  - id: no-low\n    require: scan.counts.low == 0\n    severity: low\n"
        "    message: '{scan.counts.low} low finding(s): {scan.rules}; {{literal}}'\n"
        "  - id: approved\n    require: approved\n    description: someone approved it\n"
    )
    result = evaluate(p, facts())
    low, ok = result.outcomes
    assert (low.status, low.blocking, low.message) == (FAIL, True, "1 low finding(s): BST-PKL-010; {literal}")
    assert (ok.status, ok.message) == (PASS, "someone approved it")
    assert not result.passed
    assert not result.error
    assert result.exit_code == 1
    assert result.subject == "fraud-detector@7"
    assert result.digest == DIGEST


def test_placeholder_that_fails_does_not_hide_the_failure() -> None:
    p = policy("  - id: a\n    require: approved\n    message: 'team {model.metadata.team}'\n")
    result = evaluate(p, facts(approvals=()))
    assert result.outcomes[0].status == FAIL
    assert result.outcomes[0].message == "team <n/a>"


def test_evaluation_error_is_an_error_outcome_and_exit_2() -> None:
    p = policy(
        "  - id: team\n    require: model.metadata.team == 'risk'\n  - id: ok\n    require: approved\n"
    )
    result = evaluate(p, facts())
    team = result.outcomes[0]
    assert team.status == ERROR
    assert "no such key 'team'" in team.message
    assert result.error
    assert not result.passed
    assert result.exit_code == 2


def test_non_boolean_at_run_time_is_an_error() -> None:
    p = policy("  - id: flag\n    require: model.metadata.reviewed\n")
    result = evaluate(p, facts(metadata={"license": "MIT", "reviewed": "yes"}))
    assert result.outcomes[0].status == ERROR
    assert "not true or false" in result.outcomes[0].message
    assert result.exit_code == 2
    assert evaluate(p, facts(metadata={"reviewed": True})).exit_code == 0


def test_null_where_a_number_was_expected_is_an_error_not_a_pass() -> None:
    p = policy("  - id: fresh\n    require: signature.age_days < 30\n")
    assert evaluate(p, facts()).exit_code == 0
    assert evaluate(p, facts(signature=None)).exit_code == 2


def test_error_inside_a_satisfied_any_of_still_makes_the_gate_an_error() -> None:
    p = policy(
        "  - any-of:\n"
        "      - {id: ok, require: approved}\n"
        "      - {id: broken, require: model.metadata.x == 1}\n"
    )
    result = evaluate(p, facts())
    assert [o.status for o in result.outcomes] == [ERROR, PASS, ERROR]
    assert result.exit_code == 2


def test_evaluate_with_facts_missing_a_root_is_an_error() -> None:
    p = policy("  - id: a\n    require: approved\n")
    result = evaluate(p, {"model": {"ref": "m@1"}})
    assert result.exit_code == 2
    assert "approved" in result.outcomes[0].message


def test_when_false_skips_and_when_error_is_an_error() -> None:
    p = policy(
        "  - id: gguf-only\n    when: model.format == 'gguf'\n    require: scan.counts.critical == 1\n"
        "  - id: by-team\n    when: model.metadata.team == 'a'\n    require: approved\n"
        "  - id: ok\n    require: approved\n"
    )
    result = evaluate(p, facts())
    skipped, broken, ok = result.outcomes
    assert skipped.status == SKIPPED
    assert "model.format == 'gguf'" in skipped.message
    assert broken.status == ERROR
    assert broken.message.startswith("cannot evaluate when")
    assert ok.status == PASS
    assert result.exit_code == 2


def test_nothing_applied_is_an_error_never_a_pass() -> None:
    p = policy("  - id: gguf-only\n    when: model.format == 'gguf'\n    require: approved\n")
    result = evaluate(p, facts())
    assert result.exit_code == 2
    assert not result.passed
    assert "no rule" in result.detail


def test_any_of_passes_when_one_member_passes_and_masked_failures_do_not_block() -> None:
    p = policy(
        "  - any-of:\n      id: signed-or-two\n      rules:\n"
        "        - {id: signed, require: signature.verified}\n"
        "        - {id: two-approvers, require: size(approvers) >= 2}\n"
    )
    result = evaluate(p, facts())
    group, signed, two = result.outcomes
    assert (group.status, signed.status, two.status) == (PASS, PASS, FAIL)
    assert not two.blocking
    assert result.passed
    assert result.exit_code == 0
    assert two.path == "signed-or-two/two-approvers"
    assert group.expression == "any-of(signed, two-approvers)"
    blocked = evaluate(p, facts(signature=None))
    assert [o.status for o in blocked.outcomes] == [FAIL, FAIL, FAIL]
    assert all(o.blocking for o in blocked.outcomes)
    assert blocked.exit_code == 1
    assert blocked.outcomes[0].message == "none of signed, two-approvers passed"


def test_nested_all_of_inside_any_of() -> None:
    p = policy(
        "  - any-of:\n      id: release\n      rules:\n"
        "        - all-of:\n            id: signed-and-scanned\n            rules:\n"
        "              - {id: signed, require: signature.verified}\n"
        "              - {id: scanned, require: scan.present}\n"
        "        - {id: waiver, require: has(model.metadata.waiver)}\n"
    )
    assert evaluate(p, facts()).exit_code == 0
    assert evaluate(p, facts(scan=None)).exit_code == 1
    assert evaluate(p, facts(scan=None, metadata={"waiver": "CAB-12"})).exit_code == 0
    paths = [o.path for o in evaluate(p, facts()).outcomes]
    assert paths == [
        "release",
        "release/signed-and-scanned",
        "release/signed-and-scanned/signed",
        "release/signed-and-scanned/scanned",
        "release/waiver",
    ]


def test_group_when_false_skips_every_member() -> None:
    p = policy(
        "  - all-of:\n      id: llm\n      when: model.format == 'gguf'\n      rules:\n"
        "        - {id: template, require: model.metadata.template_checked}\n"
        "  - {id: ok, require: approved}\n"
    )
    result = evaluate(p, facts())
    assert [o.status for o in result.outcomes] == [SKIPPED, SKIPPED, PASS]
    assert result.exit_code == 0


def test_all_skipped_group_is_skipped_and_any_of_with_one_skip_follows_the_others() -> None:
    p = policy(
        "  - any-of:\n"
        "      - {id: gguf, when: model.format == 'gguf', require: approved}\n"
        "      - {id: unsigned, require: '!signature.present'}\n"
    )
    result = evaluate(p, facts())
    assert [o.status for o in result.outcomes] == [FAIL, SKIPPED, FAIL]
    assert result.exit_code == 1


def test_findings_are_handed_to_cel_only_when_read_and_only_the_named_fields() -> None:
    counts_only = policy("  - id: a\n    require: scan.counts.critical == 0\n")
    assert not counts_only.needs_findings
    p = policy(
        "  - id: no-pkl-010\n"
        '    require: \'!scan.findings.exists(f, f.rule == "BST-PKL-010" && f.severity == "low")\'\n'
        # documented: elements carry only the fields some expression names, here rule and severity
        "  - id: shape\n    require: scan.findings.all(f, size(f) == 2)\n"
    )
    assert p.needs_findings
    assert p.finding_fields == {"rule", "severity"}
    assert [o.status for o in evaluate(p, facts()).outcomes] == [FAIL, PASS]
    messages = policy(
        "  - id: m\n    require: scan.findings.exists(f, f.message == 'm' && f.location == 'model')\n"
    )
    assert evaluate(messages, facts()).outcomes[0].status == PASS


def test_scan_rules_by_severity_without_findings() -> None:
    p = policy("  - id: a\n    require: '!(\"BST-PKL-010\" in scan.rules_by_severity.low)'\n")
    assert not p.needs_findings
    assert evaluate(p, facts()).exit_code == 1


def test_compiled_once_and_reusable_for_many_versions() -> None:
    p = policy("  - id: a\n    require: model.version > 3\n")
    assert evaluate(p, facts()).exit_code == 0
    assert evaluate(p, facts(version=2)).exit_code == 1
    assert evaluate(p, facts()).exit_code == 0


def test_outcome_carries_line_severity_and_controls() -> None:
    p = policy(
        "\n  - id: a\n    require: approved\n    severity: critical\n    controls: [owasp-llm:LLM03]\n"
    )
    (o,) = evaluate(p, facts(approvals=())).outcomes
    assert (o.line, o.severity.label, o.controls, o.expression) == (
        5,
        "critical",
        ("owasp-llm:LLM03",),
        "approved",
    )


# --- the example policy ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Policy:
    return load_policy(EXAMPLE)


def test_example_policy_passes_a_good_version(example: Policy) -> None:
    result = evaluate(example, facts())
    assert result.exit_code == 0, [o for o in result.outcomes if o.status != PASS and o.status != SKIPPED]
    assert {o.rule_id for o in result.outcomes if o.status == SKIPPED} == {"files-unchanged", "fairness-gap"}


def _blocked_by(example: Policy, f: dict[str, Any]) -> set[str]:
    result = evaluate(example, f)
    assert result.exit_code == 1, result.headline()
    return {o.rule_id for o in result.outcomes if o.blocking and o.kind == "rule"}


def _other_signer() -> SignatureInfo:
    return dataclasses.replace(_signature(), signer="sha256:" + "99" * 32)


def _old_audit() -> tuple[DatasetRef, ...]:
    (ds,) = record().datasets
    audit = {**(ds.audit or {}), "at": (NOW - timedelta(days=120)).isoformat()}
    return (dataclasses.replace(ds, audit=audit),)


def _high_audit() -> tuple[DatasetRef, ...]:
    (ds,) = record().datasets
    return (dataclasses.replace(ds, audit={**(ds.audit or {}), "high": 2}),)


@pytest.mark.parametrize(
    ("changes", "rules"),
    [
        ({"state": REVOKED}, {"not-blocked", "approved"}),
        ({"state": QUARANTINED}, {"not-blocked", "approved"}),
        ({"scan": None}, {"scanned"}),
        (
            {"scan": ScanSummary("malicious", {"critical": 2, "high": 1}, (), "0.1.0", NOW)},
            {"no-critical-findings", "no-high-findings"},
        ),
        ({"signature": None}, {"signed-by-release-key"}),
        ({"signature": "other-signer"}, {"signed-by-release-key"}),
        ({"digest": "sha256:" + "ef" * 32}, {"signed-by-release-key"}),
        ({"datasets": ()}, {"data-audited", "lineage-complete"}),
        ({"datasets": "old-audit"}, {"data-audited"}),
        ({"datasets": "high-audit"}, {"data-audited"}),
        ({"metadata": {"license": "GPL-3.0-only"}}, {"licence-allowed"}),
        ({"metadata": {}}, {"licence-allowed"}),
        ({"approvals": (), "state": REGISTERED}, {"approved", "independent-approver", "two-approvers"}),
        (
            {"approvals": (Approval(APPROVED, "alice", "mine", NOW),)},
            {"independent-approver", "two-approvers"},
        ),
        (
            {"metadata": {"license": "MIT", "fairness": {"demographic_parity_difference": 0.25}}},
            {"fairness-gap"},
        ),
    ],
)
def test_example_policy_blocks_bad_versions(
    example: Policy, changes: dict[str, Any], rules: set[str]
) -> None:
    special = {"other-signer": _other_signer, "old-audit": _old_audit, "high-audit": _high_audit}
    changes = {k: special[v]() if isinstance(v, str) and v in special else v for k, v in changes.items()}
    assert _blocked_by(example, facts(**changes)) == rules


def test_example_policy_blocks_a_version_whose_files_changed(example: Policy) -> None:
    f = version_facts(
        record(), now=NOW, verification={"ok": False, "detail": "model.safetensors: hash mismatch"}
    )
    assert _blocked_by(example, f) == {"files-unchanged"}
    outcome = next(o for o in evaluate(example, f).outcomes if o.rule_id == "files-unchanged")
    assert "model.safetensors: hash mismatch" in outcome.message


def test_example_policy_messages_are_filled_in(example: Policy) -> None:
    scan = ScanSummary("malicious", {"critical": 2}, (), "0.1.0", NOW)
    result = evaluate(example, facts(scan=scan, metadata={"license": "GPL-3.0-only"}))
    messages = {o.rule_id: o.message for o in result.outcomes}
    assert messages["no-critical-findings"].startswith("2 critical scan finding(s)")
    assert messages["licence-allowed"] == "licence GPL-3.0-only is not on the allow list"


def test_facts_are_json_and_the_example_policy_reads_them_back(example: Policy) -> None:
    # What `--format json` of the facts would give must decide the same way as the facts themselves.
    f = json.loads(json.dumps(facts()))
    assert evaluate(example, f).exit_code == 0


# --- robustness ------------------------------------------------------------------------------------------


def test_absurd_nesting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nests too deeply"):
        parse_policy("[" * 1000, "policy.yaml")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    message = ""
    try:
        parse_policy(text, "policy.yaml")
    except ConfigError as exc:
        message = exc.diagnostics()
    assert "\n" not in message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_example_policy_loads_or_raises_config_error(data: st.DataObject) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    insert = data.draw(st.text(alphabet="{}[]:!&*'\"-\n #|>", max_size=6))
    message = "policy.yaml: loaded"
    try:
        parse_policy(text[:start] + insert + text[end:], "policy.yaml")
    except ConfigError as exc:
        message = exc.diagnostics()
    assert message.startswith("policy.yaml:")
    assert "\n" not in message
