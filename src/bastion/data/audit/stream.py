"""Audit a table too large for memory: two streamed passes, all four channels.

Pass 1 reads the file once in chunks and keeps only O(n) small arrays (a 64-bit feature hash, a label
code and a source code per row), per-class counts and a bounded uniform sample (a reservoir of random
keys). Everything that has to be learnt is fitted on the sample: the encoder, the outlier model and a
label model (boosting; on tables wider than 64 encoded columns also the kernel family, the lower
out-of-fold log-loss deciding as in memory) whose K-fold out-of-sample probabilities set the
confident-learning per-class thresholds (the idea of cleanlab's batched label issues). Pass 2 scores
chunk after chunk with :func:`score_chunk`, a plain top-level function over a picklable
:class:`ChunkState`, so the same code runs serially, in a process pool or on Ray. Duplicates are found
from the hashes of pass 1, so copies across chunk boundaries are seen.

The backdoor channel runs in memory on a uniform part of the sample: a dirty-label trigger rides on a share
of the rows, so the sample holds that share of its carriers, and each trigger it confirms becomes a rule
(:class:`~bastion.data.audit.backdoor.CarrierRule`) that pass 2 applies to every row of the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from bastion.data.audit import label as label_channel
from bastion.data.audit import rules
from bastion.data.audit.backdoor import CarrierRule, carries_text
from bastion.data.audit.base import (
    BACKDOOR,
    INTEGRITY,
    LABEL,
    OUTLIER,
    AuditData,
    AuditOptions,
    BoolArray,
    ChannelResult,
    FloatArray,
    IntArray,
    RowFlag,
)
from bastion.data.audit.encode import TableEncoder, check_finite
from bastion.data.audit.load import TABLE_SUFFIXES, check_unique_columns, named
from bastion.data.audit.run import AuditResult, join_flags
from bastion.data.readers import compression_of, file_state, format_suffix, one_line_reason, open_table
from bastion.errors import InputError, UsageError
from bastion.findings import Finding, Location, Severity, sort_findings
from bastion.rules import get_rule
from bastion.workers import available_cores, process_pool, stop_pool

UInt64Array = npt.NDArray[np.uint64]

BACKENDS = ("local", "ray")
# The uniform sample every model is fitted on; 50k rows fit a gradient-boosted model in seconds and keep
# the sample's memory in tens of megabytes whatever the file's size.
SAMPLE_ROWS = 50_000
# The label model's cross-validation and final fit see at most this many sample rows: the fits and, above
# all, scoring a million rows with a large boosted ensemble dominate the run time.
LABEL_TRAIN_ROWS = 20_000
# A smaller ensemble than the in-memory channel's (150 trees at 0.08): scoring cost grows with trees x
# classes x rows, and on the tuning sets 50 trees at 0.2 found the same flips.
LABEL_TREES = 50
LABEL_LEARNING_RATE = 0.2
# Without the neighbour vote that the in-memory channel blends in, the model alone decides: a flag needs
# the given class below this probability as well as confident learning's verdict (0.35 in memory; 0.2 cut
# clean-row flags on wa_churn from 6.8% to 4.4% at the same F1 on 10% flips; tuning sets only).
AGREE_GIVEN_MAX = 0.2
# The backdoor channel's share of the sample. Its model fits at most 20,000 rows in any case
# (backdoor.MAX_FIT_ROWS), and a trigger on 1% of the rows still has 200 carriers here. It is the longest
# fit (tens of seconds on 20,000 rows of 50 columns) and runs in a worker while the label model is fitted:
# on the 1,000,000-row benchmark the audit took 55 s with it and 44.5 s without (docs/benchmarks.md).
BACKDOOR_SAMPLE_ROWS = 20_000
# A reference (trusted) file is profiled from a sample of this many rows.
REFERENCE_ROWS = 200_000
# Identifier columns are judged as in memory (`load.identifier_columns`), which needs every row: pass 1 keeps
# a 64-bit hash per row of each column that could be one, so at most this many are watched (8 bytes a row
# each); a further unique text column stays a feature, as a column the encoder reads as categories.
MAX_IDENTIFIER_CANDIDATES = 4
# A class with fewer sample rows than this has no trustworthy model probability: its rows get no label flag
# (the in-memory channel applies the same minimum to the whole table).
MIN_CLASS_SAMPLE = label_channel.MIN_CLASS_ROWS
# CSV blocks; pyarrow infers the column types from the first block, so a larger block sees more values, but
# its reader keeps several blocks in flight: 16 MB blocks held 550 MB resident on a 400 MB file, 4 MB 260 MB.
CSV_BLOCK_BYTES = 4 << 20
# A row longer than a block is read again with blocks four times larger, up to this size (a file of NUL
# bytes, or one without line ends, is not a table and must not take the reader's memory with it).
MAX_CSV_BLOCK_BYTES = 64 << 20
# Chunks queued per worker: one running and one waiting keeps workers busy and bounds the memory in flight.
IN_FLIGHT_PER_WORKER = 2
DEFAULT_CHUNK_ROWS = 50_000
# The cells pandas' read_csv takes as missing (pandas._libs.parsers.STR_NA_VALUES, private, so copied).
PANDAS_MISSING = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip
CHECK = "confident-learning-streamed"

# A ragged row is searched for exactly (its row and line) in at most this much of the file: Python's csv
# module reads about 50 MB/s, so the search costs seconds; past it the error names the block's first row.
RAGGED_SCAN_BYTES = 256 << 20

_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")
_INVALID_VALUE = re.compile(r"invalid value '(.*)'$")
_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+):? ?(.*)$")
_JSON_CHANGED = re.compile(r"Column\(/?([^)]*)\) changed from (\w+) to (\w+)")
_JSON_TWICE = re.compile(r"Column\(/?([^)]*)\) was specified twice")
_JSON_ROW = re.compile(r" in row (\d+)\s*$")
_JSON_CONVERT = re.compile(r"Failed to convert JSON to ([^,]+), couldn't parse:")
_JSON_KINDS = {"number": "numbers", "string": "strings", "boolean": "booleans", "null": "nulls"}


# ---------------------------------------------------------------------------------------------------------
# Reading: fixed-size chunks of a CSV, JSON-lines or Parquet file, every failure a one-line InputError.


@dataclass(frozen=True, slots=True)
class CsvRead:
    """How a CSV or JSON-lines file is read: types wider than pyarrow's first-block guess, the block size.

    For JSON lines ``column_types`` is the whole schema, in the file's column order, and ``text_numbers``
    the text columns read as numbers while every value is one (see `_json_batches`).
    """

    column_types: tuple[tuple[str, Any], ...] = ()
    block_bytes: int = CSV_BLOCK_BYTES
    text_numbers: tuple[str, ...] = ()


class _ReadAgain(InputError):
    """A CSV pass must start over with ``read``: a later block did not fit what the first block set."""

    def __init__(self, message: str, read: CsvRead) -> None:
        super().__init__(message)
        self.read = read


def _wider(kind: Any, value: str) -> Any:
    """The next type up for a CSV column of type ``kind`` that failed on ``value``; None at the top."""
    import pyarrow as pa

    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return None
    if pa.types.is_null(kind) or pa.types.is_integer(kind):
        try:
            float(value)
        except ValueError:
            return pa.string()
        return pa.float64()
    return pa.string()  # bool, float, dates: the in-memory reader keeps such a column as text


def _longer_blocks(path: Path, reason: str, read: CsvRead) -> InputError:
    """A row straddles blocks: read again with blocks four times larger, up to MAX_CSV_BLOCK_BYTES."""
    if read.block_bytes < MAX_CSV_BLOCK_BYTES:
        return _ReadAgain(
            f"{path}: cannot read it as a table: {reason}", replace(read, block_bytes=read.block_bytes * 4)
        )
    return InputError(
        f"{path}: a row is longer than {MAX_CSV_BLOCK_BYTES >> 20} MB (or has no line end); is it a table?"
    )


def _csv_error(path: Path, exc: BaseException, schema: Any, read: CsvRead, rows: int = 0) -> InputError:
    """The one-line error (or the wider read to start over with) for a CSV failure after ``rows`` rows."""
    reason = one_line_reason(exc)
    if "straddl" in reason:
        return _longer_blocks(path, reason, read)
    ragged = _RAGGED.search(reason)
    if ragged:
        expected, got = int(ragged.group(1)), int(ragged.group(2))
        return _ragged_row(path, expected, got, ragged.group(3), rows)
    match = _CSV_COLUMN.search(reason)
    if match and schema is not None and int(match.group(1)) < len(schema.names):
        index = int(match.group(1))
        column = schema.names[index]
        if "conversion error" in reason:
            message = (
                f"{path}: column {column!r} changed type between reads of the file "
                f"({reason.split(':')[-1].strip()}); was it modified during the audit?"
            )
            # pyarrow typed the column from the first block only, where the in-memory reader sees all of it:
            # an integer column that turns decimal, or one empty at first, is a valid table. The pass starts
            # over with the column one type wider (null or integer, then float, then text), so that every
            # chunk of both passes has the same types; a number column with a stray word ends as text, which
            # the encoder then refuses with the word's row, as in memory.
            value = _INVALID_VALUE.search(reason)
            wider = _wider(schema.field(index).type, value.group(1) if value else "")
            if wider is None:
                return InputError(message)
            types = (*((n, t) for n, t in read.column_types if n != column), (column, wider))
            return _ReadAgain(message, replace(read, column_types=types))
        return InputError(f"{path}: column {column!r}: {reason}")
    return InputError(f"{path}: cannot read it as a table: {reason}")


def _batches(path: Path, read: CsvRead) -> Iterator[Any]:
    """Record batches of ``path`` as pyarrow reads them (a compressed CSV or JSON file decompressed)."""
    import pyarrow as pa

    suffix = format_suffix(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = None
        try:
            parquet = pq.ParquetFile(path)
            yield from parquet.iter_batches(batch_size=65_536)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read it as parquet: {one_line_reason(exc)}") from None
        finally:
            if parquet is not None:
                parquet.close()
        return
    if suffix == ".jsonl":
        yield from _json_batches(path, read)
        return
    import pyarrow.csv as pacsv

    delimiter = "\t" if suffix == ".tsv" else ","
    schema = reader = source = None
    rows = 0
    try:
        source = _arrow_source(path)
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=read.block_bytes),
            # A quoted value may hold line ends (pandas reads them); without this pyarrow splits blocks
            # inside such a value and fails. It cost no measurable time on a 150 MB file.
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            # "NA", "null", "NaN" and the like are missing in text columns too, as pandas reads them; else
            # a label "NA" became a class of its own where the in-memory audit refuses the blank label.
            # pandas' spellings of missing and of booleans, not pyarrow's: pyarrow's miss "None" and "<NA>",
            # and take "0" and "1" for booleans, so a column of 0, 1 and "true" was read as booleans (1 and
            # "true" one value) where pandas keeps the text and the encoder refuses the word.
            convert_options=pacsv.ConvertOptions(
                column_types=dict(read.column_types),
                strings_can_be_null=True,
                null_values=PANDAS_MISSING,
                true_values=["True", "TRUE", "true"],
                false_values=["False", "FALSE", "false"],
            ),
        )
        schema = reader.schema
        for batch in reader:
            yield batch
            rows += batch.num_rows
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise (_codec_error(path, exc) or _csv_error(path, exc, schema, read, rows)) from None
    finally:
        # pyarrow's CSV reader keeps a file it opened by name until the reader is freed, and an error's
        # traceback keeps this frame: the file stayed open until the garbage collector ran.
        if reader is not None:
            reader.close()
        if source is not None:
            source.close()


def _arrow_source(path: Path) -> Any:
    """``path`` opened for pyarrow's CSV and JSON readers, decompressed as it is read when compressed."""
    import pyarrow as pa

    compression = compression_of(path)
    if compression is None:
        return pa.OSFile(str(path))
    # A compressed input stream inflates a bounded piece per read (and the readers take blocks of
    # CsvRead.block_bytes), so a file that expands a thousandfold is read in the same memory as any other.
    return pa.input_stream(str(path), compression=compression)


