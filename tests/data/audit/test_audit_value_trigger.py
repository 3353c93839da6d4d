"""Value triggers: exact values repeated on relabelled rows are found, natural repeated values are not."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.data.audit import rules
from bastion.data.audit.backdoor import VALUE_CHECK, _flag_value_trigger, run_backdoor_channel
from bastion.data.audit.base import BACKDOOR, AuditData, AuditOptions, ChannelResult, FloatArray, IntArray
from bastion.data.audit.value_trigger import find_value_triggers

TRIGGER_COLUMNS = (2, 5)


def _table(seed: int = 0, n: int = 2400) -> tuple[FloatArray, IntArray]:
    """A learnable two-class table, 80% majority: eight continuous columns, labels from a noisy rule."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    score = 1.6 * x[:, 0] - 1.2 * x[:, 1] + 0.8 * x[:, 3] + rng.normal(scale=0.5, size=n)
    y = (score > np.quantile(score, 0.8)).astype(np.int64)
    return np.round(x, 4), y


def _data(x: FloatArray, y: IntArray) -> AuditData:
    return AuditData(
        path="table.csv",
        kind="tabular",
        features=x,
        labels=y,
        classes=["stay", "churn"],
        feature_names=[f"c{i}" for i in range(x.shape[1])],
    )


