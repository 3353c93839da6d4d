"""The streaming audit on hostile input: what pyarrow's block-by-block reading must not get wrong."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.cli.main import main
from bastion.data.audit import stream
from bastion.data.audit.base import INTEGRITY, LABEL, AuditOptions
from bastion.data.audit.stream import stream_audit
from bastion.errors import InputError

ROWS = 1_500
CHUNK = 400
FAST = AuditOptions(channels=(INTEGRITY,))


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # pyarrow types a CSV column from its first block; 4 KB blocks put the later rows of these small files
    # in later blocks, as 4 MB blocks do on a large file.
    monkeypatch.setattr(stream, "CSV_BLOCK_BYTES", 4096)


def _table(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    frame = pd.DataFrame(
        np.round(rng.normal(0.0, 1.0, (rows, 3)) + 2.0 * y[:, None], 4), columns=["a", "b", "c"]
    )
    frame["colour"] = np.where(y == 0, "red", "blue")
    frame["label"] = np.where(y == 0, "neg", "pos")
    return frame


def _audit(path: Path, options: AuditOptions = FAST, **kwargs: int) -> stream.AuditResult:
    return stream_audit(path, "label", options=options, chunk_rows=CHUNK, workers=1, **kwargs)


def _error(path: Path, options: AuditOptions = FAST, **kwargs: int) -> str:
    with pytest.raises(InputError) as caught:
        _audit(path, options, **kwargs)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path}:")
    return message


def test_integer_column_that_turns_decimal_in_a_later_block(tmp_path: Path) -> None:
    frame = _table()
    frame["a"] = np.arange(ROWS).astype(object)
    frame.loc[ROWS - 10, "a"] = "0.5"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    result = _audit(path)
    assert result.n_rows == ROWS


def test_column_empty_in_the_first_block(tmp_path: Path) -> None:
    frame = _table()
    frame["a"] = frame["a"].astype(object)
    frame.loc[: ROWS // 2, "a"] = None
    frame["colour"] = frame["colour"].astype(object)
    frame.loc[: ROWS // 2, "colour"] = None
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    assert _audit(path).n_rows == ROWS


def test_bool_column_with_a_word_in_a_later_block(tmp_path: Path) -> None:
    frame = _table()
    frame["colour"] = np.where(np.arange(ROWS) % 2 == 0, "true", "false").astype(object)
    frame.loc[ROWS - 5, "colour"] = "maybe"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    assert _audit(path).n_rows == ROWS


def test_label_class_that_first_appears_as_a_word_after_numbers(tmp_path: Path) -> None:
    # In memory the column is text from the start: three classes, none of them refused.
    frame = _table()
    frame["label"] = np.where(frame["label"] == "neg", "0", "1").astype(object)
    frame.loc[ROWS - 30 :, "label"] = "cat"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    result = _audit(path)
    assert result.classes == ["0", "1", "cat"]


@pytest.mark.parametrize("channels", [(INTEGRITY,), (LABEL,)])
def test_number_column_with_a_stray_word_names_its_row_in_the_file(
    tmp_path: Path, channels: tuple[str, ...]
) -> None:
    frame = _table()
    frame["a"] = frame["a"].astype(object)
    frame.loc[1_321, "a"] = "oops"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    options = AuditOptions(channels=channels)
    # A sample too small to hold the word: pass 2 finds it, in the chunk at 1,200 (chunk row 121). The
    # integrity channel alone needs no encoded rows, and took the word as it was.
    message = _error(path, options, sample_rows=50)
    assert "column 'a' mixes numbers and text (row 1321: 'oops')" in message
    # A sample that holds it: the encoder fitted on the sample finds it, and names its row in the file.
    frame.loc[1_321, "a"] = 1.0
    frame.loc[ROWS - 2, "a"] = "oops"
    frame.to_csv(path, index=False)
    assert f"(row {ROWS - 2}: 'oops')" in _error(path, options, sample_rows=ROWS - 100)


def test_quoted_line_ends_across_blocks(tmp_path: Path) -> None:
    frame = _table()
    frame["note"] = np.where(np.arange(ROWS) % 7 == 0, "line one\nline two, with a comma", "plain")
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    assert _audit(path).n_rows == ROWS


def test_row_longer_than_a_block(tmp_path: Path) -> None:
    frame = _table()
    frame["note"] = "x"
    frame.loc[ROWS - 100, "note"] = "y" * 20_000
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    result = _audit(path)
    assert result.n_rows == ROWS
    assert result.channels[INTEGRITY].flags == []  # every row read as written: no false duplicates


def test_file_without_line_ends_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("wb") as fh:
        fh.write(b"a,label\n1,x\n2,y\n")
        fh.truncate(200 << 20)  # sparse: NUL bytes without a line end, longer than the largest block
    assert "a row is longer than 64 MB" in _error(path)


@pytest.mark.parametrize("blank", ["NA", "null", "NaN", "N/A"])
def test_label_spelt_as_missing_is_refused_as_in_memory(tmp_path: Path, blank: str) -> None:
    frame = _table()
    frame.loc[ROWS - 3, "label"] = blank
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    assert f"label column 'label' is empty on 1 rows of this chunk (first: row {ROWS - 3})" in _error(path)


def test_bool_label_classes_are_named_as_in_memory(tmp_path: Path) -> None:
    frame = _table()
    frame["label"] = frame["label"] == "pos"
    path = tmp_path / "d.parquet"
    frame.to_parquet(path, row_group_size=500)
    assert _audit(path).classes == ["False", "True"]


def test_file_rewritten_between_the_passes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    fit_state = stream._fit_state

    def rewrite_then_fit(*args: object, **kwargs: object) -> object:
        # As many rows, other values: pass 2 would score rows that pass 1 never hashed or sampled.
        _table(seed=1).to_csv(path, index=False)
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        return fit_state(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stream, "_fit_state", rewrite_then_fit)
    assert "the file changed while it was audited" in _error(path)


def test_label_and_integrity_agree_with_in_memory_on_late_class(tmp_path: Path) -> None:
    # A class only in the last chunk is still a class, with no false duplicate groups.
    frame = _table()
    frame.loc[ROWS - 12 :, "label"] = "zzz"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    result = _audit(path, AuditOptions(channels=(LABEL, INTEGRITY)))
    assert result.classes == ["neg", "pos", "zzz"]
    assert result.channels[INTEGRITY].flags == []


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_report_over_the_data_is_refused_before_the_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    before = path.read_bytes()
    code, err = _run(["data", "audit", str(path), "--label", "label", "--stream", "-o", str(path)], capsys)
    assert code == 2
    assert err.splitlines() == [f"bastion: error: --output {path}: would overwrite the input {path}"]
    assert path.read_bytes() == before


def test_report_in_a_missing_directory_is_refused_before_the_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)

    def no_audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audit ran before the report path was checked")

    monkeypatch.setattr(stream, "stream_audit", no_audit)
    out = tmp_path / "missing" / "r.json"
    code, err = _run(["data", "audit", str(path), "--label", "label", "--stream", "-o", str(out)], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_local_workers_are_capped_at_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)

    def no_pool(*args: object) -> None:
        raise AssertionError("a process pool was started on a one-core machine")

    monkeypatch.setattr(stream, "available_cores", lambda: 1)
    monkeypatch.setattr(stream, "process_pool", no_pool)
    # Eight workers asked for on one core: the chunks run here, as with workers=1.
    result = stream_audit(path, "label", options=FAST, chunk_rows=CHUNK, workers=8)
    assert result.n_rows == ROWS