def _codec_error(path: Path, exc: BaseException) -> InputError | None:
    """The one-line error for a compressed file whose data does not decompress; None for other failures."""
    # pyarrow's codecs fail with a bare OSError (a truncated stream, a bad block or header); its parse
    # errors are ArrowInvalid, a ValueError, and keep their own messages.
    compression = compression_of(path)
    if compression is None or not isinstance(exc, OSError):
        return None
    return InputError(f"{path}: not readable as {compression}-compressed data ({one_line_reason(exc)})")


def _ragged_row(path: Path, expected: int, got: int, text: str, start: int) -> InputError:
    """The error for a CSV row with more or fewer fields than the header, at its row and line if found.

    pyarrow names no row once quoted values may hold line ends (``newlines_in_values``), only the row's
    text; the failing block starts at data row ``start`` (the rows read before it), and the row is searched
    for from there with the csv module, within RAGGED_SCAN_BYTES of the file. (pandas, in memory, names the
    line of a long row but fills a short one with missing values; pyarrow can only refuse or drop a short
    row, and dropping would audit the file without it.)
    """
    found = _find_ragged(path, expected, start)
    what = f"{got} fields where the header has {expected}: {text!r}"
    if found is None:
        return InputError(f"{path}: a row at or after row {start} has {what}")
    row, line = found
    return InputError(f"{path}: row {row} (line {line}) has {what}")


def _find_ragged(path: Path, expected: int, start: int) -> tuple[int, int] | None:
    """(data row, line of the file) of the first row from ``start`` without ``expected`` fields, if found."""
    import csv

    delimiter = "\t" if format_suffix(path) == ".tsv" else ","

    def lines(fh: Any) -> Iterator[str]:
        budget = RAGGED_SCAN_BYTES
        # No line is read past the budget left: a small compressed file can inflate to one endless line.
        while raw := fh.readline(budget + 1):
            budget -= len(raw)
            if budget < 0:
                return
            yield raw.decode("utf-8", errors="replace")

    with open_table(path) as fh:  # decompressed; the budget counts the table's bytes
        reader = csv.reader(lines(fh), delimiter=delimiter)
        row = -1  # the header is the first non-blank record; pyarrow skips blank lines, as here
        try:
            for fields in reader:
                if not fields:
                    continue
                if row >= start and len(fields) != expected:
                    return row, reader.line_num
                row += 1
        except csv.Error:  # a field above csv's size limit, a NUL byte: the approximate place has to do
            return None
    return None


def _json_batches(path: Path, read: CsvRead) -> Iterator[Any]:
    """Record batches of a JSON-lines file, with one schema for every block of every pass.

    pyarrow types a JSON column from the first block and refuses a later block that does not fit it, like
    the CSV reader; unlike it, it cannot read a number as text. So the first read only takes the first block's
    schema (dates and times as text, as pandas keeps them, so that a later word is no error); every read
    after gives that whole schema, and each failure that can be met by a wider type starts over with it (a
    column null at first takes the type of its first value; integers become floats when a decimal turns up,
    a key absent from the first block joins at the end). A column of both numbers and strings, which pandas
    keeps as text in memory, has no pyarrow type: it is refused with its row.
    """
    import pyarrow as pa
    import pyarrow.json as pajson

    rows = 0
    reader = source = None
    try:
        explicit = pa.schema(list(read.column_types)) if read.column_types else None
        source = _arrow_source(path)
        reader = pajson.open_json(
            source,
            read_options=pajson.ReadOptions(block_size=read.block_bytes),
            parse_options=pajson.ParseOptions(
                explicit_schema=explicit, unexpected_field_behavior="error" if explicit else "infer"
            ),
        )
        if explicit is None:
            types = tuple(
                (name, pa.string() if pa.types.is_temporal(kind) else kind)
                for name, kind in zip(reader.schema.names, reader.schema.types, strict=True)
            )
            if not types:
                raise InputError(f"{path}: no rows")
            check_unique_columns(path, [name for name, _ in types])
            text = tuple(name for name, kind in types if pa.types.is_string(kind))
            raise _ReadAgain(
                f"{path}: first block read", replace(read, column_types=types, text_numbers=text)
            )
        for batch in reader:
            yield _text_numbers(path, batch, read)
            rows += batch.num_rows
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise (_codec_error(path, exc) or _json_error(path, exc, read, rows)) from None
    finally:
        if reader is not None:  # as for a CSV: not left open until the garbage collector runs
            reader.close()
        if source is not None:
            source.close()


def _json_error(path: Path, exc: BaseException, read: CsvRead, rows: int) -> InputError:
    """The one-line error (or the wider read to start over with) for a JSON failure after ``rows`` rows."""
    import pyarrow as pa

    reason = one_line_reason(exc)
    if "straddl" in reason:
        return _longer_blocks(path, reason, read)
    # pyarrow numbers a failing row within its block, which starts after the rows already read.
    at = _JSON_ROW.search(reason)
    where = f"row {rows + int(at.group(1))}" if at else f"at or after row {rows}"
    changed = _JSON_CHANGED.search(reason)
    if changed:
        column, old, new = changed.groups()
        name = column.split("/")[0]
        if not column:
            return InputError(f"{path}: {where} is not a JSON object; each line must hold one row's object")
        if "/" in column or {old, new} & {"object", "array"}:
            # A line cut short runs on into the next line's object, which pyarrow reads as a nested value.
            broken = _broken_json_line(path, rows + int(at.group(1))) if at else None
            if broken is not None:
                return InputError(f"{path}: {where} is not valid JSON ({broken})")
            return InputError(f"{path}: column {name!r} holds nested objects ({where}); flatten it first")
        wider = {"number": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}.get(new)
        if old == "null" and wider is not None:
            return _ReadAgain(reason, _with_column(read, name, wider))
        return InputError(
            f"{path}: column {name!r} holds both {_JSON_KINDS.get(old, old)} and {_JSON_KINDS.get(new, new)} "
            f"({where}); a streamed JSON column must hold one type: convert the file to Parquet or CSV"
        )
    convert = _JSON_CONVERT.search(reason)
    if convert and convert.group(1).startswith("int"):
        # A decimal in a column of integers; pyarrow does not say which, so every integer column becomes
        # float (the streamed features are floats in any case, and a label 1.0 is named "1", as in memory).
        types = tuple((n, pa.float64() if pa.types.is_integer(t) else t) for n, t in read.column_types)
        if types != read.column_types:
            return _ReadAgain(reason, replace(read, column_types=types))
    if "unexpected field" in reason:
        return _json_new_key(path, read, rows)
    twice = _JSON_TWICE.search(reason)
    if twice:
        return InputError(f"{path}: {where}: key {twice.group(1)!r} appears twice in one object")
    return InputError(f"{path}: cannot read it as JSON lines ({where}): {reason}")


def _with_column(read: CsvRead, column: str, kind: Any) -> CsvRead:
    """``read`` with ``column`` of type ``kind``, in its place (at the end when new); text may be numbers."""
    import pyarrow as pa

    types = read.column_types
    if column in {name for name, _ in types}:
        types = tuple((name, kind if name == column else old) for name, old in types)
    else:
        types = (*types, (column, kind))
    numbers = (*read.text_numbers, column) if pa.types.is_string(kind) else read.text_numbers
    return replace(read, column_types=types, text_numbers=numbers)


