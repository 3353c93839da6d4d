"""The model registry: immutable versions, their approvals and aliases, every change an event.

A version records what was registered (artifact digests, format, the dataset manifests it learned from,
its parent, the scan) and never changes; its governance state (approvals, aliases, signatures) moves only
through methods that write the change and its event in one transaction.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, insert, select, update

from bastion.errors import InputError, UsageError
from bastion.registry.record import (
    APPROVED,
    BLOCKED_STATES,
    DEPLOYED,
    DEPRECATED,
    QUARANTINED,
    REGISTERED,
    REVOKED,
    STATES,
    Approval,
    ArtifactFile,
    DatasetRef,
    ScanSummary,
    SignatureInfo,
    VersionRecord,
)
from bastion.store.database import Store
from bastion.store.events import (
    Event,
    EventFilter,
    append_event,
    format_time,
    list_events,
    now_text,
    parse_time,
)
from bastion.store.schema import (
    alias_history,
    aliases,
    approvals,
    artifact_files,
    model_versions,
    models,
    version_datasets,
)

ENV_ACTOR = "BASTION_ACTOR"
# Which state may follow which; revoked and quarantined are left only by a reinstatement with a reason.
TRANSITIONS: dict[str, frozenset[str]] = {
    REGISTERED: frozenset({APPROVED, DEPRECATED, REVOKED, QUARANTINED}),
    APPROVED: frozenset({DEPLOYED, DEPRECATED, REVOKED, QUARANTINED}),
    DEPLOYED: frozenset({APPROVED, DEPRECATED, REVOKED, QUARANTINED}),
    DEPRECATED: frozenset({APPROVED, REVOKED, QUARANTINED}),
    REVOKED: frozenset({QUARANTINED}),
    QUARANTINED: frozenset({REVOKED}),
}
# Aliases that put a version in front of users need an approval first.
SERVING_ALIASES = frozenset({"production", "prod", "champion"})


def default_actor() -> str:
    """Who is acting: ``BASTION_ACTOR``, else the login name."""
    env = os.environ.get(ENV_ACTOR, "").strip()
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_ref(text: str) -> tuple[str, str | None]:
    """Split ``name@version`` / ``name@alias`` / ``name`` into the name and the selector."""
    name, sep, selector = text.strip().rpartition("@")
    if not sep:
        name, selector = text.strip(), ""
    if not name:
        raise UsageError(f"{text!r}: expected MODEL@VERSION, MODEL@ALIAS or MODEL")
    return name, selector or None


def check_name(name: str, what: str = "model name") -> str:
    """Names are plain identifiers people can type: letters, digits, ``._-/``, no ``@``."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")
    if not name or len(name) > 200 or not set(name) <= allowed or name[0] in "._-/":
        raise UsageError(f"{name!r}: a {what} is letters, digits and . _ - / (not starting with a symbol)")
    return name


# --- JSON columns ------------------------------------------------------------------------------------


def _time_or_none(value: str | None) -> dt.datetime | None:
    return parse_time(value) if value else None


def jsonable(value: Any) -> Any:
    """Datetimes as RFC 3339 text, mappings and sequences recursively: what the JSON columns store."""
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def scan_to_json(scan: ScanSummary | None) -> str | None:
    """A scan summary as the JSON the store keeps."""
    return None if scan is None else json.dumps(jsonable(asdict(scan)), sort_keys=True)


def scan_from_json(text: str | None) -> ScanSummary | None:
    """The inverse of :func:`scan_to_json`."""
    if not text:
        return None
    data = json.loads(text)
    return ScanSummary(
        verdict=data["verdict"],
        counts=data["counts"],
        findings=tuple(data.get("findings", ())),
        tool_version=data.get("tool_version", ""),
        scanned_at=_time_or_none(data.get("scanned_at")),
        report_digest=data.get("report_digest"),
    )


def signature_to_json(info: SignatureInfo) -> str:
    """A signature record as the JSON the store keeps."""
    return json.dumps(jsonable(asdict(info)), sort_keys=True)


