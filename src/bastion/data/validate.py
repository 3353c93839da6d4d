"""Prove a sanitization helped: retrain the user's recipe with and without the removed rows and compare.

Both models are scored on the same clean held-out rows: accuracy, and the attack success rate of every
trigger pattern the backdoor channel confirmed. The sanitized set is accepted only if accuracy does not
drop by more than the tolerance and no attack got more successful.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bastion.data.audit.base import AuditData, IntArray
from bastion.data.audit.representation import interrupts_not_swallowed
from bastion.data.readers import one_line_reason
from bastion.errors import UsageError

BUILTIN_RECIPES = ("mlp", "logreg", "forest")
HOLDOUT_SHARE = 0.2


def make_estimator(recipe: str, seed: int) -> Any:
    """A fresh, unfitted estimator for ``recipe``: a built-in name or ``module:Class`` with fit/predict."""
    if recipe == "mlp":
        from sklearn.neural_network import MLPClassifier

        from bastion.data.audit import representation

        # The same network the backdoor channel reads, so "before" reproduces the model it probed.
        return MLPClassifier(
            hidden_layer_sizes=representation.HIDDEN,
            max_iter=representation.MAX_ITER,
            batch_size=representation.BATCH,
            random_state=seed,
        )
    if recipe == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000)
    if recipe == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
    module_name, _, class_name = recipe.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        estimator = cls()
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise UsageError(
            f"--recipe {recipe!r}: cannot build it ({exc}); use {', '.join(BUILTIN_RECIPES)} or module:Class"
        ) from None
    except Exception as exc:  # the user's module runs arbitrary code at import and in __init__
        raise UsageError(f"--recipe {recipe!r}: cannot build it ({_why(exc)})") from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise UsageError(f"--recipe {recipe!r}: {class_name} has no fit/predict")
    return estimator


@dataclass(slots=True)
class ValidationResult:
    """Before and after: the recipe's clean held-out accuracy and each confirmed trigger's success rate."""

    recipe: str
    holdout: str
    holdout_rows: int
    train_rows_before: int
    train_rows_after: int
    accuracy_before: float
    accuracy_after: float
    tolerance_points: float
    attack_success_before: dict[str, float] = field(default_factory=dict)
    attack_success_after: dict[str, float] = field(default_factory=dict)
    accepted: bool = False
    verdict: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line_reason(exc)}"


def _fit(recipe: str, seed: int, features: Any, labels: IntArray) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    estimator = make_estimator(recipe, seed)
    # A bounded number of iterations is a choice here, not a defect worth a warning per run. The built-in
    # recipes are small: one BLAS thread avoids oversubscription; a user's estimator keeps its own setting.
    threads = 1 if recipe in BUILTIN_RECIPES else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # The mlp recipe's fixed batch size is clipped on small data; that is expected, not news.
        warnings.filterwarnings(
            "ignore", message=r"Got `batch_size` less than 1 or larger than", category=UserWarning
        )
        try:
            with interrupts_not_swallowed():
                estimator.fit(features, labels)
        except Exception as exc:  # a recipe (ours on odd data, or the user's) may raise anything
            raise UsageError(f"--recipe {recipe!r}: fit failed ({_why(exc)})") from None
    return estimator


def _predictor(recipe: str, estimator: Any) -> Callable[[Any], Any]:
    """``estimator.predict`` that fails clearly on an exception or a prediction of the wrong shape."""

    def predict(features: Any) -> Any:
        try:
            predicted = np.asarray(estimator.predict(features))
        except Exception as exc:  # the user's code
            raise UsageError(f"--recipe {recipe!r}: predict failed ({_why(exc)})") from None
        # A scalar or a column would broadcast against the labels and score as if it were real.
        expected = (len(features),)
        if predicted.shape != expected:
            raise UsageError(
                f"--recipe {recipe!r}: predict returned shape {predicted.shape} for {len(features)} rows; "
                f"expected {expected}"
            )
        return predicted

    return predict


def _accuracy(predict: Callable[[Any], Any], test_x: Any, test_y: IntArray) -> float:
    return round(100 * float(np.mean(predict(test_x) == test_y)), 2)


def _holdout_split(data: AuditData, seed: int) -> tuple[IntArray, IntArray]:
    """Hold out a stratified share of all rows; train on the rest.

    The held-out rows are drawn from every row, flagged or not: drawing only from unflagged rows would hide
    the harm of removing, say, a whole class. Their labels may be as noisy as the data, which lowers both
    scores alike; a trusted ``--holdout`` set is better when the user has one.
    """
    rng = np.random.default_rng(seed)
    held: list[IntArray] = []
    for code in np.unique(data.labels):
        rows = np.flatnonzero(data.labels == code)
        held.append(rng.permutation(rows)[: round(len(rows) * HOLDOUT_SHARE)])
    holdout = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(data.n_rows), holdout), holdout


def validate_sanitization(
    data: AuditData,
    removed_rows: list[int],
    patterns: list[dict[str, Any]],
    *,
    recipe: str = "mlp",
    holdout: AuditData | None = None,
    tolerance_points: float = 1.0,
    seed: int = 0,
) -> ValidationResult:
    """Retrain ``recipe`` on the data as given and without ``removed_rows``; compare on held-out rows."""
    if not math.isfinite(tolerance_points) or tolerance_points < 0:
        raise UsageError(f"--tolerance {tolerance_points}: expected a finite number >= 0")
    removed = set(removed_rows)
    if holdout is None:
        train, held = _holdout_split(data, seed)
        test_x, test_y = data.features[held], data.labels[held]
        where = f"{len(held)} rows held out ({int(HOLDOUT_SHARE * 100)}% per class)"
    else:
        train = np.arange(data.n_rows)
        test_x, test_y = holdout.features, holdout.labels
        where = holdout.path
    kept = np.array([i for i in train if i not in removed], dtype=np.int64)
    if len(np.unique(data.labels[kept])) < 2 or len(test_y) == 0:
        raise UsageError(
            f"{data.path}: --validate: too few rows left to retrain and test "
            f"({len(kept)} training rows after removal, {len(test_y)} held out); audit a larger dataset"
        )
    before = _predictor(recipe, _fit(recipe, seed, data.features[train], data.labels[train]))
    after = _predictor(recipe, _fit(recipe, seed, data.features[kept], data.labels[kept]))
    result = ValidationResult(
        recipe=recipe,
        holdout=where,
        holdout_rows=len(test_y),
        train_rows_before=len(train),
        train_rows_after=len(kept),
        accuracy_before=_accuracy(before, test_x, test_y),
        accuracy_after=_accuracy(after, test_x, test_y),
        tolerance_points=tolerance_points,
    )
    if patterns:
        _score_attacks(result, patterns, before, after, test_x, test_y)
    _decide(result)
    return result


def _score_attacks(
    result: ValidationResult,
    patterns: list[dict[str, Any]],
    before: Callable[[Any], Any],
    after: Callable[[Any], Any],
    test_x: Any,
    test_y: Any,
) -> None:
    from bastion.data.audit.backdoor import TriggerPattern, attack_success_rate

    for spec in patterns:
        pattern = TriggerPattern.from_json(spec)
        name = f"class {pattern.target_name}"
        result.attack_success_before[name] = round(
            100 * attack_success_rate(before, test_x, test_y, pattern), 2
        )
        result.attack_success_after[name] = round(
            100 * attack_success_rate(after, test_x, test_y, pattern), 2
        )


def _decide(result: ValidationResult) -> None:
    tolerance_points = result.tolerance_points
    drop = result.accuracy_before - result.accuracy_after
    # Retraining noise moves a success rate by a few points; only a clear rise rejects the set.
    worse = [k for k, v in result.attack_success_after.items() if v > result.attack_success_before[k] + 5.0]
    if drop > tolerance_points:
        result.verdict = (
            f"rejected: accuracy fell {drop:.2f} points ({result.accuracy_before:.2f}% -> "
            f"{result.accuracy_after:.2f}%), more than the {tolerance_points:g}-point tolerance"
        )
    elif worse:
        result.verdict = f"rejected: the attack on {worse[0]} got more successful after sanitizing"
    else:
        result.accepted = True
        result.verdict = (
            f"accepted: accuracy {result.accuracy_before:.2f}% -> {result.accuracy_after:.2f}% "
            f"(tolerance {tolerance_points:g} points)"
        )