def _text_numbers(path: Path, batch: Any, read: CsvRead) -> Any:
    """``batch`` with its text columns of numbers read as numbers, as pandas reads a JSON file.

    pandas turns a JSON column of strings into numbers when every value parses as one ("5" and "5.0" are
    then one value, and a duplicate); else it stays text. So each text column starts as numbers, and the
    first value that is not one starts the pass over with the column as text.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not read.text_numbers:
        return batch
    columns = list(batch.columns)
    words = []
    for i, name in enumerate(batch.schema.names):
        if name in read.text_numbers:
            try:
                columns[i] = pc.cast(pc.utf8_trim_whitespace(columns[i]), pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                words.append(name)
    if words:
        numbers = tuple(name for name in read.text_numbers if name not in words)
        raise _ReadAgain(f"{path}: text in {words[0]!r}", replace(read, text_numbers=numbers))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _json_new_key(path: Path, read: CsvRead, start: int) -> InputError:
    """A key that the first block lacks appears in the block from row ``start``: read again with it.

    pyarrow's message does not name the key, so that block's lines are read with the json module (the rows
    before it are only counted); the key joins the schema at the end, as pandas adds a late key.
    """
    import json

    known = {name for name, _ in read.column_types}
    budget = read.block_bytes
    row = 0
    with open_table(path) as fh:
        for raw in fh:
            if not raw.strip():
                continue
            if row >= start:
                budget -= len(raw)
                if budget < 0:
                    break
                try:
                    record = json.loads(raw)
                except ValueError:
                    break
                for key, value in record.items() if isinstance(record, dict) else ():
                    if key in known:
                        continue
                    if isinstance(value, (dict, list)):
                        return InputError(
                            f"{path}: column {key!r} holds nested objects (row {row}); flatten it first"
                        )
                    return _ReadAgain(f"{path}: new key {key!r}", _with_column(read, key, _json_type(value)))
            row += 1
    return InputError(f"{path}: a key that earlier rows lack appears at or after row {start}; cannot read it")


def _broken_json_line(path: Path, row: int) -> str | None:
    """Why data row ``row`` (blank lines skipped) of a JSON-lines file is not JSON alone; None if it is."""
    import json

    with open_table(path) as fh:
        lines = (raw for raw in fh if raw.strip())
        for index, raw in enumerate(lines):
            if index == row:
                try:
                    json.loads(raw.strip())
                except ValueError as exc:
                    return one_line_reason(exc)
                return None
    return None


def _json_type(value: Any) -> Any:
    """The column type for a JSON value met first (a null stays null until a value says more)."""
    import pyarrow as pa

    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return pa.bool_()
    return pa.string() if isinstance(value, str) else pa.float64()


T = TypeVar("T")


def read_until_stable(attempt: Callable[[CsvRead], T]) -> T:
    """``attempt(read)`` from the default CsvRead, again with a wider one each time a pass asks for it.

    Every retry widens one column a step or grows the block, so the loop ends.
    """
    read = CsvRead(block_bytes=CSV_BLOCK_BYTES)  # read at call time: tests shrink the blocks
    while True:
        try:
            return attempt(read)
        except _ReadAgain as again:
            read = again.read


def iter_chunks(path: Path, chunk_rows: int, read: CsvRead | None = None) -> Iterator[Any]:
    """``pyarrow.Table`` chunks of exactly ``chunk_rows`` rows (the last one shorter), in file order."""
    import pyarrow as pa

    if chunk_rows < 1:
        raise UsageError(f"chunk_rows must be at least 1 (got {chunk_rows})")
    buffered: list[Any] = []
    count = 0
    offset = 0
    for batch in _batches(path, read or CsvRead(block_bytes=CSV_BLOCK_BYTES)):
        _check_flat(path, batch, offset + count)
        buffered.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(buffered)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            buffered = rest.to_batches()
            count = rest.num_rows
            offset += chunk_rows
    if count:
        yield pa.Table.from_batches(buffered).combine_chunks()


def _check_flat(path: Path, batch: Any, offset: int) -> None:
    """InputError on a struct, list or map value, with its row, as the in-memory loader refuses one."""
    import pyarrow as pa

    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if not pa.types.is_nested(kind):
            continue
        # A null is no object: in memory a column of nulls alone passes (and `_feature_frame` reads it so).
        present = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
        if present.size:
            row = offset + int(present[0])
            raise InputError(f"{path}: column {name!r} holds nested objects (row {row}); flatten it first")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() or format_suffix(path) not in TABLE_SUFFIXES:
        raise InputError(
            f"{path}: streaming needs a .csv, .tsv, .jsonl or .parquet file "
            "(the first three also compressed: .gz, .bz2 or .zst)"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    if compression_of(path) is not None:
        # A file that is not of its compression fails here, before a pass starts, and an empty table inside
        # a valid stream (a few bytes of gzip) is named as empty like an empty file.
        with open_table(path) as fh:
            if not fh.read(1):
                raise InputError(f"{path}: the file is empty once decompressed")


def _check_columns(path: Path, names: list[str], label: str, source_column: str | None) -> None:
    check_unique_columns(path, names)
    if label not in names:
        raise InputError(f"{path}: no label column {label!r} (columns: {', '.join(names[:20])})")
    if source_column is not None and source_column not in names:
        raise InputError(f"{path}: no source column {source_column!r} (columns: {', '.join(names[:20])})")
    if len([n for n in names if n not in (label, source_column)]) == 0:
        raise InputError(f"{path}: no feature columns besides the label")


def _feature_frame(table: Any, drop: tuple[str, ...]) -> pd.DataFrame:
    """The feature columns of a chunk as pandas, numbers always float64 so that every chunk hashes alike."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns: dict[str, Any] = {}
    for name in table.column_names:
        if name in drop:
            continue
        column = _as_text(table.column(name), name)
        kind = column.type
        # Null: a column empty in the whole chunk, numeric until a value says otherwise.
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)
        if any(test(kind) for test in numeric):
            # Unsafe: an integer above 2**53 becomes its nearest float (as pandas' astype does) rather than an
            # error; the row hashes add its low bits back (`_integer_low_bits`).
            column = pc.cast(column, pa.float64(), safe=False)
        elif pa.types.is_nested(kind) or (
            pa.types.is_dictionary(kind) and pa.types.is_nested(kind.value_type)
        ):
            column = pa.nulls(len(column), pa.string())  # only nulls here, or `_check_flat` had refused it
        elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            column = pc.cast(column, pa.string())  # dates, times, decimals: compared as text
        columns[name] = column.to_numpy(zero_copy_only=False) if column.type == pa.float64() else column
    frame = pd.DataFrame(
        {
            name: (value if isinstance(value, np.ndarray) else value.to_pandas())
            for name, value in columns.items()
        }
    )
    frame.index = pd.RangeIndex(table.num_rows)
    return frame


# `_feature_frame` makes integers float64, which holds every integer up to 2**53 only: two larger ones a few
# units apart become one float, and their rows would hash as copies. Their low bits are hashed beside the
# float: integers with the same float64 differ by less than 2**12 (below 2**64), so both together tell every
# pair apart, as the in-memory audit's int64 columns do.
LOW_BITS = 1 << 20


def _integers(table: Any, name: str) -> npt.NDArray[Any] | None:
    """Column ``name`` of ``table`` as integers when pyarrow read it as integers without a gap, else None."""
    import pyarrow as pa

    column = table.column(name)
    if not pa.types.is_integer(column.type) or column.null_count:
        return None
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _increasing(values: npt.NDArray[Any]) -> bool:
    """Whether every value is above the one before (compared, not subtracted: uint64 would wrap)."""
    return bool(np.all(values[1:] > values[:-1]))


def _integer_low_bits(table: Any, columns: list[str]) -> pd.DataFrame:
    """``value mod LOW_BITS`` of each integer column among ``columns`` (0 where missing), for row hashes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    low: dict[str, npt.NDArray[np.int64]] = {}
    for name in columns:
        column = table.column(name)
        if pa.types.is_integer(column.type):
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
            wide = values.astype(
                np.uint64 if values.dtype.kind == "u" else np.int64
            )  # uint8 % 2**20 overflows
            low[f"{name}\x00low"] = np.asarray(wide % LOW_BITS, dtype=np.int64)
    return pd.DataFrame(low, index=pd.RangeIndex(table.num_rows))


def _check_finite_frame(frame: pd.DataFrame, offset: int) -> None:
    """InputError on the first infinite value of a chunk's numeric columns, with its row in the file."""
    for name in frame.columns:
        if frame[name].dtype == np.float64:
            check_finite(frame[name], str(name), offset)


def _as_text(column: Any, name: str) -> Any:
    """``column`` with raw bytes decoded as UTF-8 text, as the in-memory loader decodes them; InputError when
    they are not text (a CSV that is not UTF-8 is read as bytes, a Parquet file may hold binary columns)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if not (
        pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
    ):
        return column
    try:
        return pc.cast(pc.cast(column, pa.large_binary()), pa.large_string())
    except pa.ArrowInvalid:
        raise InputError(
            f"column {name!r} holds bytes that are not UTF-8 text; is this file a table?"
        ) from None


def _label_strings(table: Any, label: str, path: Path, offset: int) -> npt.NDArray[np.object_]:
    """The label column as strings; InputError on a blank label."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        column = _as_text(table.column(label), label)
    except InputError as exc:
        raise named(path, exc) from None
    if pa.types.is_boolean(column.type):
        # pyarrow writes "true"/"false"; pandas, and so the in-memory audit, names the classes as Python does.
        strings = pc.if_else(column, "True", "False")
    else:
        strings = pc.cast(column, pa.string())
    # Missing, NaN and blank text are all "no label".
    blank = pc.fill_null(
        pc.or_(pc.equal(pc.utf8_trim_whitespace(strings), ""), pc.equal(strings, "nan")), True
    )
    if pc.any(blank).as_py():
        first = int(np.flatnonzero(blank.to_numpy(zero_copy_only=False))[0])
        count = int(pc.sum(blank).as_py() or 0)
        raise InputError(
            f"{path}: label column {label!r} is empty on {count} rows of this chunk "
            f"(first: row {offset + first})"
        )
    return np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object)


def _codes(values: npt.NDArray[np.object_], index: dict[str, int]) -> npt.NDArray[np.int32]:
    """Codes of ``values`` in a growing first-seen dictionary (new values get the next codes)."""
    local, uniques = pd.factorize(values)
    mapping = np.empty(len(uniques), dtype=np.int32)
    for i, value in enumerate(uniques.tolist()):
        mapping[i] = index.setdefault(str(value), len(index))
    return np.asarray(mapping[local], dtype=np.int32)


