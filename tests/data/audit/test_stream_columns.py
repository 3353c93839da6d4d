"""A streamed audit treats identifier columns, large and small integers and byte columns as in memory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# pytest puts this directory on sys.path (rootdir-relative test modules, no __init__.py).
from test_stream_hardening import CHUNK, FAST, ROWS, small_blocks  # noqa: F401

from bastion.cli.main import main
from bastion.data.audit.base import INTEGRITY
from bastion.data.audit.load import load_dataset
from bastion.data.audit.run import AuditResult, run_audit
from bastion.data.audit.stream import MAX_IDENTIFIER_CANDIDATES, stream_audit
from bastion.errors import InputError


def _table(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, rows)
    frame = pd.DataFrame(np.round(rng.normal(0.0, 1.0, (rows, 2)) + 2.0 * y[:, None], 4), columns=["a", "b"])
    frame["label"] = np.where(y == 0, "neg", "pos")
    return frame


def _with_copy(frame: pd.DataFrame, source: int = 5, copy: int = 1_300) -> pd.DataFrame:
    """Row ``copy`` made a copy of row ``source`` in every column but the identifiers."""
    frame.loc[copy, ["a", "b", "label"]] = frame.loc[source, ["a", "b", "label"]]
    return frame


def _streamed(path: Path) -> AuditResult:
    return stream_audit(path, "label", options=FAST, chunk_rows=CHUNK, workers=1)


def _in_memory(path: Path) -> AuditResult:
    return run_audit(load_dataset(path, "label"), FAST)


def _duplicates(result: AuditResult) -> list[int]:
    return sorted(f.row for f in result.channels[INTEGRITY].flags if f.check == "exact-duplicate")


def _both(path: Path) -> tuple[AuditResult, AuditResult]:
    return _streamed(path), _in_memory(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_integer_and_text_identifiers_are_dropped_and_the_copy_is_found(tmp_path: Path, suffix: str) -> None:
    # Before, the stream hashed the id into every row: the copy at row 1,300 was no duplicate there.
    frame = _with_copy(_table())
    frame.insert(0, "id", np.arange(ROWS) + 1_000)
    frame["key"] = [f"user-{i:05d}" for i in np.random.default_rng(1).permutation(ROWS)]
    path = tmp_path / f"d{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    streamed, memory = _both(path)
    assert streamed.ignored_columns == memory.ignored_columns == ["id", "key"]
    assert _duplicates(streamed) == _duplicates(memory) == [1_300]


def test_an_integer_sequence_that_restarts_in_a_later_chunk_is_a_feature(tmp_path: Path) -> None:
    # Increasing and unique over the first chunk (400 rows), repeated from row 1,000 on: not an identifier,
    # so its values count again, and the copy at 1,005 (same "n" as row 5) is a duplicate in both.
    frame = _with_copy(_table(), copy=1_005)
    frame["n"] = np.arange(ROWS) % 1_000
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    streamed, memory = _both(path)
    assert streamed.ignored_columns == memory.ignored_columns == []
    assert _duplicates(streamed) == _duplicates(memory) == [1_005]
    # A copy whose "n" differs is no duplicate once "n" is a feature again.
    frame.loc[1_005, "n"] = 77
    frame.to_csv(path, index=False)
    assert _duplicates(_streamed(path)) == _duplicates(_in_memory(path)) == []


@pytest.mark.parametrize("later", ["repeat", "missing", "smaller"])
def test_a_candidate_that_fails_later_is_mixed_back_into_the_row_hashes(tmp_path: Path, later: str) -> None:
    frame = _with_copy(_table(), copy=1_300)
    frame["key"] = [f"k{i}" for i in range(ROWS)]
    frame["id"] = np.arange(ROWS)
    if later == "repeat":
        frame.loc[1_300, "key"] = frame.loc[5, "key"]  # the text was unique until the last chunk
    elif later == "missing":
        frame.loc[1_300, "key"] = None
    else:
        frame.loc[1_300, "id"] = 3  # the sequence goes back once
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    streamed, memory = _both(path)
    failed = "id" if later == "smaller" else "key"
    assert streamed.ignored_columns == memory.ignored_columns == [c for c in ("key", "id") if c != failed]
    expected = [1_300] if later == "repeat" else []  # the failed column differs between 5 and 1,300 otherwise
    assert _duplicates(streamed) == _duplicates(memory) == expected


def test_a_mostly_numeric_text_column_is_no_identifier(tmp_path: Path) -> None:
    frame = _table()
    frame["m"] = [str(i * 1.5) for i in range(ROWS)]
    frame.loc[3, "m"] = "n/a-ish"  # one stray word in unique numbers: a measurement, named by the encoder
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    expected = "column 'm' mixes numbers and text (row 3: 'n/a-ish')"
    for audit in (_streamed, _in_memory):
        with pytest.raises(InputError, match=re.escape(expected)):
            audit(path)


def test_a_table_of_identifiers_only_is_audited_on_them(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": np.arange(ROWS), "label": np.where(np.arange(ROWS) % 3 == 0, "x", "y")})
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    streamed, memory = _both(path)
    assert streamed.ignored_columns == memory.ignored_columns == []


def test_only_so_many_candidates_are_watched(tmp_path: Path) -> None:
    frame = _table()
    names = [f"t{i}" for i in range(MAX_IDENTIFIER_CANDIDATES + 1)]
    for i, name in enumerate(names):
        frame[name] = [f"{name}-{j}-{i}" for j in range(ROWS)]
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    # The first ones in column order; the last stays a (useless) categorical feature.
    assert _streamed(path).ignored_columns == names[:MAX_IDENTIFIER_CANDIDATES]


def test_the_reference_does_not_compare_identifiers(tmp_path: Path) -> None:
    frame = _table()
    frame["id"] = np.arange(ROWS)
    data, reference = tmp_path / "d.csv", tmp_path / "r.csv"
    frame.to_csv(data, index=False)
    shifted = frame.copy()
    shifted["id"] += 10**6  # the ids of another batch: a different range, not drift
    shifted.to_csv(reference, index=False)
    streamed = stream_audit(data, "label", options=FAST, chunk_rows=CHUNK, workers=1, reference=reference)
    drift = streamed.channels[INTEGRITY].summary["drift"]
    assert "id" not in json.dumps(drift)
    assert "a" in json.dumps(drift)  # the features are compared


def test_the_json_report_names_the_ignored_columns_when_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _with_copy(_table())
    frame.insert(0, "id", np.arange(ROWS))
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", "1000")
    code = main(
        ["data", "audit", str(path), "--label", "label", "--channels", "integrity", "--format", "json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code in (0, 1)
    assert report["dataset"]["ignored_columns"] == ["id"]
    assert report["channels"]["integrity"]["streamed"]
    assert [row["row"] for row in report["rows"] if "exact-duplicate" in json.dumps(row)] == [1_300]
    main(["data", "audit", str(path), "--label", "label", "--channels", "integrity"])
    assert "left out as row identifiers (unique on every row): id" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# Integers above 2**53, which a float64 cannot all hold.

BIG = 2**60


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_large_integers_one_apart_are_not_copies(tmp_path: Path, suffix: str) -> None:
    frame = _table()
    rng = np.random.default_rng(3)
    frame["h"] = (BIG + rng.integers(0, 2**40, ROWS)).astype(np.int64)  # unsorted: a feature, not an id
    frame.loc[1_300, ["a", "b", "label"]] = frame.loc[5, ["a", "b", "label"]]
    frame.loc[1_300, "h"] = frame.loc[5, "h"] + 1  # the same float64, another integer
    frame.loc[1_400] = frame.loc[6]  # a true copy, big integer included
    path = tmp_path / f"d{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    assert float(frame.loc[1_300, "h"]) == float(frame.loc[5, "h"])
    streamed, memory = _both(path)
    assert streamed.ignored_columns == memory.ignored_columns == []
    assert _duplicates(streamed) == _duplicates(memory) == [1_400]


def test_a_sequence_of_large_integers_one_apart_is_an_identifier(tmp_path: Path) -> None:
    # Snowflake-like ids: sorted, above 2**53, neighbours one apart (same float64): increasing as integers.
    frame = _with_copy(_table())
    frame.insert(0, "id", BIG + np.arange(ROWS, dtype=np.int64))
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    streamed, memory = _both(path)
    assert streamed.ignored_columns == memory.ignored_columns == ["id"]
    assert _duplicates(streamed) == _duplicates(memory) == [1_300]


@pytest.mark.parametrize("kind", [pa.uint8(), pa.int16(), pa.uint64()])
def test_small_and_unsigned_integer_types_hash_and_dedupe_as_in_memory(
    tmp_path: Path, kind: pa.DataType
) -> None:
    # uint8 values took the low-bits hash to an overflow (an internal error) before it widened them.
    frame = _table()
    frame["n"] = np.random.default_rng(4).integers(0, 200, ROWS)
    frame.loc[1_400] = frame.loc[6]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("n"), "n", table.column("n").cast(kind))
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    assert _duplicates(_streamed(path)) == _duplicates(_in_memory(path)) == [1_400]


# ---------------------------------------------------------------------------------------------------------
# Parquet byte-string columns: text when they are UTF-8, refused by name when they are not.


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary(), pa.binary(3)])
def test_utf8_bytes_are_text_both_ways(tmp_path: Path, kind: pa.DataType) -> None:
    frame = _table()
    words = np.random.default_rng(5).choice(["red", "tan", "sky"], ROWS)
    frame.loc[1_400] = frame.loc[6]
    words[1_400] = words[6]
    table = pa.Table.from_pandas(frame, preserve_index=False).append_column(
        "colour", pa.array([w.encode() for w in words], kind)
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    streamed, memory = _both(path)
    assert _duplicates(streamed) == _duplicates(memory) == [1_400]
    assert "colour" in load_dataset(path, "label").encoder.categorical  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", [pa.binary(), pa.binary(4)])
def test_bytes_that_are_not_text_are_refused_by_name_both_ways(tmp_path: Path, kind: pa.DataType) -> None:
    # A fixed-size binary column reached the encoder in memory (UnicodeDecodeError) and pyarrow's cast when
    # streamed (ArrowInvalid): both were internal errors.
    table = pa.Table.from_pandas(_table(), preserve_index=False).append_column(
        "blob", pa.array([bytes([i % 256]) * 4 for i in range(ROWS)], kind)
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    expected = f"{path}: column 'blob' holds bytes that are not UTF-8 text; is this file a table?"
    for audit in (_streamed, _in_memory):
        with pytest.raises(InputError) as caught:
            audit(path)
        assert str(caught.value) == expected


def test_a_label_column_that_is_not_utf8_is_named_with_the_file(tmp_path: Path) -> None:
    # The label's check raised without the file's name, unlike every other column's.
    path = tmp_path / "latin1.csv"
    rows = [f"{i / 10},{'café' if i % 2 else 'thé'}" for i in range(ROWS)]
    path.write_bytes(("a,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(InputError) as caught:
        _streamed(path)
    assert (
        str(caught.value)
        == f"{path}: column 'label' holds bytes that are not UTF-8 text; is this file a table?"
    )


def test_json_columns_named_like_dates_are_read_as_written_both_ways(tmp_path: Path) -> None:
    # pandas turned "modified" (epoch milliseconds) and "created_at" into dates by their names alone, so
    # the id sequence was an identifier streamed and a feature in memory.
    frame = _with_copy(_table())
    frame.insert(0, "modified", 1_577_836_800_000 + np.arange(ROWS))
    frame["created_at"] = [f"2020-01-{i % 28 + 1:02d}" for i in range(ROWS)]
    frame.loc[1_300, "created_at"] = frame.loc[5, "created_at"]
    path = tmp_path / "d.jsonl"
    frame.to_json(path, orient="records", lines=True)
    streamed, memory = _both(path)
    assert streamed.ignored_columns == memory.ignored_columns == ["modified"]
    assert _duplicates(streamed) == _duplicates(memory) == [1_300]
    loaded = load_dataset(path, "label")
    assert loaded.frame is not None
    assert loaded.frame["created_at"].iloc[0] == "2020-01-01"
