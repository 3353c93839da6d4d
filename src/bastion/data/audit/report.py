"""The audit report in three forms: JSON for CI and tools, a plain table for people, Markdown for reviews."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bastion import __version__
from bastion.data.audit.base import CHANNELS
from bastion.data.audit.run import AuditResult, RowReport
from bastion.data.readers import printable
from bastion.findings import sort_findings
from bastion.render.interface import location_text
from bastion.render.json import finding_dict

REPORT_FORMAT = "bastion.data.audit"
SCHEMA_VERSION = 1
TABLE_ROWS = 30


def _plain(value: Any) -> Any:
    # Channel summaries hold numpy scalars and arrays; JSON needs plain numbers and lists.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def row_file(result: AuditResult, row: int) -> str | None:
    """The file a row came from (its path relative to an image folder), or None for a table's row."""
    return result.files[row] if result.files is not None else None


def row_dict(row: RowReport, file: str | None = None) -> dict[str, Any]:
    """One flagged row: position (and file), channels, score, reason, suggested label, checks behind it."""
    where: dict[str, Any] = {"row": row.row} if file is None else {"row": row.row, "file": file}
    return {
        **where,
        "channels": row.channels,
        "score": round(row.score, 4),
        "reason": row.reason,
        "suggested_label": row.suggested_label,
        "checks": sorted({f"{f.channel}/{f.check}" for f in row.flags}),
        "quarantine": row.remove,
    }


def channel_counts(result: AuditResult) -> dict[str, int]:
    """Flagged rows per channel (a row flagged by two channels counts in both)."""
    return {name: sum(1 for r in result.rows if name in r.channels) for name in CHANNELS}