# ---------------------------------------------------------------------------------------------------------
# Pass 1: schema, counts, hashes, a reservoir sample.


@dataclass(slots=True)
class _Reservoir:
    """A uniform sample of at most ``size`` rows: the rows with the smallest random keys seen so far."""

    size: int
    seed: int
    keys: FloatArray = field(default_factory=lambda: np.zeros(0))
    rows: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frame: pd.DataFrame | None = None
    labels: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    rng: np.random.Generator | None = None

    def add(self, frame: pd.DataFrame, labels: npt.NDArray[np.int32], offset: int) -> None:
        """Offer a chunk's rows to the sample."""
        if self.rng is None:
            self.rng = np.random.default_rng(self.seed)
        keys = self.rng.random(len(frame))
        take = np.arange(len(frame))
        if self.keys.size >= self.size:
            take = np.flatnonzero(keys < self.keys.max())
        if take.size == 0:
            return
        chunk = frame.iloc[take].reset_index(drop=True)
        merged = chunk if self.frame is None else pd.concat([self.frame, chunk], ignore_index=True)
        all_keys = np.concatenate([self.keys, keys[take]])
        all_rows = np.concatenate([self.rows, offset + take.astype(np.int64)])
        all_labels = np.concatenate([self.labels, labels[take]])
        if all_keys.size > self.size:
            keep = np.sort(np.argpartition(all_keys, self.size - 1)[: self.size])
            merged = merged.iloc[keep].reset_index(drop=True)
            all_keys, all_rows, all_labels = all_keys[keep], all_rows[keep], all_labels[keep]
        self.frame, self.keys, self.rows, self.labels = merged, all_keys, all_rows, all_labels


@dataclass(slots=True)
class _IdentifierWatch:
    """Columns that may only name rows, judged over the whole file as `load.identifier_columns` judges them.

    A candidate is a column of the first chunk with no missing value that is unique there and either an
    increasing integer sequence or text. Every later chunk must keep that up: no missing value, integers
    above the last one seen, text not seen before (checked at the end on the kept value hashes). The row
    hashes of pass 1 leave the candidates out, and each candidate's own value hashes are kept so that one
    that turns out not to be an identifier is mixed back in (`row_hashes`) without a second pass.
    """

    integer: dict[str, int | None] = field(default_factory=dict)  # candidate -> its last value so far
    text: list[str] = field(default_factory=list)
    hashes: dict[str, list[UInt64Array]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, table: Any, frame: pd.DataFrame) -> _IdentifierWatch:
        """The candidates of the first chunk (``table`` as read, ``frame`` its feature columns)."""
        watch = cls()
        for name in frame.columns:
            if len(watch.integer) + len(watch.text) >= MAX_IDENTIFIER_CANDIDATES:
                break
            series = frame[name]
            if series.isna().any():
                continue
            integers = _integers(table, str(name))
            if integers is not None:
                # Compared as integers: above 2**53 the float64 frame would merge neighbours.
                if _increasing(integers):
                    watch.integer[str(name)] = None
            # _feature_frame made bool and null columns floats: what is left non-numeric is text.
            elif not pd.api.types.is_numeric_dtype(series) and series.nunique() == len(series):
                watch.text.append(str(name))
        watch.hashes = {name: [] for name in watch.candidates}
        return watch

    @property
    def candidates(self) -> list[str]:
        """Every watched column, failed or not."""
        return [*self.integer, *self.text]

    def add(self, table: Any, frame: pd.DataFrame) -> None:
        """Check a chunk's values of each candidate (``table`` as read, ``frame`` as hashed); keep hashes."""
        from bastion.data.audit.integrity import frame_row_hashes

        for name in self.candidates:
            series = frame[name]
            hashed = frame_row_hashes(pd.concat([frame[[name]], _integer_low_bits(table, [name])], axis=1))
            self.hashes[name].append(hashed)
            if name in self.failed:
                continue
            if series.isna().any():
                self.failed.add(name)
            elif name in self.integer:
                values, last = _integers(table, name), self.integer[name]
                if values is None or (last is not None and values[0] <= last) or not _increasing(values):
                    self.failed.add(name)
                else:
                    self.integer[name] = int(values[-1])
            elif np.unique(hashed).size != hashed.size:
                self.failed.add(name)

    def finish(self, sample: pd.DataFrame | None, n_rows: int, n_features: int) -> list[str]:
        """The identifier columns, once every chunk was added; the sample tells text from numbers."""
        from bastion.data.audit.encode import MIXED_NUMERIC_SHARE, numeric_share

        if n_rows < 2:  # one row is unique in every column: nothing tells an identifier apart
            self.failed.update(self.candidates)
        for name in self.text:
            if name in self.failed:
                continue
            every = np.concatenate(self.hashes[name])
            if np.unique(every).size != every.size:
                self.failed.add(name)
            elif sample is not None and numeric_share(sample[name]) >= MIXED_NUMERIC_SHARE:
                self.failed.add(name)  # a measurement with stray words: the encoder names the word
        found = [name for name in self.candidates if name not in self.failed]
        if len(found) == n_features:
            # As in memory: a table of nothing but identifiers is audited on them rather than on nothing.
            self.failed.update(found)
            found = []
        return found

    def row_hashes(self, hashes: UInt64Array) -> UInt64Array:
        """Pass 1's row hashes with the value hashes of the candidates that are not identifiers mixed in."""
        from bastion.data.audit.integrity import frame_row_hashes

        mixed = [name for name in self.candidates if name in self.failed]
        if not mixed:
            return hashes
        columns = {"rest": hashes, **{f"c{i}": np.concatenate(self.hashes[n]) for i, n in enumerate(mixed)}}
        return frame_row_hashes(pd.DataFrame(columns))


@dataclass(slots=True)
class _FirstPass:
    """What pass 1 keeps: O(n) small arrays, counts and the sample."""

    n_rows: int
    feature_columns: list[str]  # without the identifier columns
    identifiers: list[str]  # columns that only name rows, dropped as in memory
    label_is_numeric: bool
    class_index: dict[str, int]  # first-seen codes
    source_index: dict[str, int]
    hashes: UInt64Array
    labels: npt.NDArray[np.int32]  # first-seen codes
    sources: npt.NDArray[np.int32] | None
    sample: _Reservoir
    read: CsvRead  # the types every block fits, for pass 2


def _first_pass(
    path: Path, label: str, source_column: str | None, chunk_rows: int, seed: int, sample_rows: int
) -> _FirstPass:
    """Pass 1, started over whenever a later CSV block does not fit the types the first one set."""
    return read_until_stable(
        lambda read: _first_pass_with(read, path, label, source_column, chunk_rows, seed, sample_rows)
    )


def _first_pass_with(
    read: CsvRead,
    path: Path,
    label: str,
    source_column: str | None,
    chunk_rows: int,
    seed: int,
    sample_rows: int,
) -> _FirstPass:
    from bastion.data.audit.integrity import frame_row_hashes

    class_index: dict[str, int] = {}
    source_index: dict[str, int] = {}
    hashes: list[UInt64Array] = []
    labels: list[npt.NDArray[np.int32]] = []
    sources: list[npt.NDArray[np.int32]] = []
    sample = _Reservoir(sample_rows, seed)
    drop = (label,) if source_column is None else (label, source_column)
    offset = 0
    feature_columns: list[str] = []
    label_is_numeric = False
    watch = _IdentifierWatch()
    for table in iter_chunks(path, chunk_rows, read):
        if offset == 0:
            names = [str(n) for n in table.column_names]
            _check_columns(path, names, label, source_column)
            feature_columns = [n for n in names if n not in drop]
            import pyarrow as pa

            kind = table.column(label).type
            label_is_numeric = bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))
        try:
            frame = _feature_frame(table, drop)
            # Checked here, where the chunk's offset gives the row in the file: an infinite value would
            # otherwise reach the encoder's scale and the models as NaN.
            _check_finite_frame(frame, offset)
        except InputError as exc:
            raise named(path, exc) from None
        codes = _codes(_label_strings(table, label, path, offset), class_index)
        labels.append(codes)
        if offset == 0:
            watch = _IdentifierWatch.start(table, frame)
        watch.add(table, frame)
        hashed = frame.drop(columns=watch.candidates)
        low = _integer_low_bits(table, [str(name) for name in hashed.columns])
        hashes.append(frame_row_hashes(pd.concat([hashed, low], axis=1) if low.shape[1] else hashed))
        if source_column is not None:
            raw = table.column(source_column).to_pandas().astype("string").fillna("<missing>")
            sources.append(_codes(raw.to_numpy(dtype=object), source_index))
        sample.add(frame, codes, offset)
        offset += table.num_rows
    if offset == 0:
        raise InputError(f"{path}: no rows")
    identifiers = watch.finish(sample.frame, offset, len(feature_columns))
    if identifiers and sample.frame is not None:
        sample.frame = sample.frame.drop(columns=identifiers)
    return _FirstPass(
        n_rows=offset,
        feature_columns=[name for name in feature_columns if name not in identifiers],
        identifiers=identifiers,
        label_is_numeric=label_is_numeric,
        class_index=class_index,
        source_index=source_index,
        hashes=watch.row_hashes(np.concatenate(hashes)),
        labels=np.concatenate(labels),
        sources=np.concatenate(sources) if sources else None,
        sample=sample,
        read=read,
    )


def _sorted_classes(class_index: dict[str, int], numeric: bool) -> tuple[list[str], npt.NDArray[np.int32]]:
    """Class names sorted as the in-memory loader sorts them, and first-seen code -> sorted code."""
    names = list(class_index)
    ordered = sorted(names, key=lambda name: (float(name), name)) if numeric else sorted(names)
    position = {name: i for i, name in enumerate(ordered)}
    remap = np.empty(len(names), dtype=np.int32)
    for name, code in class_index.items():
        remap[code] = position[name]
    return ordered, remap


