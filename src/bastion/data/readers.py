"""Per-format readers: the kind of a file, its schema, and the bytes of each row, streamed."""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import decimal
import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import rfc8785

from bastion.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
KIND_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet", ".npy": "npy", ".npz": "npz"}
PARQUET_BATCH_ROWS = 8192
NPY_MAGIC = b"\x93NUMPY"
# A local file header, or the end record of an empty archive.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# One CSV record or JSONL line larger than this is refused, so a file without newlines cannot exhaust memory.
MAX_ROW_BYTES = 64 << 20
# The largest integer RFC 8785 (I-JSON) accepts: beyond it a double cannot hold every integer exactly.
MAX_SAFE_INTEGER = 2**53 - 1
# A text table may be stored compressed (NAME.csv.gz): its rows are read through streamed decompression.
# gzip and bz2 come with Python; zstd is read by pyarrow (the `data` extra), whose codec every reader uses.
COMPRESSION_BY_SUFFIX = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
# Only text tables: Parquet and .npz compress inside their own format, and no reader here opens a .npz.gz.
COMPRESSIBLE_SUFFIXES = frozenset({".csv", ".tsv", ".jsonl"})
# What a corrupt or truncated stream raises: gzip's BadGzipFile and bz2's are OSError, like pyarrow's codec
# errors; a stream cut short raises EOFError, a bad deflate block zlib.error.
DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error)
READ_BUFFER_BYTES = 1 << 20


@dataclass(slots=True)
class RowStream:
    """Rows of one file as an iterator of bytes; ``schema`` is complete once the rows are exhausted."""

    rows: Iterator[bytes]
    schema: dict[str, Any] = field(default_factory=dict)


def one_line_reason(exc: BaseException) -> str:
    """The first non-blank line of an exception message, or its type name."""
    # Library messages can span lines (pyarrow's thrift errors); diagnostics must stay one line.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def printable(text: str, *, escape_backslash: bool = True) -> str:
    """``text`` with control, format and other invisible characters escaped, safe to print on one line.

    A file name's undecodable bytes (lone surrogates, PEP 383) show as ``\\xNN``, other characters as
    ``\\xNN``/``\\uNNNN``; backslashes are doubled unless ``escape_backslash`` is False (error messages),
    so an escaped name can never look like another name. A ``\\r`` in a name cannot rewrite a line.
    """
    if text.isprintable() and (not escape_backslash or "\\" not in text):
        return text
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\" if escape_backslash else char)
        elif char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def compression_of(path: Path) -> str | None:
    """``gzip``, ``bz2`` or ``zstd`` for a compressed text table (``NAME.csv.gz``), else None."""
    compression = COMPRESSION_BY_SUFFIX.get(path.suffix.lower())
    if compression is None or Path(path.stem).suffix.lower() not in COMPRESSIBLE_SUFFIXES:
        return None
    return compression


def format_suffix(path: Path) -> str:
    """The suffix naming the table format, lower case: ``.csv`` for ``NAME.csv.gz`` as for ``NAME.csv``."""
    if compression_of(path) is not None:
        return Path(path.stem).suffix.lower()
    return path.suffix.lower()


def full_suffix(path: Path) -> str:
    """The suffix as written, compression included: ``.csv.gz`` for ``NAME.csv.gz``, else ``path.suffix``."""
    if compression_of(path) is not None:
        return Path(path.stem).suffix + path.suffix
    return path.suffix


class TooLarge(InputError):
    """A compressed file holds more data than the reader was allowed to decompress."""


