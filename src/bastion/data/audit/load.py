"""Load a dataset for auditing: a table (CSV, TSV, Parquet, JSONL; the text ones also compressed), arrays
(.npz) or text, as AuditData."""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bastion.data.audit.base import AuditData, FloatArray, IntArray
from bastion.data.audit.encode import MIXED_NUMERIC_SHARE, TableEncoder, check_finite, numeric_share
from bastion.data.readers import (
    COMPRESSION_BY_SUFFIX,
    TooLarge,
    compression_of,
    format_suffix,
    full_suffix,
    one_line_reason,
    open_table,
)
from bastion.errors import InputError

# Table formats by their suffix; .csv, .tsv and .jsonl may also be compressed (NAME.csv.gz, see readers).
TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".tsv")
ARRAY_SUFFIXES = (".npz",)
# Files above this size are audited by the streaming path rather than loaded whole (a table in pandas takes
# several times its CSV size in memory).
DEFAULT_IN_MEMORY_BYTES = 256 << 20
# Peak memory of an in-memory .npz audit over its float64 feature matrix (see `check_npz_size`): the full
# audit of 20,000 28x28 images (125 MB as float64) peaked at 955 MB resident, of 20,000 rows of 100 floats
# (16 MB) at 487 MB, so about 4 times the matrix above the libraries' 450 MB; 5 leaves a margin.
NPZ_PEAK_FACTOR = 5


def env_int(name: str, default: int, minimum: int) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset), at least ``minimum``."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name}: not a number: {raw!r}") from None
    if value < minimum:
        raise InputError(f"{name}: must be at least {minimum}, not {value}")
    return value


def in_memory_limit() -> int:
    """Largest file loaded whole; ``BASTION_AUDIT_IN_MEMORY_BYTES`` overrides it (0: stream every table)."""
    return env_int("BASTION_AUDIT_IN_MEMORY_BYTES", DEFAULT_IN_MEMORY_BYTES, 0)


def should_stream(path: Path) -> bool:
    """Whether ``path`` is a table too large to load whole (a compressed one: its decompressed data)."""
    # Every table format streams (JSON lines too: pandas holds a JSON file several times its size); .npz
    # arrays cannot, and are refused above a memory budget instead (`check_npz_size`).
    if format_suffix(path) not in TABLE_SUFFIXES:
        return False
    limit = in_memory_limit()
    if compression_of(path) is None:
        return path.stat().st_size > limit
    return decompressed_above(path, limit)


# gzip's trailer holds the last member's uncompressed size modulo 2**32 (ISIZE, RFC 1952), little-endian.
GZIP_TRAILER_BYTES = 4
GZIP_MIN_BYTES = 18  # a 10-byte header, an empty deflate stream and the 8-byte trailer


def gzip_size_hint(path: Path) -> int:
    """The ISIZE field of a gzip file's trailer: its uncompressed size modulo 2**32 if one member, else 0."""
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) < GZIP_MIN_BYTES:
            return 0
        fh.seek(-GZIP_TRAILER_BYTES, os.SEEK_END)
        return int.from_bytes(fh.read(GZIP_TRAILER_BYTES), "little")


def decompressed_above(path: Path, limit: int) -> bool:
    """Whether the compressed table ``path`` holds more than ``limit`` bytes once decompressed.

    The size of a compressed file says nothing sound about its data (a 1 MB gzip of one repeated row holds
    1 GB), and only gzip records its data's size, modulo 2**32, for the last member alone, in a trailer the
    writer chooses. So the trailer is a hint that can only send a file to the streaming audit (always safe,
    since it holds no more than a chunk in memory): a file whose hint is above the limit streams at once,
    without decompressing anything. Otherwise the data is decompressed and counted, reading at most
    ``limit + 1`` bytes in bounded pieces and keeping none of them: exact whatever the trailer claims, and
    at most the work of reading the table (zlib inflates about 300 MB/s, so under a second at 256 MB).
    """
    if compression_of(path) == "gzip" and gzip_size_hint(path) > limit:
        return True
    remaining = limit + 1
    with open_table(path) as fh:
        while remaining > 0:
            piece = fh.read(min(remaining, 1 << 20))
            if not piece:
                return False
            remaining -= len(piece)
    return True


