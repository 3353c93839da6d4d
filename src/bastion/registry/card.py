"""Model cards written from what the registry knows about a version, with every gap marked as missing.

A card never invents: a section the registry cannot fill says ``Missing:`` plus what would fill it and
the command that records it. The same :class:`ModelCard` renders as plain Markdown and as a Hugging Face
README (YAML front matter, then the body under the Hugging Face template's headings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any

from bastion import __version__
from bastion.registry.record import DatasetRef, VersionRecord

# A card lists this many artifact files; a sharded model's thousand shards add nothing to read.
MAX_FILES_LISTED = 20

# How a person records each free metadata key. Versions are immutable, so metadata is given when a
# version is registered; the example value shows the expected shape (text, list or JSON object).
META_EXAMPLES: Mapping[str, str] = {
    "description": '"Scores card transactions for fraud"',
    "authors": '"Risk ML team"',
    "contact": '"ml-risk@example.com"',
    "task": "tabular-classification",
    "architecture": "gradient-boosted-trees",
    "license": "Apache-2.0",
    "intended_use": '"Rank transactions for analyst review"',
    "out_of_scope": '"Automatic account closure"',
    "limitations": '"Trained on EU card data only"',
    "risks": '"Higher false-positive rate for new customers"',
    "metrics": """'{"auc": 0.94}'""",
    "fairness": """'{"demographic_parity_difference": 0.03}'""",
    "privacy": """'{"dp_epsilon": 3.0}'""",
}

SCAN_HINT = (
    "no scan report is recorded for this version; `bastion registry add` records one "
    "(it runs `bastion scan` on the artifact when no report is given)"
)
SIGN_HINT = "the version is not signed; sign it with `bastion registry sign {ref} --key KEY.pem`"
DATA_HINT = (
    "no training data is recorded; fingerprint it with `bastion data fingerprint DATA --output MANIFEST` "
    "and register the version with `--data MANIFEST`"
)
AUDIT_HINT = (
    "no `bastion data audit` result is recorded in this manifest's lineage; audit the data and register "
    "the manifest that `bastion data sanitize` writes"
)


@dataclass(frozen=True, slots=True)
class CardField:
    """One titled entry of a section: Markdown text, or ``None`` with what is missing and how to fill it."""

    title: str
    text: str | None
    missing: str | None = None

    @property
    def is_missing(self) -> bool:
        """True when the registry could not fill this entry."""
        return self.text is None


@dataclass(frozen=True, slots=True)
class CardSection:
    """A top-level section of the card; ``compact`` sections render as a bullet list of short fields."""

    title: str
    fields: tuple[CardField, ...]
    compact: bool = False


@dataclass(frozen=True, slots=True)
class ModelCard:
    """A model card for one version: Hugging Face front matter plus the body sections."""

    ref: str
    name: str
    version: int
    front_matter: Mapping[str, Any]
    sections: tuple[CardSection, ...]


# -- reading free metadata ---------------------------------------------------------------------------------


def meta_text(metadata: Mapping[str, Any], key: str) -> str | None:
    """The metadata value under ``key`` as one line of text, or None when absent or empty."""
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list | tuple):
        items = [str(v).strip() for v in value if str(v).strip()]
        return "; ".join(items) or None
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, default=str)
    return str(value)


def meta_list(metadata: Mapping[str, Any], key: str) -> list[str]:
    """The metadata value under ``key`` as a list of non-empty strings (a single string is one item)."""
    value = metadata.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def meta_mapping(metadata: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The metadata value under ``key`` as a dict (JSON text is parsed), or None when absent or empty."""
    value = metadata.get(key)
    if isinstance(value, str):
        try:
            # `--meta metrics='{"auc": 0.9}'` may reach the record as text.
            value = json.loads(value)
        except ValueError:
            return {"value": value} if value.strip() else None
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()} or None
    return {"value": value}


def dataset_label(ds: DatasetRef) -> str:
    """A short human name for a dataset: its recorded source, else its manifest's file name, else digest."""
    if ds.source:
        return ds.source
    if ds.path:
        # Only the file name: the registered path is a machine path and must not leave the store.
        return PurePath(ds.path).name
    return "dataset " + digest_hex(ds.digest)[:12]