class _Decompressing(io.RawIOBase):
    """A decompressed stream, up to ``limit`` bytes; its failures are one-line InputErrors naming the file."""

    def __init__(self, path: Path, inner: Any, compression: str, limit: int | None) -> None:
        super().__init__()
        self._path, self._inner, self._compression, self._limit = path, inner, compression, limit
        self._count = 0

    def readable(self) -> bool:
        """Always true: the stream is read only."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Decompress at most ``len(buffer)`` bytes into ``buffer`` (the codecs bound each call's output)."""
        try:
            data = self._inner.read(len(buffer))
        except DECOMPRESSION_ERRORS as exc:
            raise InputError(
                f"{self._path}: not readable as {self._compression}-compressed data ({one_line_reason(exc)})"
            ) from None
        size = len(data)
        buffer[:size] = data
        self._count += size
        if self._limit is not None and self._count > self._limit:
            raise TooLarge(f"{self._path}: more than {self._limit} bytes once decompressed")
        return size

    def close(self) -> None:
        """Close the decompressor and the file under it."""
        if not self.closed:
            self._inner.close()
        super().close()


def open_table(path: Path, limit: int | None = None) -> IO[bytes]:
    """A binary handle on ``path``'s table bytes, decompressed as they are read when the name says so.

    Decompression is streamed: each read inflates only what it returns, so memory stays bounded whatever
    the ratio, and a corrupt or truncated stream raises a one-line InputError naming ``path`` when it is
    met. ``limit``: raise :class:`TooLarge` once more decompressed bytes than that have been read.
    """
    compression = compression_of(path)
    if compression is None:
        return path.open("rb")
    inner: Any
    # Each opener's file is closed by _Decompressing.close, with the handle returned here.
    if compression == "gzip":
        inner = gzip.open(path, "rb")  # noqa: SIM115
    elif compression == "bz2":
        inner = bz2.open(path, "rb")  # noqa: SIM115
    else:
        # Opening reads nothing yet: a missing or unreadable file raises OSError, as path.open() would.
        inner = _require("pyarrow", "zstd-compressed").input_stream(str(path), compression="zstd")
    return io.BufferedReader(_Decompressing(path, inner, compression, limit), READ_BUFFER_BYTES)


def file_state(path: Path, *, follow: bool = True) -> tuple[int, int, int, int]:
    """What tells a rewritten file from the one read before: its identity, size and modification time."""
    try:
        stat = path.stat() if follow else path.lstat()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


DatasetState = tuple[tuple[str, tuple[int, int, int, int]], ...]


def dataset_state(path: Path) -> DatasetState:
    """`file_state` of a file, or of every entry under a folder by relative path (links not followed).

    Cheap (a stat per file), so it is taken before a dataset is read and compared after: an image edited
    in place keeps the folder's listing, and only its own state shows the change.
    """
    if not path.is_dir():
        return (("", file_state(path)),)
    entries = []
    for folder, _, names in os.walk(path, followlinks=False):
        for name in names:
            entry = Path(folder) / name
            entries.append((entry.relative_to(path).as_posix(), file_state(entry, follow=False)))
    return tuple(sorted(entries))


def check_unchanged(path: Path, before: DatasetState) -> None:
    """InputError when ``path`` is no longer as `dataset_state` found it ``before`` it was read."""
    if dataset_state(path) != before:
        what = "folder" if path.is_dir() else "file"
        raise InputError(
            f"{path}: the {what} changed while it was audited; audit it again once it is written"
        )


def detect_kind(path: Path) -> str:
    """The reader for ``path`` by suffix: csv, jsonl, parquet, npy, npz, image or other.

    A compressed text table (``NAME.csv.gz``, ``.bz2``, ``.zst``) is of the kind of the table inside it.
    """
    suffix = format_suffix(path)
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return KIND_BY_SUFFIX.get(suffix, "other")


def open_rows(path: Path, kind: str) -> RowStream | None:
    """A row stream for row formats, or None for formats without rows (images, other files)."""
    readers: dict[str, Callable[[Path], RowStream]] = {
        "csv": csv_rows,
        "jsonl": jsonl_rows,
        "parquet": parquet_rows,
        "npy": npy_rows,
        "npz": npz_rows,
    }
    reader = readers.get(kind)
    return reader(path) if reader is not None else None


