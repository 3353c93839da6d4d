"""Validation retrains the recipe with and without the removed rows and accepts only a real improvement."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bastion.data.audit.base import AuditData
from bastion.data.audit.load import from_arrays
from bastion.data.validate import make_estimator, validate_sanitization
from bastion.errors import UsageError


def _flipped_digits(rate: float) -> tuple[AuditData, list[int]]:
    digits = load_digits()
    rng = np.random.default_rng(0)
    labels = digits.target.copy()
    flipped = rng.choice(len(labels), int(rate * len(labels)), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return from_arrays(digits.data / 16.0, labels, kind="image"), sorted(int(i) for i in flipped)


def test_removing_flipped_rows_is_accepted_and_helps() -> None:
    data, flipped = _flipped_digits(0.3)
    result = validate_sanitization(data, flipped, [], recipe="sklearn.neighbors:KNeighborsClassifier")
    assert result.accepted, result.verdict
    assert result.accuracy_after > result.accuracy_before
    assert result.train_rows_before - len(flipped) <= result.train_rows_after < result.train_rows_before
    assert result.verdict.startswith("accepted")


def test_removing_a_whole_class_is_rejected() -> None:
    data, _ = _flipped_digits(0.0)
    sevens = [int(i) for i in np.flatnonzero(data.labels == 7)]
    result = validate_sanitization(data, sevens, [], recipe="sklearn.neighbors:KNeighborsClassifier")
    assert not result.accepted
    assert "more than the 1-point tolerance" in result.verdict


def test_holdout_file_is_used_when_given() -> None:
    data, flipped = _flipped_digits(0.1)
    holdout, _ = _flipped_digits(0.0)
    result = validate_sanitization(
        data, flipped, [], recipe="sklearn.naive_bayes:GaussianNB", holdout=holdout
    )
    assert result.holdout == holdout.path
    assert result.holdout_rows == holdout.n_rows
    assert result.train_rows_before == data.n_rows


@pytest.mark.parametrize("recipe", ["nosuch.module:Thing", "builtins:dict", "sklearn.linear_model:Nope"])
def test_bad_recipes_are_usage_errors(recipe: str) -> None:
    with pytest.raises(UsageError, match="--recipe"):
        make_estimator(recipe, 0)
