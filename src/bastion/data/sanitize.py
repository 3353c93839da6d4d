"""Write a sanitized dataset: the kept rows byte for byte, the removed rows with their reasons beside them.

Nothing is deleted: every removed row goes to a quarantine file in the input's format, with its 0-based
row number, channels, score and reason. Every output is written to a temporary file first and renamed
into place only when all of them are complete, so a failure never leaves a partial output behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from bastion.data.audit.run import AuditResult, RowReport
from bastion.data.readers import csv_records, one_line_reason
from bastion.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bastion.data.manifest import Manifest

QUARANTINE_COLUMNS = ("bastion_row", "bastion_channels", "bastion_score", "bastion_reason")


@dataclass(frozen=True, slots=True)
class SanitizeOutputs:
    """Where the cleaned data, the quarantine and the new manifest go."""

    clean: Path
    quarantine: Path
    manifest: Path

    @classmethod
    def beside(cls, path: Path, directory: Path | None = None) -> SanitizeOutputs:
        """Default names next to the input (or in ``directory``): NAME.clean.EXT, NAME.quarantine.EXT."""
        where = directory or path.parent
        stem, suffix = path.stem, path.suffix
        return cls(
            clean=where / f"{stem}.clean{suffix}",
            quarantine=where / f"{stem}.quarantine{suffix}",
            manifest=where / f"{stem}.clean.manifest.json",
        )


class Staging:
    """Temporary files next to their targets, renamed together on success and removed on failure."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def open(self, target: Path, mode: str = "wb") -> IO[Any]:
        """A new temporary file in ``target``'s directory, to be renamed to ``target`` on commit."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        self.pending.append((Path(tmp), target))
        return os.fdopen(fd, mode)

    def temp_path(self, target: Path) -> Path:
        """A temporary path (created, empty) for libraries that write to a path themselves."""
        self.open(target).close()
        return self.pending[-1][0]

    def commit(self) -> None:
        """Rename every temporary file into place."""
        for tmp, target in self.pending:
            os.replace(tmp, target)
        self.pending.clear()

    def abort(self) -> None:
        """Remove every temporary file."""
        for tmp, _ in self.pending:
            with suppress(OSError):
                tmp.unlink()
        self.pending.clear()


@contextmanager
def staged() -> Iterator[Staging]:
    """Stage outputs; commit all on success, remove all on any failure."""
    staging = Staging()
    try:
        yield staging
    except BaseException:
        staging.abort()
        raise
    staging.commit()


def _extra_fields(row: RowReport) -> list[str]:
    return [str(row.row), ",".join(row.channels), f"{row.score:.4f}", row.reason]


def _csv_line(fields: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue().encode("utf-8")


def _split_csv(path: Path, removed: dict[int, RowReport], staging: Staging, out: SanitizeOutputs) -> None:
    with staging.open(out.clean) as clean, staging.open(out.quarantine) as quarantine:
        row = -1
        for _, raw in csv_records(path):
            if row == -1:
                clean.write(raw + b"\n")
                quarantine.write(raw + b"," + _csv_line(list(QUARANTINE_COLUMNS)) + b"\n")
                row = 0
                continue
            if not raw.strip():
                continue  # pandas skips blank records too, so row numbers stay aligned with the audit
            flagged = removed.get(row)
            if flagged is None:
                clean.write(raw + b"\n")
            else:
                quarantine.write(raw + b"," + _csv_line(_extra_fields(flagged)) + b"\n")
            row += 1


def _split_jsonl(path: Path, removed: dict[int, RowReport], staging: Staging, out: SanitizeOutputs) -> None:
    with (
        path.open("rb") as source,
        staging.open(out.clean) as clean,
        staging.open(out.quarantine) as quarantine,
    ):
        row = 0
        for line in source:
            if not line.strip():
                continue
            flagged = removed.get(row)
            if flagged is None:
                clean.write(line if line.endswith(b"\n") else line + b"\n")
            else:
                record = {
                    "bastion_row": flagged.row,
                    "bastion_channels": flagged.channels,
                    "bastion_score": round(flagged.score, 4),
                    "bastion_reason": flagged.reason,
                    "record": json.loads(line),
                }
                quarantine.write(json.dumps(record).encode("utf-8") + b"\n")
            row += 1


def _split_parquet(path: Path, removed: dict[int, RowReport], staging: Staging, out: SanitizeOutputs) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    clean_writer = pq.ParquetWriter(staging.temp_path(out.clean), source.schema_arrow)
    quarantine_schema = source.schema_arrow
    for name, kind in zip(
        QUARANTINE_COLUMNS, (pa.int64(), pa.string(), pa.float64(), pa.string()), strict=True
    ):
        quarantine_schema = quarantine_schema.append(pa.field(name, kind))
    quarantine_writer = pq.ParquetWriter(staging.temp_path(out.quarantine), quarantine_schema)
    try:
        offset = 0
        for batch in source.iter_batches(batch_size=65536):
            rows = np.arange(offset, offset + batch.num_rows)
            offset += batch.num_rows
            mask = np.array([r in removed for r in rows], dtype=bool)
            table = pa.Table.from_batches([batch])
            clean_writer.write_table(table.filter(pa.array(~mask)))
            if mask.any():
                kept = table.filter(pa.array(mask))
                flags = [removed[int(r)] for r in rows[mask]]
                extra = list(zip(*(_extra_fields(f) for f in flags), strict=True))
                columns = [
                    pa.array([int(v) for v in extra[0]], pa.int64()),
                    pa.array(list(extra[1]), pa.string()),
                    pa.array([float(v) for v in extra[2]], pa.float64()),
                    pa.array(list(extra[3]), pa.string()),
                ]
                for name, column in zip(QUARANTINE_COLUMNS, columns, strict=True):
                    kept = kept.append_column(name, column)
                quarantine_writer.write_table(kept)
    finally:
        clean_writer.close()
        quarantine_writer.close()


def _split_npz(path: Path, removed: dict[int, RowReport], staging: Staging, out: SanitizeOutputs) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    rows = np.array(sorted(removed), dtype=np.int64)
    clean = {name: np.delete(values, rows, axis=0) for name, values in arrays.items()}
    quarantine: dict[str, Any] = {name: values[rows] for name, values in arrays.items()}
    flags = [removed[int(r)] for r in rows]
    quarantine["bastion_row"] = rows
    quarantine["bastion_channels"] = np.array([",".join(f.channels) for f in flags], dtype=str)
    quarantine["bastion_score"] = np.array([f.score for f in flags], dtype=np.float64)
    quarantine["bastion_reason"] = np.array([f.reason for f in flags], dtype=str)
    with staging.open(out.clean) as fh:
        np.savez(fh, **clean)
    with staging.open(out.quarantine) as fh:
        np.savez(fh, **quarantine)


SPLITTERS = {".csv": _split_csv, ".jsonl": _split_jsonl, ".parquet": _split_parquet, ".npz": _split_npz}


def split_dataset(path: Path, removed: list[RowReport], staging: Staging, outputs: SanitizeOutputs) -> None:
    """Write the kept rows to ``outputs.clean``, the removed ones with reasons to ``outputs.quarantine``."""
    splitter = SPLITTERS.get(path.suffix.lower())
    if splitter is None:
        raise InputError(f"{path}: sanitize writes {', '.join(SPLITTERS)} files, not {path.suffix or 'this'}")
    for target in (outputs.clean, outputs.quarantine, outputs.manifest):
        if target.resolve() == path.resolve():
            raise InputError(f"{target}: an output would overwrite the input")
    try:
        splitter(path, {r.row: r for r in removed}, staging, outputs)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot write the sanitized data: {one_line_reason(exc)}") from None


def write_sanitized(
    path: Path,
    result: AuditResult,
    outputs: SanitizeOutputs,
    *,
    consumed: dict[str, str],
    parameters: dict[str, Any],
    key: Ed25519PrivateKey | None = None,
) -> Manifest:
    """Split ``path`` by the audit's quarantine rows, then write the clean data's manifest with lineage.

    The manifest carries one ``sanitize`` lineage record: what was consumed (the input's digest, the audit
    report's digest), the digests of the clean and quarantine files produced, and ``parameters``. It is
    signed when ``key`` is given.
    """
    from dataclasses import replace

    from bastion.atomic import atomic_write_text
    from bastion.data.lineage import file_digest, lineage_record
    from bastion.data.manifest import build_manifest
    from bastion.data.signing import sign_manifest

    removed = [r for r in result.rows if r.remove]
    with staged() as staging:
        split_dataset(path, removed, staging, outputs)
    produced = {"clean": file_digest(outputs.clean), "quarantine": file_digest(outputs.quarantine)}
    record = lineage_record("sanitize", consumed, produced, {"quarantined_rows": len(removed), **parameters})
    manifest = replace(
        build_manifest(outputs.clean, source=f"bastion data sanitize {path.name}"), lineage=(record,)
    )
    if key is not None:
        manifest = sign_manifest(manifest, key)
    atomic_write_text(outputs.manifest, manifest.to_json().decode("utf-8"))
    return manifest
