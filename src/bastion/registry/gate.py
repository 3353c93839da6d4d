"""A gate decision and its four renderings: a table for people, JSON, SARIF for code scanning, JUnit XML.

:func:`bastion.registry.policy.evaluate` produces a :class:`GateResult`; :func:`render_gate` turns it into
text. The exit code is part of the result: 0 the version may pass, 1 a rule blocked it, 2 the decision
could not be made (a rule failed to evaluate, or no rule applied): an error is never a pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bastion import __version__
from bastion.errors import UsageError
from bastion.findings import Severity
from bastion.render.interface import HOMEPAGE
from bastion.render.sarif import FINGERPRINT_KEY, SARIF_SCHEMA, SECURITY_SEVERITY, artifact_uri, level

PASS = "pass"  # noqa: S105 -- an outcome status, not a password
FAIL = "fail"
SKIPPED = "skipped"
ERROR = "error"
STATUSES = (PASS, FAIL, SKIPPED, ERROR)

RULE = "rule"
ANY_OF = "any-of"
ALL_OF = "all-of"

FORMATS = ("table", "json", "sarif", "junit")
REPORT_FORMAT = "bastion.gate"
SCHEMA_VERSION = 1
SARIF_CATEGORY = "bastion/gate/"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule or composition of the policy concluded about the version."""

    rule_id: str
    path: str  # the ids from the top of the policy down to this rule, joined by "/"
    kind: str  # rule | any-of | all-of
    status: str  # pass | fail | skipped | error
    severity: Severity
    message: str
    expression: str  # the `require` expression, or "any-of(a, b)" for a composition
    controls: tuple[str, ...] = ()
    line: int = 0  # where the rule starts in the policy file
    description: str = ""
    # A failure that makes the gate block; a failed branch of an any-of that passed does not.
    blocking: bool = False

    @property
    def depth(self) -> int:
        """How deep in the composition the rule sits (0 at the top)."""
        return self.path.count("/")


@dataclass(frozen=True, slots=True)
class GateResult:
    """The decision on one version under one policy, with every rule's outcome in policy order."""

    policy: str
    policy_source: str  # the policy file as the user named it (SARIF and JUnit point at it)
    subject: str  # name@version
    digest: str | None
    passed: bool
    error: bool
    outcomes: tuple[Outcome, ...]
    detail: str = ""  # why the gate is in error when no single rule explains it

    @property
    def exit_code(self) -> int:
        """0 pass, 1 blocked, 2 the decision could not be made."""
        if self.error:
            return 2
        return 0 if self.passed else 1

    @property
    def verdict(self) -> str:
        """``passed``, ``blocked`` or ``error``."""
        return ("passed", "blocked", "error")[self.exit_code]

    def counts(self) -> dict[str, int]:
        """Outcomes of leaf rules per status, every status present."""
        counted = Counter(o.status for o in self.outcomes if o.kind == RULE)
        return {s: counted.get(s, 0) for s in STATUSES}

    def headline(self) -> str:
        """One line: the verdict, the subject, the policy and the counts of leaf rules."""
        c = self.counts()
        tally = ", ".join(f"{n} {s}" for s, n in c.items() if n) or "no rules"
        reasons = [o.rule_id for o in self.outcomes if o.blocking and o.kind == RULE]
        text = f"{self.verdict.upper()}: {self.subject} under policy {self.policy!r} ({tally})"
        if self.error:
            errors = [o.rule_id for o in self.outcomes if o.status == ERROR and o.kind == RULE]
            text += f"; cannot decide: {', '.join(errors) if errors else self.detail}"
        elif reasons:
            text += f"; blocked by {', '.join(reasons)}"
        return text


def render_gate(result: GateResult, fmt: str, *, color: bool = False, width: int = 120) -> str:
    """Render ``result`` as ``table``, ``json``, ``sarif`` or ``junit``."""
    if fmt == "table":
        return render_table(result, color=color, width=width)
    if fmt == "json":
        return json.dumps(gate_dict(result), indent=2, ensure_ascii=False) + "\n"
    if fmt == "sarif":
        return json.dumps(gate_sarif(result), indent=2, ensure_ascii=False) + "\n"
    if fmt == "junit":
        return render_junit(result)
    raise UsageError(f"unknown gate format {fmt!r} (expected one of: {', '.join(FORMATS)})")