def report_dict(
    result: AuditResult,
    *,
    label: str | None = None,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole audit as JSON-ready data."""
    counts = channel_counts(result)
    dataset: dict[str, Any] = {
        "path": result.path,
        "kind": result.kind,
        "rows": result.n_rows,
        "label": label,
        "classes": result.classes,
        "ignored_columns": result.ignored_columns,
    }
    if result.folder is not None:
        dataset["image_folder"] = result.folder  # how the images were decoded, resized and skipped
    return {
        "format": REPORT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "tool": "bastion",
        "version": __version__,
        "dataset": dataset,
        "summary": {
            "flagged_rows": len(result.rows),
            "quarantine_rows": len(result.removed_rows),
            "duration_s": round(result.duration_s, 3),
        },
        "channels": {
            name: {"flagged_rows": counts[name], **channel.summary}
            for name, channel in result.channels.items()
        },
        "sources": result.sources,
        "findings": [finding_dict(f) for f in sort_findings(result.findings)],
        "rows": [row_dict(r, row_file(result, r.row)) for r in result.rows],
        "lineage": lineage,
    }


def render_json(result: AuditResult, **context: Any) -> str:
    """The report as indented JSON."""
    return json.dumps(report_dict(result, **context), indent=2, default=_plain) + "\n"


def _top_rows(result: AuditResult) -> list[RowReport]:
    """The most suspicious rows, taken in turn from each channel so that one channel cannot fill the table."""
    queues: dict[str, list[RowReport]] = {}
    for row in sorted(result.rows, key=lambda r: (-r.score, r.row)):
        queues.setdefault(row.channels[0], []).append(row)
    picked: list[RowReport] = []
    while len(picked) < TABLE_ROWS and any(queues.values()):
        for queue in queues.values():
            if queue and len(picked) < TABLE_ROWS:
                picked.append(queue.pop(0))
    return sorted(picked, key=lambda r: (-r.score, r.row))


def _headline(result: AuditResult) -> str:
    counts = channel_counts(result)
    per_channel = ", ".join(f"{name} {counts[name]}" for name in result.channels)
    return (
        f"{result.path}: {result.n_rows} rows, {len(result.classes)} classes; "
        f"{len(result.rows)} flagged ({per_channel}); {len(result.removed_rows)} to quarantine"
    )


def render_table(result: AuditResult, **_: Any) -> str:
    """Plain text: headline, findings, then the most suspicious rows."""
    lines = [_headline(result), *_input_lines(result)]
    if result.findings:
        lines.append("")
        lines.append(f"{'SEVERITY':<9} {'RULE':<13} {'WHERE':<24} MESSAGE")
        for f in sort_findings(result.findings):
            where = location_text(f.location).removeprefix(result.path).lstrip("!") or "dataset"
            lines.append(f"{f.severity.label:<9} {f.rule_id:<13} {where:<24} {f.message}")
    if result.rows:
        lines.append("")
        top = _top_rows(result)
        files = {row.row: printable(row_file(result, row.row) or "") for row in top}
        width = max([len("FILE"), *(len(name) for name in files.values())])
        file_head = f" {'FILE':<{width}}" if result.files is not None else ""
        lines.append(f"{'ROW':>8}{file_head} {'SCORE':>5} {'CHANNELS':<24} {'SUGGEST':<10} REASON")
        for row in top:
            suggest = row.suggested_label or "-"
            file = f" {files[row.row]:<{width}}" if result.files is not None else ""
            channels = ",".join(row.channels)
            lines.append(f"{row.row:>8}{file} {row.score:>5.2f} {channels:<24} {suggest:<10} {row.reason}")
        if len(result.rows) > TABLE_ROWS:
            lines.append(f"... {len(result.rows) - TABLE_ROWS} more; --format json lists every row")
    for source in result.sources:
        lines.append(
            f"source {source['source']}: {source['rows']} rows, {source['flagged']} flagged "
            f"({100 * source['flagged_share']:.1f}%)"
        )
    return "\n".join(lines) + "\n"


def _input_lines(result: AuditResult) -> list[str]:
    """How an image folder was read, and the identifier columns left out (a line each), or nothing."""
    lines = []
    if result.folder is not None:
        from bastion.data.audit.image_folder import folder_note

        lines.append(f"image folder: {folder_note(result.folder)}")
    if result.ignored_columns:
        # Said, not only done: a column the user thinks of as a feature must not vanish silently.
        names = ", ".join(printable(name) for name in result.ignored_columns)
        lines.append(f"left out as row identifiers (unique on every row): {names}")
    return lines


def _cell(value: Any) -> str:
    """A Markdown table cell: a ``|`` would end the cell and a line break the row, whatever the value."""
    text = str(value).replace("|", "\\|")
    return " ".join(text.splitlines())


def render_markdown(result: AuditResult, **_: Any) -> str:
    """Markdown for a pull request or a review ticket."""
    out = [f"# Data audit: `{result.path}`", "", _headline(result), ""]
    if result.folder is not None or result.ignored_columns:
        out += [*_input_lines(result), ""]
    if result.findings:
        out += ["## Findings", "", "| Severity | Rule | Where | Message |", "|---|---|---|---|"]
        for f in sort_findings(result.findings):
            where = _cell(location_text(f.location))
            out.append(f"| {_cell(f.severity.label)} | {_cell(f.rule_id)} | `{where}` | {_cell(f.message)} |")
        out.append("")
    if result.rows:
        with_files = result.files is not None
        out += ["## Most suspicious rows", ""]
        out.append(
            "| Row | File | Score | Channels | Suggested | Reason |"
            if with_files
            else "| Row | Score | Channels | Suggested | Reason |"
        )
        out.append("|---:|---|---:|---|---|---|" if with_files else "|---:|---:|---|---|---|")
        for row in _top_rows(result):
            channels = _cell(", ".join(row.channels))
            suggest = _cell(row.suggested_label or "")
            file = f" {_cell(printable(row_file(result, row.row) or ''))} |" if with_files else ""
            out.append(
                f"| {row.row} |{file} {row.score:.2f} | {channels} | {suggest} | {_cell(row.reason)} |"
            )
        out.append("")
    if result.sources:
        out += ["## Sources", "", "| Source | Rows | Flagged | Share |", "|---|---:|---:|---:|"]
        out += [
            f"| {_cell(s['source'])} | {s['rows']} | {s['flagged']} | {100 * s['flagged_share']:.1f}% |"
            for s in result.sources
        ]
        out.append("")
    return "\n".join(out)


RENDERERS = {"json": render_json, "table": render_table, "markdown": render_markdown}
