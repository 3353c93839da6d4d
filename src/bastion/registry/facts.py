"""A registered version as plain data for policy expressions: the facts a gate decides on.

:func:`version_facts` turns a :class:`~bastion.registry.record.VersionRecord` into JSON-like values only
(str, int, float, bool, list, dict, None); datetimes become RFC 3339 strings in UTC and ages are float days
before ``now``. Policies are written against these names, so they are stable: add, never rename.

``now``
    the evaluation time, RFC 3339 (so ``timestamp(now) - timestamp(model.created_at)`` works).
``model``
    ``name``, ``version`` (int), ``ref`` ("name@version"), ``format``, ``framework`` (or null), ``size``
    (bytes), ``digest`` ("sha256:..."), ``state`` (registered, approved, deployed, deprecated, revoked,
    quarantined), ``aliases`` (list), ``created_at``, ``created_by``, ``age_days``, ``parent`` (or null),
    ``license`` (``metadata["license"]`` or null) and ``metadata`` (the free metadata, as plain data).
``scan``
    ``present`` (bool), ``verdict`` (clean, suspicious, malicious, error; null when absent), ``counts``
    (``critical``, ``high``, ``medium``, ``low``, ``info``: always all five, 0 when absent), ``findings``
    (list of ``{rule, severity, message, location}``), ``rules`` (the distinct rule ids, sorted),
    ``rules_by_severity`` (severity -> distinct rule ids), ``age_days``, ``tool_version`` and
    ``report_digest`` (null when unknown). A missing scan has zero counts: a policy that needs a scan says
    ``scan.present``. Prefer ``counts``, ``rules`` and ``rules_by_severity`` to ``findings``: the gate
    hands CEL the findings list only when an expression mentions it (copying thousands costs tens of ms).
``signature``
    ``present``, ``method`` (key, certificate, sigstore), ``signer``, ``verified`` (true only when a
    verification succeeded; false when absent or never checked), ``matches_artifact`` (the signed digest
    is the registered one), ``age_days``, ``digest``, ``detail``.
``datasets`` / ``datasets_count``
    one entry per training dataset: ``digest`` ("manifest-sha256:..."), ``source``, ``rows``, ``files``,
    ``signed``, ``signer``, ``audited`` (bool) and ``audit``: ``{verdict, flagged, flagged_share, high,
    age_days}`` or null. ``high`` counts audit findings at high or critical severity.
``lineage``
    ``complete`` (at least one dataset, each with a manifest digest and an audit, and the parent, if any,
    named as MODEL@VERSION), ``missing`` (what is missing, in plain words), ``parent``.
``approvals`` / ``approved`` / ``approvers``
    every state change ``{state, actor, reason, at}``; ``approved`` is true when the version is not revoked
    or quarantined and someone approved or deployed it after its last revocation or quarantine;
    ``approvers`` are the distinct actors of those approvals.
``metrics`` / ``fairness`` / ``privacy``
    ``metadata["metrics"]`` etc. as dicts, ``{}`` when absent (test with ``has(fairness.gap)``).
``integrity``
    from a fresh verification when one is given: ``{checked: true, ok, detail, changed, missing, extra}``;
    otherwise ``{checked: false, ok: false, detail: "not checked", changed: [], missing: [], extra: []}``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from bastion.registry.record import APPROVED, BLOCKED_STATES, DEPLOYED, DatasetRef, VersionRecord

SEVERITIES = ("critical", "high", "medium", "low", "info")
FACT_ROOTS = frozenset(
    {
        "now",
        "model",
        "scan",
        "signature",
        "datasets",
        "datasets_count",
        "lineage",
        "approvals",
        "approved",
        "approvers",
        "metrics",
        "fairness",
        "privacy",
        "integrity",
    }
)
_REF = re.compile(r"^[^@\s]+@[^@\s]+$")
_VERIFIED_DETAIL = {True: "verified", False: "verification failed", None: "never verified"}
_MAX_DEPTH = 32  # metadata nested deeper than this is not something a policy reads; keep it as text


def rfc3339(moment: datetime | None) -> str | None:
    """``moment`` in UTC as ``2025-01-31T12:00:00Z`` (naive datetimes are taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def age_days(moment: datetime | None, now: datetime) -> float | None:
    """Days from ``moment`` to ``now`` as a float, or None when ``moment`` is unknown."""
    if moment is None:
        return None
    return (_aware(now) - _aware(moment)).total_seconds() / 86400.0


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-like data: tuples and sets become lists, datetimes RFC 3339, keys strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # NaN and infinities have no JSON form and compare surprisingly in CEL: absent is more honest.
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(v, depth + 1) for v in value), key=repr)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return plain(value.value, depth + 1)
    return str(value)