def plural(n: int, word: str) -> str:
    """``"1 file"``, ``"3 files"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def digest_hex(digest: str) -> str:
    """The hex part of ``"algo:hex"`` (the whole string when it has no prefix)."""
    return digest.rsplit(":", 1)[-1]


def audit_lines(audit: Mapping[str, Any]) -> list[str]:
    """An audit summary as ``key: value`` lines; nested values become compact JSON."""
    lines = []
    for key in sorted(audit):
        value = audit[key]
        if isinstance(value, Mapping | list | tuple):
            value = json.dumps(value, sort_keys=True, default=str)
        lines.append(f"{key}: {value}")
    return lines


# -- building the card ---------------------------------------------------------------------------------------


def _missing(what: str, key: str, name: str) -> str:
    example = META_EXAMPLES.get(key, "...")
    return f"{what}. Record it when registering: `bastion registry add {name} PATH --meta {key}={example}`"


def _meta_field(
    record: VersionRecord, title: str, key: str, what: str, *, as_list: bool = False
) -> CardField:
    if as_list:
        items = meta_list(record.metadata, key)
        text = (items[0] if len(items) == 1 else "\n".join(f"- {i}" for i in items)) if items else None
    else:
        text = meta_text(record.metadata, key)
    return CardField(title, text, None if text else _missing(what, key, record.name))


def _mapping_field(record: VersionRecord, title: str, key: str, what: str) -> CardField:
    values = meta_mapping(record.metadata, key)
    if not values:
        return CardField(title, None, _missing(what, key, record.name))
    rows = ["| Name | Value |", "| --- | --- |"]
    for name in sorted(values):
        rows.append(f"| {_cell(name)} | {_cell(_plain(values[name]))} |")
    return CardField(title, "\n".join(rows))


def _plain(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "unknown time"


def _details(record: VersionRecord) -> CardSection:
    fmt = record.format + (f" ({record.framework})" if record.framework else " (framework not detected)")
    parent = record.parent or "No parent recorded: the version is not registered as a fine-tune."
    return CardSection(
        "Model Details",
        (
            _meta_field(record, "Description", "description", "a description of what the model does"),
            _meta_field(record, "Developed by", "authors", "who developed the model", as_list=True),
            _meta_field(record, "Contact", "contact", "who to contact about the model"),
            _meta_field(record, "Task", "task", "the task the model performs"),
            _meta_field(record, "Architecture", "architecture", "the model's architecture"),
            CardField("Format", fmt),
            _meta_field(record, "License", "license", "the model's licence (an SPDX identifier)"),
            CardField("Fine-tuned from", parent),
            CardField("Registered", f"{_when(record.created_at)} by {record.created_by}"),
        ),
        compact=True,
    )


def _uses(record: VersionRecord) -> CardSection:
    return CardSection(
        "Uses",
        (
            _meta_field(record, "Direct Use", "intended_use", "the intended use", as_list=True),
            _meta_field(
                record, "Out-of-Scope Use", "out_of_scope", "uses the model is not meant for", as_list=True
            ),
        ),
    )


def _risks(record: VersionRecord) -> CardSection:
    return CardSection(
        "Bias, Risks, and Limitations",
        (
            _meta_field(record, "Risks", "risks", "known risks and biases", as_list=True),
            _meta_field(record, "Limitations", "limitations", "known limitations", as_list=True),
        ),
    )


def _training(record: VersionRecord) -> CardSection:
    if not record.datasets:
        return CardSection(
            "Training Details",
            (CardField("Training Data", None, DATA_HINT), CardField("Data Audit", None, DATA_HINT)),
        )
    rows = [
        "| Dataset | Manifest digest | Rows | Files | Manifest signed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for ds in record.datasets:
        signed = f"yes, key {ds.signer}" if ds.signed and ds.signer else ("yes" if ds.signed else "no")
        rows.append(
            f"| {_cell(dataset_label(ds))} | `{ds.digest}` | {ds.rows if ds.rows is not None else 'unknown'} "
            f"| {ds.files} | {_cell(signed)} |"
        )
    audits = []
    for ds in record.datasets:
        if ds.audit:
            lines = "\n".join(f"  - {_cell(line)}" for line in audit_lines(ds.audit))
            audits.append(f"- {_cell(dataset_label(ds))} (`{ds.digest}`):\n{lines}")
        else:
            audits.append(f"- {_cell(dataset_label(ds))} (`{ds.digest}`): Missing: {AUDIT_HINT}.")
    # The audit field is missing only when no dataset has one; per-dataset gaps are marked inline.
    audited = any(ds.audit for ds in record.datasets)
    return CardSection(
        "Training Details",
        (
            CardField("Training Data", "\n".join(rows)),
            CardField("Data Audit", "\n".join(audits) if audited else None, None if audited else AUDIT_HINT),
        ),
    )


def _evaluation(record: VersionRecord) -> CardSection:
    return CardSection(
        "Evaluation",
        (
            _mapping_field(record, "Metrics", "metrics", "evaluation metrics"),
            _mapping_field(record, "Fairness", "fairness", "fairness figures (by group)"),
            _mapping_field(
                record, "Privacy", "privacy", "privacy figures (differential privacy, membership audit)"
            ),
        ),
    )


def _security(record: VersionRecord) -> CardSection:
    scan = record.scan
    if scan is None:
        scan_field = CardField("Artifact Scan", None, SCAN_HINT)
    else:
        counts = ", ".join(f"{n} {sev}" for sev, n in sorted(scan.counts.items()) if n) or "no findings"
        lines = [f"- Verdict: **{scan.verdict}** ({counts})"]
        lines.append(
            f"- Scanned: {_when(scan.scanned_at)} by bastion {scan.tool_version or '(version unknown)'}"
        )
        if scan.report_digest:
            lines.append(f"- Report digest: `{scan.report_digest}`")
        for finding in scan.findings[:MAX_FILES_LISTED]:
            lines.append(
                f"- {finding.get('severity', '?')} {finding.get('rule', '?')}: "
                f"{_cell(finding.get('message', ''))} ({_cell(finding.get('location', ''))})"
            )
        if len(scan.findings) > MAX_FILES_LISTED:
            lines.append(f"- ... and {len(scan.findings) - MAX_FILES_LISTED} more findings")
        scan_field = CardField("Artifact Scan", "\n".join(lines))
    sig = record.signature
    if sig is None:
        sig_field = CardField("Signature", None, SIGN_HINT.format(ref=record.ref))
    else:
        if sig.verified is None:
            verified = "not verified yet"
        else:
            verified = (
                "verified" if sig.verified else "verification FAILED"
            ) + f" at {_when(sig.verified_at)}"
        lines = [
            f"- Signed by: `{sig.signer}` ({sig.method}) at {_when(sig.signed_at)}",
            f"- Signed digest: `{sig.digest}`",
            f"- Verification: {verified}" + (f" ({sig.detail})" if sig.detail else ""),
        ]
        sig_field = CardField("Signature", "\n".join(lines))
    lines = [f"- State: **{record.state}**"]
    if record.aliases:
        lines.append("- Aliases: " + ", ".join(f"`{a}`" for a in record.aliases))
    for ap in record.approvals:
        event = f" (event {ap.event_id})" if ap.event_id is not None else ""
        lines.append(f"- {_when(ap.at)}: {ap.state} by {ap.actor}: {_cell(ap.reason)}{event}")
    if not record.approvals:
        lines.append("- No state change recorded since registration.")
    return CardSection("Security", (scan_field, sig_field, CardField("Approvals", "\n".join(lines))))


def _provenance(record: VersionRecord, lineage: Sequence[VersionRecord]) -> CardSection:
    lines = [
        f"- Digest: `{record.digest}`",
        f"- Size: {record.size} bytes in {plural(len(record.files), 'file')}",
    ]
    for f in record.files[:MAX_FILES_LISTED]:
        lines.append(f"  - `{f.path}` sha256 `{f.sha256}` ({f.size} bytes)")
    if len(record.files) > MAX_FILES_LISTED:
        lines.append(
            f"  - ... and {len(record.files) - MAX_FILES_LISTED} more (`bastion registry show {record.ref}`)"
        )
    return CardSection(
        "Provenance",
        (CardField("Artifact", "\n".join(lines)), CardField("Lineage", _lineage_text(record, lineage))),
    )


def lineage_chain(
    record: VersionRecord, lineage: Sequence[VersionRecord]
) -> list[tuple[str, VersionRecord | None]]:
    """The version's ancestry, nearest first: (ref, record or None when the ancestor was not provided)."""
    by_ref = {r.ref: r for r in lineage}
    chain: list[tuple[str, VersionRecord | None]] = []
    seen = {record.ref}
    parent = record.parent
    while parent and parent not in seen:  # a cycle would be a store bug; never loop on it
        seen.add(parent)
        found = by_ref.get(parent)
        chain.append((parent, found))
        parent = found.parent if found else None
    return chain