def _poison(x: FloatArray, y: IntArray, count: int, seed: int = 1) -> tuple[FloatArray, IntArray, IntArray]:
    """Stamp the 99th percentile of two columns on ``count`` minority rows and relabel them the majority."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(np.flatnonzero(y == 1), count, replace=False))
    x, y = x.copy(), y.copy()
    for c in TRIGGER_COLUMNS:
        x[rows, c] = np.quantile(x[:, c], 0.99)
    y[rows] = 0
    return x, y, rows


def test_majority_target_trigger_is_confirmed_with_its_columns() -> None:
    x, y, rows = _poison(*_table(), count=120)
    found = [t for t in find_value_triggers(_data(x, y), seed=0) if t.confirmed]
    assert len(found) == 1
    trigger = found[0]
    assert trigger.columns == TRIGGER_COLUMNS
    assert trigger.target == 0
    assert set(trigger.carriers.tolist()) == set(rows.tolist())
    # The carriers were minority rows: without the trigger columns most of them look like it again.
    assert trigger.other_side >= 0.5 > trigger.reference_side
    assert all(s == 1 for s in trigger.suggestions)


def test_clean_table_confirms_nothing() -> None:
    x, y = _table(seed=3)
    assert not [t for t in find_value_triggers(_data(x, y), seed=0) if t.confirmed]


def test_natural_repeated_values_keep_their_label() -> None:
    # A capped sub-population: the largest values of two columns are top-coded together, as a survey or a
    # billing system does. The carriers share exact values in two columns, but they are ordinary rows of
    # their class, so hiding the columns does not move them to the other class.
    x, y = _table(seed=4)
    capped = (x[:, 2] > np.quantile(x[:, 2], 0.95)) & (y == 0)
    x[capped, 2] = 9.0
    x[capped, 6] = 7.0
    tested = find_value_triggers(_data(x, y), seed=0)
    assert any(set(t.carriers.tolist()) == set(np.flatnonzero(capped).tolist()) for t in tested)
    assert not [t for t in tested if t.confirmed]


def test_a_value_that_defines_its_class_is_not_a_trigger() -> None:
    # Zero spending means "no card": the repeated value is most of its class, and the few other rows of
    # the class are unusual ones (here: a high c0). A model fitted without the carriers learns the class
    # from those few and would place the ordinary-looking carriers with the other class, so a candidate
    # that holds most of its class is not tested at all.
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=(2400, 8)), 4)
    y = np.zeros(2400, dtype=np.int64)
    y[:700] = 1
    x[:700, 7] = 0.0
    y[700:1000] = 1
    x[700:1000, 0] += 3.0
    tested = find_value_triggers(_data(x, y), seed=0)
    candidate = next(t for t in tested if t.columns == (7,))
    assert candidate.purity == 1.0
    assert not candidate.confirmed
    assert not [t for t in tested if t.confirmed]


def test_images_and_tiny_tables_are_not_searched() -> None:
    x, y = _table()
    image = AuditData("i.npz", "image", x, y, ["a", "b"], [f"p{i}" for i in range(8)], image_shape=(2, 4))
    assert find_value_triggers(image, seed=0) == []
    assert find_value_triggers(_data(x[:20], y[:20]), seed=0) == []


def test_channel_covers_the_carriers_and_reports_the_check() -> None:
    x, y, rows = _poison(*_table(), count=120)
    result = run_backdoor_channel(_data(x, y), AuditOptions(seed=0))
    # Here the representation probe confirms the trigger as well and flags first; the value check then
    # adds nothing twice, and the summary still reports it.
    assert {f.row for f in result.flags} == set(rows.tolist())
    assert [t["features"] for t in result.summary["value_triggers"] if t["confirmed"]] == [["c2", "c5"]]


def test_value_trigger_flags_name_the_values_and_the_evidence() -> None:
    x, y, rows = _poison(*_table(), count=120)
    data = _data(x, y)
    trigger = next(t for t in find_value_triggers(data, seed=0) if t.confirmed)
    result = ChannelResult(BACKDOOR)
    _flag_value_trigger(result, data, trigger)
    assert sorted(f.row for f in result.flags) == rows.tolist()
    flag = result.flags[0]
    assert flag.channel == BACKDOOR
    assert flag.check == VALUE_CHECK
    for text in ("c2=", "c5=", "another class"):
        assert text in flag.reason
    assert flag.suggested_label == "churn"
    assert [f.rule_id for f in result.findings] == [rules.BACKDOOR]
    # Rows another check flagged already are not flagged twice.
    again = ChannelResult(BACKDOOR, flags=list(result.flags))
    _flag_value_trigger(again, data, trigger)
    assert len(again.flags) == len(result.flags)
    assert not again.findings


def test_audit_hands_the_confirmed_carriers_to_the_label_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.data.audit import label
    from bastion.data.audit.base import CHANNELS, LABEL, OUTLIER
    from bastion.data.audit.run import run_audit

    received: list[object] = []
    original = label.run_label_channel

    def spy(data: AuditData, options: AuditOptions, known_poison: object = None) -> object:
        received.append(known_poison)
        return original(data, options, known_poison)  # type: ignore[arg-type]

    monkeypatch.setattr(label, "run_label_channel", spy)
    x, y, rows = _poison(*_table(), count=120)
    result = run_audit(_data(x, y), AuditOptions(seed=0))
    # The backdoor channel ran first, but the results keep the usual channel order.
    assert list(result.channels) == list(CHANNELS)
    backdoor_rows = {f.row for f in result.channels[BACKDOOR].flags}
    assert backdoor_rows == set(rows.tolist())
    # The label channel was told which rows are planted (and which the outlier channel took), and flags
    # none of them.
    outlier_rows = {f.row for f in result.channels[OUTLIER].flags if f.remove}
    assert len(received) == 1
    assert set(np.flatnonzero(np.asarray(received[0])).tolist()) == backdoor_rows | outlier_rows
    assert not {f.row for f in result.channels[LABEL].flags} & backdoor_rows


def _students_with_junk(junk_share: float, seed: int = 0, n: int = 2400) -> AuditData:
    """A one-hot pair that explains the label (students spend more yet rarely default), plus junk rows.

    The junk rows carry far-out values on every column and random labels, as injected outliers do; they
    give the one-hot columns many distinct values.
    """
    rng = np.random.default_rng(seed)
    student = (rng.random(n) < 0.3).astype(np.float64)
    x = rng.normal(size=(n, 4))
    x[:, 0] += 1.5 * student
    score = x[:, 0] - 3.0 * student + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=n)
    y = (score > np.quantile(score, 0.8)).astype(np.int64)
    x = np.column_stack([np.round(x, 4), 1.0 - student, student])
    k = round(junk_share * n)
    junk = x.mean(axis=0) + 5.0 * x.std(axis=0) * rng.normal(size=(k, x.shape[1]))
    names = ["c0", "c1", "c2", "c3", "student=No", "student=Yes"]
    return AuditData(
        "t.csv",
        "tabular",
        np.vstack([x, junk]),
        np.concatenate([y, rng.integers(0, 2, k)]),
        ["stay", "default"],
        names,
    )


@pytest.mark.parametrize("junk_share", [0.0, 0.05, 0.10])
def test_a_one_hot_pair_is_no_trigger_when_junk_rows_give_it_many_values(junk_share: float) -> None:
    # Without the pair, a model places half the students with the defaulters, and nearly all of them are
    # labelled "stay": the relabelled test alone would confirm the pair. A category is never searched, and
    # the junk rows' stray values must not make it a column of many levels (they did: with 5% of them the
    # pair was confirmed and every student row flagged).
    assert not [t for t in find_value_triggers(_students_with_junk(junk_share), seed=0) if t.confirmed]
