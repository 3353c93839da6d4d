"""Per-format readers: the kind of a file, its schema, and the bytes of each row, streamed."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from bastion.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
KIND_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet", ".npy": "npy", ".npz": "npz"}
PARQUET_BATCH_ROWS = 8192
# One CSV record or JSONL line larger than this is refused, so a file without newlines cannot exhaust memory.
MAX_ROW_BYTES = 64 << 20


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


def detect_kind(path: Path) -> str:
    """The reader for ``path`` by suffix: csv, jsonl, parquet, npy, npz, image or other."""
    suffix = path.suffix.lower()
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


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered lines (newline kept), each at most MAX_ROW_BYTES, else InputError."""
    with path.open("rb") as fh:
        for number, line in enumerate(iter(lambda: fh.readline(MAX_ROW_BYTES + 1), b""), start=1):
            if len(line) > MAX_ROW_BYTES:
                raise InputError(f"{path}: line {number}: longer than {MAX_ROW_BYTES} bytes")
            yield number, line


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    # A CSV record may span lines inside quotes; an odd number of quote characters leaves the record open.
    parts: list[bytes] = []
    size = start = 0
    open_quotes = False
    for number, line in _lines(path):
        body = line.rstrip(b"\n").removesuffix(b"\r")
        if not parts:
            start, size = number, 0
        parts.append(body)
        size += len(body)
        if size > MAX_ROW_BYTES:
            raise InputError(f"{path}: line {start}: CSV record longer than {MAX_ROW_BYTES} bytes")
        open_quotes ^= body.count(b'"') % 2 == 1
        if not open_quotes:
            yield start, b"\n".join(parts)
            parts = []
    if parts:
        raise InputError(f"{path}: line {start}: unterminated quoted CSV field")


def csv_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """Each CSV record's raw bytes (header first, blank records included) with its first line number."""
    return _records(path)


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: line {number}: not UTF-8 text, cannot read as CSV") from None


def csv_rows(path: Path) -> RowStream:
    """Each data row's raw bytes after the header, line endings normalised to ``\\n``; blank rows skipped."""
    stream = RowStream(iter(()))

    def rows() -> Iterator[bytes]:
        header_seen = False
        for number, raw in _records(path):
            text = _decode(path, number, raw)
            if not header_seen:
                try:
                    # A byte-order mark is part of the bytes but not of the first column's name.
                    header = next(csv.reader([text.removeprefix("\ufeff")]), [])
                except csv.Error as exc:
                    raise InputError(
                        f"{path}: line {number}: unreadable CSV header ({one_line_reason(exc)})"
                    ) from None
                stream.schema["columns"] = header
                header_seen = True
            elif raw.strip():
                yield raw
        stream.schema.setdefault("columns", [])

    stream.rows = rows()
    return stream


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and have no canonical form.
    raise ValueError(f"{name} is not JSON")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``; raises ValueError when it has no canonical form."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def jsonl_rows(path: Path) -> RowStream:
    """Each non-blank line's canonical JSON; the schema lists the top-level keys seen in object rows."""
    stream = RowStream(iter(()))
    keys: set[str] = set()

    def rows() -> Iterator[bytes]:
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                value = json.loads(line, parse_constant=_reject_constant)
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
                for row in batch.to_pylist():
                    yield canonical_json(_jsonable(row))
        except Exception as exc:  # pyarrow's ArrowException family; nothing here raises InputError
            raise InputError(f"{path}: unreadable Parquet data ({one_line_reason(exc)})") from None

    return RowStream(rows(), schema)


def _array_schema(array: Any) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def _slices(array: Any) -> Iterator[bytes]:
    import numpy as np

    if array.ndim == 0:
        yield np.ascontiguousarray(array).tobytes()
        return
    for index in range(array.shape[0]):
        yield np.ascontiguousarray(array[index]).tobytes()


def npy_rows(path: Path) -> RowStream:
    """Each slice along axis 0 (a 0-d array is one row); memory-mapped so large arrays stay on disk."""
    np = _require("numpy", "NumPy")
    with path.open("rb") as fh:
        magic = fh.read(6)
    # np.load would treat a zip or pickle as an archive or object; only a real .npy header is accepted.
    if magic != b"\x93NUMPY":
        raise InputError(f"{path}: not a .npy array (bad magic bytes)")
    try:
        # open_memmap reads the header, refuses object dtypes (no pickle) and closes its own handle.
        array = np.lib.format.open_memmap(path, mode="r")
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise InputError(f"{path}: not a readable .npy array ({one_line_reason(exc)})") from None
    return RowStream(_slices(array), _array_schema(array))


def npz_rows(path: Path) -> RowStream:
    """Each member's slices along axis 0, each prefixed by the member name so moves between members show."""
    np = _require("numpy", "NumPy")
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
                        f"{path}: member {name!r} is not a readable array ({one_line_reason(exc)})"
                    ) from None
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