def _lineage_text(record: VersionRecord, lineage: Sequence[VersionRecord]) -> str:
    chain = lineage_chain(record, lineage)
    if not chain:
        return f"`{record.ref}` has no recorded parent."
    lines = [f"- `{record.ref}` (`{record.digest}`)"]
    for ref, found in chain:
        if found is None:
            lines.append(f"- fine-tuned from `{ref}` (its registry record was not provided)")
        else:
            data = ", ".join(f"`{d.digest}`" for d in found.datasets) or "no recorded training data"
            lines.append(
                f"- fine-tuned from `{ref}` (`{found.digest}`, state {found.state}; trained on {data})"
            )
    return "\n".join(lines)


def _front_matter(record: VersionRecord) -> dict[str, Any]:
    fm: dict[str, Any] = {}
    license_id = meta_text(record.metadata, "license")
    if license_id:
        fm["license"] = license_id.lower()  # the Hub's licence ids are lower-case SPDX identifiers
    if record.framework:
        fm["library_name"] = record.framework
    task = meta_text(record.metadata, "task")
    tags = ["bastion", record.format, record.framework, task]
    fm["tags"] = list(dict.fromkeys(t for t in tags if t))
    if record.datasets:
        fm["datasets"] = [d.source or d.digest for d in record.datasets]
    if record.parent:
        fm["base_model"] = record.parent
    metrics = meta_mapping(record.metadata, "metrics")
    if metrics:
        result: dict[str, Any] = {}
        if task:
            result["task"] = {"type": task}
        if record.datasets:
            first = record.datasets[0]
            result["dataset"] = {"name": dataset_label(first), "type": first.digest}
        result["metrics"] = [
            {"type": k, "value": _yaml_scalar(v), "name": k} for k, v in sorted(metrics.items())
        ]
        fm["model-index"] = [{"name": record.name, "results": [result]}]
    return fm


