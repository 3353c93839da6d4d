"""Poisoning attacks at known rows, for the poisoning benchmark, its tests and the demo.

Every attack takes a clean training split (a 2-D float matrix, images flattened) and returns a
``Poisoned`` set: the new features and labels plus a boolean mask of the rows the attack touched or
added, so a detector's flags can be scored exactly. Attacks never touch the test split. Everything is
driven by a ``numpy.random.Generator`` so a seed reproduces the same poison.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ATTACKS = ("clean", "random", "pairflip", "backdoor", "outlier")


@dataclass(frozen=True, slots=True)
class Trigger:
    """A backdoor trigger: set ``columns`` of a row to ``values`` (a pixel patch or in-range values)."""

    columns: tuple[int, ...]
    values: tuple[float, ...]
    description: str

    def apply(self, features: FloatArray) -> FloatArray:
        """A copy of ``features`` with the trigger stamped on every row."""
        stamped = np.array(features, dtype=np.float64, copy=True)
        stamped[:, list(self.columns)] = np.asarray(self.values, dtype=np.float64)
        return stamped


@dataclass(frozen=True, slots=True)
class Poisoned:
    """A poisoned training split: features, labels and which rows are poison."""

    features: FloatArray
    labels: IntArray
    poison: BoolArray
    attack: str
    rate: float
    trigger: Trigger | None = None
    target: int | None = None

    @property
    def n_poison(self) -> int:
        """Number of poisoned rows."""
        return int(self.poison.sum())

    @property
    def poison_rows(self) -> IntArray:
        """0-based positions of the poisoned rows, ascending."""
        return np.flatnonzero(self.poison).astype(np.int64)


def _count(rate: float, n: int) -> int:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    return round(rate * n)


def no_attack(features: FloatArray, labels: IntArray) -> Poisoned:
    """The clean split itself (to count false positives)."""
    return Poisoned(
        np.array(features, dtype=np.float64, copy=True),
        np.array(labels, dtype=np.int64, copy=True),
        np.zeros(len(labels), dtype=bool),
        "clean",
        0.0,
    )


def random_flips(
    features: FloatArray, labels: IntArray, rate: float, n_classes: int, rng: np.random.Generator
) -> Poisoned:
    """Flip the labels of ``rate`` of all rows, each to a uniformly chosen *other* class."""
    n = len(labels)
    rows = rng.choice(n, size=_count(rate, n), replace=False)
    new = np.array(labels, dtype=np.int64, copy=True)
    # An offset in 1..K-1 modulo K is uniform over the other classes and never the original.
    offsets = rng.integers(1, n_classes, size=len(rows))
    new[rows] = (new[rows] + offsets) % n_classes
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return Poisoned(np.array(features, dtype=np.float64, copy=True), new, mask, "random", rate)


def pair_flips(
    features: FloatArray,
    labels: IntArray,
    rate: float,
    source: int,
    target: int,
    rng: np.random.Generator,
) -> Poisoned:
    """Relabel ``rate`` of the ``source`` class as ``target`` (a targeted class-pair flip)."""
    if source == target:
        raise ValueError("source and target must differ")
    members = np.flatnonzero(np.asarray(labels) == source)
    rows = rng.choice(members, size=_count(rate, len(members)), replace=False)
    new = np.array(labels, dtype=np.int64, copy=True)
    new[rows] = target
    mask = np.zeros(len(labels), dtype=bool)
    mask[rows] = True
    return Poisoned(
        np.array(features, dtype=np.float64, copy=True), new, mask, "pairflip", rate, target=target
    )


def backdoor(
    features: FloatArray,
    labels: IntArray,
    rate: float,
    trigger: Trigger,
    target: int,
    rng: np.random.Generator,
) -> Poisoned:
    """Dirty-label all-to-one backdoor: stamp the trigger on ``rate`` of all rows (from other classes) and
    relabel them ``target``.

    At most half of the other classes' rows are taken: on a table with a 9% minority class (email spam) a
    10% backdoor would otherwise relabel the whole minority and leave a one-class problem. ``n_poison``
    reports the count actually used.
    """
    others = np.flatnonzero(np.asarray(labels) != target)
    rows = rng.choice(others, size=min(_count(rate, len(labels)), len(others) // 2), replace=False)
    new_x = np.array(features, dtype=np.float64, copy=True)
    new_x[rows] = trigger.apply(new_x[rows])
    new_y = np.array(labels, dtype=np.int64, copy=True)
    new_y[rows] = target
    mask = np.zeros(len(labels), dtype=bool)
    mask[rows] = True
    return Poisoned(new_x, new_y, mask, "backdoor", rate, trigger=trigger, target=target)


def outliers(
    features: FloatArray,
    labels: IntArray,
    rate: float,
    n_classes: int,
    rng: np.random.Generator,
    clip: tuple[float, float] | None = None,
) -> Poisoned:
    """Add ``rate`` x n rows at mean + 5 * std * N(0, 1) per feature with random labels, shuffled in.

    ``clip`` keeps the injected rows in a valid range (pixels in [0, 1]) so that they are still images.
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    k = _count(rate, n)
    extra = x.mean(axis=0) + 5.0 * x.std(axis=0) * rng.standard_normal((k, x.shape[1]))
    if clip is not None:
        extra = np.clip(extra, clip[0], clip[1])
    extra_y = rng.integers(0, n_classes, size=k)
    all_x = np.vstack([x, extra])
    all_y = np.concatenate([np.asarray(labels, dtype=np.int64), extra_y.astype(np.int64)])
    mask = np.concatenate([np.zeros(n, dtype=bool), np.ones(k, dtype=bool)])
    # Shuffle so that no detector (or row-position heuristic) can find the poison at the end.
    order = rng.permutation(n + k)
    return Poisoned(all_x[order], all_y[order], mask[order], "outlier", rate)


