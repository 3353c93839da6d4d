"""Prove a sanitization helped: retrain the user's recipe with and without the removed rows and compare.

Both models are scored on the same clean held-out rows: accuracy, and the attack success rate of every
trigger pattern the backdoor channel confirmed. The sanitized set is accepted only if accuracy does not
drop by more than the tolerance, no class loses all its rows and no attack got more successful.
"""

from __future__ import annotations

import filecmp
import importlib
import io
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.data.audit.base import AuditData, IntArray
from bastion.data.audit.representation import interrupts_not_swallowed
from bastion.data.readers import one_line_reason
from bastion.errors import UsageError

BUILTIN_RECIPES = ("mlp", "logreg", "forest")
HOLDOUT_SHARE = 0.2
# A holdout with more than this share of its rows copied from the data measures memorising, not learning.
HOLDOUT_OVERLAP_MAX = 0.5


@contextmanager
def _recipe_io() -> Iterator[None]:
    """Send what a recipe prints to stderr and give it no input: it runs unattended, mid-pipeline.

    stdout carries the summary, and ``--format json`` must parse; a recipe that asks for input would wait
    at a terminal forever, so its read ends at once (EOFError, reported as the recipe's failure).
    """
    stdin = sys.stdin
    sys.stdin = io.StringIO()
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdin = stdin


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
    if ":" not in recipe and "." not in recipe:
        # Otherwise a mistyped built-in ("MLP") reads as a module and fails with "Empty module name".
        raise UsageError(
            f"--recipe {recipe!r}: not a built-in recipe; use {', '.join(BUILTIN_RECIPES)} or module:Class"
        )
    module_name, _, class_name = recipe.replace(":", ".").rpartition(".")
    try:
        with _recipe_io():
            cls = getattr(importlib.import_module(module_name), class_name)
            estimator = cls()
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise UsageError(
            f"--recipe {recipe!r}: cannot build it ({exc}); use {', '.join(BUILTIN_RECIPES)} or module:Class"
        ) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # arbitrary code at import and in __init__; sys.exit() would end the run
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
    classes_removed: list[str] = field(default_factory=list)  # classes the removal leaves no row of

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
            with interrupts_not_swallowed(), _recipe_io():
                estimator.fit(features, labels)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a recipe (ours on odd data, or the user's) may raise anything
            # SystemExit included: a recipe's sys.exit(0) ended the run with exit 0 and nothing written.
            raise UsageError(f"--recipe {recipe!r}: fit failed ({_why(exc)})") from None
    return estimator


def _predictor(recipe: str, estimator: Any, n_classes: int) -> Callable[[Any], IntArray]:
    """``estimator.predict`` that fails clearly on an exception or a prediction that is not class codes."""

    def predict(features: Any) -> IntArray:
        try:
            with _recipe_io():
                # A copy: a predict that scaled its input in place changed the next model's test rows.
                predicted = np.asarray(estimator.predict(np.array(features, copy=True)))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the user's code, sys.exit() included
            raise UsageError(f"--recipe {recipe!r}: predict failed ({_why(exc)})") from None
        # A scalar or a column would broadcast against the labels and score as if it were real.
        expected = (len(features),)
        if predicted.shape != expected:
            raise UsageError(
                f"--recipe {recipe!r}: predict returned shape {predicted.shape} for {len(features)} rows; "
                f"expected {expected}"
            )
        return _class_codes(recipe, predicted, n_classes)

    return predict


def _class_codes(recipe: str, predicted: np.ndarray[Any, Any], n_classes: int) -> IntArray:
    """``predicted`` as integer class codes; UsageError when any value is not one of 0..n_classes-1."""
    # fit is given the codes 0..k-1. Label names, probabilities or NaN never equal a code: both models
    # scored 0%, "no drop", and the set was accepted.
    if predicted.dtype.kind in "biuf":
        values = predicted.astype(np.float64)
    else:
        # An object array (a pandas Series of dtype object) may still hold plain numbers; text never does.
        numbers = [v if isinstance(v, int | float | np.number) else np.nan for v in predicted.tolist()]
        values = np.array(numbers, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(values) & (values == np.floor(values)) & (values >= 0) & (values < n_classes)
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        value = predicted[row]
        shown = value.item() if isinstance(value, np.generic) else value
        raise UsageError(
            f"--recipe {recipe!r}: predict returned {shown!r} (row {row}); expected the class codes "
            f"0..{n_classes - 1} that fit was given, not label names or probabilities"
        )
    return np.asarray(values, dtype=np.int64)


def _accuracy(predict: Callable[[Any], IntArray], test_x: Any, test_y: IntArray) -> float:
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
        check_holdout(data, holdout)
        train = np.arange(data.n_rows)
        test_x, test_y = holdout.features, holdout.labels
        where = holdout.path
    kept = np.array([i for i in train if i not in removed], dtype=np.int64)
    kept_classes = np.unique(data.labels[kept])
    if len(kept_classes) < 2 or len(test_y) == 0:
        # The data has at least two classes: one left means the removal took every row of the others.
        left = f", all of class {data.label_name(int(kept_classes[0]))!r}" if len(kept_classes) == 1 else ""
        raise UsageError(
            f"{data.path}: --validate: too few rows left to retrain and test ({len(kept)} training rows "
            f"after removal{left}, {len(test_y)} held out); audit a larger dataset"
        )
    n_classes = len(data.classes)
    before = _predictor(recipe, _fit(recipe, seed, data.features[train], data.labels[train]), n_classes)
    after = _predictor(recipe, _fit(recipe, seed, data.features[kept], data.labels[kept]), n_classes)
    result = ValidationResult(
        recipe=recipe,
        holdout=where,
        holdout_rows=len(test_y),
        train_rows_before=len(train),
        train_rows_after=len(kept),
        accuracy_before=_accuracy(before, test_x, test_y),
        accuracy_after=_accuracy(after, test_x, test_y),
        tolerance_points=tolerance_points,
        # A class of one or two rows has none held out (20% rounds to 0), and a --holdout may lack it: the
        # accuracy cannot see such a class vanish, and a set that can never predict it was accepted.
        classes_removed=[
            data.label_name(int(c)) for c in np.setdiff1d(np.unique(data.labels[train]), kept_classes)
        ],
    )
    if patterns:
        _score_attacks(result, patterns, before, after, test_x, test_y)
    _decide(result)
    return result


def check_holdout(data: AuditData, holdout: AuditData) -> None:
    """Refuse a holdout file that holds the training rows, or arrays that are not encoded like a table."""
    data_path, holdout_path = Path(data.path), Path(holdout.path)
    if data.encoder is not None and holdout.frame is None:
        # .npz arrays come raw while the table's columns are standardised: the scores would be meaningless.
        raise UsageError(
            f"--holdout {holdout.path}: .npz arrays cannot be encoded like the table {data.path}; "
            "give the holdout as a table"
        )
    if not (data_path.is_file() and holdout_path.is_file()):
        return  # rows built in memory: the caller chose them, there is no file to have mixed up
    # Both models train on every row of the data. Scored on those rows, "before" wins by memorising the
    # very rows sanitizing removes, and a good sanitization looks harmful.
    if filecmp.cmp(data_path, holdout_path, shallow=False):
        raise UsageError(
            f"--holdout {holdout.path}: is {data.path} itself; hold out rows the models do not train on"
        )
    # Rounded, so a copy saved in another format (pandas writes JSON with 10 decimals) is still a copy;
    # + 0.0 turns -0.0 into 0.0, whose bytes differ.
    seen = {hash(row.tobytes()) for row in np.round(data.features, 6) + 0.0}
    copied = sum(hash(row.tobytes()) in seen for row in np.round(holdout.features, 6) + 0.0)
    # Only where the data's rows are nearly all distinct does a shared row mean a copied one.
    if len(seen) >= 0.9 * data.n_rows and copied > HOLDOUT_OVERLAP_MAX * holdout.n_rows:
        raise UsageError(
            f"--holdout {holdout.path}: {copied} of its {holdout.n_rows} rows are rows of {data.path}; "
            "hold out rows the models do not train on"
        )


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
        # Two triggers for one class would share a key: the second's rates replaced the first's, hiding it.
        count = 2
        while name in result.attack_success_before:
            name = f"class {pattern.target_name} (trigger {count})"
            count += 1
        result.attack_success_before[name] = round(
            100 * attack_success_rate(before, test_x, test_y, pattern), 2
        )
        result.attack_success_after[name] = round(
            100 * attack_success_rate(after, test_x, test_y, pattern), 2
        )


def _decide(result: ValidationResult) -> None:
    tolerance_points = result.tolerance_points
    # Rounded like the accuracies it is made of: 16.67 - 11.67 is 5.000000000000002 in floating point,
    # which rejected a 5.00-point drop as "more than the 5-point tolerance".
    drop = round(result.accuracy_before - result.accuracy_after, 2)
    # Retraining noise moves a success rate by a few points; only a clear rise rejects the set.
    worse = [k for k, v in result.attack_success_after.items() if v > result.attack_success_before[k] + 5.0]
    if drop > tolerance_points:
        result.verdict = (
            f"rejected: accuracy fell {drop:.2f} points ({result.accuracy_before:.2f}% -> "
            f"{result.accuracy_after:.2f}%), more than the {tolerance_points:g}-point tolerance"
        )
    elif result.classes_removed:
        result.verdict = (
            f"rejected: sanitizing removes every training row of class {result.classes_removed[0]!r}"
        )
    elif worse:
        result.verdict = f"rejected: the attack on {worse[0]} got more successful after sanitizing"
    else:
        result.accepted = True
        result.verdict = (
            f"accepted: accuracy {result.accuracy_before:.2f}% -> {result.accuracy_after:.2f}% "
            f"(tolerance {tolerance_points:g} points)"
        )
