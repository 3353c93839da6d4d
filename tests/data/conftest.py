"""Small datasets built in tmp_path for the data-integrity tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

CSV_TEXT = "id,name,score\n1,alice,0.5\n2,bob,0.7\n3,carol,0.9\n4,dave,0.1\n"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A directory with one file of each supported kind."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "table.csv").write_text(CSV_TEXT, encoding="utf-8")
    rows = [{"id": i, "text": f"row {i}", "tags": ["a", "b"]} for i in range(5)]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]}), root / "t.parquet")
    np.save(root / "arr.npy", np.arange(12, dtype=np.int32).reshape(4, 3))
    Image.new("RGB", (4, 3), (10, 20, 30)).save(root / "images" / "a.png")
    (root / "README.txt").write_text("hello\n", encoding="utf-8")
    return root
