"""Prove a sanitization helped: retrain the user's recipe with and without the removed rows and compare.

Both models are scored on the same clean held-out rows: accuracy, and the attack success rate of every
trigger pattern the backdoor channel confirmed. The sanitized set is accepted only if accuracy does not
drop by more than the tolerance, no class loses all its rows and no attack got more successful.

Recipe code runs unattended: its output goes to stderr (down to file descriptor 1), it gets no input, and
each of its calls may run for at most the recipe timeout.
"""

from __future__ import annotations

import ctypes
import filecmp
import functools
import importlib
import io
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bastion.data.audit.base import AuditData, IntArray
from bastion.data.audit.representation import interrupts_not_swallowed
from bastion.data.readers import one_line_reason
from bastion.errors import UsageError

BUILTIN_RECIPES = ("mlp", "logreg", "forest")
HOLDOUT_SHARE = 0.2
# A holdout with more than this share of its rows copied from the data measures memorising, not learning.
HOLDOUT_OVERLAP_MAX = 0.5
# Below the refusal, copies still bias the score: each one is scored by models that trained on it, and one
# copied from a removed row only by "before". Past one row in twenty the copies alone move an accuracy by
# more than retraining noise does (a few points), enough to turn the verdict, so it is said. Below that, a
# few shared rows are common in real data (repeated records) and a warning on every run would be ignored.
HOLDOUT_OVERLAP_WARN = 0.05
# Seconds one recipe call (build, fit or predict) may run. --validate needs the data in memory, and the
# built-in recipes fit such data in minutes, so an hour is generous; without a bound a recipe that never
# returns hung a CI job until the CI's own limit (six hours on GitHub Actions) killed it with nothing said.
DEFAULT_RECIPE_TIMEOUT = 3600.0
# A recipe that catches the timeout and carries on is interrupted again this often.
_TIMEOUT_REPEAT_S = 0.5

_T = TypeVar("_T")


@functools.cache
def _libc_fflush() -> Any:
    """The C library's ``fflush``, or None where it cannot be loaded this way (Windows)."""
    try:
        fflush = ctypes.CDLL(None).fflush
    except (OSError, TypeError, AttributeError):
        return None
    fflush.argtypes = [ctypes.c_void_p]
    return fflush


def _flush_c_stdio() -> None:
    fflush = _libc_fflush()
    if fflush is not None:
        fflush(None)  # NULL: every open C stream


def _flush(stream: Any) -> None:
    try:
        if stream is not None:
            stream.flush()
    except (OSError, ValueError):  # closed or broken: there is nothing left to keep in order
        pass


