"""Write a sanitized dataset: the kept rows byte for byte, the removed rows with their reasons beside them.

Nothing is deleted: every removed row goes to a quarantine file in the input's format, with its 0-based
row number, channels, score and reason. CSV and JSONL clean files keep each kept record's original bytes
(line endings included); a JSONL quarantine line wraps the parsed record as ``{"record": ...}``, so its
JSON is re-serialised (key order kept, whitespace and number spelling normalised). Parquet and .npz are
rewritten through their libraries. A compressed CSV or JSONL input (``NAME.csv.gz``, ``.bz2``, ``.zst``)
gives outputs compressed the same way (``NAME.clean.csv.gz``), holding the same bytes once decompressed
as a plain input's would; the manifest's row hashes, taken over the decompressed rows, are the same too.

An image folder (DIR/<class>/<images>, see :mod:`bastion.data.audit.image_folder`) is sanitized into
folders: the clean folder holds the kept images and the quarantine folder the removed ones, each copied
byte for byte under its relative path, plus ``reasons.csv`` (row, file, label, channels, score, reason,
suggested label) in the quarantine; the manifest describes the clean folder. Files the audit skipped (not
images, hidden) are not copied. Neither output may be inside the input folder or contain it.

Every output (clean data, quarantine, manifest, report) is checked before any work is done: no two may be
the same file, none may be the input, the data outputs must carry the input's full suffix (``.csv.gz``
for ``NAME.csv.gz``: the written bytes follow it), their directories must exist, and an existing file is
replaced only with ``force``. Outputs are then written to temporary files and renamed into place together
only when all of them are complete, so a failure never leaves a partial or mismatched set behind.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from bastion.atomic import current_umask, same_file
from bastion.data.audit.run import AuditResult, RowReport
from bastion.data.readers import (
    DatasetState,
    check_unchanged,
    compression_of,
    csv_records,
    format_suffix,
    full_suffix,
    one_line_reason,
    open_table,
)
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
        if path.is_dir():
            # Resolved, so that "." or "imgs/" still names the folder and the outputs land beside it.
            folder = path.resolve()
            where = directory or folder.parent
            return cls(
                clean=where / f"{folder.name}.clean",
                quarantine=where / f"{folder.name}.quarantine",
                manifest=where / f"{folder.name}.clean.manifest.json",
            )
        where = directory or path.parent
        suffix = full_suffix(path)  # both suffixes of NAME.csv.gz, which Path.suffix would cut to .gz
        stem = path.name[: len(path.name) - len(suffix)]
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
    existing output file unless ``force`` (a quarantine is evidence and is never replaced silently). An
    image folder's outputs are checked by :func:`check_folder_outputs`.
    """
    if path.is_dir():
        check_folder_outputs(path, outputs, force=force)
        return
    _splitter(path, UsageError)
    suffix = full_suffix(path)
    named = outputs.named()
    for role, target in named:
        option = OUTPUT_OPTIONS[role]
        if role in ("clean", "quarantine") and full_suffix(target).lower() != suffix.lower():
            written = _written_as(path)
            raise UsageError(
                f"{option} {target}: must end in {suffix} like the input (it is written as {written})"
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
        _check_parent(option, target)
        if target.is_dir():
            raise UsageError(f"{option} {target}: is a directory")
        if os.path.lexists(target) and not force:
            raise UsageError(f"{option} {target}: already exists; pass --force to replace it")


def _check_parent(option: str, target: Path) -> None:
    """UsageError unless the directory ``target`` would be written in exists and is writable."""
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {target}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {target}: directory {parent} is not writable")


FOLDER_ROLES = ("clean", "quarantine")
REASONS_FILE = "reasons.csv"
REASONS_COLUMNS = ("row", "file", "label", "channels", "score", "reason", "suggested_label")


def _inside(inner: Path, outer: Path) -> bool:
    """Whether resolved ``inner`` is ``outer`` or lies below it."""
    return inner == outer or outer in inner.parents


def check_folder_outputs(path: Path, outputs: SanitizeOutputs, *, force: bool = False) -> None:
    """Refuse, before any work, outputs of an image folder's sanitize that would mix with it or each other.

    The clean data and the quarantine are folders, the manifest and report files. UsageError for: an output
    inside the input folder or containing it (the input would change under its own audit, or be replaced);
    two outputs that are the same or nested; a folder output that exists as a file; a missing or read-only
    parent; and an existing output unless ``force``. Even with ``force`` an existing folder is replaced only
    when it holds nothing but images in class folders (and a quarantine's reasons file): replacing a folder
    removes everything in it, so a folder given by mistake is refused rather than emptied.
    """
    root = path.resolve()
    named = [(role, target, target.resolve()) for role, target in outputs.named()]
    for role, target, real in named:
        option = OUTPUT_OPTIONS[role]
        if _inside(real, root):
            raise UsageError(f"{option} {target}: inside the input folder {path}; write outputs outside it")
        if _inside(root, real):
            raise UsageError(f"{option} {target}: contains the input folder {path}; write outputs beside it")
    for i, (role, target, real) in enumerate(named):
        for other_role, _, other in named[i + 1 :]:
            if _inside(real, other) or _inside(other, real) or same_file(target, other):
                raise UsageError(
                    f"{OUTPUT_OPTIONS[role]} and {OUTPUT_OPTIONS[other_role]} overlap ({target}); "
                    "give each output its own path"
                )
    for role, target, _ in named:
        option = OUTPUT_OPTIONS[role]
        _check_parent(option, target)
        exists = os.path.lexists(target)
        if role in FOLDER_ROLES:
            if exists and (target.is_symlink() or not target.is_dir()):
                raise UsageError(
                    f"{option} {target}: exists and is not a folder; an image folder's {role} is one"
                )
        elif target.is_dir():
            raise UsageError(f"{option} {target}: is a directory")
        if exists and not force:
            raise UsageError(f"{option} {target}: already exists; pass --force to replace it")
        if exists and role in FOLDER_ROLES:
            _check_replaceable(target, option, role)


def _check_replaceable(target: Path, option: str, role: str) -> None:
    """UsageError unless the existing folder ``target`` holds only what a sanitize writes there."""
    from bastion.data.audit.image_folder import is_image_name

    for directory, folders, files in os.walk(target):
        depth = len(Path(directory).relative_to(target).parts)
        for name in [*files, *folders]:
            entry = Path(directory) / name
            allowed = not entry.is_symlink() and (
                entry.is_dir()
                or (depth >= 1 and is_image_name(name))
                or (depth == 0 and role == "quarantine" and name == REASONS_FILE)
            )
            if not allowed:
                raise UsageError(
                    f"{option} {target}: holds {entry.relative_to(target)}, which a sanitize does not write; "
                    "--force replaces the whole folder, so remove it yourself or choose another"
                )


class Staging:
    """Temporary files next to their targets, renamed together on success and removed on failure.

    A target can also be a folder (:meth:`open_dir`): it is staged as a temporary folder and swapped in the
    same way, the folder it replaces moved aside until every output is in place.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def open(self, target: Path, mode: str = "wb") -> IO[Any]:
        """A new temporary file in ``target``'s directory, to be renamed to ``target`` on commit."""
        directory = target.parent if str(target.parent) else Path(".")
        try:
            # The temporary name keeps the target's suffix, both of NAME.csv.gz: the manifest fingerprints
            # the staged file, and the row format and its compression are chosen by suffix.
            suffix = full_suffix(target)
            stem = target.name[: len(target.name) - len(suffix)]
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=directory)
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

    def open_dir(self, target: Path) -> Path:
        """A new temporary folder in ``target``'s directory, to be renamed to ``target`` on commit."""
        directory = target.parent if str(target.parent) else Path(".")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=directory))
        except OSError as exc:
            raise InputError(f"{target}: cannot write it ({exc.strerror or exc})") from None
        self.pending.append((tmp, target))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; a plain mkdir would not
        return tmp

    def temp_for(self, target: Path) -> Path:
        """The staged temporary file (or folder) that will become ``target``."""
        return next(tmp for tmp, t in self.pending if t == target)

    def commit(self) -> None:
        """Rename every temporary file into place; on any failure put back what was there and clean up.

        Each replaced file is first hard-linked aside, so a failed rename (the target became a directory,
        the disk filled, a signal arrived) restores the earlier outputs instead of leaving a mix of new
        and old files: a new clean file must never sit beside an old manifest. A replaced folder cannot be
        linked, and a folder cannot be renamed over a full one, so it is renamed aside instead and removed
        only once every output is in place.
        """
        done: list[tuple[Path, Path | None, bool]] = []
        target = Path()
        try:
            for tmp, target in self.pending:
                folder = _is_folder(tmp)
                existed = os.path.lexists(target)
                # The bytes are on disk before the name points at them.
                if folder:
                    _fsync_tree(tmp)
                    backup = _move_aside(target) if existed else None
                else:
                    _fsync(tmp)
                    backup = _link_aside(target) if existed else None
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if backup is not None:
                        if folder:
                            with suppress(OSError):  # the rename failed, so the name is free again
                                os.replace(backup, target)
                        else:
                            backup.unlink(missing_ok=True)
                    raise
                done.append((target, backup, existed))
        except BaseException as exc:
            for placed, backup, existed in reversed(done):
                with suppress(OSError):
                    if backup is not None:
                        if _is_folder(placed):
                            shutil.rmtree(placed)  # this run's new folder; the old one comes back
                        os.replace(backup, placed)
                    elif not existed:
                        _remove(placed)
            self.abort()
            if isinstance(exc, OSError):
                raise InputError(f"{target}: cannot write it ({exc.strerror or exc})") from None
            raise
        for _, backup, _ in done:
            if backup is not None:
                _remove(backup)
        self.pending.clear()

    def abort(self) -> None:
        """Remove every temporary file and folder."""
        for tmp, _ in self.pending:
            with suppress(OSError):
                _remove(tmp)
        self.pending.clear()


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    """Remove a file, or a folder with everything in it (only ever a staged output or its backup)."""
    if _is_folder(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder below ``root``, and ``root`` itself."""
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync(Path(directory) / name)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_aside(target: Path) -> Path:
    """Rename ``target`` (a folder being replaced) to a temporary name beside it."""
    directory = target.parent if str(target.parent) else Path(".")
    aside = directory / f".{target.name}.{secrets.token_hex(6)}.bak"
    os.rename(target, aside)
    return aside


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
    and ``\r\n`` inside quoted fields come out unchanged. A compressed file's bytes are its decompressed ones.
    """
    with open_table(path) as source:
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
    with writing(staging, out.clean) as clean, writing(staging, out.quarantine) as quarantine:
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
        open_table(path) as source,
        writing(staging, out.clean) as clean,
        writing(staging, out.quarantine) as quarantine,
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
# The formats whose splitters read and write through a codec; Parquet and .npz compress inside themselves.
COMPRESSED_SPLITTERS = (".csv", ".jsonl")
# gzip's own default level: the module's 9 took 1.7 times as long for 0.8% fewer bytes on a 17 MB CSV.
GZIP_LEVEL = 6


def _splitter(path: Path, error: type[InputError] | type[UsageError]) -> Any:
    """The splitter for ``path``'s format, or ``error`` naming the formats sanitize writes."""
    suffix = format_suffix(path)
    splitter = SPLITTERS.get(suffix)
    if splitter is None or (compression_of(path) is not None and suffix not in COMPRESSED_SPLITTERS):
        raise error(
            f"{path}: sanitize writes {', '.join(SPLITTERS)} files (.csv and .jsonl also as .gz, .bz2 or "
            f".zst), not {full_suffix(path) or 'this'}"
        )
    return splitter


def _written_as(path: Path) -> str:
    """How the data outputs of ``path`` are written: ``csv``, or ``gzip-compressed csv``."""
    compression = compression_of(path)
    what = format_suffix(path)[1:]
    return what if compression is None else f"{compression}-compressed {what}"


@contextmanager
def writing(staging: Staging, target: Path) -> Iterator[Any]:
    """A staged file for ``target`` written through the compression its name says (none for NAME.csv)."""
    compression = compression_of(target)
    if compression == "zstd":
        import pyarrow as pa  # its codec (the `data` extra) is the one every reader of a .zst table uses

        with pa.output_stream(str(staging.temp_path(target)), compression="zstd") as stream:
            yield stream
        return
    with staging.open(target) as raw:
        if compression is None:
            yield raw
        elif compression == "gzip":
            # No name and a zero time in the header: the same rows give the same bytes, whenever written.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as fh:
                yield fh
        else:
            with bz2.BZ2File(raw, "wb") as fh:
                yield fh


def split_dataset(path: Path, removed: list[RowReport], staging: Staging, outputs: SanitizeOutputs) -> None:
    """Stage the kept rows as ``outputs.clean``, the removed ones with reasons as ``outputs.quarantine``."""
    splitter = _splitter(path, InputError)
    for role, target in outputs.named():
        if same_file(target, path):
            raise InputError(f"{OUTPUT_OPTIONS[role]} {target}: an output would overwrite the input {path}")
    try:
        splitter(path, {r.row: r for r in removed}, staging, outputs)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot write the sanitized data: {one_line_reason(exc)}") from None


def split_image_folder(
    path: Path,
    files: list[str] | None,
    removed: list[RowReport],
    staging: Staging,
    outputs: SanitizeOutputs,
) -> None:
    """Stage an image folder's kept images as the clean folder and the removed ones as the quarantine.

    Each image is copied byte for byte under its relative path; the quarantine also gets ``reasons.csv``
    (row, file, label, channels, score, reason, suggested label). ``files`` are the audited rows' files.
    """
    from bastion.data.audit.image_folder import list_image_folder

    if files is None:
        raise InputError(f"{path}: the audit result does not name its rows' files; audit the folder itself")
    listing = list_image_folder(path)
    # Rows are positions in the listing: a file added, removed or renamed since the audit would shift every
    # row after it and quarantine the wrong images.
    if [image.rel for image in listing.images] != files:
        raise InputError(f"{path}: the folder changed since it was audited; audit it again")
    by_row = {r.row: r for r in removed}
    if by_row and max(by_row) >= len(files):
        raise InputError(f"{path}: row {max(by_row)} is not in the folder ({len(files)} images)")
    clean, quarantine = staging.open_dir(outputs.clean), staging.open_dir(outputs.quarantine)
    try:
        for name in listing.classes:
            # Every class keeps its folder, even one that lost every image: a loader numbers classes by
            # their sorted folder names, and a missing folder would silently renumber the rest.
            (clean / name).mkdir()
        for row, image in enumerate(listing.images):
            destination = (quarantine if row in by_row else clean) / image.rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.path, destination)  # byte for byte
        with (quarantine / REASONS_FILE).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(REASONS_COLUMNS)
            for row in sorted(by_row):
                flag, image = by_row[row], listing.images[row]
                channels = ",".join(flag.channels)
                suggested = flag.suggested_label or ""
                writer.writerow(
                    [row, image.rel, image.label, channels, f"{flag.score:.4f}", flag.reason, suggested]
                )
    except OSError as exc:
        raise InputError(f"{path}: cannot write the sanitized folder: {one_line_reason(exc)}") from None


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
    unchanged_since: DatasetState | None = None,
) -> Manifest:
    """Split ``path`` by the audit's quarantine rows and write the clean data's manifest with lineage.

    The manifest carries one ``sanitize`` lineage record: what was consumed (the input's identities, the
    audit report's digest), the digests of the clean and quarantine files produced (the Merkle roots of
    the folders for an image folder), and ``parameters``. It is signed when ``key`` is given. ``report``
    (when given) is written to ``outputs.report``. All outputs are checked first (:func:`check_outputs`),
    staged, and renamed into place together at the end. ``unchanged_since``: the input's
    :func:`~bastion.data.readers.dataset_state` when the audit began; if a file was rewritten since, the
    audit's rows are not its rows, and nothing is written.
    """
    from bastion.data.lineage import file_digest, lineage_record
    from bastion.data.manifest import FileEntry, Manifest, build_manifest, dataset_root, fingerprint_file
    from bastion.data.signing import sign_manifest

    if (report is None) != (outputs.report is None):
        raise ValueError("write_sanitized: give both report bytes and outputs.report, or neither")
    check_outputs(path, outputs, force=force)
    removed = [r for r in result.rows if r.remove]
    with staged() as staging:
        entries: tuple[FileEntry, ...]
        if path.is_dir():
            split_image_folder(path, result.files, removed, staging, outputs)
            if unchanged_since is not None:  # checked once the rows are copied: an edit during the copy too
                check_unchanged(path, unchanged_since)
            clean_tmp, quarantine_tmp = staging.temp_for(outputs.clean), staging.temp_for(outputs.quarantine)
            # Paths in a folder's manifest are relative to it, so the staged folder's manifest is the final
            # one's: the manifest and the data it describes are committed together or not at all.
            entries = build_manifest(clean_tmp).files
            produced = {
                "clean": "merkle-sha256:" + dataset_root(entries),
                "quarantine": "merkle-sha256:" + build_manifest(quarantine_tmp).root,
            }
        else:
            split_dataset(path, removed, staging, outputs)
            if unchanged_since is not None:  # checked once the rows are copied: an edit during the copy too
                check_unchanged(path, unchanged_since)
            clean_tmp, quarantine_tmp = staging.temp_for(outputs.clean), staging.temp_for(outputs.quarantine)
            produced = {"clean": file_digest(clean_tmp), "quarantine": file_digest(quarantine_tmp)}
            # Fingerprinted while still staged, under the name it will have: the manifest and the data it
            # describes are committed together or not at all.
            try:
                entries = (fingerprint_file(clean_tmp, outputs.clean.name),)
            except OSError as exc:
                raise InputError(f"{outputs.clean}: cannot read it back ({exc.strerror or exc})") from None
        record = lineage_record(
            "sanitize", consumed, produced, {"quarantined_rows": len(removed), **parameters}
        )
        manifest = Manifest(
            source=f"bastion data sanitize {path.resolve().name if path.is_dir() else path.name}",
            created=record["created"],
            tool_version=record["tool_version"],
            files=entries,
            root=dataset_root(entries),
            lineage=(record,),
        )
        if key is not None:
            manifest = sign_manifest(manifest, key)
        staging.write(outputs.manifest, manifest.to_json())
        if outputs.report is not None and report is not None:
            staging.write(outputs.report, report)
    return manifest