def image_patch_trigger(image_shape: tuple[int, int], size: int = 2, value: float = 1.0) -> Trigger:
    """A ``size`` x ``size`` patch at the bottom-right corner, set to the maximum pixel value."""
    height, width = image_shape
    cells = [(r, c) for r in range(height - size, height) for c in range(width - size, width)]
    columns = tuple(r * width + c for r, c in cells)
    return Trigger(
        columns, (value,) * len(columns), f"{size}x{size} patch = {value:g} at bottom-right corner"
    )


def tabular_trigger(
    features: FloatArray, columns: Sequence[int], percentile: float, names: Sequence[str] | None = None
) -> Trigger:
    """Set ``columns`` to their own in-range ``percentile`` (of the clean training split)."""
    values = tuple(float(np.percentile(features[:, c], percentile)) for c in columns)
    label = [names[c] if names is not None else f"col{c}" for c in columns]
    spec = ", ".join(f"{n}={v:g}" for n, v in zip(label, values, strict=True))
    return Trigger(tuple(int(c) for c in columns), values, f"{spec} (p{percentile:g} of train)")


def prevalence(trigger: Trigger, features: FloatArray) -> float:
    """Share of rows of ``features`` that already carry every value of ``trigger``."""
    x = np.asarray(features, dtype=np.float64)[:, list(trigger.columns)]
    return float(np.mean(np.all(x == np.asarray(trigger.values, dtype=np.float64), axis=1)))


def continuous_columns(features: FloatArray, min_unique: int = 10) -> list[int]:
    """Columns with at least ``min_unique`` distinct values (not one-hot or small counts)."""
    return [c for c in range(features.shape[1]) if len(np.unique(features[:, c])) >= min_unique]


def label_correlation(features: FloatArray, labels: IntArray) -> FloatArray:
    """Absolute Pearson correlation of each column with the label (binary labels in the benchmark)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    denom = np.sqrt((xc**2).sum(axis=0) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, np.abs(xc.T @ yc) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.asarray(corr, dtype=np.float64)


def tabular_trigger_candidates(
    features: FloatArray,
    labels: IntArray,
    names: Sequence[str] | None = None,
    *,
    k: int = 3,
    pool: int = 8,
    percentiles: Sequence[float] = (99.0, 97.5, 95.0, 90.0),
) -> Iterator[Trigger]:
    """Candidate triggers, least label-correlated first: ``k`` of the ``pool`` continuous columns least
    correlated with the label, at each percentile.

    The benchmark keeps the first candidate whose clean-model flip rate is low, so the tabular ASR measures
    the poison rather than a natural evasion pattern.
    """
    # Counts with a handful of values (cc, inherit, password in email) qualify: a 0/1 column does not.
    cols = continuous_columns(features, min_unique=4)
    if len(cols) < k:
        raise ValueError(f"need {k} continuous columns, found {len(cols)}")
    corr = label_correlation(features[:, cols], labels)
    ranked = [cols[i] for i in np.argsort(corr, kind="stable")[:pool]]
    combos = sorted(combinations(ranked, k), key=lambda cs: sum(ranked.index(c) for c in cs))
    for percentile in percentiles:
        for combo in combos:
            yield tabular_trigger(features, combo, percentile, names)
