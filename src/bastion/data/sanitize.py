"""Write a sanitized dataset: the kept rows byte for byte, the removed rows with their reasons beside them.

Nothing is deleted: every removed row goes to a quarantine file in the input's format, with its 0-based
row number, channels, score and reason. CSV and JSONL clean files keep each kept record's original bytes
(line endings included); a JSONL quarantine line wraps the parsed record as ``{"record": ...}``, so its
JSON is re-serialised (key order kept, whitespace and number spelling normalised). Parquet and .npz are
rewritten through their libraries.

Every output (clean data, quarantine, manifest, report) is checked before any work is done: no two may be
the same file, none may be the input, the data outputs must carry the input's suffix, their directories
must exist, and an existing file is replaced only with ``force``. Outputs are then written to temporary
files and renamed into place together only when all of them are complete, so a failure never leaves a
partial or mismatched set behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from bastion.atomic import current_umask, same_file
from bastion.data.audit.run import AuditResult, RowReport
from bastion.data.readers import csv_records, one_line_reason
from bastion.errors import InputError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bastion.data.manifest import Manifest

QUARANTINE_COLUMNS = ("bastion_row", "bastion_channels", "bastion_score", "bastion_reason")
# The option that names each output, so an error points at what the user typed.
OUTPUT_OPTIONS = {
    "clean": "-o/--output",
    "quarantine": "--quarantine",
    "manifest": "--manifest",
    "report": "--report",
}


@dataclass(frozen=True, slots=True)
class SanitizeOutputs:
    """Where the cleaned data, the quarantine, the new manifest and (optionally) the audit report go."""

    clean: Path
    quarantine: Path
    manifest: Path
    report: Path | None = None

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

    def named(self) -> list[tuple[str, Path]]:
        """(role, path) for every output that will be written."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


def check_outputs(path: Path, outputs: SanitizeOutputs, *, force: bool = False) -> None:
    """Refuse, before any work, outputs that would clobber the input, each other, or an existing file.

    Raises UsageError for: an unsupported input suffix; a clean or quarantine path whose suffix is not the
    input's (its bytes would not match its name); two outputs resolving to the same file; an output
    resolving to the input; an output that is a directory or whose directory does not exist; and an
    existing output file unless ``force`` (a quarantine is evidence and is never replaced silently).
    """
    suffix = path.suffix.lower()
    if suffix not in SPLITTERS:
        raise UsageError(f"{path}: sanitize writes {', '.join(SPLITTERS)} files, not {path.suffix or 'this'}")
    named = outputs.named()
    for role, target in named:
        option = OUTPUT_OPTIONS[role]
        if role in ("clean", "quarantine") and target.suffix.lower() != suffix:
            raise UsageError(
                f"{option} {target}: must end in {path.suffix} like the input (it is written as {suffix[1:]})"
            )
        if same_file(target, path):
            raise UsageError(f"{option} {target}: an output would overwrite the input {path}")
    for i, (role, target) in enumerate(named):
        for other_role, other in named[i + 1 :]:
            if same_file(target, other):
                raise UsageError(
                    f"{OUTPUT_OPTIONS[role]} and {OUTPUT_OPTIONS[other_role]} are the same file {target}; "
                    "give each output its own path"
                )
    for role, target in named:
        option = OUTPUT_OPTIONS[role]
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"{option} {target}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {target}: directory {parent} is not writable")
        if target.is_dir():
            raise UsageError(f"{option} {target}: is a directory")
        if os.path.lexists(target) and not force:
            raise UsageError(f"{option} {target}: already exists; pass --force to replace it")


