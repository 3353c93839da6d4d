"""``--validate`` refuses recipes and holdouts it cannot score honestly; its verdict matches its numbers."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.cli.main import main
from bastion.data.audit.base import AuditData
from bastion.data.audit.load import from_arrays, load_companion, load_dataset
from bastion.data.validate import validate_sanitization
from bastion.errors import UsageError

RECIPES = """
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression

print("importing the recipe")


class Base:
    def __init__(self):
        print("building the recipe")

    def fit(self, X, y):
        print("fitting")
        self.model = LogisticRegression().fit(X, y)
        return self

    def predict(self, X):
        print("predicting")
        return self.model.predict(X)


class Names(Base):
    def predict(self, X):
        return np.array(["neg", "pos"])[self.model.predict(X)]


class Probability(Base):
    def predict(self, X):
        return self.model.predict_proba(X)[:, 1]


class NaN(Base):
    def predict(self, X):
        return np.full(len(X), np.nan)


class Shifted(Base):
    def predict(self, X):
        return self.model.predict(X) + 2


class Nothing(Base):
    def predict(self, X):
        return [None] * len(X)


class Floats(Base):
    def predict(self, X):
        return self.model.predict(X).astype(float)


class Objects(Base):
    def predict(self, X):
        return np.array(self.model.predict(X).tolist(), dtype=object)


class Bools(Base):
    def predict(self, X):
        return self.model.predict(X).astype(bool)


class ExitInFit(Base):
    def fit(self, X, y):
        sys.exit(0)


class ExitInPredict(Base):
    def predict(self, X):
        sys.exit(3)


class GeneratorExitInFit(Base):
    def fit(self, X, y):
        raise GeneratorExit


class AsksInFit(Base):
    def fit(self, X, y):
        input("continue? ")
        return super().fit(X, y)


class Interrupted(Base):
    def fit(self, X, y):
        raise KeyboardInterrupt


class ScalesInPlace(Base):
    def predict(self, X):
        predicted = self.model.predict(X)
        X *= 0.0
        return predicted


class TrainingSize:
    # Right on the first 10 holdout rows when trained on 100 rows, on the first 7 otherwise: 16.67% -> 11.67%.
    def fit(self, X, y):
        self.right = 10 if len(y) == 100 else 7
        return self

    def predict(self, X):
        truth = X[:, 0].astype(int)
        return np.where(X[:, 1] < self.right, truth, 1 - truth)