def whole_read_limit() -> int:
    """The most decompressed bytes a compressed table read whole may hold (at least the default limit).

    The data itself is read whole only when it holds at most `in_memory_limit` bytes (`should_stream`); a
    reference or holdout read whole is held to the larger of that and the default, so a small compressed
    file cannot expand to exhaust memory, and a low limit set to make the data stream leaves them readable.
    """
    return max(in_memory_limit(), DEFAULT_IN_MEMORY_BYTES)


def read_table(path: Path) -> pd.DataFrame:
    """Read a whole table by suffix, turning every library failure into a one-line InputError."""
    suffix = format_suffix(path)
    if path.is_dir() or suffix not in TABLE_SUFFIXES:
        compressed = "/".join(COMPRESSION_BY_SUFFIX)
        raise InputError(
            f"{path}: not a table (expected one of {', '.join(TABLE_SUFFIXES)} or .npz; "
            f".csv, .tsv and .jsonl may be compressed as {compressed})"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        frame = _read_frame(path, suffix)
    # TypeError: pandas' JSON reader on a line that is an array or a number rather than an object.
    except (ValueError, TypeError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        what = full_suffix(path).lower()[1:]
        raise InputError(f"{path}: cannot read it as {what}: {one_line_reason(exc)}") from None
    except TooLarge:
        raise InputError(
            f"{path}: holds more than {whole_read_limit() >> 20} MB once decompressed, too much to read "
            "whole; raise BASTION_AUDIT_IN_MEMORY_BYTES, or decompress it to check its size"
        ) from None
    if frame.empty:
        raise InputError(f"{path}: no rows")
    frame.columns = [str(c) for c in frame.columns]
    check_unique_columns(path, list(frame.columns))
    if suffix != ".csv" and suffix != ".tsv":
        _check_flat(path, frame)
    if suffix == ".parquet":
        _decode_bytes(path, frame)
    return frame


def _decode_bytes(path: Path, frame: pd.DataFrame) -> None:
    """Decode, in place, Parquet byte-string columns as UTF-8 text; InputError on bytes that are not text.

    pandas hands a binary column over as bytes objects, which compare and hash apart from the same text,
    and which the encoder could only decode itself, failing on the first invalid byte with a traceback.
    """
    for column in frame.columns:
        series = frame[column]
        if series.dtype != object:
            continue
        raw = series.map(lambda v: isinstance(v, (bytes, bytearray))).to_numpy(dtype=bool)
        if not raw.any():
            continue
        try:
            frame[column] = series.map(
                lambda v: bytes(v).decode("utf-8") if isinstance(v, (bytes, bytearray)) else v
            )
        except UnicodeDecodeError:
            raise InputError(
                f"{path}: column {column!r} holds bytes that are not UTF-8 text; is this file a table?"
            ) from None


def _read_frame(path: Path, suffix: str) -> pd.DataFrame:
    """``path`` as pandas reads it; a compressed table is decompressed by `open_table`, within a limit."""
    # pandas would decompress gzip and bz2 itself, but without a bound (and zstd only with another
    # package); reading through open_table streams all three alike and stops a small file that expands
    # past `whole_read_limit` (TooLarge) before pandas holds it, and names the file on corrupt data.
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".jsonl":
        with _source(path) as source:
            # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first row, as for
            # pandas' CSV reader, the streamed reader and the fingerprint. dtype=False: pandas' own inference
            # also turns columns into dates by their names alone ("modified", "*_at", "date"...), so epoch
            # integers became dates in memory and stayed integers streamed and in a CSV; its number
            # inference is applied by `_json_numbers` instead, without the dates.
            frame = pd.read_json(source, lines=True, encoding="utf-8-sig", dtype=False)
        return frame.apply(_json_numbers)
    sep = "\t" if suffix == ".tsv" else ","
    # pandas renames a repeated header name ("label", "label.1"), which would silently audit the wrong
    # column as the label; the raw header row shows the repeat.
    with _source(path) as source:
        header = pd.read_csv(source, sep=sep, header=None, nrows=1, dtype=str).iloc[0]
    check_unique_columns(path, [str(c) for c in header.dropna()])
    with _source(path) as source:
        return pd.read_csv(source, sep=sep, low_memory=False)


def _json_numbers(series: pd.Series) -> pd.Series:
    """A JSON column as pandas' read_json types it, dates aside: text that is all numbers becomes numbers,
    and whole floats integers (pandas' ``_try_convert_data`` with ``dtype=True``, less its date step)."""
    data = series
    if pd.api.types.is_string_dtype(data.dtype):
        with suppress(TypeError, ValueError):
            data = data.astype("float64")
    if len(data) and data.dtype in ("float64", "object"):
        try:
            whole = series.astype("int64")
            if bool((whole == data).all()):
                return whole
        except (TypeError, ValueError, OverflowError):
            pass
    return data


def _source(path: Path) -> AbstractContextManager[Path | IO[bytes]]:
    """What pandas reads: a plain file by its path, as always; a compressed one as a decompressing handle."""
    if compression_of(path) is None:
        return nullcontext(path)
    return open_table(path, whole_read_limit())


def check_unique_columns(path: Path | str, names: list[str]) -> None:
    """InputError when two columns share a name: a label or feature cannot be told from its namesake."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{path}: duplicate column name {name!r}")
        seen.add(name)


def _check_flat(path: Path, frame: pd.DataFrame) -> None:
    """InputError when a JSONL or Parquet column holds objects or lists, which no detector can compare."""
    for column in frame.columns:
        series = frame[column]
        if series.dtype != object:
            continue
        nested = series.map(lambda v: isinstance(v, (dict, list, tuple, np.ndarray))).to_numpy(dtype=bool)
        if nested.any():
            row = int(np.flatnonzero(nested)[0])
            raise InputError(f"{path}: column {column!r} holds nested objects (row {row}); flatten it first")


def named(path: Path | str, exc: InputError) -> InputError:
    """``exc`` with its message prefixed by ``path`` unless it already names it (encoder errors do not)."""
    message = str(exc)
    if message.startswith(f"{path}:"):
        return exc
    return InputError(f"{path}: {message}")


def _class_name(value: Any) -> str:
    # A whole float is named without its ".0", as the streamed audit (pyarrow's cast to text) names it, so
    # a 0.0/1.0 label column gets the same classes either way.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def encode_labels(values: pd.Series | np.ndarray[Any, Any], what: str) -> tuple[IntArray, list[str]]:
    """Integer codes and class names (sorted) for a label column; InputError on blanks or a single class."""
    series = pd.Series(values)
    blank = series.isna().to_numpy()
    if blank.any():
        first = int(np.flatnonzero(blank)[0])
        raise InputError(f"{what} is empty on {int(blank.sum())} rows (first: row {first})")
    if isinstance(series.dtype, pd.CategoricalDtype):
        # A dictionary-encoded Parquet column arrives categorical, and factorize would keep the categories'
        # own order (the order the writer met them) where every other label column gets sorted classes.
        series = series.astype(series.cat.categories.dtype)
    codes, uniques = pd.factorize(series, sort=True)
    classes = [_class_name(v) for v in uniques]
    if len(classes) < 2:
        only = classes[0] if classes else "nothing"
        raise InputError(f"{what} has a single class ({only!r}); an audit needs at least two")
    return codes.astype(np.int64), classes


def from_arrays(
    features: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    *,
    kind: str = "tabular",
    feature_names: list[str] | None = None,
    sources: np.ndarray[Any, Any] | None = None,
    path: str = "<memory>",
) -> AuditData:
    """AuditData from a feature matrix used as given (images: flattened and scaled by the caller)."""
    matrix = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if matrix.ndim == 0:
        raise InputError(f"{path}: the features are a single number, not one row per example")
    if labels.ndim != 1:
        raise InputError(f"{path}: the labels must be 1-D, one per row (shape {labels.shape})")
    if len(matrix) == 0:
        raise InputError(f"{path}: no rows")
    image_shape = tuple(matrix.shape[1:]) if matrix.ndim > 2 else None
    matrix = matrix.reshape(len(matrix), -1)
    if matrix.shape[1] == 0:
        raise InputError(f"{path}: the features have no columns")
    if len(labels) != len(matrix):
        raise InputError(f"{path}: {len(labels)} labels for {len(matrix)} rows")
    if not np.isfinite(matrix).all():
        raise InputError(f"{path}: features hold NaN or infinite values")
    codes, classes = encode_labels(labels, f"{path}: labels")
    names = feature_names or [f"f{i}" for i in range(matrix.shape[1])]
    return AuditData(
        path=path,
        kind=kind,
        features=matrix,
        labels=codes,
        classes=classes,
        feature_names=names,
        sources=None if sources is None else np.asarray(sources).astype(str),
        image_shape=image_shape,
    )


def _split_columns(
    frame: pd.DataFrame, label: str, source_column: str | None, where: str
) -> tuple[pd.DataFrame, pd.Series, np.ndarray[Any, Any] | None]:
    columns = list(frame.columns)
    if label not in columns:
        raise InputError(f"{where}: no label column {label!r} (columns: {', '.join(columns[:20])})")
    if source_column is not None and source_column not in columns:
        raise InputError(f"{where}: no source column {source_column!r} (columns: {', '.join(columns[:20])})")
    drop = [label] if source_column is None else [label, source_column]
    sources = None
    if source_column is not None:
        sources = frame[source_column].astype("string").fillna("<missing>").to_numpy(dtype=str)
    return frame.drop(columns=drop), frame[label], sources


def identifier_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that only name rows: unique on every row and either an integer sequence or text.

    An id column makes every row unique, which hides duplicates, and it carries no signal a detector should
    learn; a continuous measurement is also unique per row but is neither sorted integers nor text. A text
    column that is mostly numbers is a measurement with stray words, not an id: the encoder rejects it
    with the offending row, where dropping it would audit the table without it.
    """
    if len(frame) < 2:
        return []
    found = []
    for column in frame.columns:
        series = frame[column]
        if series.isna().any() or series.nunique() != len(series):
            continue
        integer_sequence = pd.api.types.is_integer_dtype(series) and series.is_monotonic_increasing
        text = not pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        if text and numeric_share(series) >= MIXED_NUMERIC_SHARE:
            continue
        if integer_sequence or text:
            found.append(str(column))
    return found


def from_frame(
    frame: pd.DataFrame,
    label: str,
    *,
    source_column: str | None = None,
    text_column: str | None = None,
    path: str = "<memory>",
) -> AuditData:
    """AuditData from a DataFrame: the label and source columns split off, the rest encoded or embedded."""
    features_frame, label_values, sources = _split_columns(frame, label, source_column, path)
    if features_frame.shape[1] == 0:
        raise InputError(f"{path}: no feature columns besides the label")
    labels, classes = encode_labels(label_values, f"{path}: label column {label!r}")
    ignored = [c for c in identifier_columns(features_frame) if c != text_column]
    if ignored and len(ignored) < features_frame.shape[1]:
        features_frame = features_frame.drop(columns=ignored)
    else:
        ignored = []
    texts: list[str] | None = None
    if text_column is not None:
        if text_column not in features_frame.columns:
            raise InputError(f"{path}: no text column {text_column!r}")
        from bastion.data.audit.embed import embed_texts

        texts = features_frame[text_column].astype("string").fillna("").tolist()
        matrix: FloatArray = embed_texts(texts)
        names = [f"embedding_{i}" for i in range(matrix.shape[1])]
        kind = "text"
    else:
        try:
            encoder = TableEncoder.fit(features_frame)
            matrix = encoder.transform(features_frame)
        except InputError as exc:
            raise named(path, exc) from None
        names = encoder.feature_names
        kind = "tabular"
    return AuditData(
        encoder=None if text_column is not None else encoder,
        ignored_columns=ignored,
        path=path,
        kind=kind,
        features=matrix,
        labels=labels,
        classes=classes,
        feature_names=names,
        frame=features_frame.reset_index(drop=True),
        sources=sources,
        texts=texts,
    )


def available_memory() -> int | None:
    """Bytes this process can still take: the system's available memory, within a container's limit."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            found += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    # A container's cgroup (v2, then v1) caps the process below what the machine has free.
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            cap = Path(limit).read_text(encoding="ascii").strip()
            if cap != "max":
                found.append(int(cap) - int(Path(usage).read_text(encoding="ascii").strip()))
            break
        except (OSError, ValueError):
            continue
    return max(0, min(found)) if found else None


def _npz_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]] | None:
    """Each array's shape and type from the .npy headers of an .npz, nothing loaded; None if unreadable."""
    import zipfile

    from numpy.lib import format as npy

    shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                    shape, _, dtype = read(member)
                shapes[info.filename[: -len(".npy")]] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError):
        return None  # np.load says what is wrong with it
    return shapes


def check_npz_size(path: Path, label: str, memory: int | None = None) -> None:
    """InputError when auditing an .npz in memory would take more memory than this process can have.

    An .npz cannot be streamed as a table can: its arrays are loaded whole, the features as a float64 matrix
    whatever their stored type, and the audit holds copies and models beside it (NPZ_PEAK_FACTOR times the
    matrix). Its size on disk says little (np.savez_compressed shrinks a repetitive array a thousandfold),
    so the arrays' shapes and types are read from the .npy headers, and the estimate is compared with the
    memory available now (``memory``, else `available_memory`): an audit that cannot fit is refused at once
    rather than killed by the kernel part-way. BASTION_AUDIT_IN_MEMORY_BYTES, a file size that decides when
    a table streams, is no budget here: at its 256 MB default it would refuse a 60,000-image MNIST (376 MB
    as float64), which fits a few GB.
    """
    shapes = _npz_shapes(path)
    memory = available_memory() if memory is None else memory
    if shapes is None or memory is None:
        return
    values = sum(math.prod(shape) for name, (shape, _) in shapes.items() if name != label)
    stored = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())
    need = stored + NPZ_PEAK_FACTOR * 8 * values
    if need > memory:
        raise InputError(
            f"{path}: its arrays need about {need / 2**30:.1f} GiB to audit in memory ({values:,} feature "
            f"values as float64, and the audit's copies) but {memory / 2**30:.1f} GiB is available; "
            ".npz arrays cannot be streamed: audit a subset of the rows, or on a machine with more memory"
        )