def _lines(path: Path, newline: bytes = b"\n") -> Iterator[tuple[int, bytes]]:
    """Numbered lines (ending kept), each at most MAX_ROW_BYTES, else InputError; ``newline`` ends a line."""
    if newline != b"\n":
        yield from _split_lines(path, newline)
        return
    with open_table(path) as fh:
        for number, line in enumerate(iter(lambda: fh.readline(MAX_ROW_BYTES + 1), b""), start=1):
            if len(line) > MAX_ROW_BYTES:
                raise InputError(f"{path}: line {number}: longer than {MAX_ROW_BYTES} bytes")
            yield number, line


def _split_lines(path: Path, newline: bytes) -> Iterator[tuple[int, bytes]]:
    # readline() only splits at \n, so other line endings (a bare \r) are split here, in bounded chunks;
    # a long line's pieces are kept apart until it ends, so joining stays linear in its length.
    number = 0
    parts: list[bytes] = []
    size = 0
    with open_table(path) as fh:
        while chunk := fh.read(1 << 20):
            *ended, rest = chunk.split(newline)
            for piece in ended:
                number += 1
                if size + len(piece) >= MAX_ROW_BYTES:
                    raise InputError(f"{path}: line {number}: longer than {MAX_ROW_BYTES} bytes")
                yield number, b"".join([*parts, piece, newline])
                parts, size = [], 0
            parts.append(rest)
            size += len(rest)
            if size > MAX_ROW_BYTES:
                raise InputError(f"{path}: line {number + 1}: longer than {MAX_ROW_BYTES} bytes")
    if size:
        yield number + 1, b"".join(parts)


def _quoting(body: bytes, quoted: bool, at_start: bool) -> tuple[bool, bool]:
    """The CSV quoting state after ``body`` (one line without its ending): (inside quotes, at a field start).

    As in Python's csv module, a quote opens a quoted field only as the first character of a field; a quote
    inside an unquoted field (``5" tall``) is an ordinary character, and ``""`` inside quotes is one quote.
    """
    i, n = 0, len(body)
    while i < n:
        if quoted:
            j = body.find(b'"', i)
            if j < 0:
                return True, False
            if j + 1 < n and body[j + 1] == 0x22:  # an escaped quote: still inside the field
                i = j + 2
                continue
            quoted, at_start, i = False, False, j + 1  # after the closing quote the field goes on unquoted
            continue
        if at_start and body[i] == 0x22:
            quoted, at_start, i = True, False, i + 1
            continue
        j = body.find(b",", i)
        if j < 0:
            return False, False
        i, at_start = j + 1, True
    return quoted, at_start


def _records(path: Path, newline: bytes = b"\n") -> Iterator[tuple[int, bytes]]:
    # A CSV record spans lines while a quoted field is open; its lines are joined with \n.
    parts: list[bytes] = []
    size = start = 0
    quoted = False
    for number, line in _lines(path, newline):
        body = line.removesuffix(newline)
        if newline == b"\n":
            body = body.removesuffix(b"\r")
        if not parts:
            start, size = number, 0
        parts.append(body)
        size += len(body)
        if size > MAX_ROW_BYTES:
            raise InputError(f"{path}: line {start}: CSV record longer than {MAX_ROW_BYTES} bytes")
        if quoted or b'"' in body:  # the common line without quotes needs no scan
            quoted, _ = _quoting(body, quoted, not quoted)
        if not quoted:
            yield start, b"\n".join(parts)
            parts = []
    if parts:
        raise InputError(f"{path}: line {start}: unterminated quoted CSV field")


def csv_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """Each CSV record's raw bytes (header first, blank records included) with its first line number."""
    return _records(path)


def _newline(path: Path) -> bytes:
    """``b"\\r"`` for a file whose header ends in a bare carriage return (classic Mac), else ``b"\\n"``."""
    with open_table(path) as fh:
        head = fh.readline(MAX_ROW_BYTES + 1)
    # A file that has a \n within its first record keeps \n line endings, so hashes of ordinary files never
    # depend on this guess; only a first line without any \n is searched for an unquoted \r.
    if head.endswith(b"\n") or b"\r" not in head:
        return b"\n"
    quoted = False
    at_start = True
    for piece in head.split(b"\r")[:-1]:
        quoted, at_start = _quoting(piece, quoted, at_start)
        if not quoted:
            return b"\r"
        at_start = False
    return b"\n"


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: line {number}: not UTF-8 text, cannot read as CSV") from None


