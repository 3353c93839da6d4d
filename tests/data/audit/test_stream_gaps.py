"""The streamed audit where it parted from the in-memory one: Ray, JSON lines, .npz, nesting, ragged rows."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The first hardening round's sizes, and its autouse fixture of 4 KB blocks (JSON blocks too): imported, it
# applies here as well (pytest puts this directory on sys.path).
from test_stream_hardening import CHUNK, FAST, ROWS, small_blocks  # noqa: F401

from bastion.cli.main import main
from bastion.data.audit import load, stream
from bastion.data.audit.base import INTEGRITY
from bastion.data.audit.load import check_npz_size, load_dataset, should_stream
from bastion.data.audit.run import AuditResult, run_audit
from bastion.data.audit.stream import stream_audit
from bastion.errors import InputError, UsageError


def _table(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    frame = pd.DataFrame(np.round(rng.normal(0.0, 1.0, (rows, 2)) + 2.0 * y[:, None], 4), columns=["a", "b"])
    frame["label"] = np.where(y == 0, "neg", "pos")
    return frame


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(record) for record in frame.to_dict("records")]


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def _streamed(path: Path, **kwargs: Any) -> AuditResult:
    return stream_audit(path, "label", options=FAST, chunk_rows=CHUNK, workers=1, **kwargs)


def _in_memory(path: Path) -> AuditResult:
    return run_audit(load_dataset(path, "label"), FAST)


def _duplicates(result: AuditResult) -> list[int]:
    return sorted(f.row for f in result.channels[INTEGRITY].flags if f.check == "exact-duplicate")


def _stream_error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InputError) as caught:
        _streamed(path, **kwargs)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path}:")
    return message


def _memory_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        _in_memory(path)
    return str(caught.value)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


# ---------------------------------------------------------------------------------------------------------
# Ray: a missing package, a cluster named by RAY_ADDRESS, a failed start.


def test_ray_backend_without_ray_is_one_line_before_pass_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError

    def no_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("pass 1 ran before the backend was checked")

    monkeypatch.setattr(stream, "_first_pass", no_pass)
    out = tmp_path / "r.json"
    argv = ["data", "audit", str(path), "--label", "label", "--stream", "--backend", "ray", "-o", str(out)]
    code, err = _run(argv, capsys)
    assert code == 2
    assert err.splitlines()[-1] == "bastion: error: backend 'ray' needs Ray: pip install 'bastion-ai[ray]'"
    assert [line for line in err.splitlines() if "error" in line or "Traceback" in line] == err.splitlines()[
        -1:
    ]
    assert not out.exists()


class _FakeRay:
    """Ray's calls that the backend makes, run here, recording how ray.init was called."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.init_kwargs: dict[str, Any] | None = None
        self.started = False

    def is_initialized(self) -> bool:
        return self.started

    def init(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs
        if self.fail is not None:
            raise self.fail
        self.started = True

    def shutdown(self) -> None:
        self.started = False

    def put(self, value: Any) -> Any:
        return value

    def get(self, handle: Any) -> Any:
        return handle

    def remote(self, **options: Any) -> Any:
        class Remote:
            def __init__(self, function: Any) -> None:
                self.remote = function

        return Remote


@pytest.mark.parametrize(("address", "sized"), [("127.0.0.1:6379", False), ("local", True), (None, True)])
def test_ray_address_is_joined_without_num_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str | None, sized: bool
) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    if address is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
    result = _streamed(path, backend="ray")
    assert result.n_rows == ROWS
    assert fake.init_kwargs is not None
    # Ray refuses num_cpus when joining a running cluster; a new local Ray ("local" or no address) gets it.
    assert ("num_cpus" in fake.init_kwargs) is sized
    assert not fake.started  # the backend shut down the Ray it started


def test_ray_start_failure_names_the_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    monkeypatch.setitem(sys.modules, "ray", _FakeRay(ConnectionError("Could not connect\nsecond line")))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    with pytest.raises(UsageError) as caught:
        _streamed(path, backend="ray")
    assert str(caught.value) == (
        "backend 'ray': cannot connect to the Ray cluster at '10.0.0.9:6379' (RAY_ADDRESS): Could not connect"
    )


