"""Robust statistics the channels share: thresholds from the median and MAD, never from an expected rate."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bastion.data.audit.base import FloatArray

# The MAD of a normal sample is 0.6745 standard deviations; dividing by it puts robust z on the z scale.
MAD_TO_SIGMA = 1.4826


def mad(values: FloatArray) -> float:
    """Median absolute deviation scaled to a standard deviation (0 for constant input)."""
    if values.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def robust_z(values: FloatArray, floor: float = 1e-12) -> FloatArray:
    """(x - median) / scaled MAD; a zero MAD falls back to the standard deviation, then to ``floor``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    scale = mad(values)
    if scale <= floor:
        scale = float(np.std(values))
    return (values - np.median(values)) / max(scale, floor)


def squash(z: FloatArray, cut: float) -> FloatArray:
    """Map robust z-scores to [0, 1]: 0.5 at the flagging cut, approaching 1 far beyond it."""
    z = np.asarray(z, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(z - cut) / max(cut / 4.0, 1e-6)))


# A flag column stays a flag when at most this share of its rows hold stray values of their own.
STRAY_SHARE = 0.2


def is_flag_column(column: FloatArray) -> bool:
    """Whether a column is one-hot or a flag: two values, give or take a few stray rows of junk.

    Junk rows (far-out values on every column, as injected outliers carry) give each of their rows a value
    of its own, so a flag column holding them has many distinct values. Only two of them repeat, though,
    and the others cover at most STRAY_SHARE of the rows (injected outliers at 5% and 10% stay under it);
    a count (0, 1, 2, ...) repeats its values.
    """
    _, counts = np.unique(np.asarray(column), return_counts=True)
    return is_flag_counts(counts)


def is_flag_counts(counts: npt.NDArray[np.int64]) -> bool:
    """``is_flag_column`` from a column's per-value row counts, for callers that already have them."""
    repeated = int(np.count_nonzero(counts > 1))
    singles = int(np.count_nonzero(counts == 1))
    return repeated <= 2 and singles <= STRAY_SHARE * int(counts.sum())
