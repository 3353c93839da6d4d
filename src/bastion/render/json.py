"""The JSON report: a versioned, documented schema (``report.schema.json`` beside this file)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from bastion.findings import Finding, Location, Report, Skipped, Target, sort_findings
from bastion.render.interface import RenderOptions, summary

SCHEMA_VERSION = "1.0"


def location_dict(location: Location) -> dict[str, Any]:
    """A location as JSON: path as given, member chain, ``path!member`` display and byte offset."""
    return {
        "path": location.path,
        "members": list(location.members),
        "display": location.display,
        "offset": location.offset,
    }


def finding_dict(finding: Finding) -> dict[str, Any]:
    """One finding as JSON."""
    return {
        "rule_id": finding.rule_id,
        "severity": finding.severity.label,
        "confidence": finding.confidence.label,
        "message": finding.message,
        "location": location_dict(finding.location),
        "evidence": finding.evidence_map,
        "fingerprint": finding.fingerprint,
    }


def _suppressed_dict(finding: Finding, options: RenderOptions) -> dict[str, Any]:
    entry = finding_dict(finding)
    reason = options.suppression_reasons.get(finding.fingerprint)
    if reason is not None:
        entry["suppression"] = {"reason": reason}
    return entry


def target_dict(target: Target) -> dict[str, Any]:
    """One examined file or member as JSON; ``sha256`` only when a digest was asked for."""
    entry: dict[str, Any] = {
        "path": target.location.display,
        "format": target.format,
        "size": target.size,
        "verdict": target.verdict.value,
    }
    if target.sha256 is not None:
        entry["sha256"] = target.sha256
    return entry


def skipped_dict(skipped: Skipped) -> dict[str, Any]:
    """Something that could not be examined, as JSON."""
    return {"location": location_dict(skipped.location), "reason": skipped.reason}


def report_dict(report: Report, options: RenderOptions | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready dict following ``report.schema.json``."""
    options = options or RenderOptions()
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": report.tool, "version": report.version},
        "findings": [finding_dict(f) for f in sort_findings(report.findings)],
        "skipped": [skipped_dict(s) for s in report.skipped],
        "suppressed": [_suppressed_dict(f, options) for f in sort_findings(report.suppressed)],
        "notices": list(report.notices),
        "targets": [target_dict(t) for t in report.targets],
        "summary": summary(report),
    }


def render_json(report: Report, options: RenderOptions) -> str:
    """Render ``report`` as indented JSON with a trailing newline."""
    return json.dumps(report_dict(report, options), indent=2, ensure_ascii=False) + "\n"


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every JSON report validates against."""
    text = resources.files("bastion.render").joinpath("report.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
