"""Outlier channel: rows far from the rest of the data, with robust cuts instead of an expected share.

Two scores look at each row. An isolation forest measures how easily the row is separated from the others
(good at points far out on many features); its score becomes a robust z against the fitted rows. A
per-feature score measures how far each value sits from its feature's median in units of that feature's
spread, and averages the few most extreme features: this catches rows that carry a value on features that
are almost constant elsewhere (a corner patch of white pixels, a field that is nearly always empty).
Both cuts were tuned on clean tuning data to flag well under 1% of rows; ``contamination="auto"`` is never
used because it flags about a fifth of clean images.

The scoring is split into ``fit_outlier_model`` (on all rows or a sample) and ``OutlierModel.score`` (any
chunk), so a streaming or Ray path fits once and scores chunks with the same code.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.data.audit import rules
from bastion.data.audit.base import OUTLIER, AuditData, AuditOptions, ChannelResult, FloatArray, RowFlag
from bastion.data.audit.stats import mad, squash
from bastion.findings import Finding, Location, Severity

TREES = 150
MAX_SAMPLES = 256
# Rows the model is fitted on at most; scoring then runs on any number of rows.
FIT_ROWS = 50_000
# Robust-z cut on the isolation-forest score.
FOREST_CUT = 6.0
# The per-feature score averages this many of a row's most extreme feature z-scores.
TOP_FEATURES = 3
# Robust-z cut on the (log) per-feature score.
FEATURE_CUT = 6.0
# A feature whose most common value covers at least this share of rows is reported as "near-constant".
NEAR_CONSTANT = 0.9

CHECK_FOREST = "isolation-forest"
CHECK_FEATURE = "rare-feature-values"


@dataclass(slots=True)
class OutlierModel:
    """A fitted outlier scorer: forest, per-feature centre and spread, and the score scales and cuts."""

    forest: Any
    centre: FloatArray
    spread: FloatArray
    mode: FloatArray
    mode_share: FloatArray
    forest_median: float
    forest_scale: float
    feature_median: float
    feature_scale: float
    forest_cut: float = FOREST_CUT
    feature_cut: float = FEATURE_CUT

    @property
    def cut(self) -> float:
        """The flagging cut on ``score``: a row scoring at or above it is an outlier."""
        return self.forest_cut

    def feature_z(self, features: FloatArray) -> FloatArray:
        """Per-feature |value - median| / spread (rows x features)."""
        return np.abs(np.asarray(features, dtype=np.float64) - self.centre) / self.spread

    def parts(self, features: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Robust z of the forest score and of the per-feature score, per row."""
        x = np.asarray(features, dtype=np.float64)
        raw_forest = -np.asarray(self.forest.score_samples(x), dtype=np.float64)
        forest_z = (raw_forest - self.forest_median) / self.forest_scale
        feature_z = (_feature_score(self.feature_z(x)) - self.feature_median) / self.feature_scale
        return forest_z, feature_z

    def score(self, features: FloatArray) -> FloatArray:
        """One outlier score per row on the forest's robust-z scale; compare with ``cut``."""
        forest_z, feature_z = self.parts(features)
        return np.maximum(forest_z, feature_z * (self.forest_cut / self.feature_cut))


def _feature_score(z: FloatArray) -> FloatArray:
    """Log of the mean of each row's TOP_FEATURES largest feature z-scores (log tames heavy tails)."""
    top = min(TOP_FEATURES, z.shape[1])
    if top == 0:
        return np.zeros(z.shape[0])
    largest = -np.partition(-z, top - 1, axis=1)[:, :top]
    return np.asarray(np.log1p(largest.mean(axis=1)), dtype=np.float64)


def _spread(x: FloatArray) -> FloatArray:
    """Per-feature MAD scaled to a standard deviation, falling back to the standard deviation when the
    MAD is zero (near-constant features), so that a rare value on such a feature is far out."""
    centre = np.median(x, axis=0)
    spread = 1.4826 * np.median(np.abs(x - centre), axis=0)
    std = x.std(axis=0)
    spread = np.where(spread > 1e-12, spread, std)
    # A feature constant in the fitted rows: any other value is an outlier, but not an infinite one.
    return np.where(spread > 1e-12, spread, 1.0)


