"""Loading data for an audit: encoding, label codes, companions, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bastion.data.audit.encode import OTHER, TableEncoder
from bastion.data.audit.load import from_arrays, load_companion, load_dataset, should_stream
from bastion.errors import InputError


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "d.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_encoder_standardises_imputes_and_one_hots() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, None, 3.0], "c": ["x", "y", "x", None]})
    encoder = TableEncoder.fit(frame)
    matrix = encoder.transform(frame)
    assert encoder.numeric == ["a"]
    assert encoder.categorical == ["c"]
    assert matrix.shape == (4, 1 + 3 + 1)  # a, c=x, c=<missing>, c=y, c=<other>
    assert np.isfinite(matrix).all()
    assert abs(float(matrix[:, 0].mean())) < 1e-9  # centred after median imputation
    unseen = encoder.transform(pd.DataFrame({"a": [1.0], "c": ["never seen"]}))
    assert unseen[0, encoder.feature_names.index(f"c={OTHER}")] == 1.0


def test_encoder_caps_category_width() -> None:
    frame = pd.DataFrame({"id": [f"id{i}" for i in range(500)]})
    encoder = TableEncoder.fit(frame)
    assert len(encoder.feature_names) == 51  # 50 kept values and one shared "other" column


def test_mixed_numbers_and_words_name_the_column_and_row() -> None:
    frame = pd.DataFrame({"amount": [str(i) for i in range(30)] + ["oops"]})
    with pytest.raises(InputError, match=r"column 'amount' mixes numbers and text \(row 30: 'oops'\)"):
        TableEncoder.fit(frame)


def test_load_csv_splits_label_and_source(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1, 2, 3, 4], "feed": ["a", "a", "b", "b"], "y": ["no", "yes", "no", "yes"]})
    data = load_dataset(_write(tmp_path, frame), "y", source_column="feed")
    assert data.kind == "tabular"
    assert data.classes == ["no", "yes"]
    assert data.labels.tolist() == [0, 1, 0, 1]
    assert data.sources is not None
    assert data.sources.tolist() == ["a", "a", "b", "b"]
    assert data.feature_names == ["x"]
    assert list(data.frame.columns) == ["x"]


@pytest.mark.parametrize(
    ("frame", "label", "message"),
    [
        (pd.DataFrame({"x": [1, 2]}), "y", r"no label column 'y' \(columns: x\)"),
        (pd.DataFrame({"x": [1, 2], "y": ["a", "a"]}), "y", r"single class \('a'\)"),
        (pd.DataFrame({"x": [1, 2, 3], "y": ["a", None, "b"]}), "y", r"empty on 1 rows \(first: row 1\)"),
        (pd.DataFrame({"y": ["a", "b"]}), "y", "no feature columns"),
    ],
)
def test_bad_tables_give_one_line_errors(
    tmp_path: Path, frame: pd.DataFrame, label: str, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        load_dataset(_write(tmp_path, frame), label)
    assert "\n" not in str(info.value)


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="the file is empty"):
        load_dataset(empty, "y")
    header_only = tmp_path / "header.csv"
    header_only.write_text("x,y\n")
    with pytest.raises(InputError, match="no rows"):
        load_dataset(header_only, "y")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputError, match="cannot read it as parquet"):
        load_dataset(broken, "y")
    with pytest.raises(InputError, match="no such file"):
        load_dataset(tmp_path / "missing.csv", "y")


def test_nan_features_are_imputed_not_rejected(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, float("nan"), 3.0, 4.0], "y": [0, 1, 0, 1]})
    data = load_dataset(_write(tmp_path, frame), "y")
    assert np.isfinite(data.features).all()


def test_npz_images_are_scaled_to_unit_range(tmp_path: Path) -> None:
    images = np.zeros((6, 4, 4), dtype=np.uint8)
    images[:, 0, 0] = 255
    path = tmp_path / "images.npz"
    np.savez(path, images=images, labels=np.array([0, 1, 0, 1, 0, 1]))
    data = load_dataset(path, "labels")
    assert data.kind == "image"
    assert data.image_shape == (4, 4)
    assert data.features.shape == (6, 16)
    assert float(data.features.max()) == 1.0
    with pytest.raises(InputError, match="no label array 'y'"):
        load_dataset(path, "y")


def test_from_arrays_rejects_non_finite() -> None:
    with pytest.raises(InputError, match="NaN or infinite"):
        from_arrays(np.array([[np.nan], [1.0]]), np.array([0, 1]))


def test_companion_is_encoded_like_the_audited_data(tmp_path: Path) -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "b"], "y": ["n", "p", "n", "p"]})
    test = pd.DataFrame({"x": [2.5], "c": ["b"], "y": ["p"]})
    data = load_dataset(_write(tmp_path, train), "y")
    other = load_companion(_write(tmp_path, test, "t.csv"), data, "y")
    assert other.features.shape[1] == data.features.shape[1]
    assert other.labels.tolist() == [1]
    unknown = pd.DataFrame({"x": [1.0], "c": ["a"], "y": ["maybe"]})
    with pytest.raises(InputError, match="label 'maybe' does not occur"):
        load_companion(_write(tmp_path, unknown, "u.csv"), data, "y")


def test_large_tables_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, pd.DataFrame({"x": range(100), "y": [0, 1] * 50}))
    assert not should_stream(path)
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", "10")
    assert should_stream(path)


def test_identifier_columns_are_ignored(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "rownames": range(1, 7),
            "customer": [f"c{i}" for i in range(6)],
            "amount": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
            "y": [0, 1] * 3,
        }
    )
    data = load_dataset(_write(tmp_path, frame), "y")
    assert data.ignored_columns == ["rownames", "customer"]
    assert data.feature_names == ["amount"]
    assert list(data.frame.columns) == ["amount"]


@pytest.mark.parametrize(
    ("label_type", "values", "classes"),
    [
        # Dictionary-encoded strings load as a categorical in the order the writer met them: 'pos' first.
        (pa.dictionary(pa.int8(), pa.string()), ["pos", "neg", "pos", "neg"], ["neg", "pos"]),
        (pa.float64(), [1.0, 0.0, 1.0, 0.0], ["0", "1"]),
    ],
)
def test_parquet_label_classes_match_the_streamed_audit(
    tmp_path: Path, label_type: pa.DataType, values: list[object], classes: list[str]
) -> None:
    from bastion.data.audit.base import INTEGRITY, AuditOptions
    from bastion.data.audit.stream import stream_audit

    rows = 40
    table = pa.table(
        {
            "a": pa.array(np.arange(rows, dtype=np.float64)),
            "label": pa.array(values * (rows // len(values))).cast(label_type),
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    in_memory = load_dataset(path, "label")
    assert in_memory.classes == classes
    assert [in_memory.classes[c] for c in in_memory.labels[:2]] == classes[::-1]
    streamed = stream_audit(path, "label", options=AuditOptions(channels=(INTEGRITY,)), workers=1)
    assert streamed.classes == classes
