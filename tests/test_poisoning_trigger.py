"""The benchmark's tabular trigger is rare and fools no clean victim; if none is, it targets another class."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import poisoning as pb


class RuleVictim:
    """A stand-in clean victim: the label is ``x0 > 0``, and a value of column ``evade`` above ``above``
    turns the prediction into ``evade_to`` (a natural evasion pattern, as on email)."""

    def __init__(self, evade: int | None = None, above: float = 0.0, evade_to: int = 0) -> None:
        self.evade, self.above, self.evade_to = evade, above, evade_to

    def predict(self, x: np.ndarray) -> np.ndarray:
        pred = (x[:, 0] > 0).astype(np.int64)
        if self.evade is not None:
            pred[x[:, self.evade] > self.above] = self.evade_to
        return pred


@pytest.fixture
def table() -> pb.Dataset:
    """Column 0 decides the label; columns 1-6 are noise the trigger candidates are drawn from."""
    rng = np.random.default_rng(0)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 7))
        return x, (x[:, 0] > 0).astype(np.int64)

    x_train, y_train = rows(600)
    x_test, y_test = rows(300)
    names = [f"c{i}" for i in range(7)]
    return pb.Dataset("rules", "tabular", x_train, y_train, x_test, y_test, names, 2, (1, 0))


def test_a_trigger_every_clean_victim_ignores_keeps_class_0(table: pb.Dataset) -> None:
    pb.choose_trigger(table, [RuleVictim(), RuleVictim()])
    assert table.trigger is not None
    assert table.target == 0
    assert table.trigger_clean_flip == 0.0
    assert pb.pa.prevalence(table.trigger, table.x_train) < pb.MAX_TRIGGER_PREVALENCE


def test_one_fooled_clean_victim_rules_a_trigger_out(table: pb.Dataset) -> None:
    pb.choose_trigger(table, [RuleVictim()])
    first = table.trigger
    assert first is not None
    # The second victim turns any row holding the first choice's first value into class 0.
    column = first.columns[0]
    fooled = RuleVictim(evade=column, above=first.values[0] - 1e-9, evade_to=0)
    pb.choose_trigger(table, [RuleVictim(), fooled])
    assert table.trigger is not None
    assert table.trigger != first
    assert table.target == 0  # another rare candidate for class 0 fools neither victim
    assert table.trigger_clean_flip < pb.MAX_TRIGGER_ONLY


def test_without_a_usable_trigger_for_class_0_the_backdoor_targets_the_next_class(table: pb.Dataset) -> None:
    # Every noise column above its median turns a row into class 0, as stamping pushes email's spam to ham.
    victims = [RuleVictim(evade=c, above=0.0, evade_to=0) for c in range(1, 7)]
    pb.choose_trigger(table, victims)
    assert table.trigger is not None
    assert table.target == 1
    assert table.trigger_clean_flip < pb.MAX_TRIGGER_ONLY
