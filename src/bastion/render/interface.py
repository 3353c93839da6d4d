"""What every renderer receives, the rule lookup they share, and atomic file output."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.errors import BastionError
from bastion.findings import Finding, Location, Report, Severity, Target, Verdict
from bastion.rules import Rule

HOMEPAGE = "https://github.com/bastion-ai/bastion"
RULES_DOC_URL = f"{HOMEPAGE}/blob/main/docs/rules.md"

RuleLookup = Callable[[str], Rule | None]


def registry_lookup(code: str) -> Rule | None:
    """Find ``code`` in the global rule catalogue, or None when no module declared it."""
    from bastion.rules import get_rule

    try:
        return get_rule(code)
    except BastionError:
        return None


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Presentation choices that are not part of the report itself."""

    color: bool = False
    width: int = 120
    # fingerprint -> why the finding is suppressed (a suppression's reason, or the baseline file)
    suppression_reasons: Mapping[str, str] = field(default_factory=dict)
    rules: RuleLookup = registry_lookup


class Renderer(Protocol):
    """Turns a report into the text of one output format."""

    def __call__(self, report: Report, options: RenderOptions) -> str:
        """Return the rendered report."""
        ...


def rule_anchor(rule: Rule) -> str:
    """The GitHub heading anchor of ``rule``'s section in docs/rules.md."""
    heading = f"{rule.code}: {rule.name}".lower()
    return re.sub(r"[^a-z0-9 _-]", "", heading).replace(" ", "-")


def rule_url(rule: Rule) -> str:
    """The documentation page of ``rule``."""
    return f"{RULES_DOC_URL}#{rule_anchor(rule)}"


def location_text(location: Location) -> str:
    """``path!member@offset``: how a person reads a location."""
    if location.offset is None:
        return location.display
    return f"{location.display}@{location.offset}"


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings per severity label, most severe first, every severity present."""
    counts = Counter(f.severity for f in findings)
    return {s.label: counts.get(s, 0) for s in sorted(Severity, reverse=True)}


def verdict_counts(targets: Iterable[Target]) -> dict[str, int]:
    """Targets per verdict, every verdict present."""
    counts = Counter(t.verdict for t in targets)
    return {v.value: counts.get(v, 0) for v in Verdict}


def top_level_count(targets: Iterable[Target]) -> int:
    """How many targets are files on disk rather than archive members."""
    return sum(1 for t in targets if not t.location.members)


def summary(report: Report) -> dict[str, Any]:
    """The numbers every format shows: counts of files, findings, verdicts."""
    top = report.max_severity()
    return {
        "files": top_level_count(report.targets),
        "targets": len(report.targets),
        "findings": len(report.findings),
        "by_severity": severity_counts(report.findings),
        "max_severity": top.label if top is not None else None,
        "verdicts": verdict_counts(report.targets),
        "suppressed": len(report.suppressed),
        "skipped": len(report.skipped),
        "duration_s": round(report.duration_s, 3),
    }


def summary_line(report: Report) -> str:
    """One line for stderr: ``N files, M findings (x critical, ...), verdicts ..., in T s``."""
    s = summary(report)
    sev = ", ".join(f"{n} {label}" for label, n in s["by_severity"].items() if n)
    findings = f"{s['findings']} finding{'' if s['findings'] == 1 else 's'}" + (f" ({sev})" if sev else "")
    verdicts = ", ".join(f"{n} {v}" for v, n in s["verdicts"].items() if n) or "none"
    extra = f", {s['suppressed']} suppressed" if s["suppressed"] else ""
    return (
        f"{s['files']} file{'' if s['files'] == 1 else 's'}, {findings}{extra}, "
        f"verdicts: {verdicts}, in {report.duration_s:.2f} s"
    )
