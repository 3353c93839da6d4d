"""SARIF 2.1.0 as GitHub code scanning reads it: rules with security-severity, results with fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from bastion.findings import Confidence, Finding, Report, Severity, sort_findings
from bastion.render.interface import HOMEPAGE, RenderOptions, location_text, rule_url
from bastion.rules import Rule

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "bastionFingerprint/v1"

# GitHub bands security-severity: > 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "1.0",
}
PRECISION = {Confidence.HIGH: "high", Confidence.MEDIUM: "medium", Confidence.LOW: "low"}


def level(severity: Severity) -> str:
    """SARIF result level: error for high and critical, warning for medium, note below."""
    if severity >= Severity.HIGH:
        return "error"
    if severity == Severity.MEDIUM:
        return "warning"
    return "note"


def artifact_uri(path: str) -> str:
    """A repository-relative URI for ``path`` (GitHub resolves those against the checkout)."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_uri()
    return quote(PurePosixPath(os.path.normpath(p).replace(os.sep, "/")).as_posix(), safe="/")


def _rule_descriptor(code: str, rule: Rule | None, findings: list[Finding]) -> dict[str, Any]:
    worst = max((f.severity for f in findings), default=rule.severity if rule else Severity.MEDIUM)
    if rule is not None:
        worst = max(worst, rule.severity)
    least_sure = min((f.confidence for f in findings), default=Confidence.HIGH)
    tags = ["security", "model-file", *(rule.tags if rule else ())]
    if rule is not None and any(r.label.startswith("CWE-502") for r in rule.references):
        tags.append("external/cwe/cwe-502")
    props = {"security-severity": SECURITY_SEVERITY[worst], "tags": tags, "precision": PRECISION[least_sure]}
    if rule is None:
        return {"id": code, "name": code, "shortDescription": {"text": code}, "properties": props}
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.what_it_does},
        "defaultConfiguration": {"level": level(rule.severity)},
        "help": {"text": rule.page(), "markdown": rule.page()},
        "helpUri": rule_url(rule),
        "properties": props,
    }


def _message(finding: Finding) -> str:
    where = ""
    if finding.location.members or finding.location.offset is not None:
        where = f" (at {location_text(finding.location)})"
    return finding.message + where


def _result(finding: Finding, index: int, options: RenderOptions, suppressed: bool) -> dict[str, Any]:
    loc = finding.location
    # GitHub wants a line: binary model files have none, so line 1 stands for the file and the
    # byte offset (SARIF allows both in one region) says exactly where.
    region: dict[str, int] = {"startLine": 1}
    if loc.offset is not None:
        region["byteOffset"] = loc.offset
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": {"uri": artifact_uri(loc.path)}, "region": region}
    }
    if loc.members:
        location["logicalLocations"] = [{"name": loc.members[-1], "fullyQualifiedName": loc.display}]
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": index,
        "level": level(finding.severity),
        "message": {"text": _message(finding)},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": {
            "severity": finding.severity.label,
            "confidence": finding.confidence.label,
            "display": loc.display,
            "members": list(loc.members),
            "evidence": finding.evidence_map,
        },
    }
    if suppressed:
        reason = options.suppression_reasons.get(finding.fingerprint, "suppressed")
        result["suppressions"] = [{"kind": "external", "status": "accepted", "justification": reason}]
    return result


def sarif_dict(report: Report, options: RenderOptions | None = None) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log with one run."""
    options = options or RenderOptions()
    active = sort_findings(report.findings)
    suppressed = sort_findings(report.suppressed)
    codes = sorted({f.rule_id for f in (*active, *suppressed)})
    index = {code: i for i, code in enumerate(codes)}
    by_code: dict[str, list[Finding]] = {c: [] for c in codes}
    for f in (*active, *suppressed):
        by_code[f.rule_id].append(f)
    rules = [_rule_descriptor(c, options.rules(c), by_code[c]) for c in codes]
    results = [_result(f, index[f.rule_id], options, False) for f in active]
    results += [_result(f, index[f.rule_id], options, True) for f in suppressed]
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if report.notices:
        invocation["toolExecutionNotifications"] = [
            {"level": "warning", "message": {"text": n}} for n in report.notices
        ]
    driver = {
        "name": "bastion",
        "version": report.version,
        "semanticVersion": report.version,
        "informationUri": HOMEPAGE,
        "rules": rules,
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "invocations": [invocation], "results": results}],
    }


def render_sarif(report: Report, options: RenderOptions) -> str:
    """Render ``report`` as SARIF 2.1.0 JSON."""
    return json.dumps(sarif_dict(report, options), indent=2, ensure_ascii=False) + "\n"
