"""``--validate`` gaps: a vanished class is a verdict, copied and tiny holdouts are said, recipe output at
the descriptor level stays off stdout, and a recipe that never returns is stopped."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# The same small data as the earlier hardening round (pytest puts this directory on sys.path).
from test_validate_hardening import _table, _tiny

from bastion.cli import data_audit
from bastion.cli.main import main
from bastion.data import validate
from bastion.data.audit.base import LABEL, AuditData, RowFlag
from bastion.data.audit.load import from_arrays, load_companion, load_dataset
from bastion.data.audit.run import AuditResult, join_flags
from bastion.data.validate import validate_sanitization
from bastion.errors import UsageError

RECIPES = """
import ctypes
import os
import sys


def _model(X, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(X, y)


class Base:
    def fit(self, X, y):
        self.model = _model(X, y)
        return self

    def predict(self, X):
        return self.model.predict(X)


class DescriptorPrints(Base):
    # Below sys.stdout: the descriptor itself, and C's stdio, whose buffer leaves when C flushes it (printf
    # may be unbuffered, as under PYTHONUNBUFFERED; a stream of one's own on descriptor 1 is buffered).
    def fit(self, X, y):
        os.write(1, b"fd-level fit\\n")
        libc = ctypes.CDLL(None)
        libc.printf(b"C printf in fit\\n")
        libc.fdopen.restype = ctypes.c_void_p
        libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
        libc.fputs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        libc.fputs(b"C buffered stream in fit\\n", libc.fdopen(1, b"w"))
        return super().fit(X, y)

    def predict(self, X):
        os.write(1, b"fd-level predict\\n")
        return super().predict(X)


class PrintsThenFails(Base):
    def fit(self, X, y):
        os.write(1, b"about to fail\\n")
        raise RuntimeError("broken")


class PrintsThenInterrupted(Base):
    def fit(self, X, y):
        os.write(1, b"about to be interrupted\\n")
        raise KeyboardInterrupt


class Forever(Base):
    def fit(self, X, y):
        while True:
            pass


class SwallowsExceptions(Base):
    def fit(self, X, y):
        while True:
            try:
                sum(range(1000))
            except Exception:
                pass


class CatchesAndReturns(Base):
    # Catches the timeout and returns as if it had finished: it still ran over.
    def fit(self, X, y):
        try:
            while True:
                pass
        except BaseException:
            return super().fit(X, y)


class WrapsTheTimeout(Base):
    def fit(self, X, y):
        try:
            while True:
                pass
        except BaseException as exc:
            raise RuntimeError("the recipe's own error") from exc


class PredictsForever(Base):
    def predict(self, X):
        while True:
            pass
"""


@pytest.fixture
def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The module ``gap_recipes`` on sys.path, imported afresh by each test."""
    (tmp_path / "gap_recipes.py").write_text(RECIPES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gap_recipes", raising=False)
    yield "gap_recipes"
    sys.modules.pop("gap_recipes", None)


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A 200-row table to sanitize and a 60-row holdout drawn apart from it, in their own directory."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    return _table(work / "d.csv", 200, 1), _table(work / "h.csv", 60, 2)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _sanitize(data: Path, *extra: str) -> list[str]:
    return ["data", "sanitize", str(data), "--label", "y", "--channels", "label", "--validate", *extra]


def _flags_every_row_of(name: str) -> Callable[..., AuditResult]:
    """A stand-in for run_audit that quarantines every row of class ``name`` and nothing else."""

    def audit(data: AuditData, *_: Any, **__: Any) -> AuditResult:
        rows = np.flatnonzero(data.labels == data.classes.index(name))
        flags = [RowFlag(int(r), LABEL, "test", 0.9, "flagged by the test") for r in rows]
        return AuditResult(data.path, data.kind, data.n_rows, list(data.classes), rows=join_flags(flags))

    return audit


# 1. Removing every row of a class is a verdict, not an error.


def test_removing_every_row_of_one_of_two_classes_is_rejected_not_an_error() -> None:
    data = _tiny()
    ones = [int(i) for i in np.flatnonzero(data.labels == 1)]
    result = validate_sanitization(data, ones, [], recipe="logreg")
    assert not result.accepted
    assert result.classes_removed == ["1"]
    assert "sanitizing removes every training row of class '1'" in result.verdict
    # No model learns from one class: "after" predicts class 0 everywhere, right on the class-0 rows only.
    held_zeros = 100 * (result.holdout_rows - round(0.2 * len(ones))) / result.holdout_rows
    assert result.accuracy_after == round(held_zeros, 2)
    assert result.train_rows_after == result.train_rows_before - len(ones) + round(0.2 * len(ones))
    assert any("only class '0' is left after removal" in w for w in result.warnings)


def test_removing_every_row_rejects_with_every_class_named() -> None:
    data = _tiny()
    result = validate_sanitization(data, list(range(data.n_rows)), [], recipe="logreg")
    assert not result.accepted
    assert result.classes_removed == ["0", "1"]
    assert result.accuracy_after == 0.0
    assert result.train_rows_after == 0
    assert "removes every training row of classes '0', '1'" in result.verdict
    assert any("no training row is left" in w for w in result.warnings)


@pytest.mark.parametrize("with_holdout", [False, True])
def test_sanitize_that_removes_a_class_is_a_rejection_with_parseable_json(
    tables: tuple[Path, Path],
    with_holdout: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bastion.data.audit import run

    data, holdout = tables
    monkeypatch.setattr(run, "run_audit", _flags_every_row_of("pos"))
    argv = _sanitize(data, "--recipe", "logreg", "--format", "json", "--report", str(data.parent / "r.json"))
    if with_holdout:
        argv += ["--holdout", str(holdout)]
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    # It ended with exit 2, "too few rows left to retrain": a rejection exits 1 and says why.
    assert code == 1, err
    summary = json.loads(out)
    assert summary["written"] is False
    validation = summary["validation"]
    assert validation["accepted"] is False
    assert validation["classes_removed"] == ["pos"]
    assert "removes every training row of class 'pos'" in validation["verdict"]
    assert "bastion: warning: only class 'neg' is left after removal" in err
    # As for any rejection: no clean data, no quarantine, no manifest, no report.
    assert _names(data.parent) == ["d.csv", "h.csv"]


def test_data_too_small_to_hold_any_row_out_is_still_a_usage_error() -> None:
    # Two rows per class: 20% rounds to none held out, so there is nothing to score on.
    data = from_arrays(np.arange(8.0).reshape(4, 2), np.array([0, 0, 1, 1]), path="tiny.csv")
    with pytest.raises(UsageError) as caught:
        validate_sanitization(data, [0], [], recipe="logreg")
    assert caught.value.diagnostics() == (
        "tiny.csv: --validate: too few rows to retrain and test (4 training rows of 2 classes, 0 held out); "
        "audit a larger dataset"
    )


# 2. A holdout that copies some training rows is said to.


def _holdout_with_copies(data_path: Path, holdout_path: Path, copies: int) -> Path:
    fresh = pd.read_csv(holdout_path).iloc[: 60 - copies]
    mixed = data_path.parent / f"mixed{copies}.csv"
    pd.concat([fresh, pd.read_csv(data_path).iloc[:copies]]).to_csv(mixed, index=False)
    return mixed


@pytest.mark.parametrize(("copies", "warned"), [(12, True), (3, False)])
def test_holdout_rows_copied_from_the_data_are_counted_and_warned_past_5_percent(
    tables: tuple[Path, Path], copies: int, warned: bool
) -> None:
    data_path, holdout_path = tables
    mixed = _holdout_with_copies(data_path, holdout_path, copies)
    data = load_dataset(data_path, "y")
    result = validate_sanitization(
        data, [1, 2], [], recipe="logreg", holdout=load_companion(mixed, data, "y"), tolerance_points=5
    )
    assert result.holdout_copied_rows == copies
    expected = f"--holdout {mixed}: {copies} of 60 rows are copies of training rows"
    assert any(w.startswith(expected) for w in result.warnings) is warned


def test_a_fresh_holdout_has_no_copies(tables: tuple[Path, Path]) -> None:
    data_path, holdout_path = tables
    data = load_dataset(data_path, "y")
    result = validate_sanitization(
        data, [1, 2], [], recipe="logreg", holdout=load_companion(holdout_path, data, "y"), tolerance_points=5
    )
    assert result.holdout_copied_rows == 0
    assert result.warnings == []


def test_copied_holdout_rows_warn_on_one_stderr_line_and_in_the_json(
    tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, holdout = tables
    mixed = _holdout_with_copies(data, holdout, 12)
    capsys.readouterr()
    code = main(_sanitize(data, "--recipe", "logreg", "--holdout", str(mixed), "--format", "json"))
    out, err = capsys.readouterr()
    validation = json.loads(out)["validation"]
    assert code == (0 if validation["accepted"] else 1)
    assert validation["holdout_copied_rows"] == 12
    (line,) = [e for e in err.splitlines() if "copies of training rows" in e]
    assert line.startswith(f"bastion: warning: --holdout {mixed}: 12 of 60 rows are copies")
    assert line.removeprefix("bastion: warning: ") in validation["warnings"]


# 3. Output below sys.stdout goes to stderr too.


def _descriptor_1() -> tuple[int, int]:
    st = os.fstat(1)
    return st.st_dev, st.st_ino


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="printf through ctypes.CDLL(None)")
def test_descriptor_level_recipe_output_does_not_corrupt_the_json(
    recipes: str, tables: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    data, holdout = tables
    argv = _sanitize(data, "--recipe", f"{recipes}:DescriptorPrints", "--holdout", str(holdout))
    capfd.readouterr()
    code = main([*argv, "--format", "json"])
    # C buffers stdout to a file or pipe: whatever the recipe left in that buffer would reach fd 1 now.
    ctypes.CDLL(None).fflush(None)
    out, err = capfd.readouterr()
    summary = json.loads(out)  # os.write(1, ...) and printf went here and broke it
    assert code == (0 if summary["validation"]["accepted"] else 1)
    for said in ("fd-level fit", "C printf in fit", "C buffered stream in fit", "fd-level predict"):
        assert said in err


@pytest.mark.parametrize(
    ("recipe", "raised"), [("PrintsThenFails", UsageError), ("PrintsThenInterrupted", KeyboardInterrupt)]
)
def test_descriptor_1_is_restored_after_a_failure_or_ctrl_c(
    recipes: str,
    recipe: str,
    raised: type[BaseException],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Counting /proc/self/fd is not a check: the garbage collector closes other files meanwhile.
    # Record the duplicates made and the descriptors closed instead.
    made: list[int] = []
    closed: list[int] = []
    real_dup, real_close = os.dup, os.close

    def dup(fd: int) -> int:
        copy = real_dup(fd)
        made.append(copy)
        return copy

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    before = _descriptor_1()
    with monkeypatch.context() as patched:
        patched.setattr(os, "dup", dup)
        patched.setattr(os, "close", close)
        with pytest.raises(raised):
            validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:{recipe}")
    assert _descriptor_1() == before
    assert made, "descriptor 1 was never saved"
    assert all(copy in closed for copy in made)  # the saved duplicate is closed
    os.write(1, b"back on stdout\n")
    out, err = capfd.readouterr()
    assert out == "back on stdout\n"
    assert "about to" in err


# 4. A recipe that never returns is stopped.


@pytest.mark.parametrize(
    ("recipe", "step"),
    [
        ("Forever", "fit"),
        ("SwallowsExceptions", "fit"),  # `except Exception` does not catch the timeout
        ("CatchesAndReturns", "fit"),
        ("WrapsTheTimeout", "fit"),
        ("PredictsForever", "predict"),
    ],
)
def test_a_recipe_that_runs_past_the_timeout_is_a_usage_error(recipes: str, recipe: str, step: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:{recipe}", recipe_timeout=0.2)
    assert caught.value.diagnostics() == (
        f"--recipe '{recipes}:{recipe}': {step} did not finish within --recipe-timeout 0.2 seconds; "
        "raise it, or 0 for no limit"
    )


def test_the_alarm_is_put_back_as_it_was(recipes: str) -> None:
    def outer(*_: object) -> None:
        raise AssertionError("the outer alarm fired during the test")

    previous = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 300)
    try:
        with pytest.raises(UsageError):
            validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:Forever", recipe_timeout=0.2)
        validate_sanitization(_tiny(), [1, 2], [], recipe="logreg", recipe_timeout=60)
        # Someone else's handler and pending alarm survive both the timeout and a normal run.
        assert signal.getsignal(signal.SIGALRM) is outer
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 300
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("recipe", "raised"), [("Base", None), ("PrintsThenInterrupted", KeyboardInterrupt)])
def test_no_alarm_is_left_behind_after_a_run_or_ctrl_c(
    recipes: str, recipe: str, raised: type[BaseException] | None
) -> None:
    handler = signal.getsignal(signal.SIGALRM)
    if raised is None:
        validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:{recipe}", recipe_timeout=60)
    else:
        with pytest.raises(raised):
            validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:{recipe}", recipe_timeout=60)
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_alarm_without_a_timeout_or_off_the_main_thread() -> None:
    handler = signal.getsignal(signal.SIGALRM)
    assert validate._within(0, lambda: signal.getsignal(signal.SIGALRM)) is handler
    assert validate._within(None, lambda: signal.getsignal(signal.SIGALRM)) is handler
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:  # signal handlers cannot be installed off the main thread: the timer is skipped, not an error
            results.append(
                validate_sanitization(_tiny(), [1, 2], [], recipe="logreg", recipe_timeout=60).accepted
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
    assert len(results) == 1


def test_recipe_timeout_on_the_command_line_stops_the_run_and_writes_nothing(
    recipes: str, tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = tables
    capsys.readouterr()
    code = main(
        _sanitize(data, "--recipe", f"{recipes}:Forever", "--recipe-timeout", "0.3", "--format", "json")
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.strip() == (
        f"bastion: error: --recipe '{recipes}:Forever': fit did not finish within --recipe-timeout 0.3 "
        "seconds; raise it, or 0 for no limit"
    )
    assert _names(data.parent) == ["d.csv", "h.csv"]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_bad_recipe_timeout_is_refused_by_the_parser(
    tables: tuple[Path, Path], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = tables
    assert main(_sanitize(data, "--recipe-timeout", value)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "argument --recipe-timeout: expected a" in err
    assert _names(data.parent) == ["d.csv", "h.csv"]


def test_the_command_line_default_timeout_is_the_librarys() -> None:
    assert data_audit.RECIPE_TIMEOUT == validate.DEFAULT_RECIPE_TIMEOUT
    with pytest.raises(UsageError, match=r"^--recipe-timeout -1\.0: expected"):
        validate_sanitization(_tiny(), [1], [], recipe="logreg", recipe_timeout=-1.0)


# 5. A tiny holdout says what one row is worth.


def test_a_twenty_row_holdout_reports_its_step_and_interval_and_warns() -> None:
    data, holdout = _tiny(), _tiny(20, seed=1, path="tiny-holdout.csv")
    result = validate_sanitization(data, [], [], recipe="logreg", holdout=holdout, tolerance_points=1)
    assert result.accuracy_step_points == 5.0
    # The same model twice, so no row differs; half a row in each cell still leaves an honest width.
    assert result.drop_ci95_points == [-8.91, 8.91]
    assert result.accepted  # the verdict is still the plain comparison
    (warning,) = result.warnings
    assert warning.startswith("--holdout tiny-holdout.csv: one row of 20 is worth 5.00 accuracy points")
    assert "more than the 1-point tolerance" in warning


@pytest.mark.parametrize("tolerance", [0.0, 5.0, 10.0])
def test_no_step_warning_when_the_tolerance_is_zero_or_at_least_a_row(tolerance: float) -> None:
    data, holdout = _tiny(), _tiny(20, seed=1, path="tiny-holdout.csv")
    result = validate_sanitization(data, [], [], recipe="logreg", holdout=holdout, tolerance_points=tolerance)
    assert result.warnings == []
    assert result.accuracy_step_points == 5.0


def test_no_step_warning_when_the_interval_leaves_no_doubt() -> None:
    data = _tiny()
    result = validate_sanitization(
        data, [int(i) for i in np.flatnonzero(data.labels == 1)], [], recipe="logreg"
    )
    assert result.accuracy_step_points == 6.25  # 16 rows held out
    low, _ = result.drop_ci95_points
    assert low > result.tolerance_points  # a drop this large is no single row's doing
    assert not any("is worth" in w for w in result.warnings)


def test_the_interval_follows_the_rows_that_differ() -> None:
    right = np.array([True] * 90 + [False] * 10)
    assert validate._drop_interval(right, right) == [-1.92, 1.92]
    lost = right.copy()
    lost[:10] = False  # ten rows right before, wrong after
    low, high = validate._drop_interval(right, lost)
    assert 0 < low < 10 < high


def test_the_text_summary_shows_the_step_and_the_interval(
    tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, holdout = tables
    capsys.readouterr()
    code = main(_sanitize(data, "--recipe", "logreg", "--holdout", str(holdout)))
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "  one holdout row: 1.67 points; drop 95% CI " in out
    (warning,) = [e for e in err.splitlines() if "is worth" in e]
    assert warning.startswith(f"bastion: warning: --holdout {holdout}: one row of 60 is worth 1.67 accuracy")