# ---------------------------------------------------------------------------------------------------------
# Fitting on the sample.


@dataclass(frozen=True, slots=True)
class ChunkState:
    """Everything :func:`score_chunk` needs, fitted once on the sample; picklable, no closures."""

    path: str
    label: str
    drop: tuple[str, ...]
    classes: tuple[str, ...]
    encoder: TableEncoder
    channels: tuple[str, ...]
    label_model: Any = None  # a fitted classifier over label codes (``classes_`` may miss rare classes)
    thresholds: FloatArray | None = None  # confident learning's per-class thresholds
    noise_gate: label_channel.NoiseGate | None = None  # the sample's flip rates and calibration (2 classes)
    judged: BoolArray | None = None  # classes with enough sample rows to judge their rows' labels
    sample_rows: IntArray | None = None  # sorted global rows of the sample ...
    sample_probs: FloatArray | None = None  # ... and their out-of-sample probabilities
    pair: tuple[int, int] | None = None  # the dominant (given, suggested) pair found on the sample
    pair_contested: bool = False  # the pair's direction was read from the classes' contested shares
    outlier_model: Any = None
    outlier_cut: float = math.inf
    profiles: dict[str, Any] | None = None  # column -> drift.ColumnProfile of the reference
    carrier_rules: tuple[CarrierRule, ...] = ()  # the triggers the backdoor channel confirmed on the sample


@dataclass(slots=True)
class ChunkResult:
    """One chunk's flags (global 0-based rows) and the partial counters that merge by addition."""

    offset: int
    n_rows: int
    flags: list[RowFlag] = field(default_factory=list)
    drift_counts: dict[str, FloatArray] = field(default_factory=dict)
    label_pairs: dict[tuple[int, int], int] = field(default_factory=dict)
    outlier_flagged: int = 0
    carriers: dict[int, int] = field(default_factory=dict)  # carrier rule index -> rows flagged


def _hgb(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # The label channel's tabular model (label.py), fitted on encoded features: trees do not need the
    # extra standardisation the in-memory channel applies for its neighbours.
    return HistGradientBoostingClassifier(
        max_iter=LABEL_TREES,
        learning_rate=LABEL_LEARNING_RATE,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        random_state=seed,
    )


def _predict(model: Any, x: FloatArray, n_classes: int) -> FloatArray:
    probs = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    probs[:, np.asarray(model.classes_, dtype=np.int64)] = np.asarray(
        model.predict_proba(x), dtype=np.float64
    )
    return probs


def _label_estimator(family: str, n_rows: int, seed: int) -> Any:
    if family == label_channel.KERNEL:
        return label_channel.wide_table_kernel(n_rows, seed)
    return _hgb(seed)


def fit_fold(
    x: FloatArray,
    labels: IntArray,
    test: FloatArray,
    n_classes: int,
    seed: int,
    family: str = label_channel.BOOSTING,
) -> FloatArray:
    """Fit the label model on one fold's training rows and return its probabilities for the test rows."""
    with _one_thread():
        model = _label_estimator(family, x.shape[0], seed).fit(x, labels)
        return _predict(model, test, n_classes)


def fit_label_model(x: FloatArray, labels: IntArray, seed: int, family: str = label_channel.BOOSTING) -> Any:
    """The label model fitted on the whole sample, to score the rows outside it."""
    with _one_thread():
        return _label_estimator(family, x.shape[0], seed).fit(x, labels)


def _submit_folds(
    x: FloatArray,
    labels: IntArray,
    n_classes: int,
    options: AuditOptions,
    backend: _Backend,
    family: str = label_channel.BOOSTING,
) -> Callable[[], FloatArray]:
    """Start the K-fold fits on the backend; the returned call collects the out-of-sample probabilities."""
    folds = label_channel.effective_folds(labels, options.folds)
    ids = label_channel.fold_ids(labels, folds, options.seed)
    probs = np.zeros((labels.shape[0], n_classes), dtype=np.float64)
    handles: list[tuple[BoolArray, Any]] = []
    for fold in range(folds):
        test = ids == fold
        train = ~test
        present = np.unique(labels[train])
        if present.size < 2:
            probs[np.ix_(test, present)] = 1.0
            continue
        handle = backend.submit(fit_fold, x[train], labels[train], x[test], n_classes, options.seed, family)
        handles.append((test, handle))

    def collect() -> FloatArray:
        for test, handle in handles:
            probs[test] = backend.get(handle)
        return probs

    return collect


def cl_thresholds(probs: FloatArray, labels: IntArray, n_classes: int) -> FloatArray:
    """Confident learning's per-class thresholds: the mean probability of class j over rows labelled j."""
    out = np.ones(n_classes, dtype=np.float64)
    for code in range(n_classes):
        members = labels == code
        if members.any():
            out[code] = float(probs[members, code].mean())
    return out


def label_decisions(
    probs: FloatArray,
    labels: IntArray,
    thresholds: FloatArray,
    pair: tuple[int, int] | None,
    contested: bool = False,
    gate: label_channel.NoiseGate | None = None,
) -> tuple[BoolArray, BoolArray, IntArray]:
    """(flagged, confident-learning off-diagonal, suggested class) per row, the label channel's rule.

    A row is off-diagonal in the confident joint when its given class is below its threshold and some other
    class reaches its own; it is flagged as the in-memory channel does: off-diagonal and the given class
    improbable, or the given class very improbable on its own, or inside the dominant pair. A ``contested``
    pair also keeps the relabelled class's own rows, as `label.select_flags` does. With a ``gate``
    (two classes), the noise the sample shows weighs the flags (`label.weigh_by_noise`): it drops those the
    table's own noise explains and adds the rows more likely flipped than not.
    """
    rows = np.arange(labels.shape[0])
    given = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1).astype(np.int64)
    confident = np.where(probs >= thresholds[None, :], probs, -1.0)
    confident[rows, labels] = -1.0
    cl = (given < thresholds[labels]) & (confident.max(axis=1) >= 0.0)
    # As in memory: the overwhelming-evidence rule only for classes the model recognises (the per-class
    # threshold is the mean probability a class's rows get of it), else a weak minority is all flagged.
    recognised = thresholds[labels] >= label_channel.PAIR_GIVEN_RECOGNISED
    strong = (given < label_channel.STRONG_GIVEN_MAX) & recognised
    flagged = (cl & (given < AGREE_GIVEN_MAX)) | strong
    flagged = label_channel.apply_pair(flagged, labels, probs, suggested, pair, contested, strong)
    flagged &= others[rows, suggested] > given
    flagged = label_channel.weigh_by_noise(flagged, labels, probs, gate, pair)
    return flagged, cl, suggested


def _fit_outlier(x: FloatArray, seed: int, indicators: list[int]) -> tuple[Any, float]:
    """The outlier channel's model fitted on the sample, and its cut."""
    from bastion.data.audit.outlier import fit_outlier_model

    with _one_thread():
        model = fit_outlier_model(x, seed, indicators)
    return model, float(model.cut)


def _fit_state(
    path: Path,
    label: str,
    source_column: str | None,
    first: _FirstPass,
    classes: list[str],
    remap: npt.NDArray[np.int32],
    reference: Path | None,
    options: AuditOptions,
    chunk_rows: int,
    backend: _Backend,
) -> tuple[ChunkState, dict[str, Any]]:
    sample = first.sample
    assert sample.frame is not None  # _first_pass raises on an empty file
    try:
        # Indexed by their rows in the file (the sample keeps file order), so that a value the encoder
        # refuses is named by its row in the file, not its place in the sample.
        encoder = TableEncoder.fit(sample.frame.set_axis(pd.Index(sample.rows)))
        x = encoder.transform(sample.frame)
    except InputError as exc:
        raise named(path, exc) from None
    y = remap[sample.labels].astype(np.int64)
    n_classes = len(classes)
    info: dict[str, Any] = {"sample_rows": int(y.size), "encoded_columns": len(encoder.feature_names)}
    state = ChunkState(
        path=str(path),
        label=label,
        drop=(*((label,) if source_column is None else (label, source_column)), *first.identifiers),
        classes=tuple(classes),
        encoder=encoder,
        channels=tuple(options.channels),
    )
    backdoor_job = None
    if BACKDOOR in options.channels:
        # Submitted first: it is the longest fit, and runs in a worker while the label folds run in others.
        part = np.sort(np.random.default_rng(options.seed).permutation(y.size)[:BACKDOOR_SAMPLE_ROWS])
        frame = sample.frame.iloc[part].reset_index(drop=True)
        part_data = AuditData(
            path=str(path),
            kind="tabular",
            features=x[part],
            labels=y[part],
            classes=list(classes),
            feature_names=encoder.feature_names,
            frame=frame,
            encoder=encoder,
        )
        backdoor_job = backend.submit(sample_backdoors, part_data, options)
        info["backdoor_sample_rows"] = int(part.size)
    label_fit = None
    if LABEL in options.channels:
        label_fit = _start_label_fit(x, y, np.zeros(y.size, dtype=bool), n_classes, options, backend)
    if OUTLIER in options.channels:
        # The parent fits the outlier model while the workers fit the label model's folds. Unlike in memory
        # (`run.run_audit`), the outliers are not handed to the label channel. A one-off trial, not kept in a
        # harness, on a synthetic two-class table with 10% injected outliers doubled the clean rows it flagged
        # (18 to 35 of 6,000), the opposite of the in-memory effect, and no tuning run of the streamed
        # channel exists to decide it.
        outlier_model, cut = _fit_outlier(x, options.seed, encoder.indicator_columns())
        state = _replace(state, outlier_model=outlier_model, outlier_cut=cut)
    if label_fit is not None:
        state = _finish_label_fit(state, label_fit, y, sample.rows, backend, info)
    if INTEGRITY in options.channels and reference is not None:
        from bastion.data.audit.drift import profile_frame

        ref = _reference_sample(reference, label, source_column, chunk_rows, options.seed)
        # As in memory (`load.load_reference`), the data's identifier columns are not compared.
        ref = ref.drop(columns=[name for name in first.identifiers if name in ref.columns])
        state = _replace(state, profiles=profile_frame(ref))
        info["reference"] = str(reference)
        info["reference_columns"] = [str(c) for c in ref.columns]
    if backdoor_job is not None:
        found, info["backdoor_summary"] = backend.get(backdoor_job)
        state = _replace(state, carrier_rules=tuple(found))
        carried = _carried(state.carrier_rules, x)
        if label_fit is not None and carried[label_fit.train].any():
            # As in memory, a confirmed trigger's rows are known poison to the label channel: learning from
            # them makes genuine rows of their source class look mislabelled. The label model is fitted
            # again without them (only when a trigger was confirmed, so a clean file pays nothing).
            label_fit = _start_label_fit(x, y, carried, n_classes, options, backend)
            state = _finish_label_fit(state, label_fit, y, sample.rows, backend, info)
    return state, info