def signature_from_json(text: str | None) -> SignatureInfo | None:
    """The inverse of :func:`signature_to_json`."""
    if not text:
        return None
    data = json.loads(text)
    return SignatureInfo(
        method=data["method"],
        signer=data["signer"],
        bundle_path=data["bundle_path"],
        signed_at=parse_time(data["signed_at"]),
        digest=data["digest"],
        verified=data.get("verified"),
        verified_at=_time_or_none(data.get("verified_at")),
        detail=data.get("detail", ""),
        public_key=data.get("public_key"),
    )


# --- dataset manifests -------------------------------------------------------------------------------


def _audit_from_lineage(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What a sanitized dataset's manifest says about the audit that produced it."""
    for entry in reversed(records):
        if entry.get("step") != "sanitize":
            continue
        parameters = entry.get("parameters", {})
        validation = parameters.get("validation")
        return {
            "source": "sanitize",
            "verdict": "sanitized",
            "at": entry.get("created"),
            "report_digest": entry.get("consumed", {}).get("audit_report"),
            "quarantined": parameters.get("quarantined"),
            "validation": validation,
            "accepted": None if validation is None else bool(validation.get("accepted")),
            "flagged": 0,
            "flagged_share": 0.0,
            "high": 0,
        }
    return None


def audit_summary(report: Mapping[str, Any], digest: str) -> dict[str, Any]:
    """The part of a ``bastion data audit`` JSON report a version keeps about its training data."""
    rows = int(report.get("dataset", {}).get("rows") or 0)
    flagged = int(report.get("summary", {}).get("flagged_rows") or 0)
    high = sum(1 for f in report.get("findings", ()) if f.get("severity") in ("high", "critical"))
    return {
        "source": "audit",
        "verdict": "flagged" if high else "clean",
        "at": (report.get("lineage") or {}).get("created"),
        "report_digest": digest,
        "rows": rows,
        "flagged": flagged,
        "flagged_share": round(flagged / rows, 6) if rows else 0.0,
        "quarantine": int(report.get("summary", {}).get("quarantine_rows") or 0),
        "high": high,
    }


def load_dataset_ref(manifest_path: Path, audits: Mapping[str, dict[str, Any]]) -> DatasetRef:
    """A manifest file as a dataset reference, with its signature checked and any audit attached."""
    from bastion.data.manifest import load_manifest, manifest_problem
    from bastion.data.signing import verify_manifest_signature

    manifest = load_manifest(manifest_path)
    # An unsigned manifest can be edited; one that contradicts itself must not become a version's lineage.
    problem = verify_manifest_signature(manifest) or manifest_problem(manifest)
    if problem:
        raise InputError(f"{manifest_path}: {problem}")
    digest = "manifest-sha256:" + manifest.digest()
    rows = [f.row_count for f in manifest.files if f.row_count is not None]
    audit = audits.get("merkle-sha256:" + manifest.root) or _audit_from_lineage(manifest.lineage)
    return DatasetRef(
        digest=digest,
        source=manifest.source or None,
        path=str(manifest_path.resolve()),
        rows=sum(rows) if rows else None,
        files=len(manifest.files),
        signed=manifest.signature is not None,
        signer=manifest.signature.public_key if manifest.signature else None,
        audit=audit,
    )


def _manifest_root(path: Path) -> str:
    from bastion.data.manifest import load_manifest

    return "merkle-sha256:" + load_manifest(path).root


def load_audit_reports(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Audit reports keyed by the content root (``merkle-sha256:``) of the data each one consumed."""
    import hashlib

    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            raw = path.read_bytes()
            report = json.loads(raw)
        except OSError as error:
            raise InputError(f"{path}: cannot read the audit report ({error.strerror or error})") from None
        except ValueError:
            raise InputError(
                f"{path}: not a JSON audit report (use `bastion data audit --format json`)"
            ) from None
        consumed = (report.get("lineage") or {}).get("consumed", {}) if isinstance(report, dict) else {}
        data = consumed.get("data_root") if isinstance(consumed, dict) else None
        if not isinstance(data, str):
            raise InputError(
                f"{path}: the audit report does not name the data it consumed (no data_root lineage)"
            )
        found[data] = audit_summary(report, "sha256:" + hashlib.sha256(raw).hexdigest())
    return found


# --- scans -------------------------------------------------------------------------------------------

_VERDICT_RANK = {"clean": 0, "error": 1, "suspicious": 2, "malicious": 3}


def summarise_scan(report: Mapping[str, Any], root: Path | None, digest: str | None) -> ScanSummary:
    """A `bastion scan` JSON report reduced to what the registry and the gate need."""
    counts = {name: 0 for name in ("critical", "high", "medium", "low", "info")}
    findings: list[dict[str, str]] = []
    for f in report.get("findings", ()):
        severity = str(f.get("severity", "info"))
        counts[severity] = counts.get(severity, 0) + 1
        where = str((f.get("location") or {}).get("display", ""))
        if root is not None and where.startswith(str(root)):
            where = where[len(str(root)) :].lstrip("/") or root.name
        findings.append(
            {
                "rule": str(f.get("rule_id")),
                "severity": severity,
                "message": str(f.get("message")),
                "location": where,
            }
        )
    verdicts = [str(t.get("verdict", "clean")) for t in report.get("targets", ())]
    if report.get("skipped"):
        verdicts.append("error")
    verdict = max(verdicts, key=lambda v: _VERDICT_RANK.get(v, 1), default="clean")
    tool = report.get("tool") or {}
    return ScanSummary(
        verdict=verdict,
        counts=counts,
        findings=tuple(findings),
        tool_version=str(tool.get("version", "")) if isinstance(tool, Mapping) else "",
        scanned_at=dt.datetime.now(dt.UTC),
        report_digest=digest,
    )


def scan_artifact(path: Path) -> ScanSummary:
    """Run `bastion scan` on the artifact in-process and summarise it."""
    import hashlib

    from bastion.render.json import report_dict
    from bastion.scan.engine import ScanOptions, scan_paths

    report = report_dict(scan_paths([str(path)], ScanOptions(jobs=1)))
    digest = "sha256:" + hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()
    return summarise_scan(report, path if path.is_dir() else None, digest)


def load_scan_report(path: Path, root: Path) -> ScanSummary:
    """A saved `bastion scan --format json` report."""
    import hashlib

    try:
        raw = path.read_bytes()
        report = json.loads(raw)
    except OSError as error:
        raise InputError(f"{path}: cannot read the scan report ({error.strerror or error})") from None
    except ValueError:
        raise InputError(f"{path}: not a JSON scan report (use `bastion scan --format json`)") from None
    if not isinstance(report, dict) or "findings" not in report:
        raise InputError(f"{path}: not a `bastion scan --format json` report")
    return summarise_scan(
        report, root if root.is_dir() else None, "sha256:" + hashlib.sha256(raw).hexdigest()
    )


# --- the registry ------------------------------------------------------------------------------------


class VersionRow(NamedTuple):
    """One line of ``registry list``: the columns a listing needs, without files or datasets.

    A named tuple, built straight from the database row: listing 100,000 versions must stay under a second.
    """

    name: str
    version: int
    state: str
    created_at: str
    created_by: str
    digest: str
    format: str
    size: int
    signed: bool
    verdict: str | None


@dataclass(frozen=True)
class VersionDiff:
    """What differs between two versions."""

    left: str
    right: str
    files_added: tuple[str, ...]
    files_removed: tuple[str, ...]
    files_changed: tuple[str, ...]
    fields: tuple[tuple[str, Any, Any], ...]  # (field, left value, right value)
    datasets_added: tuple[str, ...]
    datasets_removed: tuple[str, ...]


class Registry:
    """Model versions in a store; every method that changes something appends its event."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- registration --

    def add(
        self,
        name: str,
        path: Path,
        *,
        actor: str,
        datasets: Sequence[Path] = (),
        audits: Sequence[Path] = (),
        parent: str | None = None,
        scan_report: Path | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> VersionRecord:
        """Register ``path`` as the next version of ``name`` and return the record."""
        from bastion.registry.artifacts import detect_format, hash_artifact

        check_name(name)
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        path = path.resolve()
        artifact = hash_artifact(path)
        fmt, framework = detect_format(path)
        audit_map = load_audit_reports(audits)
        refs = tuple(load_dataset_ref(m, audit_map) for m in datasets)
        digests = [r.digest for r in refs]
        if len(set(digests)) != len(digests):
            raise UsageError("--data: the same dataset manifest is given twice")
        unmatched = set(audit_map) - {_manifest_root(m) for m in datasets}
        if unmatched:
            raise InputError(
                f"--audit: a report audits data that no --data manifest names ({sorted(unmatched)[0]})"
            )
        if parent is not None:
            parent = self.get(parent).ref  # resolves aliases and fails clearly on unknown parents
        scan = load_scan_report(scan_report, path) if scan_report else scan_artifact(path)
        meta = dict(jsonable(dict(metadata or {})))
        with self.store.write() as conn:
            now = now_text()
            if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
                conn.execute(insert(models).values(name=name, created_at=now, created_by=actor))
            number = (
                int(
                    conn.execute(
                        select(func.coalesce(func.max(model_versions.c.version), 0)).where(
                            model_versions.c.name == name
                        )
                    ).scalar_one()
                )
                + 1
            )
            ref = f"{name}@{number}"
            event = append_event(
                conn,
                actor=actor,
                action="model.registered",
                subject=ref,
                payload={
                    "digest": artifact.digest,
                    "location": str(path),
                    "format": fmt,
                    "size": artifact.size,
                    "files": len(artifact.files),
                    "datasets": digests,
                    "parent": parent,
                },
            )
            version_id = conn.execute(
                insert(model_versions).values(
                    name=name,
                    version=number,
                    created_at=now,
                    created_by=actor,
                    location=str(path),
                    digest=artifact.digest,
                    format=fmt,
                    framework=framework,
                    size=artifact.size,
                    file_count=len(artifact.files),
                    parent=parent,
                    scan=scan_to_json(scan),
                    scan_verdict=scan.verdict,
                    metadata=json.dumps(meta, sort_keys=True),
                    state=REGISTERED,
                    registered_event=event.seq,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            if artifact.files:
                conn.execute(
                    insert(artifact_files),
                    [
                        {"version_id": version_id, "path": f.path, "sha256": f.sha256, "size": f.size}
                        for f in artifact.files
                    ],
                )
            for ds in refs:
                conn.execute(
                    insert(version_datasets).values(
                        version_id=version_id,
                        digest=ds.digest,
                        source=ds.source,
                        path=ds.path,
                        rows=ds.rows,
                        files=ds.files,
                        signed=ds.signed,
                        signer=ds.signer,
                        audit=None if ds.audit is None else json.dumps(ds.audit, sort_keys=True),
                    )
                )
            append_event(
                conn,
                actor=actor,
                action="model.scanned",
                subject=ref,
                payload={
                    "verdict": scan.verdict,
                    "counts": dict(scan.counts),
                    "report_digest": scan.report_digest,
                },
            )
        return self.get(ref)

    # -- reading --

    def _version_row(self, conn: Connection, name: str, selector: str | None) -> Any:
        if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
            raise InputError(f"{name}: no such model in the registry ({self.store.display})")
        query = select(model_versions).where(model_versions.c.name == name)
        if selector is None:
            query = query.order_by(model_versions.c.version.desc()).limit(1)
        elif selector.isdigit():
            query = query.where(model_versions.c.version == int(selector))
        else:
            alias = conn.execute(
                select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == selector)
            ).first()
            if alias is None:
                raise InputError(f"{name}@{selector}: no such version or alias")
            query = query.where(model_versions.c.version == alias.version)
        row = conn.execute(query).first()
        if row is None:
            raise InputError(f"{name}@{selector}: no such version")
        return row

    def get(self, ref: str) -> VersionRecord:
        """The version named by ``name@version``, ``name@alias`` or ``name`` (the newest)."""
        name, selector = parse_ref(ref)
        with self.store.read() as conn:
            row = self._version_row(conn, name, selector)
            return self._record(conn, row)

    def _record(self, conn: Connection, row: Any) -> VersionRecord:
        files = tuple(
            ArtifactFile(r.path, r.sha256, r.size)
            for r in conn.execute(
                select(artifact_files)
                .where(artifact_files.c.version_id == row.id)
                .order_by(artifact_files.c.path)
            )
        )
        datasets = tuple(
            DatasetRef(
                digest=r.digest,
                source=r.source,
                path=r.path,
                rows=r.rows,
                files=r.files,
                signed=bool(r.signed),
                signer=r.signer,
                audit=json.loads(r.audit) if r.audit else None,
            )
            for r in conn.execute(
                select(version_datasets)
                .where(version_datasets.c.version_id == row.id)
                .order_by(version_datasets.c.digest)
            )
        )
        approval_rows = conn.execute(
            select(approvals).where(approvals.c.version_id == row.id).order_by(approvals.c.id)
        )
        history = tuple(
            Approval(r.state, r.actor, r.reason, parse_time(r.at), r.event_seq) for r in approval_rows
        )
        names = tuple(
            r.alias
            for r in conn.execute(
                select(aliases.c.alias)
                .where(aliases.c.name == row.name, aliases.c.version == row.version)
                .order_by(aliases.c.alias)
            )
        )
        return VersionRecord(
            name=row.name,
            version=row.version,
            created_at=parse_time(row.created_at),
            created_by=row.created_by,
            location=row.location,
            digest=row.digest,
            format=row.format,
            framework=row.framework,
            size=row.size,
            files=files,
            datasets=datasets,
            parent=row.parent,
            scan=scan_from_json(row.scan),
            signature=signature_from_json(row.signature),
            state=row.state,
            approvals=history,
            aliases=names,
            metadata=json.loads(row.metadata),
        )

    def list_versions(self, name: str | None = None, *, state: str | None = None) -> Iterator[VersionRow]:
        """Every version (of ``name``, in ``state``), oldest model first, versions in order: one query."""
        query = select(
            model_versions.c.name,
            model_versions.c.version,
            model_versions.c.state,
            model_versions.c.created_at,
            model_versions.c.created_by,
            model_versions.c.digest,
            model_versions.c.format,
            model_versions.c.size,
            model_versions.c.signature.is_not(None).label("signed"),
            model_versions.c.scan_verdict,
        )
        if name is not None:
            query = query.where(model_versions.c.name == name)
        if state is not None:
            query = query.where(model_versions.c.state == state)
        with self.store.read() as conn:
            result = conn.execute(query.order_by(model_versions.c.name, model_versions.c.version))
            # The selected columns need no type conversion, so blocks are read from the driver's cursor
            # directly: SQLAlchemy's per-row processing would double the time of a 100,000-row listing.
            cursor = result.cursor
            make = VersionRow._make
            while block := cursor.fetchmany(10_000):
                for row in block:
                    yield make(row)
            result.close()

    def records(self, name: str | None = None) -> list[VersionRecord]:
        """Full records of every version (of ``name``): what the AI-BOM and compliance report read."""
        with self.store.read() as conn:
            query = select(model_versions)
            if name is not None:
                query = query.where(model_versions.c.name == name)
            rows = list(conn.execute(query.order_by(model_versions.c.name, model_versions.c.version)))
            return [self._record(conn, row) for row in rows]

    def history(self, ref: str) -> list[Event]:
        """Every event about a model (``name``) or one version (``name@version``), in order."""
        name, selector = parse_ref(ref)
        if selector is None:
            with self.store.read() as conn:
                if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
                    raise InputError(f"{name}: no such model in the registry ({self.store.display})")
            return [
                e
                for e in list_events(self.store, EventFilter(subject=f"{name}@*"))
                if parse_ref(e.subject)[0] == name
            ]
        record = self.get(ref)
        own = list_events(self.store, EventFilter(subject=record.ref))
        # Alias moves are recorded against the model; keep the ones that touched this version.
        moves = [
            e
            for e in list_events(self.store, EventFilter(action="alias.*", subject=f"{record.name}@*"))
            if record.version in (e.payload.get("to"), e.payload.get("from"))
        ]
        return sorted(own + moves, key=lambda e: e.seq)

    def alias_at(self, name: str, alias: str, moment: dt.datetime) -> int | None:
        """Which version ``name@alias`` pointed to at ``moment`` (None if it pointed nowhere)."""
        with self.store.read() as conn:
            row = conn.execute(
                select(alias_history.c.version)
                .where(
                    alias_history.c.name == name,
                    alias_history.c.alias == alias,
                    alias_history.c.at <= format_time(moment),
                )
                .order_by(alias_history.c.at.desc(), alias_history.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else row.version

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every move of the model's aliases (or one alias), oldest first."""
        query = select(alias_history).where(alias_history.c.name == name)
        if alias is not None:
            query = query.where(alias_history.c.alias == alias)
        with self.store.read() as conn:
            return [
                {
                    "alias": r.alias,
                    "version": r.version,
                    "previous": r.previous,
                    "at": r.at,
                    "actor": r.actor,
                    "reason": r.reason,
                    "event": r.event_seq,
                }
                for r in conn.execute(query.order_by(alias_history.c.id))
            ]

    def diff(self, left_ref: str, right_ref: str) -> VersionDiff:
        """Files, datasets and recorded facts that differ between two versions."""
        left, right = self.get(left_ref), self.get(right_ref)
        lf = {f.path: f.sha256 for f in left.files}
        rf = {f.path: f.sha256 for f in right.files}
        fields: list[tuple[str, Any, Any]] = []
        for key in ("digest", "format", "framework", "size", "parent", "state"):
            a, b = getattr(left, key), getattr(right, key)
            if a != b:
                fields.append((key, a, b))
        la = left.scan.verdict if left.scan else None
        ra = right.scan.verdict if right.scan else None
        if la != ra:
            fields.append(("scan.verdict", la, ra))
        for key in sorted(set(left.metadata) | set(right.metadata)):
            if left.metadata.get(key) != right.metadata.get(key):
                fields.append((f"metadata.{key}", left.metadata.get(key), right.metadata.get(key)))
        ld = {d.digest for d in left.datasets}
        rd = {d.digest for d in right.datasets}
        return VersionDiff(
            left=left.ref,
            right=right.ref,
            files_added=tuple(sorted(set(rf) - set(lf))),
            files_removed=tuple(sorted(set(lf) - set(rf))),
            files_changed=tuple(sorted(p for p in set(lf) & set(rf) if lf[p] != rf[p])),
            fields=tuple(fields),
            datasets_added=tuple(sorted(rd - ld)),
            datasets_removed=tuple(sorted(ld - rd)),
        )

    # -- governance state --

    def transition(
        self, ref: str, state: str, *, actor: str, reason: str, reinstate: bool = False
    ) -> VersionRecord:
        """Move a version to ``state`` (approve, deploy, deprecate, revoke, quarantine), recording why."""
        if state not in STATES or state == REGISTERED:
            raise UsageError(f"{state!r}: not a state to move to (one of {', '.join(STATES[1:])})")
        if not reason.strip():
            raise UsageError("--reason: say why; every state change is recorded with its reason")
        record = self.get(ref)
        current = record.state
        allowed = TRANSITIONS[current]
        if current in BLOCKED_STATES and state not in allowed:
            if not reinstate:
                raise UsageError(
                    f"{record.ref} is {current}: it cannot become {state} again unless reinstated "
                    "(--reinstate with a --reason that says why)"
                )
        elif state not in allowed and state != current:
            raise UsageError(f"{record.ref}: cannot move from {current} to {state}")
        with self.store.write() as conn:
            row = conn.execute(
                select(model_versions.c.id, model_versions.c.state).where(
                    model_versions.c.name == record.name, model_versions.c.version == record.version
                )
            ).one()
            if row.state != current:  # someone else moved it meanwhile: refuse rather than overwrite
                raise UsageError(f"{record.ref}: its state changed to {row.state} meanwhile; try again")
            payload = {"from": current, "to": state, "reason": reason, "reinstated": bool(reinstate)}
            if reinstate and current in BLOCKED_STATES:
                append_event(
                    conn, actor=actor, action="model.reinstated", subject=record.ref, payload=payload
                )
            event = append_event(conn, actor=actor, action="model.state", subject=record.ref, payload=payload)
            conn.execute(update(model_versions).where(model_versions.c.id == row.id).values(state=state))
            conn.execute(
                insert(approvals).values(
                    version_id=row.id,
                    state=state,
                    actor=actor,
                    reason=reason,
                    at=event.at,
                    event_seq=event.seq,
                )
            )
            if state in BLOCKED_STATES:
                # A blocked version must not keep serving: every alias pointing at it is removed (recorded).
                for alias_row in conn.execute(
                    select(aliases.c.alias).where(
                        aliases.c.name == record.name, aliases.c.version == record.version
                    )
                ).all():
                    self._move_alias(
                        conn, record.name, alias_row.alias, None, actor, f"version {state}: {reason}"
                    )
        return self.get(record.ref)

    def set_alias(self, ref: str, alias: str, *, actor: str, reason: str) -> VersionRecord:
        """Point ``alias`` at the version ``ref``; a serving alias needs an approved, unblocked version."""
        check_name(alias, "alias")
        if alias.isdigit():
            raise UsageError(f"{alias!r}: an alias cannot be a number (numbers name versions)")
        record = self.get(ref)
        if record.state in BLOCKED_STATES:
            raise UsageError(f"{record.ref} is {record.state}: reinstate it before pointing an alias at it")
        if alias in SERVING_ALIASES and record.state not in (APPROVED, DEPLOYED):
            raise UsageError(
                f"{record.ref} is {record.state}: `{alias}` serves users, approve the version first "
                f"(bastion registry approve {record.ref} --reason ...)"
            )
        with self.store.write() as conn:
            self._move_alias(conn, record.name, alias, record.version, actor, reason)
            if alias in SERVING_ALIASES and record.state == APPROVED:
                event = append_event(
                    conn,
                    actor=actor,
                    action="model.state",
                    subject=record.ref,
                    payload={
                        "from": APPROVED,
                        "to": DEPLOYED,
                        "reason": f"served as {alias}",
                        "reinstated": False,
                    },
                )
                version_id = conn.execute(
                    select(model_versions.c.id).where(
                        model_versions.c.name == record.name, model_versions.c.version == record.version
                    )
                ).scalar_one()
                conn.execute(
                    update(model_versions).where(model_versions.c.id == version_id).values(state=DEPLOYED)
                )
                conn.execute(
                    insert(approvals).values(
                        version_id=version_id,
                        state=DEPLOYED,
                        actor=actor,
                        reason=f"served as {alias}",
                        at=event.at,
                        event_seq=event.seq,
                    )
                )
        return self.get(record.ref)

    def remove_alias(self, name: str, alias: str, *, actor: str, reason: str) -> None:
        """Remove ``name@alias`` (recorded like any move)."""
        with self.store.write() as conn:
            row = conn.execute(
                select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
            ).first()
            if row is None:
                raise InputError(f"{name}@{alias}: no such alias")
            self._move_alias(conn, name, alias, None, actor, reason)

    def _move_alias(
        self, conn: Connection, name: str, alias: str, version: int | None, actor: str, reason: str
    ) -> Event:
        row = conn.execute(
            select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
        ).first()
        previous = None if row is None else row.version
        event = append_event(
            conn,
            actor=actor,
            action="alias.moved" if version is not None else "alias.removed",
            subject=f"{name}@{alias}",
            payload={"alias": alias, "from": previous, "to": version, "reason": reason},
        )
        if version is None:
            conn.execute(aliases.delete().where(aliases.c.name == name, aliases.c.alias == alias))
        elif row is None:
            conn.execute(insert(aliases).values(name=name, alias=alias, version=version))
        else:
            conn.execute(
                update(aliases)
                .where(aliases.c.name == name, aliases.c.alias == alias)
                .values(version=version)
            )
        conn.execute(
            insert(alias_history).values(
                name=name,
                alias=alias,
                version=version,
                previous=previous,
                at=event.at,
                actor=actor,
                reason=reason,
                event_seq=event.seq,
            )
        )
        return event

    # -- signatures and checks --

    def record_signature(self, ref: str, info: SignatureInfo, *, actor: str) -> VersionRecord:
        """Keep a new signature of the version (it must sign the registered digest)."""
        record = self.get(ref)
        if info.digest != record.digest:
            raise InputError(
                f"{info.bundle_path}: the signature covers {info.digest}, not {record.ref}'s registered "
                f"artifact {record.digest}"
            )
        with self.store.write() as conn:
            append_event(
                conn,
                actor=actor,
                action="model.signed",
                subject=record.ref,
                payload={
                    "method": info.method,
                    "signer": info.signer,
                    "digest": info.digest,
                    "bundle": info.bundle_path,
                },
            )
            conn.execute(
                update(model_versions)
                .where(model_versions.c.name == record.name, model_versions.c.version == record.version)
                .values(signature=signature_to_json(info))
            )
        return self.get(record.ref)

    def record_check(self, ref: str, action: str, payload: Mapping[str, Any], *, actor: str) -> Event:
        """Append the outcome of a check about a version (``model.verified``, ``gate.evaluated``...)."""
        with self.store.write() as conn:
            return append_event(conn, actor=actor, action=action, subject=ref, payload=dict(payload))