def test_real_ray_with_a_bad_address_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # An address Ray cannot parse fails at once; an unreachable host:port makes Ray retry for minutes in
    # ray.init itself, which the fake above stands for.
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray of another test is running in this process")
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    monkeypatch.setenv("RAY_ADDRESS", "no-port-here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UsageError) as caught:
            _streamed(path, backend="ray")
    message = str(caught.value)
    assert message.startswith(
        "backend 'ray': cannot connect to the Ray cluster at 'no-port-here' (RAY_ADDRESS):"
    )
    assert len(message.splitlines()) == 1
    assert not ray.is_initialized()
    # Ray's own INFO line ("Using address ... set in the environment variable") no longer precedes it.
    assert "INFO" not in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# JSON lines: streamed above the limit, types widened as pandas reads them, the rest refused with its row.


def test_large_jsonl_is_streamed_and_agrees_with_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(_table())
    records[1_400] = dict(records[3])  # a copy in a later block
    path = _jsonl(tmp_path / "d.jsonl", records)
    assert not should_stream(path)
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", "1000")
    assert should_stream(path)
    out = tmp_path / "r.json"
    argv = ["data", "audit", str(path), "--label", "label", "--channels", "integrity", "--format", "json"]
    code, err = _run([*argv, "-o", str(out)], capsys)
    assert code in (0, 1), err
    assert "streaming in chunks" in err
    report = json.loads(out.read_text())
    assert report["dataset"]["rows"] == ROWS
    assert report["channels"]["integrity"]["streamed"]["chunk_rows"] == 100_000
    streamed, in_memory = _streamed(path), _in_memory(path)
    assert streamed.classes == in_memory.classes == ["neg", "pos"]
    assert _duplicates(streamed) == _duplicates(in_memory) == [1_400]


def _widened(case: str) -> list[dict[str, Any]]:
    records = _records(_table())
    if case == "decimal after integers":
        for i, record in enumerate(records):
            record["n"] = i % 700
        records[1_300]["n"] = 0.5
    elif case == "null then text":
        for i, record in enumerate(records):
            record["z"] = None if i < 900 else f"t{i % 3}"
    elif case == "late key":
        records[1_200]["late"] = 3
        records[1_300]["late"] = 4.5
    elif case == "date then word":
        for i, record in enumerate(records):
            record["day"] = f"2020-01-{i % 28 + 1:02d}"
        records[1_100]["day"] = "soon"
    elif case == "integer labels then a decimal":
        for record in records:
            record["label"] = int(record["label"] == "pos")
        records[1_200]["label"] = 0.5
    return records


@pytest.mark.parametrize(
    "case",
    [
        "decimal after integers",
        "null then text",
        "late key",
        "date then word",
        "integer labels then a decimal",
    ],
)
def test_jsonl_types_widened_in_later_blocks(tmp_path: Path, case: str) -> None:
    records = _widened(case)
    records[1_450] = dict(records[7])  # an exact copy after every widening
    path = _jsonl(tmp_path / "d.jsonl", records)
    streamed, in_memory = _streamed(path), _in_memory(path)
    assert streamed.n_rows == in_memory.n_rows == ROWS
    assert streamed.classes == in_memory.classes
    assert _duplicates(streamed) == _duplicates(in_memory) == [1_450]


def test_jsonl_numbers_written_as_text_are_numbers_as_in_memory(tmp_path: Path) -> None:
    # pandas reads a JSON column of numeric strings as numbers: "5" and "5.0" are one value, so the rows
    # are duplicates; a column with one word stays text, and they are not.
    records = _records(_table())
    for i, record in enumerate(records):
        record["n"] = str(i % 1_000)
    records[1_400] = {**records[5], "n": "5.0"}
    path = _jsonl(tmp_path / "numbers.jsonl", records)
    assert _duplicates(_streamed(path)) == _duplicates(_in_memory(path)) == [1_400]
    for i, record in enumerate(records):
        record["n"] = ["red", "green", "blue"][i % 3] if i < 1_000 else record["n"]
    path = _jsonl(tmp_path / "text.jsonl", records)
    assert _duplicates(_streamed(path)) == _duplicates(_in_memory(path)) == []


def test_jsonl_refusals_name_the_row(tmp_path: Path) -> None:
    records = _records(_table())
    for i, record in enumerate(records):
        record["m"] = i
    records[1_100]["m"] = "oops"
    mixed = _jsonl(tmp_path / "mixed.jsonl", records)
    # In memory the encoder refuses the mostly-numeric column; pyarrow cannot hold numbers and strings in
    # one column at all, so the stream refuses it whatever the mix, with the same row.
    assert "row 1100" in _memory_error(mixed)
    message = _stream_error(mixed)
    assert "column 'm' holds both numbers and strings (row 1100)" in message
    assert "convert the file to Parquet or CSV" in message

    records = _records(_table())
    records[1_000]["b"] = {"x": 1}
    nested = _jsonl(tmp_path / "nested.jsonl", records)
    expected = f"{nested}: column 'b' holds nested objects (row 1000); flatten it first"
    assert _memory_error(nested) == expected
    assert _stream_error(nested) == expected

    good = [json.dumps(r) for r in _records(_table())]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*good[:1_100], '{"a": 1, "b":', *good[1_101:]]) + "\n")
    assert "row 1100 is not valid JSON" in _stream_error(broken)
    scalar = tmp_path / "scalar.jsonl"
    scalar.write_text("\n".join([*good[:1_100], "[1, 2]", *good[1_101:]]) + "\n")
    assert "row 1100 is not a JSON object" in _stream_error(scalar)
    assert len(_memory_error(scalar).splitlines()) == 1  # pandas' TypeError, no longer a traceback