class Staging:
    """Temporary files next to their targets, renamed together on success and removed on failure."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def open(self, target: Path, mode: str = "wb") -> IO[Any]:
        """A new temporary file in ``target``'s directory, to be renamed to ``target`` on commit."""
        directory = target.parent if str(target.parent) else Path(".")
        try:
            # The temporary name keeps the target's suffix: the manifest fingerprints the staged file, and
            # the row format is chosen by suffix.
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.tmp-", suffix=target.suffix, dir=directory)
        except OSError as exc:
            raise InputError(f"{target}: cannot write it ({exc.strerror or exc})") from None
        self.pending.append((Path(tmp), target))
        # mkstemp makes the file 0600; outputs get the mode a plain open() would give, as atomic.py does.
        os.fchmod(fd, 0o666 & ~current_umask())
        return os.fdopen(fd, mode)

    def temp_path(self, target: Path) -> Path:
        """A temporary path (created, empty) for libraries that write to a path themselves."""
        self.open(target).close()
        return self.pending[-1][0]

    def write(self, target: Path, data: bytes) -> None:
        """Stage ``data`` as the whole content of ``target``."""
        with self.open(target) as fh:
            fh.write(data)

    def temp_for(self, target: Path) -> Path:
        """The staged temporary file that will become ``target``."""
        return next(tmp for tmp, t in self.pending if t == target)

    def commit(self) -> None:
        """Rename every temporary file into place; on any failure put back what was there and clean up.

        Each replaced file is first hard-linked aside, so a failed rename (the target became a directory,
        the disk filled, a signal arrived) restores the earlier outputs instead of leaving a mix of new
        and old files: a new clean file must never sit beside an old manifest.
        """
        done: list[tuple[Path, Path | None, bool]] = []
        target = Path()
        try:
            for tmp, target in self.pending:
                _fsync(tmp)  # the bytes are on disk before the name points at them
                existed = os.path.lexists(target)
                backup = _link_aside(target) if existed else None
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if backup is not None:
                        backup.unlink(missing_ok=True)
                    raise
                done.append((target, backup, existed))
        except BaseException as exc:
            for placed, backup, existed in reversed(done):
                with suppress(OSError):
                    if backup is not None:
                        os.replace(backup, placed)
                    elif not existed:
                        placed.unlink()
            self.abort()
            if isinstance(exc, OSError):
                raise InputError(f"{target}: cannot write it ({exc.strerror or exc})") from None
            raise
        for _, backup, _ in done:
            if backup is not None:
                backup.unlink(missing_ok=True)
        self.pending.clear()

    def abort(self) -> None:
        """Remove every temporary file."""
        for tmp, _ in self.pending:
            with suppress(OSError):
                tmp.unlink()
        self.pending.clear()


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _link_aside(target: Path) -> Path | None:
    """A hard link to ``target`` under a temporary name, or None where links are impossible."""
    directory = target.parent if str(target.parent) else Path(".")
    # os.link never replaces an existing name, so a random name is safe without mkstemp's file.
    aside = directory / f".{target.name}.{secrets.token_hex(6)}.bak"
    try:
        os.link(target, aside, follow_symlinks=False)
    except (OSError, NotImplementedError):
        return None
    return aside


@contextmanager
def staged() -> Iterator[Staging]:
    """Stage outputs; commit all on success, remove all on any failure (an interrupt included)."""
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


def _csv_raw_records(path: Path) -> Iterator[bytes]:
    """Each CSV record's original bytes, line endings included, split where ``csv_records`` splits them.

    ``csv_records`` joins a record's lines with ``\n`` and drops their endings; only the line number
    where each record starts is taken from it, and the bytes are re-read from the file, so CRLF files
    and ``\r\n`` inside quoted fields come out unchanged.
    """
    with path.open("rb") as source:
        line = 0  # lines of ``source`` consumed so far
        current: list[bytes] = []
        for start, _ in csv_records(path):
            while line < start - 1:
                current.append(source.readline())
                line += 1
            if current:
                yield b"".join(current)
            current = []
        current.extend(iter(source.readline, b""))
        if current:
            yield b"".join(current)