def _numeric_features(path: Path, name: str, features: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """An .npz feature array the audit can hold as float64 without changing it, or InputError saying why."""
    if features.dtype == np.bool_:
        return features.astype(np.uint8)  # masks and one-hot codes: 0 and 1, as a table's bool columns
    if np.issubdtype(features.dtype, np.complexfloating):
        # float64 would keep the real part alone, silently (numpy only warns).
        raise InputError(
            f"{path}: feature array {name!r} holds complex numbers; give their real and imaginary parts "
            "as separate features"
        )
    if not np.issubdtype(features.dtype, np.number):
        raise InputError(f"{path}: feature array {name!r} is not numeric ({features.dtype})")
    if np.issubdtype(features.dtype, np.integer) and features.size:
        # float64 holds every integer up to 2**53 only: beyond, neighbours merge, and rows that differ
        # become copies of each other (every row of such an array was flagged as a conflicting duplicate).
        flat = features.reshape(len(features), -1) if features.ndim > 1 else features.reshape(-1, 1)
        beyond = np.flatnonzero((np.abs(flat.astype(np.float64)) > 2.0**53).any(axis=1))
        if beyond.size:
            raise InputError(
                f"{path}: feature array {name!r} holds integers beyond 2**53 (first: row {int(beyond[0])}), "
                "which float64 features cannot tell apart; scale them or drop that feature"
            )
    return features


def _load_npz(path: Path, label: str) -> AuditData:
    check_npz_size(path, label)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read it as .npz: {one_line_reason(exc)}") from None
    if label not in arrays:
        raise InputError(f"{path}: no label array {label!r} (arrays: {', '.join(sorted(arrays))})")
    others = [name for name in arrays if name != label]
    if len(others) != 1:
        raise InputError(f"{path}: expected one feature array besides {label!r}, found {others}")
    features = _numeric_features(path, others[0], arrays[others[0]])
    if arrays[label].ndim != 1:
        raise InputError(
            f"{path}: label array {label!r} must be 1-D, one label per row (shape {arrays[label].shape})"
        )
    if features.ndim == 0:
        raise InputError(f"{path}: feature array {others[0]!r} is a single number, not one row per example")
    if len(features) == 0:
        raise InputError(f"{path}: no rows")
    kind = "image" if features.ndim >= 3 else "tabular"
    if kind == "image" and features.size and float(np.max(features)) > 1.0:
        features = features / float(np.max(features))  # pixels to [0, 1] whatever their bit depth
    return from_arrays(features, arrays[label], kind=kind, path=str(path))


def _no_source_in_arrays(path: Path, source_column: str | None) -> None:
    # Silently auditing without the sources would hide the per-source summary the user asked for.
    if source_column is not None:
        raise InputError(f"{path}: --source-column needs a table; .npz arrays have no columns")


def load_dataset(
    path: Path, label: str, *, source_column: str | None = None, text_column: str | None = None
) -> AuditData:
    """Load ``path`` whole for an in-memory audit (a folder: an image folder, DIR/<class>/<images>)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        from bastion.data.audit.image_folder import load_image_folder

        return load_image_folder(path, label, source_column=source_column, text_column=text_column)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        _no_source_in_arrays(path, source_column)
        return _load_npz(path, label)
    frame = read_table(path)
    return from_frame(frame, label, source_column=source_column, text_column=text_column, path=str(path))


def load_companion(
    path: Path,
    like: AuditData,
    label: str,
    *,
    source_column: str | None = None,
    text_column: str | None = None,
) -> AuditData:
    """Load a holdout or reference set encoded exactly like ``like``, with its label codes."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    other: AuditData
    if path.is_dir():
        from bastion.data.audit.image_folder import load_image_folder

        other = load_image_folder(
            path, label, source_column=source_column, text_column=text_column, like=like
        )
        frame_labels = np.asarray(other.classes, dtype=object)[other.labels]
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        _no_source_in_arrays(path, source_column)
        other = _load_npz(path, label)
        frame_labels = np.asarray(other.classes, dtype=object)[other.labels]
    else:
        frame = read_table(path)
        features_frame, label_values, sources = _split_columns(frame, label, source_column, str(path))
        features_frame = features_frame.drop(columns=[c for c in like.ignored_columns if c in features_frame])
        blank = label_values.isna().to_numpy()
        if blank.any():
            # Checked here as for the data: a blank label would otherwise read as an unknown class "<NA>".
            first = int(np.flatnonzero(blank)[0])
            raise InputError(
                f"{path}: label column {label!r} is empty on {int(blank.sum())} rows (first: row {first})"
            )
        frame_labels = label_values.astype("string").to_numpy(dtype=object)
        if like.kind == "text" and text_column is not None:
            from bastion.data.audit.embed import embed_texts

            if text_column not in features_frame:
                raise InputError(f"{path}: no text column {text_column!r}, which {like.path} has")

            texts = features_frame[text_column].astype("string").fillna("").tolist()
            matrix = embed_texts(texts)
        elif like.encoder is not None:
            absent = [
                c for c in (*like.encoder.numeric, *like.encoder.categorical) if c not in features_frame
            ]
            if absent:
                raise InputError(f"{path}: no column {absent[0]!r}, which {like.path} has")
            try:
                matrix = like.encoder.transform(features_frame)
            except InputError as exc:
                raise named(path, exc) from None
        else:
            raise InputError(f"{path}: cannot encode it like {like.path}")
        other = AuditData(
            path=str(path),
            kind=like.kind,
            features=matrix,
            labels=np.zeros(len(frame), dtype=np.int64),
            classes=like.classes,
            feature_names=like.feature_names,
            frame=features_frame.reset_index(drop=True),
            sources=sources,
        )
    if other.features.shape[1] != like.features.shape[1]:
        raise InputError(
            f"{path}: {other.features.shape[1]} features where {like.path} has {like.features.shape[1]}"
        )
    index = {name: code for code, name in enumerate(like.classes)}
    unknown = sorted({str(v) for v in frame_labels} - set(index))
    if unknown:
        raise InputError(f"{path}: label {unknown[0]!r} does not occur in {like.path}")
    other.labels = np.array([index[str(v)] for v in frame_labels], dtype=np.int64)
    other.classes = list(like.classes)
    return other


def load_reference(
    path: Path,
    like: AuditData,
    label: str,
    *,
    source_column: str | None = None,
    text_column: str | None = None,
) -> AuditData:
    """Load a trusted reference for drift: its feature columns as they are, compared column by column.

    Unlike :func:`load_companion` (a holdout the model is scored on), a reference only feeds the drift
    check, so the streaming audit's rules apply: a column missing on either side or holding numbers on one
    side and text on the other is a drift finding, not an error; its labels and its source column, which
    drift does not compare, need not match the data's. ``text_column`` is accepted for symmetry: drift
    compares the raw columns, text included.
    """
    del text_column
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in ARRAY_SUFFIXES or like.frame is None:
        # Arrays have no column names to compare: their drift is per feature position, so they must match.
        return load_companion(path, like, label, source_column=source_column)
    frame = read_table(path)
    drop = [c for c in (label, source_column, *like.ignored_columns) if c is not None and c in frame.columns]
    features_frame = frame.drop(columns=drop).reset_index(drop=True)
    for column in features_frame.columns:
        series = features_frame[column]
        if numeric_share(series) == 1.0:
            try:
                check_finite(pd.to_numeric(series, errors="coerce"), str(column))
            except InputError as exc:
                raise named(path, exc) from None
    return AuditData(
        path=str(path),
        kind=like.kind,
        features=np.zeros((len(features_frame), 0), dtype=np.float64),
        labels=np.zeros(len(features_frame), dtype=np.int64),
        classes=list(like.classes),
        feature_names=[],
        frame=features_frame,
    )
