"""Baselines: record today's findings so that CI fails only on new ones.

A baseline is a JSON file of finding fingerprints (which ignore byte offsets, so unrelated edits do not
break it), with each finding's rule and location beside it for the people reviewing the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from bastion import __version__
from bastion.atomic import atomic_write_text
from bastion.errors import ConfigError
from bastion.findings import Finding, Report, sort_findings

BASELINE_VERSION = "1.0"


def baseline_text(findings: Iterable[Finding]) -> str:
    """The baseline file's content for ``findings`` (sorted, one entry per fingerprint)."""
    entries: dict[str, dict[str, str]] = {}
    for f in sort_findings(findings):
        entries.setdefault(
            f.fingerprint,
            {
                "fingerprint": f.fingerprint,
                "rule_id": f.rule_id,
                "location": f.location.display,
                "message": f.message,
            },
        )
    doc = {
        "schema_version": BASELINE_VERSION,
        "tool": {"name": "bastion", "version": __version__},
        "findings": sorted(entries.values(), key=lambda e: (e["location"], e["rule_id"], e["fingerprint"])),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_baseline(path: Path, findings: Iterable[Finding]) -> int:
    """Atomically write a baseline of ``findings`` to ``path``; return how many entries it holds."""
    text = baseline_text(findings)
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write baseline ({exc.strerror or exc})") from None
    count: int = len(json.loads(text)["findings"])
    return count


def load_baseline(path: Path) -> frozenset[str]:
    """The fingerprints recorded in the baseline at ``path``; a missing or corrupt file is an error."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: baseline file not found (create it with --write-baseline)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read baseline ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: corrupt baseline, not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise ConfigError(f"{path}: corrupt baseline, expected an object with a 'findings' list")
    fingerprints = set()
    for i, entry in enumerate(doc["findings"], 1):
        fp = entry.get("fingerprint") if isinstance(entry, dict) else None
        if not isinstance(fp, str) or not fp:
            raise ConfigError(f"{path}: corrupt baseline, entry #{i} has no fingerprint")
        fingerprints.add(fp)
    return frozenset(fingerprints)


def apply_baseline(report: Report, fingerprints: frozenset[str], source: str) -> dict[str, str]:
    """Move findings already in the baseline to ``report.suppressed``; return fingerprint -> reason."""
    kept: list[Finding] = []
    reasons: dict[str, str] = {}
    for f in report.findings:
        if f.fingerprint in fingerprints:
            report.suppressed.append(f)
            reasons[f.fingerprint] = f"in baseline {source}"
        else:
            kept.append(f)
    report.findings = kept
    return reasons