def _moment(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO 8601 string (audit summaries are JSON), else None."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _model_facts(record: VersionRecord, now: datetime) -> dict[str, Any]:
    metadata = plain(record.metadata)
    licence = metadata.get("license")
    return {
        "name": record.name,
        "version": record.version,
        "ref": record.ref,
        "format": record.format,
        "framework": record.framework,
        "size": record.size,
        "digest": record.digest,
        "state": record.state,
        "aliases": list(record.aliases),
        "created_at": rfc3339(record.created_at),
        "created_by": record.created_by,
        "age_days": age_days(record.created_at, now),
        "parent": record.parent,
        "license": licence if isinstance(licence, str) else None,
        "metadata": metadata,
    }


def _scan_facts(record: VersionRecord, now: datetime) -> dict[str, Any]:
    scan = record.scan
    if scan is None:
        return {
            "present": False,
            "verdict": None,
            "counts": dict.fromkeys(SEVERITIES, 0),
            "findings": [],
            "rules": [],
            "rules_by_severity": {label: [] for label in SEVERITIES},
            "age_days": None,
            "tool_version": None,
            "report_digest": None,
        }
    # One pass over the findings: this runs inside the gate's time budget with thousands of them.
    findings = [
        {
            "rule": str(f.get("rule", "")),
            "severity": str(f.get("severity", "")).lower(),
            "message": str(f.get("message", "")),
            "location": str(f.get("location", "")),
        }
        for f in scan.findings
    ]
    recorded = {str(k).lower(): int(v) for k, v in scan.counts.items()}
    counted: Counter[str] | None = None
    counts: dict[str, int] = {}
    for label in SEVERITIES:
        if label in recorded:
            counts[label] = recorded[label]
        else:
            # The recorded counts are authoritative (findings may be a truncated list); fill a gap from them.
            if counted is None:
                counted = Counter(f["severity"] for f in findings)
            counts[label] = counted.get(label, 0)
    return {
        "present": True,
        "verdict": scan.verdict,
        "counts": counts,
        "findings": findings,
        "rules": sorted({f["rule"] for f in findings if f["rule"]}),
        "rules_by_severity": _rules_by_severity(findings),
        "age_days": age_days(scan.scanned_at, now),
        "tool_version": scan.tool_version or None,
        "report_digest": scan.report_digest,
    }


def _rules_by_severity(findings: list[dict[str, str]]) -> dict[str, list[str]]:
    """The distinct rule ids seen at each severity: what most policies want from the findings, cheaply."""
    seen: dict[str, set[str]] = {label: set() for label in SEVERITIES}
    for f in findings:
        if f["rule"] and f["severity"] in seen:
            seen[f["severity"]].add(f["rule"])
    return {label: sorted(rules) for label, rules in seen.items()}


def _signature_facts(record: VersionRecord, now: datetime) -> dict[str, Any]:
    sig = record.signature
    if sig is None:
        return {
            "present": False,
            "method": None,
            "signer": None,
            "verified": False,
            "matches_artifact": False,
            "age_days": None,
            "digest": None,
            "detail": "not signed",
        }
    return {
        "present": True,
        "method": sig.method,
        "signer": sig.signer,
        "verified": sig.verified is True,  # None means "never checked", which must not count as verified
        "matches_artifact": sig.digest == record.digest,
        "age_days": age_days(sig.signed_at, now),
        "digest": sig.digest,
        "detail": sig.detail or _VERIFIED_DETAIL[sig.verified],
    }


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def _audit_facts(audit: Mapping[str, Any], rows: int | None, now: datetime) -> dict[str, Any]:
    """The audit summary a dataset carries, read leniently: `bastion data audit` JSON or its digest."""
    raw_summary = audit.get("summary")
    summary: Mapping[str, Any] = raw_summary if isinstance(raw_summary, Mapping) else {}
    flagged = _int_or_none(audit.get("flagged", audit.get("flagged_rows", summary.get("flagged_rows"))))
    share = audit.get("flagged_share")
    if not isinstance(share, int | float) or isinstance(share, bool) or not math.isfinite(share):
        total = _int_or_none(audit.get("rows")) or rows
        share = flagged / total if flagged is not None and total else None
    high = _int_or_none(audit.get("high"))
    if high is None:
        counts = audit.get("counts", audit.get("by_severity"))
        if isinstance(counts, Mapping):
            high = sum(_int_or_none(counts.get(k)) or 0 for k in ("high", "critical"))
        elif isinstance(audit.get("findings"), list):
            high = sum(
                1
                for f in audit["findings"]
                if isinstance(f, Mapping) and str(f.get("severity", "")).lower() in ("high", "critical")
            )
    when = next(
        (m for m in (_moment(audit.get(k)) for k in ("audited_at", "at", "created")) if m is not None),
        None,
    )
    if when is None and isinstance(audit.get("lineage"), Mapping):
        when = _moment(audit["lineage"].get("created"))
    verdict = audit.get("verdict")
    return {
        "verdict": verdict if isinstance(verdict, str) else None,
        "flagged": flagged,
        "flagged_share": float(share) if share is not None else None,
        "high": high,
        "age_days": age_days(when, now),
    }


def _dataset_facts(ref: DatasetRef, now: datetime) -> dict[str, Any]:
    return {
        "digest": ref.digest,
        "source": ref.source,
        "rows": ref.rows,
        "files": ref.files,
        "signed": ref.signed,
        "signer": ref.signer,
        "audited": ref.audit is not None,
        "audit": _audit_facts(ref.audit, ref.rows, now) if ref.audit is not None else None,
    }


def _lineage_facts(record: VersionRecord) -> dict[str, Any]:
    missing: list[str] = []
    if not record.datasets:
        missing.append("no training dataset recorded")
    for i, ds in enumerate(record.datasets, start=1):
        name = ds.digest[:28] if ds.digest else f"dataset {i}"
        if not ds.digest.startswith("manifest-sha256:") or len(ds.digest) <= len("manifest-sha256:"):
            missing.append(f"dataset {i} has no manifest digest")
        if ds.audit is None:
            missing.append(f"{name} was not audited")
    if record.parent is not None and not _REF.match(record.parent):
        missing.append(f"parent {record.parent!r} is not named as MODEL@VERSION")
    return {"complete": not missing, "missing": missing, "parent": record.parent}


def _approval_facts(record: VersionRecord) -> dict[str, Any]:
    history = sorted(record.approvals, key=lambda a: _aware(a.at))
    # Only approvals after the last revocation or quarantine count: reinstating a version needs new ones.
    last_block = max((i for i, a in enumerate(history) if a.state in BLOCKED_STATES), default=-1)
    approvers: list[str] = []
    for a in history[last_block + 1 :]:
        if a.state in (APPROVED, DEPLOYED) and a.actor not in approvers:
            approvers.append(a.actor)
    return {
        "approvals": [
            {"state": a.state, "actor": a.actor, "reason": a.reason, "at": rfc3339(a.at)} for a in history
        ],
        "approved": bool(approvers) and record.state not in BLOCKED_STATES,
        "approvers": approvers,
    }


def _section(metadata: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = metadata.get(key)
    return plain(value) if isinstance(value, Mapping) else {}


def _integrity_facts(verification: Mapping[str, Any] | None) -> dict[str, Any]:
    if verification is None:
        return {
            "checked": False,
            "ok": False,
            "detail": "not checked",
            "changed": [],
            "missing": [],
            "extra": [],
        }

    def names(key: str) -> list[str]:
        value = verification.get(key)
        return [str(v) for v in value] if isinstance(value, list | tuple) else []

    return {
        "checked": True,
        "ok": verification.get("ok") is True,
        "detail": str(verification.get("detail", "")),
        "changed": names("changed"),
        "missing": names("missing"),
        "extra": names("extra"),
    }


def version_facts(
    record: VersionRecord, *, now: datetime, verification: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The facts a policy sees about ``record`` at ``now`` (layout in the module docstring)."""
    datasets = [_dataset_facts(ds, now) for ds in record.datasets]
    return {
        "now": rfc3339(now),
        "model": _model_facts(record, now),
        "scan": _scan_facts(record, now),
        "signature": _signature_facts(record, now),
        "datasets": datasets,
        "datasets_count": len(datasets),
        "lineage": _lineage_facts(record),
        **_approval_facts(record),
        "metrics": _section(record.metadata, "metrics"),
        "fairness": _section(record.metadata, "fairness"),
        "privacy": _section(record.metadata, "privacy"),
        "integrity": _integrity_facts(verification),
    }