"""


@pytest.fixture
def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The module ``vh_recipes`` on sys.path, imported afresh by each test."""
    (tmp_path / "vh_recipes.py").write_text(RECIPES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vh_recipes", raising=False)
    yield "vh_recipes"
    sys.modules.pop("vh_recipes", None)


def _tiny(n: int = 80, seed: int = 0, path: str = "tiny.csv") -> AuditData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return from_arrays(x, (x[:, 0] > 0).astype(int), path=path)


def _table(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = np.where(x1 + x2 > 0, "pos", "neg")
    pd.DataFrame({"x1": x1, "x2": x2, "y": y}).to_csv(path, index=False)
    return path


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A 200-row table to sanitize and a 60-row holdout drawn apart from it, in their own directory."""
    monkeypatch.setenv("BASTION_DATABASE_URL", f"sqlite:///{tmp_path / 'ev.db'}")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    return _table(work / "d.csv", 200, 1), _table(work / "h.csv", 60, 2)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    ("recipe", "shown"),
    [
        ("Names", "predict returned 'neg' (row 0)"),
        ("Probability", "predict returned 0."),
        ("NaN", "predict returned nan (row 0)"),
        ("Shifted", "predict returned 2 (row 0)"),
        ("Nothing", "predict returned None (row 0)"),
    ],
)
def test_predictions_that_are_not_class_codes_are_refused(recipes: str, recipe: str, shown: str) -> None:
    # They never equal a code: both models scored 0%, "no drop", and the set was accepted.
    with pytest.raises(UsageError) as caught:
        validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:{recipe}")
    message = caught.value.diagnostics()
    assert message.startswith(f"--recipe '{recipes}:{recipe}': {shown}")
    assert "expected the class codes 0..1 that fit was given" in message


@pytest.mark.parametrize("recipe", ["Floats", "Bools", "Objects"])
def test_whole_floats_booleans_and_numbers_in_objects_are_class_codes(recipes: str, recipe: str) -> None:
    plain = validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:Base")
    other = validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:{recipe}")
    assert (other.accuracy_before, other.accuracy_after) == (plain.accuracy_before, plain.accuracy_after)
    assert plain.accuracy_before > 80


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("vh_recipes:ExitInFit", "--recipe 'vh_recipes:ExitInFit': fit failed (SystemExit: 0)"),
        ("vh_recipes:ExitInPredict", "--recipe 'vh_recipes:ExitInPredict': predict failed (SystemExit: 3)"),
        ("vh_recipes:GeneratorExitInFit", "fit failed (GeneratorExit"),
        ("sys:exit", "--recipe 'sys:exit': cannot build it (SystemExit"),
        # It would wait at a terminal forever; the recipe gets no input instead.
        ("vh_recipes:AsksInFit", "--recipe 'vh_recipes:AsksInFit': fit failed (EOFError"),
    ],
)
def test_a_recipe_that_exits_is_a_usage_error(recipes: str, recipe: str, message: str) -> None:
    # sys.exit(0) in a recipe ended `bastion data sanitize` with exit 0, nothing written and nothing said.
    with pytest.raises(UsageError) as caught:
        validate_sanitization(_tiny(), [1, 2], [], recipe=recipe)
    assert message in caught.value.diagnostics()


def test_ctrl_c_in_a_recipe_still_interrupts(recipes: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        validate_sanitization(_tiny(), [1, 2], [], recipe=f"{recipes}:Interrupted")


def test_sys_exit_as_a_recipe_exits_2_before_the_audit(
    tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = tables
    code = main(["data", "sanitize", str(data), "--label", "y", "--validate", "--recipe", "sys:exit"])
    assert code == 2
    assert "--recipe 'sys:exit': cannot build it" in capsys.readouterr().err
    assert _names(data.parent) == ["d.csv", "h.csv"]


def test_a_predict_that_scales_its_input_in_place_does_not_change_the_next_score(recipes: str) -> None:
    data, holdout = _tiny(), _tiny(40, seed=1, path="tiny-holdout.csv")
    result = validate_sanitization(data, [], [], recipe=f"{recipes}:ScalesInPlace", holdout=holdout)
    # Nothing removed: the same model twice, so the same score. "after" was scored on zeroed rows.
    assert result.accuracy_after == result.accuracy_before > 80
    assert result.accepted


def test_recipe_output_does_not_corrupt_the_json_summary(
    recipes: str, tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, holdout = tables
    argv = ["data", "sanitize", str(data), "--label", "y", "--channels", "label", "--validate"]
    argv += ["--recipe", f"{recipes}:Base", "--holdout", str(holdout), "--format", "json"]
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    summary = json.loads(out)  # the recipe's prints went here and broke the JSON
    for said in ("importing the recipe", "building the recipe", "fitting", "predicting"):
        assert said in err
    validation = summary["validation"]
    assert code == (0 if validation["accepted"] else 1)
    assert validation["holdout"] == str(holdout)
    assert validation["holdout_rows"] == 60
    assert (
        f"{validation['accuracy_before']:.2f}% -> {validation['accuracy_after']:.2f}%"
        in validation["verdict"]
    )
    assert validation["classes_removed"] == []


def test_a_drop_equal_to_the_tolerance_is_accepted(recipes: str) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100)
    data = from_arrays(np.column_stack([labels, np.arange(100)]), labels)
    held = rng.integers(0, 2, 60)
    holdout = from_arrays(np.column_stack([held, np.arange(60)]), held)
    result = validate_sanitization(
        data, [0, 1, 2], [], recipe=f"{recipes}:TrainingSize", holdout=holdout, tolerance_points=5
    )
    assert (result.accuracy_before, result.accuracy_after) == (16.67, 11.67)
    # 16.67 - 11.67 is 5.000000000000002 in floating point: the 5.00-point drop was "more than 5".
    assert result.accepted, result.verdict
    assert result.verdict == "accepted: accuracy 16.67% -> 11.67% (tolerance 5 points)"


def test_removing_every_row_of_a_small_class_is_rejected() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 40 + [2] * 2)
    data = from_arrays(rng.normal(size=(82, 2)) + labels[:, None] * 3, labels)
    # 20% of two rows rounds to none held out, so the accuracy cannot see class 2 go.
    result = validate_sanitization(data, [80, 81], [], recipe="logreg")
    assert result.accuracy_after == result.accuracy_before
    assert not result.accepted
    assert result.classes_removed == ["2"]
    assert result.verdict == "rejected: sanitizing removes every training row of class '2'"


def test_removing_a_whole_class_of_two_is_a_rejection_not_an_error() -> None:
    data = _tiny()
    result = validate_sanitization(data, [int(i) for i in np.flatnonzero(data.labels == 1)], [])
    assert not result.accepted
    assert result.classes_removed == ["1"]


def test_two_triggers_for_one_class_are_both_scored() -> None:
    data = _tiny()
    patterns = [
        {"target": 1, "target_name": "1", "features": [f], "feature_names": [f"f{f}"], "values": [3.0]}
        for f in (1, 2)
    ]
    result = validate_sanitization(data, [1, 2], patterns, recipe="logreg")
    # Both were stored under "class 1": the second trigger's rates replaced the first's.
    assert list(result.attack_success_before) == ["class 1", "class 1 (trigger 2)"]
    assert list(result.attack_success_after) == ["class 1", "class 1 (trigger 2)"]


def test_a_mistyped_builtin_recipe_names_the_builtins() -> None:
    with pytest.raises(UsageError, match=r"^--recipe 'MLP': not a built-in recipe; use mlp, logreg, forest"):
        validate_sanitization(_tiny(), [1], [], recipe="MLP")


def _copies(data: Path, directory: Path) -> dict[str, Path]:
    frame = pd.read_csv(data)
    link = directory / "link.csv"
    link.symlink_to(data)
    shuffled = directory / "shuffled.csv"
    frame.sample(frac=1, random_state=0).to_csv(shuffled, index=False)
    as_jsonl = directory / "copy.jsonl"
    frame.to_json(as_jsonl, orient="records", lines=True)  # 10 decimals: not the same floats
    part = directory / "part.csv"
    frame.iloc[:50].to_csv(part, index=False)
    return {"itself": data, "link": link, "shuffled": shuffled, "jsonl": as_jsonl, "part": part}


@pytest.mark.parametrize("copy", ["itself", "link", "shuffled", "jsonl", "part"])
def test_a_holdout_of_the_training_rows_is_refused(tables: tuple[Path, Path], copy: str) -> None:
    data_path, _ = tables
    holdout_path = _copies(data_path, data_path.parent)[copy]
    data = load_dataset(data_path, "y")
    holdout = load_companion(holdout_path, data, "y")
    # Scored on rows both models trained on, "before" wins by memorising what sanitizing removes.
    with pytest.raises(
        UsageError, match=f"^--holdout {holdout_path}: .*hold out rows the models do not train"
    ):
        validate_sanitization(data, [1, 2], [], recipe="logreg", holdout=holdout)


def test_a_separate_holdout_file_is_used(tables: tuple[Path, Path]) -> None:
    data_path, holdout_path = tables
    data = load_dataset(data_path, "y")
    result = validate_sanitization(
        data, [1, 2], [], recipe="logreg", holdout=load_companion(holdout_path, data, "y")
    )
    assert result.holdout == str(holdout_path)
    assert result.holdout_rows == 60


def test_the_data_as_its_own_holdout_exits_2_and_writes_nothing(
    tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = tables
    argv = ["data", "sanitize", str(data), "--label", "y", "--channels", "label", "--validate"]
    code = main([*argv, "--recipe", "logreg", "--holdout", str(data)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert (
        err == f"bastion: error: --holdout {data}: is {data} itself; hold out rows the models do not train on"
    )
    assert _names(data.parent) == ["d.csv", "h.csv"]


def test_npz_holdout_for_a_table_is_refused(tables: tuple[Path, Path]) -> None:
    data_path, holdout_path = tables
    frame = pd.read_csv(holdout_path)
    arrays = data_path.parent / "h.npz"
    # Raw columns where the table's are standardised: the model scored them as if they were encoded alike.
    np.savez(arrays, x=frame[["x1", "x2"]].to_numpy() * 100, y=frame["y"].to_numpy().astype(str))
    data = load_dataset(data_path, "y")
    holdout = load_companion(arrays, data, "y")
    with pytest.raises(UsageError, match=r"\.npz arrays cannot be encoded like the table"):
        validate_sanitization(data, [1, 2], [], recipe="logreg", holdout=holdout)


def _bad_holdouts(directory: Path, holdout: Path) -> dict[str, tuple[Path, str]]:
    frame = pd.read_csv(holdout)
    blank = directory / "blank.csv"
    frame.assign(y=frame["y"].where(frame.index != 3)).to_csv(blank, index=False)
    missing = directory / "missing.csv"
    frame.drop(columns=["x2"]).to_csv(missing, index=False)
    return {
        "blank label": (blank, r"label column 'y' is empty on 1 rows \(first: row 3\)"),
        "missing column": (missing, "no column 'x2', which"),
        "training rows": (directory / "d.csv", "itself; hold out rows the models do not train on"),
    }


@pytest.mark.parametrize("case", ["blank label", "missing column", "training rows"])
def test_a_bad_holdout_is_refused_before_the_audit(
    tables: tuple[Path, Path], case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.data.audit import run

    data, holdout = tables
    bad, message = _bad_holdouts(data.parent, holdout)[case]

    def no_audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audit ran before the holdout was checked")

    # A holdout depends on how the data is encoded, so it is read once the data is loaded, not after the
    # audit, which on a large table is most of the run.
    monkeypatch.setattr(run, "run_audit", no_audit)
    argv = ["data", "sanitize", str(data), "--label", "y", "--validate", "--recipe", "logreg"]
    assert main([*argv, "--holdout", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err
    assert re.search(message, err)


def test_a_text_holdout_without_the_text_column_is_one_line(tmp_path: Path) -> None:
    from bastion.errors import InputError

    texts = [f"message number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(24)]
    data = from_arrays(np.eye(24)[:, :4], np.arange(24) % 2, path="t.csv", kind="text")
    holdout = tmp_path / "h.csv"
    pd.DataFrame({"body": texts[:6], "y": ["0", "1"] * 3}).to_csv(holdout, index=False)
    with pytest.raises(InputError, match=r"no text column 'text', which t\.csv has"):
        load_companion(holdout, data, "y", text_column="text")


@pytest.mark.parametrize("seed", ["4294967296", "99999999999"])
def test_a_seed_numpy_cannot_take_is_refused_by_the_parser(
    tables: tuple[Path, Path], seed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = tables
    assert main(["data", "audit", str(data), "--label", "y", "--seed", seed]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bastion: error: bastion data audit: argument --seed: expected a seed below 2**32")
    assert len(err.splitlines()) == 1