def _header_fields(path: Path, number: int, text: str) -> list[str]:
    """The header's column names as csv.reader reads them, without its 128 KiB field size limit."""
    try:
        if len(text) < csv.field_size_limit():
            return next(csv.reader([text]), [])
        return split_csv_record(text)
    except csv.Error as exc:
        # csv's own message asks about file modes; say what is wrong with the file instead.
        reason = "a line break inside an unquoted field" if "new-line" in str(exc) else one_line_reason(exc)
        raise InputError(f"{path}: line {number}: unreadable CSV header ({reason})") from None


def _unquoted_end(text: str, piece: str, end: int) -> str | None:
    # csv.reader ends a record at a line break outside quotes and refuses text after it; None: no break here.
    cut = min((i for i in (piece.find("\r"), piece.find("\n")) if i >= 0), default=-1)
    if cut < 0:
        return None
    if text[end - len(piece) + cut :].strip("\r\n"):
        raise csv.Error("new-line character seen in unquoted field")
    return piece[:cut]


def split_csv_record(text: str) -> list[str]:
    """Fields of one CSV record as ``csv.reader`` (default dialect) reads them, with no field size limit."""
    if not text.strip("\r\n"):
        return []
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        pieces: list[str] = []
        if i < n and text[i] == '"':
            i += 1
            while True:
                j = text.find('"', i)
                if j < 0:  # an unterminated quote runs to the end, as csv.reader does outside strict mode
                    pieces.append(text[i:])
                    i = n
                    break
                pieces.append(text[i:j])
                if j + 1 < n and text[j + 1] == '"':
                    pieces.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
        k = text.find(",", i)
        end = n if k < 0 else k
        tail = text[i:end]
        last = _unquoted_end(text, tail, end)
        if last is not None:
            fields.append("".join(pieces) + last)
            return fields
        pieces.append(tail)
        fields.append("".join(pieces))
        if k < 0:
            return fields
        i = k + 1