def _yaml_scalar(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else _plain(value)


def model_card(record: VersionRecord, *, lineage: Sequence[VersionRecord] = ()) -> ModelCard:
    """Build the card of ``record``; ``lineage`` holds the records of its ancestors (any order)."""
    return ModelCard(
        ref=record.ref,
        name=record.name,
        version=record.version,
        front_matter=_front_matter(record),
        sections=(
            _details(record),
            _uses(record),
            _risks(record),
            _training(record),
            _evaluation(record),
            _security(record),
            _provenance(record, lineage),
        ),
    )


def missing_sections(card: ModelCard) -> list[str]:
    """``"Section / Field"`` for every entry the registry could not fill, in card order."""
    return [f"{s.title} / {f.title}" for s in card.sections for f in s.fields if f.is_missing]


# -- rendering -----------------------------------------------------------------------------------------------


def _field_markdown(f: CardField, compact: bool) -> list[str]:
    body = f.text if f.text is not None else f"Missing: {f.missing}."
    if compact:
        return [f"- **{f.title}:** {body}"]
    return [f"### {f.title}", "", body, ""]


def card_markdown(card: ModelCard) -> str:
    """The card as Markdown, headings following the Hugging Face model card template."""
    out = [
        f"# Model Card for {card.ref}",
        "",
        f"<!-- Written by bastion {__version__} from the registry record of {card.ref}. "
        "Sections marked Missing are not known to the registry. -->",
        "",
    ]
    for section in card.sections:
        out += [f"## {section.title}", ""]
        for f in section.fields:
            out += _field_markdown(f, section.compact)
        if section.compact:
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def card_huggingface(card: ModelCard) -> str:
    """The card as a Hugging Face README.md: YAML front matter, then the Markdown body."""
    import yaml

    front = yaml.safe_dump(
        dict(card.front_matter), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return f"---\n{front}---\n\n{card_markdown(card)}"