# ---------------------------------------------------------------------------------------------------------
# .npz: the arrays' size in memory, read from their headers, against the memory available.


def test_npz_too_large_for_memory_is_refused_from_its_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.npz"
    # Compressed zeros: 8 KB on disk for 4,000,000 values, 160 MB as the audit holds them.
    np.savez_compressed(path, x=np.zeros((20_000, 200), dtype=np.uint8), label=np.arange(20_000) % 2)
    assert path.stat().st_size < 100_000
    need = load.NPZ_PEAK_FACTOR * 8 * 20_000 * 200
    with pytest.raises(InputError, match=r"big.npz: its arrays need about 0\.2 GiB .* 0\.1 GiB is available"):
        check_npz_size(path, "label", memory=need // 2)
    check_npz_size(path, "label", memory=need * 2)

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the arrays were loaded before their size was checked")

    monkeypatch.setattr(load, "available_memory", lambda: need // 2)
    monkeypatch.setattr(np, "load", loaded)
    out = tmp_path / "r.json"
    code, err = _run(["data", "audit", str(path), "--label", "label", "-o", str(out)], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert ".npz arrays cannot be streamed" in err
    assert not out.exists()


def test_npz_within_memory_is_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    path = tmp_path / "small.npz"
    np.savez(path, x=rng.normal(0.0, 1.0, (400, 5)) + y[:, None], label=y)
    monkeypatch.setattr(load, "available_memory", lambda: 1 << 30)
    assert load_dataset(path, "label").features.shape == (400, 5)


# ---------------------------------------------------------------------------------------------------------
# Nested Parquet columns: the in-memory message, with the row, never a traceback.


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("struct", lambda i: {"x": i, "y": "k"}),
        ("list", lambda i: [i, i + 1]),
    ],
)
def test_nested_parquet_column_is_refused_as_in_memory(tmp_path: Path, kind: str, value: Any) -> None:
    table = pa.Table.from_pandas(_table(), preserve_index=False)
    # Null in the first chunks (no object there, as in memory), an object from row 1,234 on.
    column = pa.array([None if i < 1_234 else value(i) for i in range(ROWS)])
    path = tmp_path / f"{kind}.parquet"
    pq.write_table(table.append_column("n", column), path, row_group_size=500)
    expected = f"{path}: column 'n' holds nested objects (row 1234); flatten it first"
    assert _memory_error(path) == expected
    assert _stream_error(path) == expected


def test_parquet_map_column_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pa.Table.from_pandas(_table(), preserve_index=False)
    column = pa.array([[("k", i)] for i in range(ROWS)], type=pa.map_(pa.string(), pa.int64()))
    path = tmp_path / "map.parquet"
    pq.write_table(table.append_column("m", column), path)
    code, err = _run(["data", "audit", str(path), "--label", "label", "--stream"], capsys)
    assert code == 2
    assert err.splitlines()[1:] == [
        f"bastion: error: {path}: column 'm' holds nested objects (row 0); flatten it first"
    ]


def test_nested_column_of_nulls_only_is_audited_as_in_memory(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(_table(), preserve_index=False)
    column = pa.nulls(ROWS, pa.struct([("x", pa.int64())]))
    path = tmp_path / "nulls.parquet"
    pq.write_table(table.append_column("n", column), path, row_group_size=500)
    assert _streamed(path).n_rows == _in_memory(path).n_rows == ROWS


# ---------------------------------------------------------------------------------------------------------
# Ragged CSV rows: the row and line, as pandas names a long one.


def _csv_lines(rows: int = 3_000) -> list[str]:
    return ["a,b,label"] + [f"{i},{i % 7},{'x' if i % 2 else 'y'}" for i in range(rows)]


@pytest.mark.parametrize(("bad", "fields"), [("1,2,x,EXTRA", 4), ("1,2", 2)])
def test_ragged_row_is_named_by_row_and_line(tmp_path: Path, bad: str, fields: int) -> None:
    lines = _csv_lines()
    lines[40] = '7,"a quoted\nline end",x'  # a record over two lines before it: rows and lines part
    lines[2_501] = bad
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n")
    message = _stream_error(path)
    assert message == f"{path}: row 2500 (line 2503) has {fields} fields where the header has 3: {bad!r}"
    if fields == 4:  # pandas names the same row by its record, not its line (and fills a short row)
        assert "Expected 3 fields in line 2502, saw 4" in _memory_error(path)


def _open_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the directory's own descriptor, closed by now
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("name", ["ragged.csv", "mixed.jsonl"])
def test_a_refused_file_is_closed_at_once(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        lines = _csv_lines()
        lines[2_501] = "1,2"
        path.write_text("\n".join(lines) + "\n")
    else:
        records = _records(_table())
        records[1_100]["a"] = "oops"
        _jsonl(path, records)
    with pytest.raises(InputError) as caught:
        _streamed(path)
    # The error's traceback keeps the reading frames alive; pyarrow's CSV reader held its file open in them
    # until the garbage collector ran.
    assert str(path) in str(caught.value)
    assert str(path) not in _open_files()


def test_ragged_row_in_a_tsv_and_past_the_search_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [line.replace(",", "\t") for line in _csv_lines()]
    lines[2_801] = "1\t2\tx\ty"
    path = tmp_path / "ragged.tsv"
    path.write_text("\n".join(lines) + "\n")
    assert "row 2800 (line 2802) has 4 fields where the header has 3" in _stream_error(path)
    # Beyond the bytes the search may read, the error names the first row of the block that failed.
    monkeypatch.setattr(stream, "RAGGED_SCAN_BYTES", 1_000)
    message = _stream_error(path)
    start = int(message.split("at or after row ")[1].split()[0])
    assert 2_000 < start <= 2_800
    assert message.endswith("has 4 fields where the header has 3: '1\\t2\\tx\\ty'")


# ---------------------------------------------------------------------------------------------------------
# Streamed and in-memory agreement on a column's type and on exact duplicates.


def test_numbers_then_mostly_text_is_categorical_both_ways(tmp_path: Path) -> None:
    frame = _table()
    words = np.random.default_rng(1).choice(["red", "green", "blue"], ROWS)
    frame["m"] = [str(i) if i < 300 else words[i] for i in range(ROWS)]
    frame.loc[1_450] = frame.loc[700]
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    assert "m" in load_dataset(path, "label").encoder.categorical  # type: ignore[union-attr]
    assert _duplicates(_streamed(path, sample_rows=200)) == _duplicates(_in_memory(path)) == [1_450]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_one_and_one_point_zero_are_one_value_both_ways(tmp_path: Path, suffix: str) -> None:
    # Integers in the first block, a decimal in a later one: the stream widens the column to float, where
    # pandas reads it as float from the start; 5 and 5.0 are then the same value in both.
    frame = _table()
    frame["n"] = [str(i % 1_000) for i in range(ROWS)]
    frame.loc[1_400, ["a", "b", "label"]] = frame.loc[5, ["a", "b", "label"]]
    frame.loc[1_400, "n"] = "5.0"
    frame.loc[1_420, "n"] = "0.25"
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame["n"] = frame["n"].astype(float)
        frame.to_parquet(path, row_group_size=500)
    assert _duplicates(_streamed(path)) == _duplicates(_in_memory(path)) == [1_400]


@pytest.mark.parametrize("spelling", ["None", "<NA>"])
def test_missing_spelt_as_pandas_spells_it_both_ways(tmp_path: Path, spelling: str) -> None:
    # pandas reads "None" and "<NA>" as missing, which pyarrow's own list lacks: a copy with "None" where the
    # original is blank was no duplicate when streamed, and a label "None" became a class.
    frame = _table()
    frame["t"] = np.random.default_rng(2).choice(["x", "y", "z"], ROWS).astype(object)
    frame.loc[5, "t"] = None
    frame.loc[1_400] = frame.loc[5]
    frame.loc[1_400, "t"] = spelling
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    assert _duplicates(_streamed(path)) == _duplicates(_in_memory(path)) == [1_400]
    frame.loc[700, "label"] = spelling
    frame.to_csv(path, index=False)
    assert "label column 'label' is empty on 1 rows" in _memory_error(path)
    assert "label column 'label' is empty on 1 rows of this chunk (first: row 700)" in _stream_error(path)


def test_zero_one_and_a_word_is_text_both_ways(tmp_path: Path) -> None:
    # pyarrow's booleans include "0" and "1": a column of 0s and 1s with one "true" was read as booleans.
    frame = _table()
    frame["u"] = np.where(np.arange(ROWS) % 2 == 1, "1", "0")
    frame.loc[900, "u"] = "true"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    expected = "column 'u' mixes numbers and text (row 900: 'true')"
    assert expected in _memory_error(path)
    assert expected in _stream_error(path)