def csv_rows(path: Path) -> RowStream:
    """Each data row's raw bytes after the header, line endings normalised to ``\\n``; blank rows skipped.

    Blank lines before the header are skipped too, and a file whose lines end in a bare ``\\r`` is split
    there (its rows hash as the same file with ``\\n`` endings would).
    """
    stream = RowStream(iter(()))

    def rows() -> Iterator[bytes]:
        header_seen = False
        for number, raw in _records(path, _newline(path)):
            text = _decode(path, number, raw)
            if not header_seen:
                # A byte-order mark is part of the bytes but not of the first column's name.
                text = text.removeprefix("\ufeff")
                if not text.strip():
                    continue
                stream.schema["columns"] = _header_fields(path, number, text)
                header_seen = True
            elif raw.strip():
                yield raw
        stream.schema.setdefault("columns", [])

    stream.rows = rows()
    return stream


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and have no canonical form.
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys and other parsers the first: what one reader checked and
    # another used could differ (a parser differential), and I-JSON (RFC 7493), which RFC 8785
    # canonicalises, forbids it.
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def strict_json_loads(text: str | bytes) -> Any:
    """``json.loads`` refusing what JSON readers disagree on: a key given twice, NaN and Infinity."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``; raises ValueError when it has no canonical form.

    RFC 8785 numbers are IEEE doubles, so it refuses integers beyond +-(2**53 - 1) (int64 ids, uint64);
    those (up to the 64-bit range) are written as their exact decimal digits instead, the only departure
    from its bytes: a JSON number's own digits, which no string or object can produce.
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        pass  # rare: only rows holding a big integer pay for the slower path below
    except (rfc8785.CanonicalizationError, TypeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    sink = io.BytesIO()
    try:
        _dump_exact(value, sink)
    except (ValueError, TypeError, RecursionError) as exc:  # CanonicalizationError is a ValueError
        raise ValueError(str(exc) or type(exc).__name__) from None
    return sink.getvalue()


def _dump_exact(value: Any, sink: io.BytesIO) -> None:
    # rfc8785.dump's container rules (no spaces, keys in UTF-16 order) with its leaves, except big integers.
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _utf16_key(kv[0]))
        sink.write(b"{")
        for index, (key, item) in enumerate(items):
            sink.write(b"," if index else b"")
            rfc8785.dump(key, sink)
            sink.write(b":")
            _dump_exact(item, sink)
        sink.write(b"}")
    elif isinstance(value, list | tuple):
        sink.write(b"[")
        for index, item in enumerate(value):
            sink.write(b"," if index else b"")
            _dump_exact(item, sink)
        sink.write(b"]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        # int64 and uint64 cover every integer column Arrow, NumPy and pandas hold; wider is corruption.
        if not -(2**63) <= value < 2**64:
            raise ValueError(f"integer of {len(str(abs(value)))} digits is outside the 64-bit range")
        sink.write(str(int(value)).encode("ascii"))
    else:
        rfc8785.dump(value, sink)


def _utf16_key(key: Any) -> bytes:
    if not isinstance(key, str):
        raise rfc8785.CanonicalizationError("object keys must be strings")
    return key.encode("utf-16be")


def jsonl_rows(path: Path) -> RowStream:
    """Each non-blank line's canonical JSON; the schema lists the top-level keys seen in object rows."""
    stream = RowStream(iter(()))
    keys: set[str] = set()

    def rows() -> Iterator[bytes]:
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                value = strict_json_loads(line)
                data = canonical_json(value)
            except (ValueError, RecursionError) as exc:
                reason = one_line_reason(exc)
                raise InputError(f"{path}: line {number}: malformed JSON line ({reason})") from None
            if isinstance(value, dict):
                keys.update(value)
            yield data
        stream.schema["keys"] = sorted(keys)

    stream.rows = rows()
    return stream


def _jsonable(value: Any) -> Any:
    # Arrow values that JSON lacks get a fixed textual form, so equal data always hashes equally.
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta | decimal.Decimal):
        return str(value)
    return value


