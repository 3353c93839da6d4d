"""Turn a table's feature columns into the numeric matrix every detector reads, the same way every time.

Numbers are median-imputed and standardised; categories are one-hot encoded over their most frequent
values (the rest share one "other" column, so an ID column cannot blow the width up). The encoder is fitted
once, on the whole frame or on a streaming sample, and then applied to any chunk with the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bastion.data.audit.base import FloatArray
from bastion.errors import InputError

MAX_CATEGORIES = 50
OTHER = "<other>"
MISSING = "<missing>"
# A text column where at least this share of values parse as numbers is a numeric column with stray words.
MIXED_NUMERIC_SHARE = 0.9


def numeric_share(series: pd.Series) -> float:
    """Share of the present values of a text column that parse as numbers (1.0 for a numeric column)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return 1.0
    present = series.dropna()
    if present.empty:
        return 0.0
    return float(pd.to_numeric(present, errors="coerce").notna().mean())


def check_finite(series: pd.Series, column: str, offset: int = 0) -> None:
    """InputError when a numeric column holds an infinite value: no scale or model can use it.

    ``offset`` is added to the position of the first infinite value, for chunks of a larger file.
    """
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        first = int(np.flatnonzero(infinite)[0])
        raise InputError(f"column {column!r} holds infinite values (row {offset + first})")


def _as_numeric(series: pd.Series, column: str) -> pd.Series | None:
    """The column as floats, None if it is categorical; InputError if it mixes numbers and words."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
        check_finite(values, column)
        return values
    present = series.dropna()
    if present.empty:
        return None
    parsed = pd.to_numeric(present, errors="coerce")
    share = float(parsed.notna().mean())
    if share == 1.0:
        values = pd.to_numeric(series, errors="coerce").astype("float64")
        check_finite(values, column)
        return values
    if share >= MIXED_NUMERIC_SHARE:
        position = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        row = present.index[position]
        raise InputError(
            f"column {column!r} mixes numbers and text (row {row}: {present.iloc[position]!r}); "
            "fix the value or cast the column"
        )
    return None


@dataclass(slots=True)
class TableEncoder:
    """A fitted encoding: which columns are numeric, their centre and scale, and the kept categories."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> TableEncoder:
        """Learn the encoding of ``frame``'s columns."""
        encoder = cls()
        for column in frame.columns:
            name = str(column)
            values = _as_numeric(frame[column], name)
            if values is None:
                counts = frame[column].astype("string").fillna(MISSING).value_counts()
                encoder.categorical.append(name)
                encoder.categories[name] = [str(v) for v in counts.index[:MAX_CATEGORIES]]
                continue
            encoder.numeric.append(name)
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            encoder.medians[name] = median
            encoder.means[name] = float(filled.mean())
            std = float(filled.std(ddof=0))
            encoder.scales[name] = std if std > 1e-12 else 1.0
        if not encoder.numeric and not encoder.categorical:
            raise InputError("no feature columns besides the label")
        return encoder

    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded matrix's columns: numeric names, then ``column=value`` one-hots."""
        names = list(self.numeric)
        for column in self.categorical:
            names.extend(f"{column}={value}" for value in self.categories[column])
            names.append(f"{column}={OTHER}")
        return names

    def transform(self, frame: pd.DataFrame) -> FloatArray:
        """Encode ``frame`` (same columns as at fit time) into a float64 matrix."""
        missing = [c for c in (*self.numeric, *self.categorical) if c not in frame.columns]
        if missing:
            raise InputError(f"column {missing[0]!r} is missing from this part of the data")
        blocks: list[FloatArray] = []
        if self.numeric:
            numeric = np.empty((len(frame), len(self.numeric)), dtype=np.float64)
            for j, column in enumerate(self.numeric):
                series = frame[column]
                values = _as_numeric(series, column)
                if values is None:  # a chunk of only words in a column that was numeric in the sample
                    raise InputError(f"column {column!r} holds text where numbers were expected")
                filled = values.fillna(self.medians[column]).to_numpy(dtype=np.float64)
                numeric[:, j] = (filled - self.means[column]) / self.scales[column]
            blocks.append(numeric)
        for column in self.categorical:
            kept = self.categories[column]
            values = frame[column].astype("string").fillna(MISSING).to_numpy(dtype=object)
            codes = pd.Index(kept).get_indexer(values).astype(np.int64)
            codes[codes < 0] = len(kept)  # unseen or rare values share the "other" column
            onehot = np.zeros((len(frame), len(kept) + 1), dtype=np.float64)
            onehot[np.arange(len(frame)), codes] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    def indicator_columns(self) -> list[int]:
        """Positions of the one-hot category columns in the encoded matrix."""
        return list(range(len(self.numeric), len(self.feature_names)))

    def raw_value(self, name: str, value: float) -> float:
        """A standardised value of encoded column ``name`` back in the column's units (one-hots as is)."""
        if name in self.means:
            return value * self.scales[name] + self.means[name]
        return value

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description, recorded in reports so that a result can be reproduced."""
        return {"numeric": self.numeric, "categorical": self.categorical, "categories": self.categories}
