"""Explicit, expiring suppressions read from a TOML file.

Each ``[[suppress]]`` entry names what it silences (``path`` glob on the target display path, optionally
narrowed by ``rule``; or an exact finding ``fingerprint``), why (``reason``) and until when (``expires``).
An entry missing any of these is a configuration error; an expired entry stops suppressing and is
reported, so that "temporary" never becomes "forever" silently.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import posixpath
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.findings import MEMBER_SEPARATOR, Finding, Location, Report

_KEYS = frozenset({"rule", "path", "fingerprint", "reason", "expires"})


@dataclass(frozen=True, slots=True)
class Suppression:
    """One ``[[suppress]]`` entry (``index`` counts from 1, as a person reads the file)."""

    index: int
    reason: str
    expires: dt.date
    rule: str | None = None
    path: str | None = None
    fingerprint: str | None = None

    def expired(self, today: dt.date) -> bool:
        """True once ``today`` is past the expiry date (the expiry day itself still suppresses)."""
        return today > self.expires

    def matches(self, finding: Finding) -> bool:
        """True if this entry covers ``finding``."""
        if self.fingerprint is not None and finding.fingerprint != self.fingerprint:
            return False
        if self.rule is not None and not _rule_matches(self.rule, finding.rule_id):
            return False
        return self.path is None or any(
            fnmatch.fnmatchcase(p, self.path) for p in _ancestors(finding.location)
        )

    def describe(self) -> str:
        """A short name for notices: ``suppression #2 (BST-PKL-002 on models/*.pkl)``."""
        what = self.fingerprint or f"{self.rule or 'any rule'} on {self.path}"
        if self.fingerprint and self.rule:
            what = f"{self.rule} {self.fingerprint}"
        return f"suppression #{self.index} ({what})"


def _rule_matches(pattern: str, rule_id: str) -> bool:
    # An exact code, or a family prefix such as BST-PKL.
    return rule_id == pattern or rule_id.startswith(pattern.rstrip("-") + "-")


def _ancestors(location: Location) -> list[str]:
    # A glob on a file also covers the archive members inside it; `./models/a.pkl` (the path as the
    # user typed it) is also tried as `models/a.pkl` so globs need not guess how the scan was started.
    chain: list[str] = []
    for path in dict.fromkeys((location.path, posixpath.normpath(location.path))):
        chain.append(path)
        for member in location.members:
            chain.append(chain[-1] + MEMBER_SEPARATOR + member)
    return chain


def _entry(index: int, raw: object, where: str) -> Suppression:
    label = f"{where}: [[suppress]] entry #{index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r} (expected: {', '.join(sorted(_KEYS))})")
    values: dict[str, Any] = {}
    for key in ("rule", "path", "fingerprint", "reason"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{label}: {key} must be a non-empty string")
        values[key] = value.strip() if isinstance(value, str) else None
    if values["reason"] is None:
        raise ConfigError(f"{label}: a reason is required (say why the finding is acceptable)")
    expires = raw.get("expires")
    if expires is None:
        raise ConfigError(f"{label}: an expires date is required (e.g. expires = 2026-12-31)")
    if isinstance(expires, dt.datetime) or not isinstance(expires, dt.date):
        raise ConfigError(f"{label}: expires must be a TOML date such as 2026-12-31, not {expires!r}")
    if values["path"] is None and values["fingerprint"] is None:
        raise ConfigError(f"{label}: give a path glob or a fingerprint to say what is suppressed")
    if values["rule"] is not None:
        values["rule"] = values["rule"].upper()
    return Suppression(index=index, expires=expires, **values)


def parse_suppressions(data: dict[str, Any], where: str) -> list[Suppression]:
    """Validate the parsed TOML of a suppressions file."""
    entries = data.get("suppress", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'suppress' must be an array of tables ([[suppress]])")
    extra = sorted(set(data) - {"suppress"})
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (entries go in [[suppress]] tables)")
    return [_entry(i, raw, where) for i, raw in enumerate(entries, 1)]


def load_suppressions(path: Path) -> list[Suppression]:
    """Read and validate a suppressions file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: suppressions file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read suppressions file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    return parse_suppressions(data, str(path))


def apply_suppressions(
    report: Report, suppressions: Iterable[Suppression], today: dt.date | None = None
) -> dict[str, str]:
    """Move covered findings to ``report.suppressed``; note expired entries; return fingerprint -> reason."""
    today = today or dt.date.today()
    active: list[Suppression] = []
    for s in suppressions:
        if s.expired(today):
            report.notices.append(
                f"{s.describe()} expired on {s.expires.isoformat()} and no longer suppresses; "
                "fix the finding or renew the entry with a new reason."
            )
        else:
            active.append(s)
    reasons: dict[str, str] = {}
    kept: list[Finding] = []
    for finding in report.findings:
        match = next((s for s in active if s.matches(finding)), None)
        if match is None:
            kept.append(finding)
            continue
        report.suppressed.append(finding)
        reasons[finding.fingerprint] = (
            f"{match.reason} ({match.describe()}, until {match.expires.isoformat()})"
        )
    report.findings = kept
    return reasons