# --- table ---------------------------------------------------------------------------------------------

STATUS_STYLE = {PASS: "green", FAIL: "bold red", SKIPPED: "dim", ERROR: "bold magenta"}


def render_table(result: GateResult, *, color: bool = False, width: int = 120) -> str:
    """A rich table of every outcome, then the verdict line; no colour codes unless ``color``."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    title = f"Gate: {result.subject} under {result.policy}"
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("Status", no_wrap=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Rule", no_wrap=True)
    table.add_column("Message", overflow="fold")
    for o in result.outcomes:
        status = o.status.upper() if o.blocking or o.status == ERROR else o.status
        if o.status == FAIL and not o.blocking:
            status = "fail (not needed)"
        table.add_row(
            Text(status, style=STATUS_STYLE[o.status] if color else ""),
            Text(o.severity.label),
            Text("  " * o.depth + o.rule_id),
            Text(o.message),
        )
    console.print(table)
    if result.detail:
        console.print(Text(result.detail))
    verdict_style = {0: "bold green", 1: "bold red", 2: "bold magenta"}[result.exit_code]
    console.print(Text(result.headline(), style=verdict_style if color else ""))
    out = console.file
    assert isinstance(out, io.StringIO)
    # Rich pads titles to the full width; trailing blanks only make diffs noisy.
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


# --- JSON ----------------------------------------------------------------------------------------------


def outcome_dict(outcome: Outcome) -> dict[str, Any]:
    """One outcome as JSON-ready data."""
    return {
        "id": outcome.rule_id,
        "path": outcome.path,
        "kind": outcome.kind,
        "status": outcome.status,
        "blocking": outcome.blocking,
        "severity": outcome.severity.label,
        "message": outcome.message,
        "expression": outcome.expression,
        "description": outcome.description,
        "controls": list(outcome.controls),
        "line": outcome.line,
    }


def gate_dict(result: GateResult) -> dict[str, Any]:
    """The whole decision as JSON-ready data (``schema_version`` 1)."""
    return {
        "format": REPORT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "tool": "bastion",
        "version": __version__,
        "policy": {"name": result.policy, "source": artifact_uri(result.policy_source)},
        "subject": result.subject,
        "digest": result.digest,
        "verdict": result.verdict,
        "passed": result.passed,
        "error": result.error,
        "exit_code": result.exit_code,
        "detail": result.detail,
        "counts": result.counts(),
        "outcomes": [outcome_dict(o) for o in result.outcomes],
    }


# --- SARIF ---------------------------------------------------------------------------------------------


def _rule_descriptor(outcome: Outcome) -> dict[str, Any]:
    summary = outcome.description or f"{outcome.kind} {outcome.rule_id}"
    help_text = f"{summary}\n\nPolicy rule `{outcome.path}` requires: `{outcome.expression}`"
    tags = ["security", "policy-gate", *outcome.controls][:20]  # GitHub reads at most 20 tags
    return {
        "id": outcome.rule_id,
        "name": outcome.rule_id,
        "shortDescription": {"text": summary[:1024]},
        "fullDescription": {"text": f"{summary} (requires {outcome.expression})"[:1024]},
        "defaultConfiguration": {"level": level(outcome.severity)},
        "help": {"text": help_text, "markdown": help_text},
        "properties": {
            "security-severity": SECURITY_SEVERITY[outcome.severity],
            "tags": tags,
            # A policy rule is a deterministic check on recorded facts: no guessing involved.
            "precision": "very-high",
        },
    }


def _fingerprint(result: GateResult, outcome: Outcome) -> str:
    # The model name, not its version: the same rule failing on the next version is the same alert.
    name = result.subject.rsplit("@", 1)[0]
    key = "\0".join((result.policy, outcome.path, name))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _sarif_result(result: GateResult, outcome: Outcome, index: int) -> dict[str, Any]:
    if outcome.status == ERROR:
        text = f"{result.subject}: policy rule {outcome.path} could not be evaluated: {outcome.message}"
    else:
        text = f"{result.subject}: blocked by policy rule {outcome.path}: {outcome.message}"
    return {
        "ruleId": outcome.rule_id,
        "ruleIndex": index,
        "level": "error" if outcome.status == ERROR else level(outcome.severity),
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": artifact_uri(result.policy_source)},
                    "region": {"startLine": max(outcome.line, 1)},
                }
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: _fingerprint(result, outcome)},
        "properties": {
            "status": outcome.status,
            "severity": outcome.severity.label,
            "subject": result.subject,
            "digest": result.digest,
            "expression": outcome.expression,
        },
    }


def gate_sarif(result: GateResult) -> dict[str, Any]:
    """SARIF 2.1.0 with one rule per policy rule and a result per blocking failure or error."""
    index = {o.rule_id: i for i, o in enumerate(result.outcomes)}
    # Leaves carry the reasons; a composition's own failure only repeats its children's.
    reported = [
        o
        for o in result.outcomes
        if o.kind == RULE and (o.status == ERROR or (o.status == FAIL and o.blocking))
    ]
    invocation: dict[str, Any] = {"executionSuccessful": not result.error}
    if result.detail:
        invocation["toolExecutionNotifications"] = [
            {"level": "error" if result.error else "note", "message": {"text": result.detail}}
        ]
    driver = {
        "name": "bastion",
        "version": __version__,
        "semanticVersion": __version__,
        "informationUri": HOMEPAGE,
        "rules": [_rule_descriptor(o) for o in result.outcomes],
    }
    run = {
        "tool": {"driver": driver},
        "automationDetails": {"id": SARIF_CATEGORY},
        "invocations": [invocation],
        "results": [_sarif_result(result, o, index[o.rule_id]) for o in reported],
        "properties": {
            "policy": result.policy,
            "subject": result.subject,
            "digest": result.digest,
            "verdict": result.verdict,
        },
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


# --- JUnit XML -----------------------------------------------------------------------------------------

# XML 1.0 cannot carry most control characters, even escaped; a finding message may hold them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _XML_ILLEGAL.sub("\ufffd", text)


def render_junit(result: GateResult) -> str:
    """JUnit XML: one testsuite for the policy, one testcase per rule (compositions included)."""
    c = Counter(o.status for o in result.outcomes)
    gate_error = result.error and not c[ERROR]
    total = len(result.outcomes) + (1 if gate_error else 0)
    failures = sum(1 for o in result.outcomes if o.status == FAIL and o.blocking)
    errors = c[ERROR] + (1 if gate_error else 0)
    counts = {
        "tests": str(total),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(c[SKIPPED]),
    }
    suites = ET.Element("testsuites", {"name": "bastion gate", **counts})
    suite = ET.SubElement(suites, "testsuite", {"name": _xml_text(result.policy), **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("subject", result.subject),
        ("digest", result.digest or ""),
        ("verdict", result.verdict),
    ):
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(value)})
    classname = _xml_text(f"{result.policy}.{result.subject}")
    source = artifact_uri(result.policy_source)
    for o in result.outcomes:
        case = ET.SubElement(
            suite, "testcase", {"classname": classname, "name": o.path, "file": source, "line": str(o.line)}
        )
        detail = _xml_text(f"{o.message}\nrequires: {o.expression}")
        if o.status == FAIL and o.blocking:
            failure = ET.SubElement(
                case, "failure", {"message": _xml_text(o.message), "type": o.severity.label}
            )
            failure.text = detail
        elif o.status == ERROR:
            error = ET.SubElement(case, "error", {"message": _xml_text(o.message), "type": "evaluation"})
            error.text = detail
        elif o.status == SKIPPED:
            ET.SubElement(case, "skipped", {"message": _xml_text(o.message)})
        elif o.status == FAIL:
            # A failed branch of an any-of that passed: not a failure of the gate, but not hidden either.
            out = ET.SubElement(case, "system-out")
            out.text = _xml_text(f"failed, but not needed: {o.message}")
    if gate_error:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "gate", "file": source})
        ET.SubElement(case, "error", {"message": _xml_text(result.detail), "type": "gate"})
    ET.indent(suites)
    body = ET.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