@dataclass(frozen=True, slots=True)
class _LabelFit:
    """The label model's fits in flight: the sample rows they learn from, and each family's fits."""

    train: IntArray
    x_train: FloatArray  # the rows the final model learns from, once a family is chosen
    final: Any  # the final fit in flight when there is one family to fit; None until the choice otherwise
    collects: dict[str, Callable[[], FloatArray]]  # model family -> its folds' probabilities
    n_classes: int
    folds: int
    seed: int


def _start_label_fit(
    x: FloatArray, y: IntArray, exclude: BoolArray, n_classes: int, options: AuditOptions, backend: _Backend
) -> _LabelFit:
    """Submit the final label model and its K folds on at most LABEL_TRAIN_ROWS sample rows not excluded.

    A wide table gets both model families, as in memory (`label._families`), and the lower out-of-fold
    log-loss decides in `_finish_label_fit`, which only then fits the chosen family's final model. Fitting
    both finals beside the folds spent a worker on a model thrown away: on the 1M-row scale run (83 encoded
    columns) the three channels took 54.6 s and 1,744 MB with it, 45 to 46 s and 1,697 to 1,733 MB without.
    """
    rng = np.random.default_rng(options.seed)
    train = np.flatnonzero(~exclude).astype(np.int64)
    if train.size > LABEL_TRAIN_ROWS:
        train = np.sort(rng.choice(train, LABEL_TRAIN_ROWS, replace=False))
    x_train, y_train = x[train], y[train]
    families = label_channel.families_for_width(train.size, x.shape[1])
    final = None
    if len(families) == 1:
        final = backend.submit(fit_label_model, x_train, y_train, options.seed, families[0])
    collects: dict[str, Callable[[], FloatArray]] = {}
    for family in families:
        collects[family] = _submit_folds(x_train, y_train, n_classes, options, backend, family)
    folds = int(label_channel.effective_folds(y_train, options.folds))
    return _LabelFit(train, x_train, final, collects, n_classes, folds, options.seed)


def _finish_label_fit(
    state: ChunkState,
    fit: _LabelFit,
    y: IntArray,
    sample_rows: IntArray,
    backend: _Backend,
    info: dict[str, Any],
) -> ChunkState:
    """Collect the folds, set confident learning's thresholds and the dominant pair, keep the model."""
    n_classes, train = fit.n_classes, fit.train
    losses: dict[str, float] = {}
    candidates: dict[str, FloatArray] = {}
    for family, collect in fit.collects.items():
        candidates[family] = collect()
        losses[family] = label_channel.log_loss_of(y[train], candidates[family])
    family = min(losses, key=losses.__getitem__)
    oos = candidates[family]
    final = fit.final
    if final is None:
        final = backend.submit(fit_label_model, fit.x_train, y[train], fit.seed, family)
    info["label_model"] = family
    if len(losses) > 1:
        info["label_log_loss"] = {name: round(loss, 4) for name, loss in losses.items()}
    thresholds = cl_thresholds(oos, y[train], n_classes)
    judged = np.bincount(y[train], minlength=n_classes) >= MIN_CLASS_SAMPLE
    _, cl, suggested = label_decisions(oos, y[train], thresholds, None)
    pair = label_channel.dominant_pair(
        label_channel.pair_counts(y[train][cl], suggested[cl]), n_classes, thresholds
    )
    pair, contested = label_channel.contested_pair(y[train], oos, suggested, cl, pair)
    gate = label_channel.noise_gate(y[train], oos)
    info["label_folds"] = fit.folds
    if gate is not None:
        info["noise_rates"] = gate.rates(list(state.classes))
    info["thresholds"] = {state.classes[c]: round(float(t), 4) for c, t in enumerate(thresholds)}
    info["unjudged_classes"] = [state.classes[c] for c in np.flatnonzero(~judged).tolist()]
    predictable = label_channel.predictable_classes(y[train], oos)
    info["unpredictable_classes"] = [state.classes[c] for c in np.flatnonzero(judged & ~predictable).tolist()]
    return _replace(
        state,
        label_model=backend.get(final),
        thresholds=thresholds,
        noise_gate=gate,
        judged=judged,
        sample_rows=sample_rows[train],
        sample_probs=oos,
        pair=pair,
        pair_contested=contested,
    )


def _carried(carrier_rules: tuple[CarrierRule, ...], x: FloatArray) -> BoolArray:
    """Rows that carry any of the rules' triggers."""
    carried = np.zeros(x.shape[0], dtype=bool)
    for rule in carrier_rules:
        carried |= rule.carries(x)
    return carried


def sample_backdoors(data: AuditData, options: AuditOptions) -> tuple[list[CarrierRule], dict[str, Any]]:
    """The backdoor channel on a sample: the confirmed triggers as carrier rules, and its summary."""
    from bastion.data.audit.backdoor import find_backdoors

    with _one_thread():
        result, found = find_backdoors(data, options)
    summary = dict(result.summary)
    summary["sample_flagged_rows"] = len(result.flags)
    return found, summary


def _replace(state: ChunkState, **changes: Any) -> ChunkState:
    from dataclasses import replace

    return replace(state, **changes)


def _reference_sample(
    path: Path, label: str, source_column: str | None, chunk_rows: int, seed: int
) -> pd.DataFrame:
    """A uniform sample of the reference's feature columns (the label and source are not compared)."""
    _check_path(path)
    return read_until_stable(
        lambda read: _reference_sample_with(read, path, label, source_column, chunk_rows, seed)
    )


def _reference_sample_with(
    read: CsvRead, path: Path, label: str, source_column: str | None, chunk_rows: int, seed: int
) -> pd.DataFrame:
    sample = _Reservoir(REFERENCE_ROWS, seed + 1)
    offset = 0
    for table in iter_chunks(path, chunk_rows, read):
        if offset == 0:
            check_unique_columns(path, [str(n) for n in table.column_names])
        drop = tuple(c for c in (label, source_column) if c is not None and c in table.column_names)
        try:
            frame = _feature_frame(table, drop)
            _check_finite_frame(frame, offset)
        except InputError as exc:
            raise named(path, exc) from None
        sample.add(frame, np.zeros(len(frame), dtype=np.int32), offset)
        offset += table.num_rows
    if sample.frame is None:
        raise InputError(f"{path}: no rows")
    return sample.frame


# ---------------------------------------------------------------------------------------------------------
# Pass 2: the per-chunk work.


def _label_flags(
    state: ChunkState, x: FloatArray, labels: IntArray, offset: int, result: ChunkResult, carried: BoolArray
) -> None:
    assert state.label_model is not None
    assert state.thresholds is not None
    assert state.judged is not None
    assert state.sample_rows is not None
    assert state.sample_probs is not None
    n_classes = len(state.classes)
    probs = _predict(state.label_model, x, n_classes)
    rows = offset + np.arange(labels.shape[0], dtype=np.int64)
    # Rows the model was trained on get their cross-validated probabilities instead, so that every row's
    # evidence comes from a model that never saw it.
    at = np.searchsorted(state.sample_rows, rows)
    inside = at < state.sample_rows.size
    hit = np.zeros(rows.size, dtype=bool)
    hit[inside] = state.sample_rows[at[inside]] == rows[inside]
    probs[hit] = state.sample_probs[at[hit]]
    valid = labels >= 0
    safe = np.where(valid, labels, 0)
    flagged, _, suggested = label_decisions(
        probs, safe, state.thresholds, state.pair, state.pair_contested, state.noise_gate
    )
    # A trigger's carriers are the backdoor channel's: their labels are planted, not mistaken.
    flagged &= valid & state.judged[safe] & ~carried
    index = np.arange(labels.shape[0])
    given_p = probs[index, safe]
    scores = np.clip(0.5 + 0.5 * (probs[index, suggested] - given_p), 0.0, 1.0)
    classes = state.classes
    gate = state.noise_gate
    chance = None if gate is None else gate.flip_chance(safe, probs)
    for i in np.flatnonzero(flagged).tolist():
        g, s = int(safe[i]), int(suggested[i])
        result.label_pairs[(g, s)] = result.label_pairs.get((g, s), 0) + 1
        source = "cross-validated model" if hit[i] else "model trained on a sample without this row"
        reason = (
            f"label {classes[g]!r} but a {source} gives {classes[g]!r} {probs[i, g]:.2f} "
            f"and {classes[s]!r} {probs[i, s]:.2f}"
        )
        if chance is not None:
            reason += label_channel.flip_chance_text(float(chance[i]))
        result.flags.append(
            RowFlag(int(rows[i]), LABEL, CHECK, float(scores[i]), reason, suggested_label=classes[s])
        )


