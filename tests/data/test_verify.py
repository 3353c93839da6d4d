"""Verifying data against a manifest: exactly which files and rows were added, removed or changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from bastion.data.manifest import build_manifest
from bastion.data.verify import RowDiff, diff_manifests, diff_rows


def test_unchanged_dataset_is_identical(dataset: Path) -> None:
    result = diff_manifests(build_manifest(dataset), build_manifest(dataset))
    assert result.identical
    assert result.ok


def test_edit_one_csv_row(dataset: Path) -> None:
    csv = dataset / "table.csv"
    before = build_manifest(dataset)
    csv.write_text(csv.read_text(encoding="utf-8").replace("2,bob,0.7", "2,bob,0.8"), encoding="utf-8")
    result = diff_manifests(before, build_manifest(dataset))
    assert result.added == ()
    assert result.removed == ()
    (change,) = result.changed
    assert change.path == "table.csv"
    assert change.rows == RowDiff(changed=(1,))
    assert not change.schema_changed


def test_insert_a_row_marks_only_that_row(dataset: Path) -> None:
    csv = dataset / "table.csv"
    before = build_manifest(dataset)
    csv.write_text(csv.read_text(encoding="utf-8").replace("2,bob", "9,zed,0.0\n2,bob"), encoding="utf-8")
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.rows == RowDiff(added=(1,))


def test_delete_a_row(dataset: Path) -> None:
    csv = dataset / "table.csv"
    before = build_manifest(dataset)
    csv.write_text(csv.read_text(encoding="utf-8").replace("3,carol,0.9\n", ""), encoding="utf-8")
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.rows == RowDiff(removed=(2,))


def test_jsonl_edit_and_append(dataset: Path) -> None:
    path = dataset / "rows.jsonl"
    before = build_manifest(dataset)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = json.dumps({"id": 3, "text": "edited"})
    lines.append(json.dumps({"id": 99}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.rows == RowDiff(added=(5,), changed=(3,))


def test_add_and_remove_files(dataset: Path) -> None:
    before = build_manifest(dataset)
    (dataset / "new.csv").write_text("a\n1\n", encoding="utf-8")
    (dataset / "README.txt").unlink()
    result = diff_manifests(before, build_manifest(dataset))
    assert result.added == ("new.csv",)
    assert result.removed == ("README.txt",)
    assert result.changed == ()
    assert not result.ok


def test_change_a_npy_slice(dataset: Path) -> None:
    before = build_manifest(dataset)
    array = np.load(dataset / "arr.npy")
    array[2, 1] = 1000
    np.save(dataset / "arr.npy", array)
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.path == "arr.npy"
    assert change.rows == RowDiff(changed=(2,))


def test_change_an_image_pixel(dataset: Path) -> None:
    before = build_manifest(dataset)
    path = dataset / "images" / "a.png"
    with Image.open(path) as image:
        edited = image.copy()
    edited.putpixel((1, 1), (0, 0, 0))
    edited.save(path)
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.path == "images/a.png"
    assert change.rows is None
    assert not change.schema_changed


def test_parquet_row_change_and_schema(dataset: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    before = build_manifest(dataset)
    pq.write_table(pa.table({"x": [1, 5, 3], "y": ["a", "b", "c"]}), dataset / "t.parquet")
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.rows == RowDiff(changed=(1,))
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}), dataset / "t.parquet")
    (change,) = diff_manifests(before, build_manifest(dataset)).changed
    assert change.schema_changed


def test_diff_rows_replace_with_unequal_lengths() -> None:
    old = ["a", "b", "c", "d"]
    new = ["a", "x", "y", "z", "d"]
    assert diff_rows(old, new) == RowDiff(added=(3,), changed=(1, 2))
    assert diff_rows(new, old) == RowDiff(removed=(3,), changed=(1, 2))
    assert diff_rows([], ["a"]) == RowDiff(added=(0,))
    assert diff_rows(["a", "a"], ["a"]) == RowDiff(removed=(1,))


def test_large_row_diff_is_fast() -> None:
    old = [f"{i:064x}" for i in range(200_000)]
    new = [*old[:1000], "f" * 64, *old[1000:150_000], *old[150_001:]]
    assert diff_rows(old, new) == RowDiff(added=(1000,), removed=(150_000,))
