"""Sanitizing writes kept rows unchanged, removed rows with reasons, and nothing partial on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bastion.data.audit.base import LABEL, OUTLIER, RowFlag
from bastion.data.audit.run import RowReport, join_flags
from bastion.data.sanitize import SanitizeOutputs, split_dataset, staged
from bastion.errors import InputError

CSV = 'x,y,note\n1,a,"one, quoted"\n2,b,plain\n\n3,a,"multi\nline"\n4,b,last\n'


def _removed(*rows: int) -> list[RowReport]:
    flags = [RowFlag(r, LABEL, "confident-learning", 0.9, f"reason {r}", "a") for r in rows]
    flags.append(RowFlag(rows[0], OUTLIER, "isolation-forest", 0.6, "far away"))
    return join_flags(flags)


def test_csv_rows_are_split_byte_for_byte(tmp_path: Path) -> None:
    source = tmp_path / "d.csv"
    source.write_bytes(CSV.encode())
    out = SanitizeOutputs.beside(source)
    with staged() as staging:
        split_dataset(source, _removed(1, 2), staging, out)
    # Rows 1 and 2 (0-based, blank record skipped) are `2,b,plain` and the multi-line record.
    assert out.clean.read_text() == 'x,y,note\n1,a,"one, quoted"\n4,b,last\n'
    quarantine = pd.read_csv(out.quarantine)
    assert quarantine["bastion_row"].tolist() == [1, 2]
    assert quarantine["note"].tolist() == ["plain", "multi\nline"]
    assert quarantine["bastion_channels"].tolist() == ["label,outlier", "label"]
    assert quarantine["bastion_reason"].tolist()[0] == "reason 1; far away"
    assert len(pd.read_csv(source)) == len(pd.read_csv(out.clean)) + len(quarantine)


def test_jsonl_quarantine_keeps_the_record(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text("".join(json.dumps({"x": i, "y": i % 2}) + "\n" for i in range(4)))
    out = SanitizeOutputs.beside(source)
    with staged() as staging:
        split_dataset(source, _removed(3), staging, out)
    assert [json.loads(line)["x"] for line in out.clean.read_text().splitlines()] == [0, 1, 2]
    (record,) = [json.loads(line) for line in out.quarantine.read_text().splitlines()]
    assert record["bastion_row"] == 3
    assert record["record"] == {"x": 3, "y": 1}


def test_parquet_and_npz(tmp_path: Path) -> None:
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": list(range(10)), "y": [i % 2 for i in range(10)]}), parquet)
    out = SanitizeOutputs.beside(parquet)
    with staged() as staging:
        split_dataset(parquet, _removed(0, 9), staging, out)
    assert pq.read_table(out.clean).column("x").to_pylist() == list(range(1, 9))
    assert pq.read_table(out.quarantine).column("bastion_row").to_pylist() == [0, 9]

    npz = tmp_path / "a.npz"
    np.savez(npz, X=np.arange(20).reshape(10, 2), y=np.arange(10) % 2)
    out = SanitizeOutputs.beside(npz)
    with staged() as staging:
        split_dataset(npz, _removed(4), staging, out)
    with np.load(out.clean) as clean, np.load(out.quarantine) as quarantine:
        assert clean["X"].shape == (9, 2)
        assert quarantine["bastion_row"].tolist() == [4]
        assert quarantine["X"].tolist() == [[8, 9]]


def test_failure_leaves_no_output(tmp_path: Path) -> None:
    source = tmp_path / "d.csv"
    source.write_bytes(CSV.encode())
    out = SanitizeOutputs.beside(source)

    def split_then_fail() -> None:
        with staged() as staging:
            split_dataset(source, _removed(1), staging, out)
            raise RuntimeError("the manifest step failed")

    with pytest.raises(RuntimeError):
        split_then_fail()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    source = tmp_path / "d.csv"
    source.write_bytes(CSV.encode())
    out = SanitizeOutputs(clean=source, quarantine=tmp_path / "q.csv", manifest=tmp_path / "m.json")
    with pytest.raises(InputError, match="would overwrite the input"), staged() as staging:
        split_dataset(source, _removed(1), staging, out)
    assert source.read_bytes() == CSV.encode()


def test_unsupported_format(tmp_path: Path) -> None:
    source = tmp_path / "d.txt"
    source.write_text("hello")
    with pytest.raises(InputError, match="sanitize writes"), staged() as staging:
        split_dataset(source, _removed(0), staging, SanitizeOutputs.beside(source))