def _backdoor_flags(
    state: ChunkState, x: FloatArray, labels: IntArray, offset: int, result: ChunkResult
) -> BoolArray:
    """Flag the rows that carry a trigger confirmed on the sample (each row once, by the first rule)."""
    taken = np.zeros(x.shape[0], dtype=bool)
    for index, rule in enumerate(state.carrier_rules):
        shares = rule.shares(x)
        hits = np.flatnonzero((shares >= rule.min_share) & ~taken)
        taken[hits] = True
        suggested = _unstamped_answers(state, rule, x[hits])
        for i, suggestion in zip(hits.tolist(), suggested, strict=True):
            share = float(shares[i])
            given = state.classes[labels[i]] if labels[i] >= 0 else "<missing>"
            carries = carries_text(rule.pattern, share, state.encoder)
            reason = f"label '{given}'; {carries}, {rule.what} (measured on a sample)"
            score = rule.row_score(share)
            result.flags.append(RowFlag(offset + i, BACKDOOR, rule.check, score, reason, suggestion))
        if hits.size:
            result.carriers[index] = result.carriers.get(index, 0) + int(hits.size)
    return taken


def _unstamped_answers(state: ChunkState, rule: CarrierRule, x: FloatArray) -> list[str | None]:
    """Per carrier, the label model's answer once the trigger is removed (None: the target, or no model).

    In memory the backdoor channel's own network answers; here the label model does, which was fitted
    without the sample's carriers, so it answers for the class a carrier came from.
    """
    if state.label_model is None or x.shape[0] == 0:
        return [None] * x.shape[0]
    answers = _predict(state.label_model, rule.unstamp(x), len(state.classes)).argmax(axis=1)
    target = rule.pattern.target
    return [state.classes[a] if a != target else None for a in answers.tolist()]


def _outlier_flags(state: ChunkState, x: FloatArray, offset: int, result: ChunkResult) -> None:
    """The outlier channel's two cuts (isolation forest, rare feature values) and its wording."""
    from bastion.data.audit import outlier
    from bastion.data.audit.stats import squash

    model = state.outlier_model
    forest_z, feature_z = model.parts(x)
    by_forest = forest_z >= model.forest_cut
    by_feature = feature_z >= model.feature_cut
    names = state.encoder.feature_names
    for i in np.flatnonzero(by_forest | by_feature).tolist():
        words = outlier.describe_row(names, model, x[i], model.feature_z(x[i : i + 1])[0], state.encoder)
        if by_forest[i]:
            check, z, cut = outlier.CHECK_FOREST, float(forest_z[i]), float(model.forest_cut)
            reason = f"far from the other rows (isolation-forest robust z {z:.1f}): {words}"
        else:
            check, z, cut = outlier.CHECK_FEATURE, float(feature_z[i]), float(model.feature_cut)
            reason = f"rare feature values (robust z {z:.1f}): {words}"
        score = float(squash(np.array([z]), cut)[0])
        result.flags.append(RowFlag(offset + i, OUTLIER, check, score, reason))
        result.outlier_flagged += 1


def _one_thread() -> Any:
    """One BLAS/OpenMP thread: parallelism comes from the workers, and OpenMP teams that outnumber the
    free cores spin-wait (a gradient-boosted fit ran ten times slower on a loaded two-core machine)."""
    # threadpoolctl limits only the runtimes already loaded: import the estimators (and their OpenMP) first.
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def score_chunk(state: ChunkState, table: Any, offset: int) -> ChunkResult:
    """Encode and score one chunk (a ``pyarrow.Table`` or a DataFrame); rows are ``offset`` + position."""
    if isinstance(table, pd.DataFrame):
        import pyarrow as pa

        table = pa.Table.from_pandas(table, preserve_index=False)
    import pyarrow as pa

    with _one_thread():
        result = _score(state, table, offset)
    # Hand freed Arrow buffers back to the system: a worker scores many chunks and would keep the peak.
    pa.default_memory_pool().release_unused()
    return result


def _score(state: ChunkState, table: Any, offset: int) -> ChunkResult:
    try:
        return _score_named(state, table, offset)
    except InputError as exc:
        raise named(state.path, exc) from None


def _score_named(state: ChunkState, table: Any, offset: int) -> ChunkResult:
    path = Path(state.path)
    result = ChunkResult(offset=offset, n_rows=int(table.num_rows))
    frame = _feature_frame(table, state.drop)
    strings = _label_strings(table, state.label, path, offset)
    labels = pd.Index(list(state.classes)).get_indexer(strings).astype(np.int64)
    need_x = (
        (LABEL in state.channels and state.label_model is not None)
        or (OUTLIER in state.channels and state.outlier_model is not None)
        or bool(state.carrier_rules)
        # A column the sample found numeric but read as text (a later block held a word): encoding checks
        # its values, which the integrity channel alone would otherwise take as they are, word and all.
        or not all(pd.api.types.is_numeric_dtype(frame[column]) for column in state.encoder.numeric)
    )
    if need_x:
        # Indexed by the rows' place in the file for this call only (row hashes and drift counts read the
        # frame by position from 0): the encoder names a value it refuses by its index.
        x = state.encoder.transform(frame.set_axis(pd.RangeIndex(offset, offset + len(frame))))
        carried = _backdoor_flags(state, x, labels, offset, result)
        if LABEL in state.channels and state.label_model is not None:
            _label_flags(state, x, labels, offset, result, carried)
        if OUTLIER in state.channels and state.outlier_model is not None:
            _outlier_flags(state, x, offset, result)
    if state.profiles:
        for column, profile in state.profiles.items():
            if column in frame.columns:
                result.drift_counts[column] = profile.counts(frame[column])
    return result


# ---------------------------------------------------------------------------------------------------------
# Backends: serial, a process pool, Ray. Each yields chunk results in any order.


class _Backend:
    """Where plain functions run: here, in a process pool or on Ray; ``submit`` then ``get``."""

    def __init__(self, kind: str, workers: int) -> None:
        self.kind = kind
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._ray: Any = None
        self._started_ray = False
        self._remote: dict[Callable[..., Any], Any] = {}

    def __enter__(self) -> _Backend:
        if self.kind == "ray":
            try:
                import ray
            except ImportError:
                raise UsageError("backend 'ray' needs Ray: pip install 'bastion-ai[ray]'") from None
            self._ray = ray
            if not ray.is_initialized():
                self._start_ray()
        elif self.workers > 1:
            import multiprocessing

            # "spawn": the parent runs pyarrow and OpenMP thread pools, which fork does not copy safely.
            self._pool = process_pool(self.workers, multiprocessing.get_context("spawn"))
        return self

    def _start_ray(self) -> None:
        """Connect to the cluster RAY_ADDRESS names, or start a local Ray of ``workers`` CPUs."""
        ray = self._ray
        address = os.environ.get("RAY_ADDRESS", "").strip()
        # Ray reads RAY_ADDRESS itself, and refuses num_cpus when it names a running cluster (whose own
        # resources then decide); "local" asks for a new local Ray, as no address does.
        existing = address not in ("", "local")
        sizing = {} if existing else {"num_cpus": self.workers}
        try:
            # WARNING: Ray logs its connection attempts at INFO on stderr, ahead of our own one-line error.
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **sizing)
        except Exception as exc:  # Ray raises ValueError, ConnectionError, RuntimeError... as it goes
            if ray.is_initialized():
                ray.shutdown()
            what = (
                f"connect to the Ray cluster at {address!r} (RAY_ADDRESS)"
                if existing
                else "start a local Ray"
            )
            raise UsageError(f"backend 'ray': cannot {what}: {one_line_reason(exc)}") from None
        self._started_ray = True

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if self._pool is not None:
            # On Ctrl-C the chunks in flight are not waited for: their results would be thrown away.
            stop_pool(self._pool, interrupted=kind is not None and issubclass(kind, KeyboardInterrupt))
        if self._started_ray:
            self._ray.shutdown()

    def put(self, value: Any) -> Any:
        """A handle to a large argument shared by many calls (Ray stores it once)."""
        return self._ray.put(value) if self._ray is not None else value

    def submit(self, function: Callable[..., Any], *args: Any) -> Any:
        """Start ``function(*args)``; serially this runs it at once."""
        if self._ray is not None:
            if function not in self._remote:
                # One remote wrapper per function: Ray exports the function to its workers once.
                self._remote[function] = self._ray.remote(num_cpus=1)(function)
            return self._remote[function].remote(*args)
        if self._pool is not None:
            return self._pool.submit(function, *args)
        return function(*args)

    def get(self, handle: Any) -> Any:
        """The result of a submitted call."""
        if self._ray is not None:
            return self._ray.get(handle)
        if isinstance(handle, Future):
            try:
                return handle.result()
            except BrokenProcessPool:
                raise UsageError(
                    "a worker process of the streaming audit died (out of memory, or a script that calls "
                    "stream_audit without an `if __name__ == '__main__':` guard); retry with workers=1"
                ) from None
        return handle

    def map_chunks(self, state: ChunkState, chunks: Iterator[tuple[Any, int]]) -> Iterator[ChunkResult]:
        """Score every chunk with a bounded number in flight, results in chunk order."""
        shared = self.put(state)
        pending: list[Any] = []
        for table, offset in chunks:
            pending.append(self.submit(score_chunk, shared, table, offset))
            while len(pending) >= self.workers * IN_FLIGHT_PER_WORKER:
                yield self.get(pending.pop(0))
        for handle in pending:
            yield self.get(handle)


# ---------------------------------------------------------------------------------------------------------
# Merging and the result.


def _minimal_data(
    path: Path, n_rows: int, labels: IntArray, classes: list[str], frame: pd.DataFrame | None = None
) -> AuditData:
    """AuditData without features: the shape the integrity and label helpers read labels and paths from."""
    return AuditData(
        path=str(path),
        kind="tabular",
        features=np.zeros((n_rows, 0), dtype=np.float64),
        labels=labels,
        classes=classes,
        feature_names=[],
        frame=frame,
    )


def _severity(code: str) -> Severity:
    return get_rule(code).severity