def _ending(raw: bytes) -> tuple[bytes, bytes]:
    """A record's body and its line ending (``\r\n``, ``\n`` or nothing on an unterminated last line)."""
    for ending in (b"\r\n", b"\n"):
        if raw.endswith(ending):
            return raw[: -len(ending)], ending
    return raw, b""


def _split_csv(path: Path, removed: dict[int, RowReport], staging: Staging, out: SanitizeOutputs) -> None:
    with staging.open(out.clean) as clean, staging.open(out.quarantine) as quarantine:
        row = -1
        newline = b"\n"
        for raw in _csv_raw_records(path):
            body, ending = _ending(raw)
            if row == -1:
                newline = ending or newline  # the quarantine's extra lines follow the file's convention
                clean.write(raw)
                quarantine.write(body + b"," + _csv_line(list(QUARANTINE_COLUMNS)) + newline)
                row = 0
                continue
            if not raw.strip():
                continue  # pandas skips blank records too, so row numbers stay aligned with the audit
            flagged = removed.get(row)
            if flagged is None:
                # Copied as it was: an unterminated record can only be the file's last, so stays last.
                clean.write(raw)
            else:
                quarantine.write(body + b"," + _csv_line(_extra_fields(flagged)) + newline)
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
                clean.write(line)  # as it was: an unterminated line can only be the last one
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
    """Stage the kept rows as ``outputs.clean``, the removed ones with reasons as ``outputs.quarantine``."""
    splitter = SPLITTERS.get(path.suffix.lower())
    if splitter is None:
        raise InputError(f"{path}: sanitize writes {', '.join(SPLITTERS)} files, not {path.suffix or 'this'}")
    for role, target in outputs.named():
        if same_file(target, path):
            raise InputError(f"{OUTPUT_OPTIONS[role]} {target}: an output would overwrite the input {path}")
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
    report: bytes | None = None,
    force: bool = False,
) -> Manifest:
    """Split ``path`` by the audit's quarantine rows and write the clean data's manifest with lineage.

    The manifest carries one ``sanitize`` lineage record: what was consumed (the input's identities, the
    audit report's digest), the digests of the clean and quarantine files produced, and ``parameters``.
    It is signed when ``key`` is given. ``report`` (when given) is written to ``outputs.report``. All
    outputs are checked first (:func:`check_outputs`), staged, and renamed into place together at the end.
    """
    from bastion.data.lineage import file_digest, lineage_record
    from bastion.data.manifest import Manifest, dataset_root, fingerprint_file
    from bastion.data.signing import sign_manifest

    if (report is None) != (outputs.report is None):
        raise ValueError("write_sanitized: give both report bytes and outputs.report, or neither")
    check_outputs(path, outputs, force=force)
    removed = [r for r in result.rows if r.remove]
    with staged() as staging:
        split_dataset(path, removed, staging, outputs)
        clean_tmp, quarantine_tmp = staging.temp_for(outputs.clean), staging.temp_for(outputs.quarantine)
        produced = {"clean": file_digest(clean_tmp), "quarantine": file_digest(quarantine_tmp)}
        record = lineage_record(
            "sanitize", consumed, produced, {"quarantined_rows": len(removed), **parameters}
        )
        # Fingerprinted while still staged, under the name it will have: the manifest and the data it
        # describes are committed together or not at all.
        try:
            entry = fingerprint_file(clean_tmp, outputs.clean.name)
        except OSError as exc:
            raise InputError(f"{outputs.clean}: cannot read it back ({exc.strerror or exc})") from None
        manifest = Manifest(
            source=f"bastion data sanitize {path.name}",
            created=record["created"],
            tool_version=record["tool_version"],
            files=(entry,),
            root=dataset_root((entry,)),
            lineage=(record,),
        )
        if key is not None:
            manifest = sign_manifest(manifest, key)
        staging.write(outputs.manifest, manifest.to_json())
        if outputs.report is not None and report is not None:
            staging.write(outputs.report, report)
    return manifest
