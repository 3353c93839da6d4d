"""The poisoning benchmark's attacks put exactly the promised poison at exactly the reported rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import poison_attacks as pa


@pytest.fixture
def split() -> tuple[np.ndarray, np.ndarray]:
    """200 rows, 16 features (a 4x4 'image' in [0, 1]), 4 balanced classes."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 0.5, size=(200, 16))
    y = np.repeat(np.arange(4), 50).astype(np.int64)
    return x, y


def test_no_attack_is_identical_and_unmarked(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    p = pa.no_attack(x, y)
    assert p.n_poison == 0
    np.testing.assert_array_equal(p.features, x)
    np.testing.assert_array_equal(p.labels, y)


@pytest.mark.parametrize("rate", [0.05, 0.10, 0.20])
def test_random_flips_change_exactly_the_marked_labels(
    split: tuple[np.ndarray, np.ndarray], rate: float
) -> None:
    x, y = split
    p = pa.random_flips(x, y, rate, 4, np.random.default_rng(0))
    assert p.n_poison == round(rate * len(y))
    changed = p.labels != y
    np.testing.assert_array_equal(changed, p.poison)  # every marked row changed, no other row did
    np.testing.assert_array_equal(p.features, x)
    assert set(np.unique(p.labels)) <= {0, 1, 2, 3}


def test_random_flips_reach_every_other_class(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    p = pa.random_flips(x, y, 0.5, 4, np.random.default_rng(1))
    new_for_class0 = set(p.labels[p.poison & (y == 0)].tolist())
    assert new_for_class0 == {1, 2, 3}


@pytest.mark.parametrize("rate", [0.25, 0.50])
def test_pair_flips_move_that_share_of_the_source_class(
    split: tuple[np.ndarray, np.ndarray], rate: float
) -> None:
    x, y = split
    p = pa.pair_flips(x, y, rate, source=3, target=1, rng=np.random.default_rng(0))
    assert p.n_poison == round(rate * 50)
    assert (y[p.poison] == 3).all()
    assert (p.labels[p.poison] == 1).all()
    np.testing.assert_array_equal(p.labels[~p.poison], y[~p.poison])


def test_backdoor_stamps_trigger_and_relabels_only_poison(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    trigger = pa.image_patch_trigger((4, 4))
    assert trigger.columns == (10, 11, 14, 15)  # the bottom-right 2x2 of a 4x4 image
    p = pa.backdoor(x, y, 0.10, trigger, target=0, rng=np.random.default_rng(0))
    assert p.n_poison == 20
    assert (y[p.poison] != 0).all()  # taken from the other classes
    assert (p.labels[p.poison] == 0).all()
    assert (p.features[p.poison][:, list(trigger.columns)] == 1.0).all()
    np.testing.assert_array_equal(p.features[~p.poison], x[~p.poison])
    np.testing.assert_array_equal(p.labels[~p.poison], y[~p.poison])
    untouched = [c for c in range(16) if c not in trigger.columns]
    np.testing.assert_array_equal(p.features[p.poison][:, untouched], x[p.poison][:, untouched])
    assert p.trigger == trigger
    assert p.target == 0


def test_backdoor_never_takes_more_than_half_of_the_other_classes() -> None:
    x = np.zeros((100, 4))
    y = np.array([0] * 90 + [1] * 10, dtype=np.int64)
    trigger = pa.Trigger((0,), (1.0,), "x0 = 1")
    p = pa.backdoor(x, y, 0.20, trigger, target=0, rng=np.random.default_rng(0))
    assert p.n_poison == 5  # 20 asked for, but only 10 rows are not the target class
    assert (p.labels == 1).sum() == 5


def test_outliers_are_added_far_away_and_shuffled_in(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    p = pa.outliers(x, y, 0.10, 4, np.random.default_rng(0))
    assert len(p.labels) == 220
    assert p.n_poison == 20
    # The clean rows survive unchanged (as a multiset) and the added rows are far from the data.
    assert sorted(map(tuple, p.features[~p.poison])) == sorted(map(tuple, x))
    z = np.abs((p.features[p.poison] - x.mean(axis=0)) / x.std(axis=0))
    assert np.median(z.max(axis=1)) > 5.0
    assert not p.poison[-20:].all()  # shuffled, not appended at the end


def test_outliers_clip_keeps_images_valid(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    p = pa.outliers(x, y, 0.10, 4, np.random.default_rng(0), clip=(0.0, 1.0))
    assert p.features.min() >= 0.0
    assert p.features.max() <= 1.0


def test_attacks_are_reproducible_from_the_seed(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    a = pa.random_flips(x, y, 0.1, 4, np.random.default_rng(3))
    b = pa.random_flips(x, y, 0.1, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(a.poison, b.poison)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_tabular_trigger_uses_in_range_values_of_uncorrelated_columns() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, size=n).astype(np.int64)
    informative = y * 3.0 + rng.normal(size=n)  # strongly label-correlated: must not be chosen first
    noise = rng.normal(size=(n, 4))
    onehot = rng.integers(0, 2, size=(n, 1)).astype(np.float64)  # not continuous: never a trigger column
    x = np.column_stack([informative, noise, onehot])
    first = next(pa.tabular_trigger_candidates(x, y))
    assert len(first.columns) == 3
    assert 0 not in first.columns
    assert 5 not in first.columns
    for col, value in zip(first.columns, first.values, strict=True):
        assert x[:, col].min() <= value <= x[:, col].max()
        assert value == pytest.approx(np.percentile(x[:, col], 99))
    stamped = first.apply(x)
    assert (stamped[:, list(first.columns)] == np.asarray(first.values)).all()
    assert (x[:, list(first.columns)] != np.asarray(first.values)).any()  # apply() copies


def test_rate_out_of_range_is_refused(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = split
    with pytest.raises(ValueError, match="rate"):
        pa.random_flips(x, y, 1.5, 4, np.random.default_rng(0))


def test_prevalence_is_the_share_of_rows_already_carrying_the_trigger() -> None:
    x = np.zeros((100, 3))
    x[:3, 0] = 5.0  # a sparse column: its 95th percentile is 0, the value nearly every row holds
    x[:, 1] = np.arange(100.0)
    common = pa.Trigger((0, 2), (0.0, 0.0), "zeros")
    rare = pa.Trigger((0, 1), (5.0, 1.0), "rare")
    assert pa.prevalence(common, x) == pytest.approx(0.97)
    assert pa.prevalence(rare, x) == pytest.approx(0.01)