def _drift_channel(
    path: Path,
    state: ChunkState,
    counts: dict[str, FloatArray],
    current: list[str],
    info: dict[str, Any],
    sample: pd.DataFrame | None,
) -> tuple[list[Finding], dict[str, Any]]:
    """Drift findings from the summed chunk counts, worded by the in-memory integrity channel."""
    from bastion.data.audit.drift import compare, is_numeric_column, profile_is_numeric, schema_changes
    from bastion.data.audit.integrity import drift_findings

    assert state.profiles is not None
    # The sample stands for the file in telling number columns from text, as it does for the encoder.
    numeric_current = set() if sample is None else {str(c) for c in sample if is_numeric_column(sample[c])}
    numeric_reference = {c for c, profile in state.profiles.items() if profile_is_numeric(profile)}
    schema = schema_changes(list(state.profiles), current, numeric_reference, numeric_current)
    report = [compare(state.profiles[c], counts[c]) for c in state.profiles if c in counts]
    return drift_findings(str(path), info.get("reference"), report, schema)


def _label_result(
    path: Path,
    n_rows: int,
    labels: IntArray,
    classes: list[str],
    flags: list[RowFlag],
    pairs: dict[tuple[int, int], int],
    state: ChunkState,
    info: dict[str, Any],
) -> ChannelResult:
    ordered = sorted(pairs.items(), key=lambda item: -item[1])
    result = ChannelResult(
        LABEL,
        flags=flags,
        summary={
            "n_flagged": len(flags),
            "pairs": [{"given": classes[g], "suggested": classes[s], "rows": n} for (g, s), n in ordered],
            "model": info.get("label_model", label_channel.BOOSTING),
            "model_log_loss": info.get("label_log_loss"),
            "folds": info.get("label_folds"),
            "neighbours": 0,
            "noise_rates": info.get("noise_rates"),
            "dominant_pair": None
            if state.pair is None
            else {"given": classes[state.pair[0]], "suggested": classes[state.pair[1]]},
            "streamed": {
                "sample_rows": info.get("sample_rows"),
                "thresholds": info.get("thresholds"),
                "unjudged_classes": info.get("unjudged_classes"),
            },
            "unpredictable_classes": info.get("unpredictable_classes", []),
        },
    )
    if info.get("unpredictable_classes"):
        result.findings.append(label_channel.unpredictable_finding(str(path), info["unpredictable_classes"]))
    unjudged = info.get("unjudged_classes")
    if unjudged is not None and len(unjudged) == len(classes):
        result.summary["skipped"] = label_channel.too_small_note()
    if flags:
        result.findings.append(
            _label_finding(path, n_rows, classes, ordered, state.pair, len(flags), info.get("noise_rates"))
        )
    return result


def _label_finding(
    path: Path,
    n_rows: int,
    classes: list[str],
    pairs: list[tuple[tuple[int, int], int]],
    pair: tuple[int, int] | None,
    total: int,
    rates: dict[str, float] | None = None,
) -> Finding:
    """The label channel's finding, worded for the streamed evidence (a model, no neighbour vote)."""
    share = total / max(n_rows, 1)
    message = f"{total} rows ({share:.1%}) carry a label that a model trained without them contradicts"
    members: tuple[str, ...] = ()
    if pair is not None:
        g, s = pair
        message += (
            f"; {dict(pairs).get(pair, 0)} of them are labelled {classes[g]!r} but look like {classes[s]!r}, "
            "one dominant class pair, the signature of a targeted flip"
        )
        members = (f"class:{classes[g]}",)
    evidence = label_channel.finding_evidence(classes, pairs, total, rates)
    return Finding.make(
        rules.LABEL_NOISE, _severity(rules.LABEL_NOISE), message, Location(str(path), members), evidence
    )


def _backdoor_result(
    path: Path, flags: list[RowFlag], carriers: dict[int, int], state: ChunkState, info: dict[str, Any]
) -> ChannelResult:
    """The backdoor channel over the whole file: the sample's summary, a finding per trigger with carriers."""
    sample_rows = info.get("backdoor_sample_rows", 0)
    summary = dict(info.get("backdoor_summary", {}))
    summary["streamed"] = {"sample_rows": sample_rows, "flagged_rows": len(flags)}
    result = ChannelResult(BACKDOOR, flags=flags, summary=summary)
    for index, rule in enumerate(state.carrier_rules):
        rows = carriers.get(index, 0)
        if rows == 0:
            continue
        where = f"on a uniform sample of {sample_rows} rows, "
        finding = rule.finding(str(path), rows, state.encoder, where, {"sample_rows": sample_rows})
        result.findings.append(finding)
    return result


def _outlier_result(path: Path, n_rows: int, flags: list[RowFlag], state: ChunkState) -> ChannelResult:
    result = ChannelResult(
        OUTLIER,
        flags=flags,
        summary={
            "n_flagged": len(flags),
            "cut": state.outlier_cut,
            "model": type(state.outlier_model).__name__,
        },
    )
    if flags:
        share = len(flags) / max(n_rows, 1)
        result.findings.append(
            Finding.make(
                rules.OUTLIERS,
                _severity(rules.OUTLIERS),
                f"{len(flags)} rows ({share:.1%}) lie far from the rest of the data",
                Location(str(path)),
                {"rows": len(flags), "cut": round(state.outlier_cut, 3)},
            )
        )
    return result


def stream_audit(
    path: Path,
    label: str,
    *,
    source_column: str | None = None,
    reference: Path | None = None,
    options: AuditOptions | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    backend: str = "local",
    workers: int = 2,
    sample_rows: int = SAMPLE_ROWS,
) -> AuditResult:
    """Audit a CSV or Parquet file in chunks with bounded memory (all four channels)."""
    from bastion.data.audit.integrity import run_integrity_channel, source_summary

    options = options or AuditOptions()
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (expected one of: {', '.join(BACKENDS)})")
    if workers < 1:
        raise UsageError(f"workers must be at least 1 (got {workers})")
    started = time.perf_counter()
    path = Path(path)
    _check_path(path)
    before = file_state(path)
    by_channel: dict[str, list[RowFlag]] = {LABEL: [], OUTLIER: [], BACKDOOR: []}
    pairs: dict[tuple[int, int], int] = {}
    carriers: dict[int, int] = {}
    drift_counts: dict[str, FloatArray] = {}
    seen = 0
    if backend == "local":
        # More processes than cores only add copies of the models and chunks in flight: 16 workers on 2
        # cores took 22 s where 2 took 5 s. (Ray schedules by its own resources.)
        workers = min(workers, available_cores())
    # The backend starts before pass 1, so that a missing Ray or a cluster it cannot reach is said at once
    # rather than after a first pass over a large file.
    with _Backend(backend, workers) as runner:
        first = _first_pass(path, label, source_column, chunk_rows, options.seed, sample_rows)
        classes, remap = _sorted_classes(first.class_index, first.label_is_numeric)
        if len(classes) < 2:
            only = classes[0] if classes else "nothing"
            raise InputError(
                f"{path}: label column {label!r} has a single class ({only!r}); an audit needs two"
            )
        labels = remap[first.labels].astype(np.int64)
        state, info = _fit_state(
            path, label, source_column, first, classes, remap, reference, options, chunk_rows, runner
        )
        chunks = (
            (table, i * chunk_rows) for i, table in enumerate(iter_chunks(path, chunk_rows, first.read))
        )
        for part in runner.map_chunks(state, chunks):
            seen += part.n_rows
            for flag in part.flags:
                by_channel[flag.channel].append(flag)
            for key, count in part.label_pairs.items():
                pairs[key] = pairs.get(key, 0) + count
            for index, count in part.carriers.items():
                carriers[index] = carriers.get(index, 0) + count
            for column, counts in part.drift_counts.items():
                drift_counts[column] = drift_counts[column] + counts if column in drift_counts else counts
    if seen != first.n_rows:
        raise InputError(f"{path}: the file changed while it was audited ({first.n_rows} then {seen} rows)")
    if file_state(path) != before:
        # Rewritten in place with as many rows: pass 2 scored other rows than pass 1 hashed and sampled.
        raise InputError(f"{path}: the file changed while it was audited; audit it again once it is written")
    result = AuditResult(path=str(path), kind="tabular", n_rows=first.n_rows, classes=list(classes))
    result.ignored_columns = list(first.identifiers)
    all_flags: list[RowFlag] = []
    for name in options.channels:
        channel: ChannelResult
        if name == LABEL:
            flags = sorted(by_channel[LABEL], key=lambda f: f.row)
            channel = _label_result(path, first.n_rows, labels, classes, flags, pairs, state, info)
        elif name == OUTLIER:
            channel = _outlier_result(
                path, first.n_rows, sorted(by_channel[OUTLIER], key=lambda f: f.row), state
            )
        elif name == BACKDOOR:
            flags = sorted(by_channel[BACKDOOR], key=lambda f: f.row)
            channel = _backdoor_result(path, flags, carriers, state, info)
        elif name == INTEGRITY:
            hashes = pd.DataFrame({"row_hash": first.hashes})
            data = _minimal_data(path, first.n_rows, labels, classes, hashes)
            channel = run_integrity_channel(data, options, None)
            if state.profiles is not None:
                findings, summary = _drift_channel(
                    path, state, drift_counts, first.feature_columns, info, first.sample.frame
                )
                channel.findings.extend(findings)
                channel.summary["drift"] = summary
        else:
            channel = ChannelResult(name, summary={"skipped": "not available when streaming"})
        channel.summary["streamed"] = {**channel.summary.get("streamed", {}), "chunk_rows": chunk_rows}
        result.channels[name] = channel
        all_flags.extend(channel.flags)
        result.findings.extend(channel.findings)
    result.rows = join_flags(all_flags)
    if first.sources is not None:
        names = np.empty(len(first.source_index), dtype=object)
        for name, code in first.source_index.items():
            names[code] = name
        data = _minimal_data(path, first.n_rows, labels, classes)
        data.sources = names[first.sources].astype(str)
        result.sources, source_findings = source_summary(data, result.removed_rows)
        result.findings.extend(source_findings)
    result.findings = sort_findings(result.findings)
    result.duration_s = time.perf_counter() - started
    return result
