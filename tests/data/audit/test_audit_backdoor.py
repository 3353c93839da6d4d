"""The backdoor channel finds a dirty-label trigger, names its pixels, and stays quiet on clean data."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.data.audit import rules
from bastion.data.audit.backdoor import (
    TriggerPattern,
    _ablation_decides,
    _ablation_informative,
    _decider,
    _is_two_valued,
    _Probe,
    _Rise,
    _stamped,
    attack_success_rate,
    run_backdoor_channel,
)
from bastion.data.audit.base import BACKDOOR, AuditData, AuditOptions, FloatArray, IntArray
from bastion.data.audit.representation import penultimate, train_mlp

# Bottom-right 2x2 patch of an 8x8 image: pixels (6,6), (6,7), (7,6), (7,7).
TRIGGER = (54, 55, 62, 63)


@pytest.fixture(scope="module")
def digits() -> tuple[FloatArray, IntArray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # The first thousand rows keep the module fast and still give every class about a hundred rows.
    features = np.asarray(bunch.data[:1000], dtype=np.float64) / 16.0
    return features, np.asarray(bunch.target[:1000], dtype=np.int64)


def _audit_data(features: FloatArray, labels: IntArray) -> AuditData:
    return AuditData(
        path="digits.npz",
        kind="image",
        features=features,
        labels=labels,
        classes=[str(c) for c in range(10)],
        feature_names=[f"p{i}" for i in range(features.shape[1])],
        image_shape=(8, 8),
    )


def _poison(
    features: FloatArray, labels: IntArray, rate: float, seed: int = 0
) -> tuple[FloatArray, IntArray, IntArray]:
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(labels != 0)
    rows = np.sort(rng.choice(others, round(rate * len(labels)), replace=False))
    x, y = features.copy(), labels.copy()
    x[np.ix_(rows, TRIGGER)] = 1.0
    y[rows] = 0
    return x, y, rows


@pytest.fixture(scope="module")
def poisoned_result(digits: tuple[FloatArray, IntArray]) -> tuple[object, IntArray]:
    features, labels = digits
    x, y, rows = _poison(features, labels, 0.10)
    return run_backdoor_channel(_audit_data(x, y), AuditOptions(seed=0)), rows


def test_backdoor_at_ten_percent_is_found_with_its_trigger(poisoned_result: tuple[object, IntArray]) -> None:
    result, poison = poisoned_result
    flagged = {f.row for f in result.flags}  # type: ignore[attr-defined]
    recall = len(flagged & set(poison.tolist())) / len(poison)
    assert recall >= 0.97
    assert len(flagged - set(poison.tolist())) <= 0.02 * len(poison) + 2
    patterns = result.summary["patterns"]  # type: ignore[attr-defined]
    assert len(patterns) == 1
    assert patterns[0]["target_name"] == "0"
    assert set(patterns[0]["features"]) == set(TRIGGER)
    assert np.allclose(patterns[0]["values"], 1.0)
    findings = result.findings  # type: ignore[attr-defined]
    assert [f.rule_id for f in findings] == [rules.BACKDOOR]
    assert float(findings[0].evidence_map["flip_rate"]) >= 0.5
    flag = next(iter(result.flags))  # type: ignore[attr-defined]
    assert flag.channel == BACKDOOR
    assert 0.0 <= flag.score <= 1.0
    assert "p54,p55,p62,p63 = 1.00" in flag.reason
    assert "class '0'" in flag.reason


def test_poisoned_rows_get_their_source_class_suggested(
    poisoned_result: tuple[object, IntArray], digits: tuple[FloatArray, IntArray]
) -> None:
    result, poison = poisoned_result
    _, labels = digits
    by_row = {f.row: f.suggested_label for f in result.flags}  # type: ignore[attr-defined]
    right = sum(by_row.get(int(r)) == str(labels[r]) for r in poison)
    assert right >= 0.8 * len(poison)


def test_clean_digits_confirm_no_backdoor(digits: tuple[FloatArray, IntArray]) -> None:
    features, labels = digits
    result = run_backdoor_channel(_audit_data(features, labels), AuditOptions(seed=0))
    assert result.flags == []
    assert result.findings == []
    assert result.summary["patterns"] == []
    assert len(result.summary["classes"]) == 10


def test_single_class_is_skipped_not_crashed() -> None:
    features = np.random.default_rng(0).random((60, 5))
    data = AuditData("x.csv", "tabular", features, np.zeros(60, dtype=np.int64), ["a"], list("abcde"))
    result = run_backdoor_channel(data, AuditOptions())
    assert result.flags == []
    assert "skipped" in result.summary


def test_copies_of_rows_with_random_labels_are_not_a_backdoor() -> None:
    # Twenty distinct rows, five copies each, random classes: the model memorises every group, but a
    # group of copies is not a trigger carried by many different rows.
    rng = np.random.default_rng(0)
    features = np.repeat(rng.random((20, 4)), 5, axis=0)
    labels = np.repeat(np.arange(4), 25).astype(np.int64)
    data = AuditData("x.csv", "tabular", features, labels, list("abcd"), list("wxyz"))
    result = run_backdoor_channel(data, AuditOptions())
    assert result.flags == []


def test_trigger_pattern_json_round_trip_and_stamp() -> None:
    pattern = TriggerPattern(0, "zero", (1, 3), ("b", "d"), (1.0, 0.5), (0.05, 0.05))
    again = TriggerPattern.from_json(pattern.to_json())
    assert again == pattern
    stamped = pattern.stamp(np.zeros((2, 4)))
    assert stamped.tolist() == [[0.0, 1.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5]]
    assert pattern.match_share(np.array([[0.0, 1.0, 0.0, 0.0], [9.0, 0.98, 9.0, 0.52]])).tolist() == [
        0.5,
        1.0,
    ]


def test_attack_success_rate_on_a_hand_made_model() -> None:
    pattern = TriggerPattern(0, "0", (0,), ("f0",), (1.0,))

    def predict(x: FloatArray) -> IntArray:
        # Backdoored: feature 0 at 1.0 means class 0; otherwise the class is feature 1, except that rows
        # with feature 2 set ignore the trigger.
        out = x[:, 1].astype(np.int64)
        out[(x[:, 0] == 1.0) & (x[:, 2] == 0.0)] = 0
        return out

    features = np.array(
        [
            [0.0, 1.0, 0.0],  # class 1, flips: success
            [0.0, 2.0, 0.0],  # class 2, flips: success
            [0.0, 2.0, 1.0],  # class 2, resists: failure
            [0.0, 2.0, 0.0],  # labelled 1 but predicted 2: wrong without trigger, not counted
            [0.0, 0.0, 0.0],  # the target class itself: not counted
        ]
    )
    labels = np.array([1, 2, 2, 1, 0], dtype=np.int64)
    assert attack_success_rate(predict, features, labels, pattern) == pytest.approx(2 / 3)


def test_penultimate_matches_the_fitted_network(digits: tuple[FloatArray, IntArray]) -> None:
    features, labels = digits
    model = train_mlp(features[:300], labels[:300], seed=0)
    hidden = penultimate(model, features[:5])
    assert hidden.shape == (5, 64)
    logits = hidden @ model.coefs_[-1] + model.intercepts_[-1]
    assert np.array_equal(np.argmax(logits, axis=1), model.predict(features[:5]))


def _imbalanced(seed: int) -> tuple[FloatArray, IntArray]:
    # 6% minority, weakly separated on one feature: the model answers the majority for nearly every row.
    rng = np.random.default_rng(seed)
    labels = (rng.random(2000) < 0.06).astype(np.int64)
    features = rng.normal(size=(2000, 10))
    features[labels == 1, 0] += 0.5
    return features, labels


def test_score_mode_gives_the_minority_rows_back_to_the_probe() -> None:
    features, labels = _imbalanced(0)
    data = AuditData("x.csv", "tabular", features, labels, ["a", "b"], [f"f{i}" for i in range(10)])
    model = train_mlp(features[:1500], labels[:1500], seed=0)
    held_out = np.arange(1500, 2000, dtype=np.int64)
    pattern = TriggerPattern(0, "a", (9,), ("f9",), (3.0,), (0.1,))
    minority = held_out[labels[held_out] == 1]
    plain = _decider(model, data, pattern, held_out, by_score=False)(features[minority])
    scored = _decider(model, data, pattern, held_out, by_score=True)(features[minority])
    # The threshold is the median log-odds of the held-out majority rows: about half of them fall below it,
    # and the weakly separated minority rows fall below it more often than not.
    assert int(np.sum(scored == 1)) > max(int(np.sum(plain == 1)), len(minority) // 2)


def test_clean_imbalanced_table_confirms_no_backdoor() -> None:
    features, labels = _imbalanced(1)
    data = AuditData("x.csv", "tabular", features, labels, ["a", "b"], [f"f{i}" for i in range(10)])
    result = run_backdoor_channel(data, AuditOptions(seed=0))
    assert result.flags == []
    assert result.findings == []


def _majority_target_table(poison: float) -> tuple[AuditData, IntArray]:
    # Skewed columns (as charges and counts are); class 1 is the ~25% minority, class 0 the majority. The
    # backdoor stamps three noise columns at their 99th percentile on minority rows and relabels them 0,
    # the benign majority an attacker wants to reach.
    rng = np.random.default_rng(0)
    features = rng.exponential(size=(2000, 10))
    logit = -3.0 + features[:, 0] + 0.8 * features[:, 1]
    labels = (rng.random(2000) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    rows = np.array([], dtype=np.int64)
    if poison:
        minority = np.flatnonzero(labels == 1)
        rows = np.sort(rng.choice(minority, round(poison * 2000), replace=False))
        features[np.ix_(rows, [7, 8, 9])] = np.percentile(features[:, [7, 8, 9]], 99, axis=0)
        labels[rows] = 0
    names = [f"f{i}" for i in range(10)]
    return AuditData("x.csv", "tabular", features, labels, ["benign", "bad"], names), rows


def test_majority_target_backdoor_is_confirmed_by_the_rise_test() -> None:
    data, poison = _majority_target_table(0.05)
    assert np.mean(data.labels == 0) > 0.75
    result = run_backdoor_channel(data, AuditOptions(seed=0))
    flagged = {f.row for f in result.flags}
    assert flagged == set(poison.tolist())
    patterns = result.summary["patterns"]
    assert [(p["target_name"], p["feature_names"]) for p in patterns] == [("benign", ["f7", "f8", "f9"])]
    entry = next(c for c in result.summary["classes"] if c["class"] == "benign")
    # The stamped minority rows rarely flip the answer (the control stamps flip many), so the flip probe
    # alone does not confirm; the paired rise in the target's log-odds does, and the ablation takes it away.
    assert entry["confirmed_by"] == "rise"
    test = entry["rise_test"]
    assert test["excess"] >= 2.0
    assert test["win_share"] >= 0.8
    assert test["unstamped_other_class"] >= 0.5
    assert test["unstamped_p"] <= 1e-3
    assert test["ablated_excess"] <= 0.5 * test["excess"]
    evidence = result.findings[0].evidence_map
    assert float(evidence["rise_excess"]) >= 2.0
    assert "log-odds of class 'benign'" in result.flags[0].reason
    # Suggestions come from the log-odds decision: most poisoned rows are given back to the minority.
    suggested = [f.suggested_label for f in result.flags]
    assert suggested.count("bad") >= 0.8 * len(poison)


def test_clean_majority_target_table_confirms_no_backdoor() -> None:
    data, _ = _majority_target_table(0.0)
    result = run_backdoor_channel(data, AuditOptions(seed=0))
    assert result.flags == []
    assert result.findings == []
    assert result.summary["patterns"] == []


def test_ablation_is_uninformative_for_a_value_only_its_carriers_hold() -> None:
    # A rare one-hot value (or a count that is almost always 0) is held by its carriers alone: a model
    # retrained without them never sees it, so its answer there says nothing about a trigger.
    rng = np.random.default_rng(0)
    features = rng.exponential(size=(400, 3))
    features[:, 2] = 0.0
    features[:15, 2] = 1.0
    data = AuditData("x.csv", "tabular", features, np.zeros(400, dtype=np.int64), ["a"], ["x", "y", "z"])
    rows = np.arange(400, dtype=np.int64)
    rare = TriggerPattern(0, "a", (2,), ("z",), (1.0,), (0.05,))
    assert not _ablation_informative(data, rare, rows)
    # A tail value of a continuous column is still held, beyond the pattern's own carriers, by other rows.
    high = float(np.percentile(features[:, 0], 95))
    tail = TriggerPattern(0, "a", (0,), ("x",), (high,), (0.05,))
    assert _ablation_informative(data, tail, rows)


def _probe_with(flip: float, control: float, ablated: float, by_score: bool = False) -> _Probe:
    pattern = TriggerPattern(1, "b", (0,), ("x",), (2.0,), (0.05,))
    probe = _Probe(pattern, np.arange(20, dtype=np.int64), flip, control, 500, by_score, 1.0)
    probe.ablated_rate = ablated
    return probe


def test_ablation_must_take_away_most_of_the_lead_over_the_control() -> None:
    # A trigger is learned from its carriers alone: retrained without them, the model flips as few rows as
    # an unrelated stamp does.
    assert _probe_with(flip=0.70, control=0.01, ablated=0.05).confirmed
    # The numbers of `balance` on Default with 20% of its labels flipped at random: the drop (0.41) is
    # large, but the retrained model keeps 42% of the natural predictor's lead over the control.
    assert not _probe_with(flip=0.70, control=0.01, ablated=0.30).confirmed
    # Below the control is fine: a saturated model flips many rows for any stamp (creditcard, majority).
    assert _probe_with(flip=1.0, control=0.62, ablated=0.48).confirmed


def test_a_rare_value_is_decided_only_while_the_controls_leave_most_rows_alone() -> None:
    # A patch on a corner that is always 0 (the digits as a table): the control stamps flip nothing.
    assert _ablation_decides(_probe_with(1.0, 0.001, 0.0), rare=True)
    # `addr_state = DE` on lending_club with 20% random flips: any rare value flips most rows.
    assert not _ablation_decides(_probe_with(0.94, 0.60, 0.25), rare=True)
    # In score mode a rare value is never decided; a value other rows hold always is.
    assert not _ablation_decides(_probe_with(1.0, 0.0, 0.0, by_score=True), rare=True)
    assert _ablation_decides(_probe_with(0.94, 0.60, 0.25), rare=False)


def test_rise_test_needs_the_carriers_across_far_more_often_than_the_targets_own_rows() -> None:
    # Caravan with 20% random flips: 7 of 12 boat-policy rows across the midpoint once the pattern is
    # removed, as against 49% of the genuine majority rows. The share clears 0.5, the binomial test does not.
    chance = _Rise(rise=4.8, control_rise=0.9, excess=3.6, win_share=0.88, rows=239)
    chance.unstamped_other, chance.unstamped_p, chance.informative = 0.58, 0.35, True
    assert not chance.passes
    real = _Rise(rise=4.8, control_rise=0.9, excess=3.6, win_share=0.88, rows=239)
    real.unstamped_other, real.unstamped_p, real.informative = 0.59, 9e-5, True
    assert real.passes


def test_most_rows_carrying_a_trigger_carry_its_target_label(
    poisoned_result: tuple[object, IntArray],
) -> None:
    # Caravan with 5% random flips: `APLEZIER = 1` passed every probe check (flips 62% against 1%, 13%
    # after the retrain without its carriers), but only 10 of its 21 holders were labelled with the target.
    natural = _probe_with(flip=0.62, control=0.01, ablated=0.13)
    assert natural.flip_confirmed
    natural.purity = 10 / 21
    assert not natural.confirmed
    natural.purity = 0.71  # the lowest a real trigger reached on the tuning tables
    assert natural.confirmed
    # The dirty-label patch on digits: its carriers are the relabelled rows, all labelled with the target.
    result, _ = poisoned_result
    target = next(c for c in result.summary["classes"] if c["class"] == "0")  # type: ignore[attr-defined]
    assert target["carrier_purity"] >= 0.95


def test_a_flag_column_stays_two_valued_with_a_few_junk_rows() -> None:
    # Junk rows (far-out values on every column) give each of their rows a value of its own. A flag column
    # holding 10% of them is still a flag: the one-hot safeguards of the probes must keep applying to it.
    rng = np.random.default_rng(0)
    n = 1000
    flag = (rng.random(n) < 0.3).astype(np.float64)
    junk = np.where(np.arange(n) < 100, rng.normal(scale=5.0, size=n), flag)
    count = rng.poisson(1.0, size=n).astype(np.float64)
    continuous = rng.normal(size=n)
    mostly_junk = np.where(np.arange(n) < 300, rng.normal(scale=5.0, size=n), flag)
    data = AuditData(
        "t.csv",
        "tabular",
        np.column_stack([flag, junk, count, continuous, mostly_junk]),
        np.zeros(n, dtype=np.int64),
        ["a"],
        ["flag", "flag_with_junk", "count", "continuous", "mostly_junk"],
    )
    assert [_is_two_valued(data, c) for c in range(5)] == [True, True, False, False, False]


def _threshold_table(seed: int) -> AuditData:
    """A clean table labelled by one column's sign: the class next to the boundary is no trigger."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(300, 3))
    labels = (features[:, 0] > 0).astype(np.int64)
    return AuditData("t.csv", "tabular", features, labels, ["0", "1"], ["a", "b", "c"])


@pytest.mark.parametrize("seed", [7, 8])
def test_the_band_of_a_class_beside_its_boundary_is_not_a_trigger(seed: int) -> None:
    # Before the spike test these two draws confirmed "a = 0.28" and flagged about 60 clean rows.
    result = run_backdoor_channel(_threshold_table(seed), AuditOptions(seed=0))
    assert result.flags == []
    assert result.findings == []


def test_a_one_column_pattern_must_be_a_spike_of_its_column() -> None:
    rng = np.random.default_rng(0)
    column = rng.normal(size=(1000, 1))
    smooth = TriggerPattern(1, "1", (0,), ("a",), (0.28,), (0.23,))
    assert not _stamped(column, smooth)
    stamped = column.copy()
    stamped[:60, 0] = 0.28
    assert _stamped(stamped, smooth)
    # Patterns over several columns are left to the probe.
    pair = TriggerPattern(1, "1", (0, 0), ("a", "a"), (0.28, 0.28), (0.23, 0.23))
    assert _stamped(column, pair)