@contextmanager
def _stdout_fd_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at file descriptor 2 until the block ends, even on an exception or Ctrl-C.

    ``sys.stdout`` is only Python's handle: ``os.write(1, ...)``, C's printf and a subprocess inherit the
    descriptor itself. The descriptor is process-wide, so another thread's stdout also goes to stderr
    meanwhile; the recipe runs in the command's one thread, and nothing else should write then.
    """
    # What was written before belongs on stdout, ahead of the switch.
    _flush(sys.stdout)
    _flush(sys.__stdout__)
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 (closed): there is no stdout to protect
        yield
        return
    try:
        os.dup2(2, 1)
    except OSError:  # no descriptor 2: leave stdout alone rather than lose the recipe's output
        os.close(saved)
        yield
        return
    try:
        yield
    finally:
        try:
            # C buffers a pipe's output: unflushed, the recipe's printf would leave after the restore,
            # into stdout. sys.__stdout__ is the same descriptor seen from Python.
            _flush(sys.__stdout__)
            _flush_c_stdio()
        finally:
            os.dup2(saved, 1)
            os.close(saved)


@contextmanager
def _recipe_io() -> Iterator[None]:
    """Send what a recipe prints to stderr and give it no input: it runs unattended, mid-pipeline.

    stdout carries the summary, and ``--format json`` must parse; a recipe that asks for input would wait
    at a terminal forever, so its read ends at once (EOFError, reported as the recipe's failure).
    """
    stdin = sys.stdin
    sys.stdin = io.StringIO()
    try:
        with _stdout_fd_to_stderr(), redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdin = stdin


class _RecipeTimeout(BaseException):
    """Raised inside recipe code when its time is up; not an Exception, so ``except Exception`` passes it."""


def _on_stack(frame: Any, target: Any) -> bool:
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


def _within(seconds: float | None, call: Callable[[], _T]) -> _T:
    """``call()``, interrupted by _RecipeTimeout after ``seconds`` (None or 0: no limit).

    The alarm is SIGALRM, so it needs the main thread and a platform with setitimer; elsewhere (a server's
    worker thread, Windows) the call runs unbounded. A signal handler runs between Python bytecodes: a C
    loop that never returns to Python (a BLAS call, an extension's own loop) is stopped only when it does,
    and a recipe that catches every BaseException and carries on is interrupted again and again but never
    stopped (Ctrl-C cannot stop it either).
    """
    if (
        not seconds
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        return call()
    guard = sys._getframe()
    expired = False
    previous = signal.getsignal(signal.SIGALRM)

    def alarm(_signum: int, frame: Any) -> None:
        nonlocal expired
        if not _on_stack(frame, guard):
            # A late alarm after the call is over (one that fired as it returned): leave quietly.
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
            return
        expired = True
        signal.setitimer(signal.ITIMER_REAL, _TIMEOUT_REPEAT_S)  # again, should the recipe swallow it
        raise _RecipeTimeout

    signal.signal(signal.SIGALRM, alarm)
    started = time.monotonic()
    # Below a microsecond setitimer rounds to zero, which disarms the timer instead of firing it.
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        result = call()
    except BaseException as exc:
        if expired and not isinstance(exc, KeyboardInterrupt):
            # The recipe turned the timeout into an error of its own: it is still the timeout.
            raise _RecipeTimeout from None
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if outer_delay > 0:  # someone else's alarm was pending: it still fires, late at worst
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)
    if expired:  # the recipe caught the timeout and returned anyway: it still ran over
        raise _RecipeTimeout
    return result


def _timed_out(recipe: str, step: str, seconds: float | None) -> UsageError:
    return UsageError(
        f"--recipe {recipe!r}: {step} did not finish within --recipe-timeout {seconds:g} seconds; "
        "raise it, or 0 for no limit"
    )


def make_estimator(recipe: str, seed: int, *, timeout: float | None = DEFAULT_RECIPE_TIMEOUT) -> Any:
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

    def build() -> Any:
        return getattr(importlib.import_module(module_name), class_name)()

    try:
        with _recipe_io():
            estimator = _within(timeout, build)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise UsageError(
            f"--recipe {recipe!r}: cannot build it ({exc}); use {', '.join(BUILTIN_RECIPES)} or module:Class"
        ) from None
    except _RecipeTimeout:
        raise _timed_out(recipe, "building it", timeout) from None
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
    # What one holdout row is worth, in accuracy points, and a 95% interval of the drop (before - after).
    accuracy_step_points: float = 0.0
    drop_ci95_points: list[float] = field(default_factory=list)
    holdout_copied_rows: int = 0  # holdout rows equal to a training row: scored on what was memorised
    warnings: list[str] = field(default_factory=list)  # one line each; the CLI prints them on stderr

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line_reason(exc)}"


def _fit(
    recipe: str, seed: int, features: Any, labels: IntArray, timeout: float | None = DEFAULT_RECIPE_TIMEOUT
) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    estimator = make_estimator(recipe, seed, timeout=timeout)
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
                _within(timeout, lambda: estimator.fit(features, labels))
        except _RecipeTimeout:
            raise _timed_out(recipe, "fit", timeout) from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a recipe (ours on odd data, or the user's) may raise anything
            # SystemExit included: a recipe's sys.exit(0) ended the run with exit 0 and nothing written.
            raise UsageError(f"--recipe {recipe!r}: fit failed ({_why(exc)})") from None
    return estimator


def _predictor(
    recipe: str, estimator: Any, n_classes: int, timeout: float | None
) -> Callable[[Any], IntArray]:
    """``estimator.predict`` that fails clearly on an exception or a prediction that is not class codes."""

    def predict(features: Any) -> IntArray:
        try:
            with _recipe_io():
                # A copy: a predict that scaled its input in place changed the next model's test rows.
                predicted = np.asarray(
                    _within(timeout, lambda: estimator.predict(np.array(features, copy=True)))
                )
        except _RecipeTimeout:
            raise _timed_out(recipe, "predict", timeout) from None
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


def _constant(code: int) -> Callable[[Any], IntArray]:
    """A model that predicts ``code`` for every row (-1: no class at all, so never right)."""
    return lambda features: np.full(len(features), code, dtype=np.int64)


def _percent(right: np.ndarray[Any, Any]) -> float:
    return round(100 * float(np.mean(right)), 2)


def _drop_interval(right_before: np.ndarray[Any, Any], right_after: np.ndarray[Any, Any]) -> list[float]:
    """95% interval, in points, of the accuracy drop between two models scored on the same rows.

    Agresti and Min's adjusted Wald interval for paired proportions (2005): half a row is added to each
    cell of the 2x2 table, so two models that agree on every one of few rows still get an honest width
    instead of the plain Wald interval's [0, 0].
    """
    n = len(right_before) + 2.0
    lost = (np.sum(right_before & ~right_after) + 0.5) / n  # right before, wrong after
    won = (np.sum(~right_before & right_after) + 0.5) / n
    drop = lost - won
    half = 1.96 * math.sqrt(max(lost + won - drop**2, 0.0) / n)
    # + 0.0 turns a -0.0 into 0.0, which JSON would otherwise show as -0.0.
    return [
        float(round(max(-100.0, 100 * (drop - half)), 2)) + 0.0,
        float(round(min(100.0, 100 * (drop + half)), 2)) + 0.0,
    ]


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
    recipe_timeout: float | None = DEFAULT_RECIPE_TIMEOUT,
) -> ValidationResult:
    """Retrain ``recipe`` on the data as given and without ``removed_rows``; compare on held-out rows."""
    if not math.isfinite(tolerance_points) or tolerance_points < 0:
        raise UsageError(f"--tolerance {tolerance_points}: expected a finite number >= 0")
    if recipe_timeout is not None and not (math.isfinite(recipe_timeout) and recipe_timeout >= 0):
        raise UsageError(f"--recipe-timeout {recipe_timeout}: expected a finite number of seconds >= 0")
    removed = set(removed_rows)
    if holdout is None:
        train, held = _holdout_split(data, seed)
        test_x, test_y = data.features[held], data.labels[held]
        where = f"{len(held)} rows held out ({int(HOLDOUT_SHARE * 100)}% per class)"
        subject = "the held-out rows"
        copied = _copied_rows(data.features[train], test_x)
    else:
        copied = check_holdout(data, holdout)
        train = np.arange(data.n_rows)
        test_x, test_y = holdout.features, holdout.labels
        where = holdout.path
        subject = f"--holdout {holdout.path}"
    kept = np.array([i for i in train if i not in removed], dtype=np.int64)
    kept_classes = np.unique(data.labels[kept])
    train_classes = np.unique(data.labels[train])
    if len(train_classes) < 2 or len(test_y) == 0:
        raise UsageError(
            f"{data.path}: --validate: too few rows to retrain and test ({len(train)} training rows of "
            f"{len(train_classes)} classes, {len(test_y)} held out); audit a larger dataset"
        )
    n_classes = len(data.classes)
    fit = functools.partial(_fit, recipe, seed, timeout=recipe_timeout)
    before = _predictor(recipe, fit(data.features[train], data.labels[train]), n_classes, recipe_timeout)
    notes: list[str] = []
    if len(kept_classes) >= 2:
        after = _predictor(recipe, fit(data.features[kept], data.labels[kept]), n_classes, recipe_timeout)
    else:
        # No classifier learns from one class (most refuse to fit), yet this is a verdict on the removal,
        # not bad input: "after" is what a model of the rows left can do, predict their one class for
        # every row (or, with no row left, get every row wrong). The removed classes reject the set below.
        if len(kept_classes):
            only = data.label_name(int(kept_classes[0]))
            after = _constant(int(kept_classes[0]))
            notes.append(
                f"only class {only!r} is left after removal, so the recipe was not retrained: 'after' is "
                f"scored as predicting {only!r} for every row"
            )
        else:
            after = _constant(-1)
            notes.append(
                "no training row is left after removal, so the recipe was not retrained: 'after' is scored "
                "as getting every row wrong"
            )
    right_before, right_after = before(test_x) == test_y, after(test_x) == test_y
    step = round(100 / len(test_y), 2)
    result = ValidationResult(
        recipe=recipe,
        holdout=where,
        holdout_rows=len(test_y),
        train_rows_before=len(train),
        train_rows_after=len(kept),
        accuracy_before=_percent(right_before),
        accuracy_after=_percent(right_after),
        tolerance_points=tolerance_points,
        # A class of one or two rows has none held out (20% rounds to 0), and a --holdout may lack it: the
        # accuracy cannot see such a class vanish, and a set that can never predict it was accepted.
        classes_removed=[data.label_name(int(c)) for c in np.setdiff1d(train_classes, kept_classes)],
        accuracy_step_points=step,
        drop_ci95_points=_drop_interval(right_before, right_after),
        holdout_copied_rows=copied,
        warnings=notes,
    )
    if copied > HOLDOUT_OVERLAP_WARN * len(test_y):
        result.warnings.append(
            f"{subject}: {copied} of {len(test_y)} rows are copies of training "
            "rows: accuracy on them measures memorising (a copy of a removed row favours 'before', "
            "which trained on it)"
        )
    # A one-row change moves the accuracy by a whole step: a tolerance below it acts as zero, and which way
    # a few borderline rows fall decides the verdict. The verdict stays the plain comparison the user asked
    # for (a significance test would silently widen their tolerance on small holdouts); the step and the
    # interval say how far to trust it. Said only while the interval holds the tolerance: a drop whose
    # whole interval lies on one side of it is not in doubt however small the holdout. A tolerance of 0
    # asks for no lost row at all, which a holdout of any size answers.
    low, high = result.drop_ci95_points
    if 0 < tolerance_points < step and low <= tolerance_points <= high:
        result.warnings.append(
            f"{subject}: one row of {len(test_y)} is worth {step:.2f} accuracy points, more than the "
            f"{tolerance_points:g}-point tolerance, and the drop's 95% interval ({low:.2f} to {high:.2f} "
            "points) holds it: the verdict turns on single rows; use a larger holdout"
        )
    if patterns:
        _score_attacks(result, patterns, before, after, test_x, test_y)
    _decide(result)
    return result


def _copied_rows(train: Any, test: Any) -> int:
    """How many ``test`` rows equal a ``train`` row; 0 when the training rows are themselves not distinct."""
    # Rounded, so a copy saved in another format (pandas writes JSON with 10 decimals) is still a copy;
    # + 0.0 turns -0.0 into 0.0, whose bytes differ.
    seen = {hash(row.tobytes()) for row in np.round(train, 6) + 0.0}
    # Only where the data's rows are nearly all distinct does a shared row mean a copied one.
    if len(seen) < 0.9 * len(train):
        return 0
    return sum(hash(row.tobytes()) in seen for row in np.round(test, 6) + 0.0)


def check_holdout(data: AuditData, holdout: AuditData) -> int:
    """Refuse a holdout file that holds the training rows, or arrays not encoded like a table; count copies.

    Returns how many holdout rows are copies of data rows (0 for rows built in memory, which are not checked).
    """
    data_path, holdout_path = Path(data.path), Path(holdout.path)
    if data.encoder is not None and holdout.frame is None:
        # .npz arrays come raw while the table's columns are standardised: the scores would be meaningless.
        raise UsageError(
            f"--holdout {holdout.path}: .npz arrays cannot be encoded like the table {data.path}; "
            "give the holdout as a table"
        )
    if not (data_path.is_file() and holdout_path.is_file()):
        return 0  # rows built in memory: the caller chose them, there is no file to have mixed up
    # Both models train on every row of the data. Scored on those rows, "before" wins by memorising the
    # very rows sanitizing removes, and a good sanitization looks harmful.
    if filecmp.cmp(data_path, holdout_path, shallow=False):
        raise UsageError(
            f"--holdout {holdout.path}: is {data.path} itself; hold out rows the models do not train on"
        )
    copied = _copied_rows(data.features, holdout.features)
    if copied > HOLDOUT_OVERLAP_MAX * holdout.n_rows:
        raise UsageError(
            f"--holdout {holdout.path}: {copied} of its {holdout.n_rows} rows are rows of {data.path}; "
            "hold out rows the models do not train on"
        )
    return copied


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
    reasons = []
    if drop > tolerance_points:
        reasons.append(
            f"accuracy fell {drop:.2f} points ({result.accuracy_before:.2f}% -> "
            f"{result.accuracy_after:.2f}%), more than the {tolerance_points:g}-point tolerance"
        )
    # Every reason is named: a drop caused by a vanished class read as mere lost accuracy.
    if result.classes_removed:
        names = ", ".join(repr(c) for c in result.classes_removed)
        plural = "es" if len(result.classes_removed) > 1 else ""
        reasons.append(f"sanitizing removes every training row of class{plural} {names}")
    if worse:
        reasons.append(f"the attack on {worse[0]} got more successful after sanitizing")
    if reasons:
        result.verdict = "rejected: " + "; ".join(reasons)
    else:
        result.accepted = True
        result.verdict = (
            f"accepted: accuracy {result.accuracy_before:.2f}% -> {result.accuracy_after:.2f}% "
            f"(tolerance {tolerance_points:g} points)"
        )