def _modes(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    modes = np.empty(x.shape[1])
    shares = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        values, counts = np.unique(x[:, j], return_counts=True)
        best = int(np.argmax(counts))
        modes[j] = values[best]
        shares[j] = counts[best] / x.shape[0]
    return modes, shares


def _scale(values: FloatArray) -> tuple[float, float]:
    scale = mad(values)
    if scale <= 1e-12:
        scale = float(np.std(values))
    return float(np.median(values)), max(scale, 1e-12)


def fit_outlier_model(features: FloatArray, seed: int, indicators: Sequence[int] = ()) -> OutlierModel:
    """Fit the forest and the per-feature statistics on ``features`` (a sample is enough).

    ``indicators`` are one-hot category columns: they stay in the forest but not in the per-feature score,
    where a rare category would otherwise look like a far-out value (their MAD is zero).
    """
    from sklearn.ensemble import IsolationForest

    x = np.asarray(features, dtype=np.float64)
    if x.shape[0] > FIT_ROWS:
        x = x[np.sort(np.random.default_rng(seed).choice(x.shape[0], FIT_ROWS, replace=False))]
    forest = IsolationForest(
        n_estimators=TREES, max_samples=min(MAX_SAMPLES, x.shape[0]), random_state=seed, n_jobs=1
    )
    with warnings.catch_warnings():
        # Fitting on a plain ndarray and scoring another ndarray triggers no feature-name warning, but
        # older releases warn about max_samples > n_samples on tiny inputs; the clamp above handles it.
        warnings.simplefilter("ignore", category=UserWarning)
        forest.fit(x)
    raw_forest = -np.asarray(forest.score_samples(x), dtype=np.float64)
    centre = np.median(x, axis=0)
    spread = _spread(x)
    spread[list(indicators)] = np.inf
    modes, shares = _modes(x)
    feature_raw = _feature_score(np.abs(x - centre) / spread)
    forest_median, forest_scale = _scale(raw_forest)
    feature_median, feature_scale = _scale(feature_raw)
    return OutlierModel(
        forest, centre, spread, modes, shares, forest_median, forest_scale, feature_median, feature_scale
    )


def describe_row(
    feature_names: Sequence[str], model: OutlierModel, row: FloatArray, z: FloatArray, encoder: Any = None
) -> str:
    """Plain words for a row's two most extreme features, in the columns' own units when encoded."""

    def shown(name: str, value: float) -> float:
        return float(encoder.raw_value(name, value)) if encoder is not None else value

    parts: list[str] = []
    for j in np.argsort(-z)[:2].tolist():
        name = feature_names[j] if j < len(feature_names) else f"f{j}"
        value = float(row[j])
        if model.mode_share[j] >= NEAR_CONSTANT and value != model.mode[j]:
            parts.append(
                f"{name} = {shown(name, value):.2f} where {model.mode_share[j]:.1%} of rows are "
                f"{shown(name, float(model.mode[j])):.2f}"
            )
        else:
            parts.append(
                f"{name} = {shown(name, value):.2f}, {z[j]:.1f} robust SDs from the median "
                f"{shown(name, float(model.centre[j])):.2f}"
            )
    return "; ".join(parts)


def run_outlier_channel(data: AuditData, options: AuditOptions) -> ChannelResult:
    """Flag rows beyond the robust cuts of the isolation forest or the per-feature score."""
    x = np.asarray(data.features, dtype=np.float64)
    result = ChannelResult(channel=OUTLIER)
    if x.shape[0] < 10 or x.shape[1] == 0:
        result.summary = {"n_flagged": 0, "skipped": "fewer than 10 rows or no features"}
        return result
    indicators = data.encoder.indicator_columns() if data.encoder is not None else []
    model = fit_outlier_model(x, options.seed, indicators)
    forest_z, feature_z = model.parts(x)
    by_forest = forest_z >= model.forest_cut
    by_feature = feature_z >= model.feature_cut
    flagged = np.flatnonzero(by_forest | by_feature)
    for row in flagged.tolist():
        z = model.feature_z(x[row : row + 1])[0]
        words = describe_row(data.feature_names, model, x[row], z, data.encoder)
        if by_forest[row]:
            check = CHECK_FOREST
            score = float(squash(np.array([forest_z[row]]), model.forest_cut)[0])
            reason = f"far from the other rows (isolation-forest robust z {forest_z[row]:.1f}): {words}"
        else:
            check = CHECK_FEATURE
            score = float(squash(np.array([feature_z[row]]), model.feature_cut)[0])
            reason = f"rare feature values (robust z {feature_z[row]:.1f}): {words}"
        result.flags.append(RowFlag(row, OUTLIER, check, score, reason))
    result.summary = {
        "n_flagged": int(flagged.size),
        "by_isolation_forest": int(by_forest.sum()),
        "by_feature_values": int(by_feature.sum()),
        "forest_cut": model.forest_cut,
        "feature_cut": model.feature_cut,
        "trees": TREES,
        "max_samples": min(MAX_SAMPLES, x.shape[0]),
    }
    if flagged.size:
        share = flagged.size / x.shape[0]
        result.findings.append(
            Finding.make(
                rules.OUTLIERS,
                Severity.MEDIUM,
                f"{flagged.size} rows ({share:.1%}) lie beyond the robust outlier cut",
                Location(data.path),
                {
                    "flagged_rows": int(flagged.size),
                    "isolation_forest": int(by_forest.sum()),
                    "feature_values": int(by_feature.sum()),
                },
            )
        )
    return result
