"""Column drift: shifts found, same-distribution data not flagged at any size, chunk counts add up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bastion.data.audit.drift import (
    CATEGORICAL,
    DISCRETE,
    IDENTIFIER,
    NUMERIC,
    ColumnProfile,
    compare,
    drift_report,
    js_distance,
    psi,
    schema_changes,
)


def _by_column(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, object]:
    return {d.column: d for d in drift_report(reference, current)}


def test_shifted_numeric_column_is_flagged() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"amount": rng.lognormal(3, 0.5, 5000), "age": rng.normal(40, 10, 5000)})
    current = pd.DataFrame({"amount": rng.lognormal(3, 0.5, 5000) * 1.5, "age": rng.normal(40, 10, 5000)})
    report = {d.column: d for d in drift_report(reference, current)}
    assert report["amount"].drifted
    assert report["amount"].kind == NUMERIC
    assert report["amount"].psi is not None
    assert report["amount"].psi > 0.25
    assert "mean" in report["amount"].reason
    assert not report["age"].drifted
    assert report["age"].level == "stable"


def test_same_distribution_of_100k_rows_is_not_flagged() -> None:
    # The over-alerting case: a p-value test calls tiny differences significant at this size.
    rng = np.random.default_rng(1)
    n = 100_000
    reference = pd.DataFrame(
        {"x": rng.normal(0, 1, n), "c": rng.choice(list("abcd"), n, p=[0.4, 0.3, 0.2, 0.1])}
    )
    current = pd.DataFrame(
        {"x": rng.normal(0.01, 1, n), "c": rng.choice(list("abcd"), n, p=[0.39, 0.31, 0.2, 0.1])}
    )
    report = drift_report(reference, current)
    assert [d.level for d in report] == ["stable", "stable"]
    assert not any(d.drifted for d in report)


@pytest.mark.parametrize("n", [30, 200, 2000])
def test_small_same_distribution_samples_do_not_alert(n: int) -> None:
    rng = np.random.default_rng(n)
    alerts = 0
    for _ in range(20):
        reference = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("abcdefgh"), n)})
        current = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("abcdefgh"), n)})
        alerts += sum(d.drifted for d in drift_report(reference, current))
    assert alerts == 0


def test_categorical_drift_is_flagged_with_the_moved_category() -> None:
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"plan": rng.choice(["basic", "pro", "team"], 3000, p=[0.6, 0.3, 0.1])})
    current = pd.DataFrame({"plan": rng.choice(["basic", "pro", "team"], 3000, p=[0.3, 0.3, 0.4])})
    (drift,) = drift_report(reference, current)
    assert drift.kind == CATEGORICAL
    assert drift.drifted
    assert drift.js is not None
    assert drift.js > 0.1
    assert "share of 'team' 10% -> 4" in drift.reason


def test_new_category_and_missing_values_count_as_drift() -> None:
    reference = pd.DataFrame({"c": ["a", "b"] * 500})
    current = pd.DataFrame({"c": ["a", "b", "zzz", None] * 250})
    (drift,) = drift_report(reference, current)
    assert drift.drifted


def test_few_valued_numbers_are_compared_as_categories() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"stars": rng.integers(1, 6, 4000)})
    current = pd.DataFrame({"stars": rng.choice([1, 5], 4000)})
    (drift,) = drift_report(reference, current)
    assert drift.kind == DISCRETE
    assert drift.drifted


def test_identifier_columns_are_skipped() -> None:
    reference = pd.DataFrame({"id": [f"u{i}" for i in range(500)]})
    current = pd.DataFrame({"id": [f"v{i}" for i in range(500)]})
    (drift,) = drift_report(reference, current)
    assert drift.kind == IDENTIFIER
    assert drift.level == "skipped"
    assert not drift.drifted


def test_text_in_a_numeric_column_does_not_crash() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"x": rng.normal(size=1000)})
    current = pd.DataFrame({"x": ["n/a"] * 500 + [str(v) for v in rng.normal(size=500)]})
    (drift,) = drift_report(reference, current)
    assert drift.drifted
    assert "missing values 0% -> 50%" in drift.reason


def test_schema_changes_name_missing_and_added_columns() -> None:
    assert schema_changes(["a", "b", "c"], ["a", "c", "d"]) == {"missing": ["b"], "added": ["d"]}
    reference = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2]})
    assert [d.column for d in drift_report(reference, pd.DataFrame({"a": [1.0, 2.0]}))] == ["a"]


@pytest.mark.parametrize(
    "values",
    [
        lambda rng, n: rng.normal(size=n),
        lambda rng, n: rng.choice(["a", "b", "c", None], n),
        lambda rng, n: rng.integers(0, 4, n).astype(float),
    ],
)
def test_chunk_counts_add_up_to_the_whole_frame(values: object) -> None:
    rng = np.random.default_rng(5)
    make = values  # type: ignore[assignment]
    reference = pd.Series(make(rng, 2000))
    current = pd.Series(make(rng, 3000))
    current.iloc[::97] = None
    profile = ColumnProfile.from_reference(reference, "col")
    whole = profile.counts(current)
    merged = sum(profile.counts(current.iloc[i : i + 700]) for i in range(0, len(current), 700))
    assert whole.shape == merged.shape == (profile.size,)
    np.testing.assert_allclose(merged, whole, rtol=1e-12)
    assert profile.rows(whole) == 3000
    from_chunks, from_whole = compare(profile, merged), compare(profile, whole)
    assert from_chunks.level == from_whole.level
    assert from_chunks.psi == pytest.approx(from_whole.psi)
    assert from_chunks.wasserstein == pytest.approx(from_whole.wasserstein)
    assert from_chunks.js == pytest.approx(from_whole.js)


def test_distances_are_zero_for_identical_histograms() -> None:
    counts = np.array([10.0, 20.0, 30.0, 0.0])
    assert psi(counts, counts) == pytest.approx(0.0)
    assert js_distance(counts, counts) == pytest.approx(0.0)
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(np.sqrt(np.log(2)))


@pytest.mark.parametrize("seed", range(3))
def test_sparse_columns_of_unique_values_do_not_alert(seed: int) -> None:
    # Pixel-like: zero almost everywhere, a few rows with an intensity that never repeats. Compared as
    # categories, every new intensity looked like a new category; the column must stay stable.
    rng = np.random.default_rng(seed)

    def pixels(n: int, rate: float) -> np.ndarray:
        return np.where(rng.random(n) < rate, rng.random(n), 0.0)

    reference = pd.DataFrame(
        {"rare": pixels(1250, 0.01), "sparse": pixels(1250, 0.1), "one": pixels(1250, 0.001)}
    )
    current = pd.DataFrame(
        {"rare": pixels(1250, 0.01), "sparse": pixels(1250, 0.1), "one": pixels(1250, 0.001)}
    )
    assert [d.level for d in drift_report(reference, current)] == ["stable", "stable", "stable"]
