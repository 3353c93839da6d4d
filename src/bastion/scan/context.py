"""What every format scanner receives: the bytes to read, where they are, limits, and a findings sink."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bastion.findings import Confidence, Finding, Location, Severity, Skipped, Target, Verdict
from bastion.rules import get_rule

INCOMPLETE_RULE = "BST-SCAN-001"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep hostile input from exhausting the scanner; hitting one is a finding."""

    max_depth: int = 5  # archive nesting (zip in tar in 7z ...)
    max_member_bytes: int = 1 << 30  # largest archive member read into memory
    max_total_bytes: int = 8 << 30  # decompressed bytes per top-level file, all members together
    max_ratio: float = 250.0  # decompressed / compressed size of one member (zip bombs)
    max_opcodes: int = 50_000_000  # pickle opcodes per stream
    max_memo: int = 1_000_000  # pickle memo entries
    max_stack: int = 100_000  # pickle stack / mark nesting
    max_json_bytes: int = 64 << 20  # config and metadata documents
    max_members: int = 100_000  # entries in one archive


@dataclass(slots=True)
class Source:
    """The bytes of one file or archive member, seekable, plus what is known about where it came from."""

    stream: BinaryIO
    size: int
    name: str  # base name (or member name) used only as a hint
    fs_path: Path | None = None  # real path for top-level files; None for archive members

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> Source:
        """Wrap in-memory bytes (an archive member)."""
        return cls(io.BytesIO(data), len(data), name)

    def read_at(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` without moving other readers' expectations."""
        self.stream.seek(offset)
        return self.stream.read(size)

    def head(self, size: int = 64) -> bytes:
        """The first ``size`` bytes."""
        return self.read_at(0, size)


ScannerFn = Callable[[Source, Location, "ScanContext"], None]


@dataclass(slots=True)
class ScanContext:
    """Collects findings, targets and skips for one top-level file and lets scanners recurse."""

    limits: Limits = field(default_factory=Limits)
    digest: bool = False
    depth: int = 0
    findings: list[Finding] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    total_bytes: int = 0
    # Set by the engine: scans a nested Source (archive member) with format detection.
    dispatch: Callable[[Source, Location, ScanContext], None] | None = None

    def report(
        self,
        rule_id: str,
        location: Location,
        message: str,
        evidence: Mapping[str, object] | None = None,
        severity: Severity | None = None,
        confidence: Confidence = Confidence.HIGH,
    ) -> Finding:
        """Record a finding of ``rule_id``; its severity defaults to the rule's."""
        rule = get_rule(rule_id)
        finding = Finding.make(
            rule_id,
            severity if severity is not None else rule.severity,
            message,
            location,
            evidence,
            confidence,
        )
        self.findings.append(finding)
        return finding

    def incomplete(
        self, location: Location, reason: str, evidence: Mapping[str, object] | None = None
    ) -> None:
        """Record that ``location`` could not be fully analysed, so a gate fails closed."""
        self.report(
            INCOMPLETE_RULE,
            location,
            f"Could not be fully analysed: {reason}; treat the file as unsafe until it is reviewed.",
            {"reason": reason, **(evidence or {})},
        )

    def scan_nested(self, data: bytes | Source, location: Location, name: str) -> None:
        """Scan an archive member, enforcing the nesting-depth and total-size limits."""
        source = data if isinstance(data, Source) else Source.from_bytes(data, name)
        if self.depth >= self.limits.max_depth:
            self.incomplete(location, f"archive nesting deeper than {self.limits.max_depth} levels")
            return
        self.total_bytes += source.size
        if self.total_bytes > self.limits.max_total_bytes:
            self.incomplete(
                location, f"more than {self.limits.max_total_bytes} decompressed bytes in one file"
            )
            return
        assert self.dispatch is not None, "ScanContext.dispatch is set by the engine"
        self.depth += 1
        try:
            self.dispatch(source, location, self)
        finally:
            self.depth -= 1

    def add_target(self, location: Location, fmt: str, size: int, sha256: str | None = None) -> None:
        """Record that ``location`` was examined as ``fmt``; its verdict is settled at the end."""
        self.targets.append(Target(location, fmt, size, Verdict.CLEAN, sha256))


def env_jobs() -> int:
    """Worker processes to use by default: every core the process may run on."""
    from bastion.workers import available_cores

    return available_cores()