def _require(module: str, kind: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise InputError(
            f"reading {kind} files needs the {package!r} package (pip install {package})"
        ) from None


def parquet_rows(path: Path) -> RowStream:
    """Each row's canonical JSON, read in record batches so memory stays bounded."""
    pq = _require("pyarrow.parquet", "Parquet")
    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family for any bad file
        raise InputError(f"{path}: not a readable Parquet file ({one_line_reason(exc)})") from None
    schema = {"fields": [{"name": f.name, "type": str(f.type)} for f in pfile.schema_arrow]}

    def rows() -> Iterator[bytes]:
        try:
            for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                exact = _nanosecond_times(batch)
                for index, row in enumerate(batch.to_pylist()):
                    for name, texts in exact.items():
                        if texts[index] is not None:
                            row[name] = texts[index]
                    yield canonical_json(_jsonable(row))
        except Exception as exc:  # pyarrow's ArrowException family; nothing here raises InputError
            raise InputError(f"{path}: unreadable Parquet data ({one_line_reason(exc)})") from None

    return RowStream(rows(), schema)


NANOS_PER_SECOND = 1_000_000_000


def _nanosecond_times(batch: Any) -> dict[str, list[str | None]]:
    """Exact text of each top-level time64[ns] value with digits below the microsecond, by column.

    ``to_pylist`` turns such a value into a ``datetime.time``, which stops at microseconds, so two rows
    differing by nanoseconds hashed alike. Values with whole microseconds keep ``time.isoformat``'s form,
    the form manifests already hold for them; the others get nine fractional digits.
    """
    import pyarrow as pa

    exact: dict[str, list[str | None]] = {}
    for column_field, column in zip(batch.schema, batch.columns, strict=True):
        if column_field.type != pa.time64("ns"):
            continue
        texts: list[str | None] = []
        for nanos in column.cast(pa.int64()).to_pylist():
            if nanos is None or nanos % 1000 == 0:
                texts.append(None)
                continue
            seconds, fraction = divmod(nanos, NANOS_PER_SECOND)
            minutes, second = divmod(seconds, 60)
            texts.append(f"{minutes // 60:02d}:{minutes % 60:02d}:{second:02d}.{fraction:09d}")
        exact[column_field.name] = texts
    return exact


def _array_schema(array: Any) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def _slices(array: Any) -> Iterator[bytes]:
    import numpy as np

    if array.ndim == 0:
        yield np.ascontiguousarray(array).tobytes()
        return
    for index in range(array.shape[0]):
        yield np.ascontiguousarray(array[index]).tobytes()


def _npy_reason(exc: BaseException) -> str:
    # numpy parses the header as a Python literal; tokenizer and AST errors describe Python, not the file.
    if isinstance(exc, ValueError) and not str(exc).startswith("malformed node"):
        return one_line_reason(exc)
    return "its header is not a valid NumPy header dictionary"


def npy_rows(path: Path) -> RowStream:
    """Each slice along axis 0 (a 0-d array is one row); memory-mapped so large arrays stay on disk."""
    np = _require("numpy", "NumPy")
    with path.open("rb") as fh:
        magic = fh.read(6)
    # np.load would treat a zip or pickle as an archive or object; only a real .npy header is accepted.
    if magic != NPY_MAGIC:
        raise InputError(f"{path}: not a .npy array (bad magic bytes)")
    try:
        # open_memmap reads the header, refuses object dtypes (no pickle) and closes its own handle.
        array = np.lib.format.open_memmap(path, mode="r")
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise InputError(f"{path}: not a readable .npy array ({_npy_reason(exc)})") from None
    return RowStream(_slices(array), _array_schema(array))


def npz_rows(path: Path) -> RowStream:
    """Each member's slices along axis 0, each prefixed by the member name so moves between members show."""
    np = _require("numpy", "NumPy")
    with path.open("rb") as fh:
        magic = fh.read(4)
    # np.load picks its reader from these bytes: a .npy or pickle here would not be read as an archive.
    if magic not in ZIP_MAGICS:
        raise InputError(f"{path}: not a .npz archive (not a zip file)")
    schema: dict[str, Any] = {"arrays": {}}
    # zipfile and numpy raise a wide family (BadZipFile, NotImplementedError, zlib.error, ...) on bad bytes.
    bad = Exception

    def rows() -> Iterator[bytes]:
        # Our own handle, closed on every path: numpy leaks the file it opens when the archive is bad.
        with path.open("rb") as fh:
            try:
                archive = np.load(fh, allow_pickle=False)
                names = sorted(archive.files)
            except bad as exc:
                raise InputError(
                    f"{path}: not a readable .npz archive without pickle ({one_line_reason(exc)})"
                ) from None
            for name in names:
                try:
                    array = archive[name]
                except bad as exc:
                    raise InputError(
                        f"{path}: member {name!r} is not a readable array ({_npy_reason(exc)})"
                    ) from None
                # numpy hands back a member without the .npy magic as its raw bytes.
                if not isinstance(array, np.ndarray):
                    raise InputError(f"{path}: member {name!r} is not a .npy array")
                schema["arrays"][name] = _array_schema(array)
                for data in _slices(array):
                    yield name.encode("utf-8") + b"\x00" + data

    return RowStream(rows(), schema)


def image_schema(path: Path) -> dict[str, Any]:
    """Format, size and mode from the image header only (Pillow opens lazily; pixels are not decoded)."""
    image_module = _require("PIL.Image", "image")
    try:
        with image_module.open(path) as image:
            return {"format": image.format, "size": list(image.size), "mode": image.mode}
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:  # Pillow: any
        raise InputError(f"{path}: not a readable image ({one_line_reason(exc)})") from None
