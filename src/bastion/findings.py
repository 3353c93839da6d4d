"""The shared vocabulary of results: severities, findings, skipped targets and reports."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """How bad a finding is; ordered, so ``--fail-on high`` is a comparison."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Return the severity named by ``text`` (case-insensitive) or raise ``ValueError``."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None

    @property
    def label(self) -> str:
        """Lower-case name, as used in output and on the command line."""
        return self.name.lower()


class Confidence(enum.IntEnum):
    """How sure the rule is that the finding is real (SARIF ``precision``)."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    @property
    def label(self) -> str:
        """Lower-case name, as used in output."""
        return self.name.lower()


class Verdict(enum.StrEnum):
    """The per-target conclusion shown in reports."""

    MALICIOUS = "malicious"
    SUSPICIOUS = "suspicious"
    CLEAN = "clean"
    ERROR = "error"


MEMBER_SEPARATOR = "!"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding is: a path as given, archive members below it, and an optional byte offset."""

    path: str
    members: tuple[str, ...] = ()
    offset: int | None = None

    @property
    def display(self) -> str:
        """``path!member!inner`` without the offset: the target's name in reports."""
        return MEMBER_SEPARATOR.join((self.path, *self.members))

    def child(self, member: str) -> Location:
        """Return the location of ``member`` inside this one."""
        return Location(self.path, (*self.members, member))

    def at(self, offset: int | None) -> Location:
        """Return this location with a byte offset."""
        return Location(self.path, self.members, offset)


def _freeze(evidence: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    if not evidence:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in evidence.items()))


# Evidence keys that move when unrelated bytes change; they never enter a fingerprint.
_UNSTABLE_EVIDENCE = frozenset({"offset", "position", "line", "index"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem a rule found at one location."""

    rule_id: str
    severity: Severity
    confidence: Confidence
    message: str
    location: Location
    evidence: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(
        cls,
        rule_id: str,
        severity: Severity,
        message: str,
        location: Location,
        evidence: Mapping[str, object] | None = None,
        confidence: Confidence = Confidence.HIGH,
    ) -> Finding:
        """Build a finding, freezing the evidence mapping into sorted pairs."""
        return cls(rule_id, severity, confidence, message, location, _freeze(evidence))

    @property
    def evidence_map(self) -> dict[str, str]:
        """The evidence as a dict."""
        return dict(self.evidence)

    @property
    def fingerprint(self) -> str:
        """A stable identity that ignores offsets and lines, for baselines and SARIF."""
        import hashlib  # imported here: only reports with findings need it, and it is slow to import

        h = hashlib.sha256()
        h.update(self.rule_id.encode())
        h.update(b"\0" + self.location.display.encode("utf-8", "surrogateescape"))
        for key, value in self.evidence:
            if key not in _UNSTABLE_EVIDENCE:
                h.update(b"\0" + key.encode() + b"=" + value.encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something that could not be examined; never reported as clean."""

    location: Location
    reason: str


@dataclass(frozen=True, slots=True)
class Target:
    """A file or archive member that was examined, with its detected format and verdict."""

    location: Location
    format: str
    size: int
    verdict: Verdict
    sha256: str | None = None


@dataclass(slots=True)
class Report:
    """Everything one run examined and found."""

    tool: str
    version: str
    targets: list[Target] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def max_severity(self) -> Severity | None:
        """The highest severity among unsuppressed findings, or None."""
        return max((f.severity for f in self.findings), default=None)

    def at_or_above(self, threshold: Severity) -> list[Finding]:
        """Unsuppressed findings whose severity is at least ``threshold``."""
        return [f for f in self.findings if f.severity >= threshold]

    def extend(self, other: Report) -> None:
        """Merge another report's records into this one."""
        self.targets.extend(other.targets)
        self.findings.extend(other.findings)
        self.skipped.extend(other.skipped)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by location and rule, for stable output."""
    return sorted(
        findings,
        key=lambda f: (-f.severity, f.location.display, f.location.offset or 0, f.rule_id, f.message),
    )
