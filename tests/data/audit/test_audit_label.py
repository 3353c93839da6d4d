"""The label channel: injected label flips are found, clean data stays quiet, a single class fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_blobs

from bastion.data.audit import label, rules
from bastion.data.audit.base import LABEL, AuditData, AuditOptions
from bastion.data.audit.label import (
    NoiseGate,
    class_recognition,
    contested_pair,
    dominant_pair,
    flip_posterior,
    label_evidence,
    noise_gate,
    noise_transitions,
    out_of_sample_probabilities,
    run_label_channel,
)
from bastion.data.audit.load import from_arrays
from bastion.errors import InputError

OPTIONS = AuditOptions(folds=3)


def _blobs(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n, n_features=8, centers=3, cluster_std=1.5, random_state=seed)
    return x, y


def _flip(y: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(y), int(share * len(y)), replace=False)
    flipped = y.copy()
    flipped[rows] = (y[rows] + rng.integers(1, 3, rows.size)) % 3
    return flipped, np.sort(rows)


def _named(x: np.ndarray, y: np.ndarray, kind: str = "tabular") -> AuditData:
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"])
    return from_arrays(x, names[y], kind=kind, path="t.npz")


def test_random_flips_are_found_with_their_true_label() -> None:
    x, y = _blobs()
    noisy, rows = _flip(y, 0.1)
    result = run_label_channel(_named(x, noisy), OPTIONS)
    flagged = {f.row for f in result.flags}
    hits = flagged & set(rows.tolist())
    assert len(hits) >= 0.9 * rows.size
    assert len(hits) >= 0.9 * len(flagged)
    names = ["ant", "bee", "cat"]
    right = sum(f.suggested_label == names[y[f.row]] for f in result.flags if f.row in hits)
    assert right >= 0.9 * len(hits)
    flag = result.flags[0]
    assert flag.channel == LABEL
    assert 0.0 <= flag.score <= 1.0
    given = names[noisy[flag.row]]
    assert f"label {given!r}" in flag.reason
    assert repr(flag.suggested_label) in flag.reason
    assert "nearest rows" in flag.reason
    assert "cross-validated model gives" in flag.reason


def test_finding_counts_flags_per_class_pair() -> None:
    x, y = _blobs()
    noisy, _ = _flip(y, 0.1)
    result = run_label_channel(_named(x, noisy), OPTIONS)
    (finding,) = result.findings
    assert finding.rule_id == rules.LABEL_NOISE
    evidence = finding.evidence_map
    assert int(evidence["flagged_rows"]) == len(result.flags)
    assert sum(int(v) for k, v in evidence.items() if " -> " in k) == len(result.flags)
    assert result.summary["n_flagged"] == len(result.flags)
    assert result.summary["folds"] == 3
    assert result.summary["model"]


def test_clean_data_yields_few_flags() -> None:
    x, y = _blobs(seed=1)
    result = run_label_channel(_named(x, y), OPTIONS)
    assert len(result.flags) <= 0.01 * len(y)


def test_targeted_pair_flip_names_the_dominant_pair() -> None:
    x, y = _blobs(n=900, seed=2)
    rng = np.random.default_rng(0)
    source = np.flatnonzero(y == 0)
    rows = rng.choice(source, source.size // 4, replace=False)
    noisy = y.copy()
    noisy[rows] = 1
    result = run_label_channel(_named(x, noisy), OPTIONS)
    flagged = {f.row for f in result.flags}
    assert len(flagged & set(rows.tolist())) >= 0.8 * rows.size
    assert result.summary["dominant_pair"] == {"given": "bee", "suggested": "ant"}
    assert "dominant class pair" in result.findings[0].message


def test_digits_images_flips() -> None:
    digits = load_digits()
    x, y = digits.data[:900] / 16.0, digits.target[:900]
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), 45, replace=False)
    noisy = y.copy()
    noisy[rows] = (y[rows] + rng.integers(1, 10, rows.size)) % 10
    result = run_label_channel(from_arrays(x, noisy, kind="image"), OPTIONS)
    flagged = {f.row for f in result.flags}
    hits = flagged & set(rows.tolist())
    assert len(hits) >= 0.8 * rows.size
    assert len(hits) >= 0.8 * len(flagged)


def test_image_components_keep_their_relative_variances_and_tables_are_standardised() -> None:
    digits = load_digits()
    pixels = digits.data / 16.0
    images = label.representation(from_arrays(pixels, digits.target, kind="image"), 0)
    spread = images.var(axis=0)
    assert images.shape == (len(pixels), label.COMPONENTS)
    assert spread.mean() == pytest.approx(1.0)
    # Unwhitened: the first component carries many times the variance of the last.
    assert spread[0] > 20 * spread[-1]
    table = label.representation(from_arrays(pixels[:, :20], digits.target), 0)
    np.testing.assert_allclose(table.std(axis=0)[table.std(axis=0) > 0], 1.0)


def test_probabilities_are_out_of_sample_and_normalised() -> None:
    x, y = _blobs(n=300)
    probs = out_of_sample_probabilities(_named(x, y), OPTIONS)
    assert probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs.argmax(axis=1) == y).mean() > 0.9


def test_single_class_is_a_clear_error() -> None:
    x, _ = _blobs(n=50)
    data = _named(x, np.array([0, 1] * 25))
    data.labels = np.zeros(50, dtype=np.int64)
    with pytest.raises(InputError, match="label column has a single class"):
        run_label_channel(data, OPTIONS)


def test_tiny_classes_and_two_classes_do_not_crash() -> None:
    x, y = _blobs(n=200)
    y = (y > 0).astype(np.int64)
    y[:2] = 2  # a class of two rows, fewer than the folds
    result = run_label_channel(_named(x, y), AuditOptions(folds=5))
    assert result.summary["folds"] >= 2
    probs = out_of_sample_probabilities(_named(x, y), AuditOptions(folds=5))
    assert probs.shape == (200, 3)
    assert np.isfinite(probs).all()


def _weak_minority(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A clean binary table whose 8% minority class the features barely separate (a noisy real table)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (rng.random(n) < 0.08).astype(np.int64)
    x[:, 0] += 0.8 * y
    return x, y


def test_binary_pair_needs_a_recognised_given_class() -> None:
    # Two classes, so the flags fall in one of two pairs; a heavy one only means a targeted flip when the
    # model can tell the pair's given class apart at all.
    counts = {(1, 0): 40, (0, 1): 2}
    assert dominant_pair(counts, 2) == (1, 0)
    assert dominant_pair(counts, 2, np.array([0.9, 0.1])) is None
    assert dominant_pair(counts, 2, np.array([0.6, 0.8])) == (1, 0)
    # With more classes the gate does not apply.
    assert dominant_pair({(1, 0): 40, (0, 2): 2}, 3, np.array([0.9, 0.1, 0.9])) == (1, 0)


def test_clean_binary_table_with_a_weak_minority_names_no_pair() -> None:
    from cleanlab.filter import find_label_issues

    x, y = _weak_minority()
    data = _named(x, y)
    result = run_label_channel(data, OPTIONS)
    assert result.summary["dominant_pair"] is None
    evidence = label_evidence(data, OPTIONS)
    assert class_recognition(data.labels, evidence.blended)[1] < 0.5
    # Never more flags than confident learning alone on the same cross-validated probabilities.
    alone = np.asarray(find_label_issues(data.labels, evidence.model_probs), dtype=bool)
    assert len(result.flags) <= int(alone.sum())
    assert len(result.flags) < int((y == 1).sum())


def test_rows_known_as_planted_teach_nothing_and_pull_in_no_genuine_rows() -> None:
    # 90 rows of the first blob relabelled as the second: a backdoor's carriers once their trigger is
    # confirmed. Learned from, they make the channel doubt genuine rows of the first blob; counted by
    # confident learning, they make it prune as many genuine rows again.
    x, y = _blobs(900, seed=2)
    rng = np.random.default_rng(2)
    planted = np.sort(rng.choice(np.flatnonzero(y == 0), 90, replace=False))
    poisoned = y.copy()
    poisoned[planted] = 1
    known = np.zeros(len(y), dtype=bool)
    known[planted] = True
    data = _named(x, poisoned)
    told = {f.row for f in run_label_channel(data, OPTIONS, known_poison=known).flags}
    assert not told & set(planted.tolist())
    # Without the planted rows at all, the channel flags the same few genuine rows.
    keep = np.flatnonzero(~known)
    alone = {int(keep[f.row]) for f in run_label_channel(_named(x[keep], y[keep]), OPTIONS).flags}
    assert len(told ^ alone) <= 3
    untold = {f.row for f in run_label_channel(data, OPTIONS).flags} - set(planted.tolist())
    # Told nothing, the channel flags genuine rows of the first blob as well as the planted ones.
    assert len(untold) > len(told)


def test_wide_table_gets_the_model_family_that_explains_it_better() -> None:
    from bastion.data.audit.label import BOOSTING, KERNEL, _families

    # Four numeric columns carry an interaction (the sign of x0 * x1) that trees find and a kernel on
    # principal components loses among 66 one-hot columns of a noise category.
    rng = np.random.default_rng(4)
    n = 1200
    numeric = rng.normal(size=(n, 4))
    onehot = np.eye(66)[rng.integers(0, 66, n)]
    x = np.hstack([numeric, onehot])
    y = (numeric[:, 0] * numeric[:, 1] > 0).astype(np.int64)
    wide = _named(x, y)
    assert _families(wide) == (KERNEL, BOOSTING)
    assert _families(_named(numeric, y)) == (BOOSTING,)
    assert _families(from_arrays(x, y, kind="image")) == (KERNEL,)
    evidence = label_evidence(wide, OPTIONS)
    assert evidence.model == BOOSTING
    assert float((evidence.model_probs.argmax(axis=1) == y).mean()) >= 0.85


def _overlapping(sizes: tuple[int, ...], distance: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # ant and bee overlap (their centres `distance` apart, unit spread); cat and dog sit far away.
    rng = np.random.default_rng(seed)
    centres = [
        np.zeros(8),
        np.r_[distance, np.zeros(7)],
        np.r_[0.0, 8.0, np.zeros(6)],
        np.r_[0.0, -8.0, np.zeros(6)],
    ]
    x = np.vstack([rng.normal(c, 1.0, (n, 8)) for c, n in zip(centres, sizes, strict=False)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def test_half_flip_between_overlapping_classes_is_read_from_the_class_that_keeps_a_core() -> None:
    # Half of ant relabelled bee: ant's region now carries both labels equally, and confident learning flags
    # the genuine ant rows there as much as the flipped ones. Bee keeps its own region, ant does not.
    x, y = _overlapping((200, 400, 300), 2.0, seed=0)
    rng = np.random.default_rng(0)
    rows = rng.choice(np.flatnonzero(y == 0), 100, replace=False)
    noisy = y.copy()
    noisy[rows] = 1
    result = run_label_channel(_named(x, noisy), OPTIONS)
    flagged = {f.row for f in result.flags}
    hits = flagged & set(rows.tolist())
    assert result.summary["dominant_pair"] == {"given": "bee", "suggested": "ant"}
    assert len(hits) >= 30
    assert len(hits) >= 0.6 * len(flagged)
    # The genuine ant rows are kept: flags on rows still labelled ant are rare.
    assert sum(noisy[row] == 0 for row in flagged) <= 0.1 * len(flagged)


def _contested(ant_bee: int, bee_ant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # 100 ant, 300 bee, 100 cat rows; the first `ant_bee` ant rows lean to bee, the first `bee_ant` bee rows
    # lean to ant; confident learning proposed every leaning row.
    labels = np.repeat([0, 1, 2], [100, 300, 100])
    blended = np.zeros((500, 3))
    blended[np.arange(500), labels] = 0.9
    blended[labels == 2, 0] = 0.1
    blended[labels != 2, 2] = 0.1
    ant, bee = np.flatnonzero(labels == 0)[:ant_bee], np.flatnonzero(labels == 1)[:bee_ant]
    blended[ant] = [0.35, 0.6, 0.05]
    blended[bee] = [0.6, 0.35, 0.05]
    suggested = np.where(labels == 0, 1, 0)
    suggested[labels == 2] = 0
    proposed = np.zeros(500, dtype=bool)
    proposed[ant] = proposed[bee] = True
    return labels, blended, suggested, proposed


def test_contested_pair_reads_direction_from_the_shares() -> None:
    # 90 of 100 ant rows lean to bee but only 60 of 300 bee rows lean to ant: bee rows are the flipped ones.
    labels, blended, suggested, proposed = _contested(90, 60)
    assert contested_pair(labels, blended, suggested, proposed, None) == ((1, 0), True)
    # ... even when confident learning's own count points the other way.
    assert contested_pair(labels, blended, suggested, proposed, (0, 1)) == ((1, 0), True)
    # Shares too close to call: the ordered pair (or none) stands.
    labels, blended, suggested, proposed = _contested(40, 60)
    assert contested_pair(labels, blended, suggested, proposed, None) == (None, False)
    assert contested_pair(labels, blended, suggested, proposed, (0, 1)) == ((0, 1), False)
    # Two classes: unchanged, an unpredictable minority is contested on clean tables too.
    two = labels < 2
    assert contested_pair(labels[two], blended[two][:, :2], suggested[two], proposed[two], None) == (
        None,
        False,
    )


def test_noise_transitions_count_other_labels_among_the_surest_rows() -> None:
    n = 1000
    p_one = np.linspace(0.0, 1.0, n)
    probs = np.column_stack([1.0 - p_one, p_one])
    labels = (p_one > 0.5).astype(np.int64)
    # 30 of the 200 rows surest to be class 1 carry label 0; the rows surest to be 0 are all labelled 0.
    labels[n - 30 :] = 0
    transitions = noise_transitions(labels, probs)
    anchors = label.NOISE_ANCHOR_MIN
    assert transitions[1, 0] == pytest.approx(30.5 / (anchors + 1))
    assert transitions[0, 1] == pytest.approx(0.5 / (anchors + 1))
    assert np.allclose(transitions.sum(axis=1), (anchors + 1.0) / (anchors + 1.0))


def test_noise_transitions_never_reach_past_half_a_small_class() -> None:
    # 40 rows of class 0, none flipped: only its 20 surest rows are anchors, so no row of class 1 reads as
    # noise (all 100 rows would, with the 200-row minimum).
    p_one = np.linspace(0.0, 1.0, 100)
    labels = (p_one > 0.4).astype(np.int64)
    transitions = noise_transitions(labels, np.column_stack([1.0 - p_one, p_one]))
    assert transitions[0, 1] == pytest.approx(0.5 / 21)
    assert transitions[1, 0] == pytest.approx(0.5 / 31)


def test_flip_posterior_is_the_share_of_the_given_label_that_flips_explain() -> None:
    transitions = np.array([[0.9, 0.1], [0.05, 0.95]])
    probs = np.array([[0.2, 0.8], [0.2, 0.8], [0.999, 0.001]])
    labels = np.array([0, 1, 1])
    posterior = flip_posterior(labels, probs, transitions)
    # Label 0 where class 1 is likely: 0.05 x 0.8 of the rows are flipped into it, out of 0.2.
    assert posterior[0] == pytest.approx(0.05 * 0.8 / 0.2)
    assert posterior[1] == pytest.approx(0.1 * 0.2 / 0.8)
    assert posterior[2] == 1.0


def test_flip_chance_reads_the_model_with_the_estimated_flips_taken_out() -> None:
    # 40% of class 1's surest rows carry label 0: a model fitted to those labels gives the flipped region
    # about even odds, and the rates say the 0s there are mostly 1s that were relabelled.
    gate = NoiseGate(np.array([[0.99, 0.01], [0.4, 0.6]]), slope=1.0, intercept=0.0)
    probs = np.array([[0.55, 0.45], [0.95, 0.05], [0.55, 0.45]])
    labels = np.array([0, 0, 1])
    clean_one = (0.45 - 0.01) / (1.0 - 0.01 - 0.4)
    assert gate.clean_probs(probs)[0, 1] == pytest.approx(clean_one)
    chance = gate.flip_chance(labels, probs)
    assert chance[0] == pytest.approx(0.4 * clean_one / 0.55)
    assert chance[1] == pytest.approx(0.4 * (0.04 / 0.59) / 0.95)
    assert chance[2] == pytest.approx(0.01 * (1.0 - clean_one) / 0.45)
    assert gate.likely_flips(labels, probs).tolist() == [True, False, False]
    # Anchors that are 90% the other label mean a class the model has not found: the divisor is held at
    # NOISE_DIVISOR_MIN, so the correction at most doubles a probability.
    blind = NoiseGate(np.array([[0.99, 0.01], [0.9, 0.1]]), slope=1.0, intercept=0.0)
    assert blind.clean_probs(probs)[0, 1] == pytest.approx((0.45 - 0.01) / label.NOISE_DIVISOR_MIN)


def test_noise_gate_calibrates_an_under_confident_model_to_the_labels() -> None:
    # The model's log-odds are a quarter of the labels' own: Platt scaling recovers the factor, so a row the
    # model gives 0.27 of its label is read at the labels' frequency there.
    rng = np.random.default_rng(0)
    logit = rng.normal(scale=2.0, size=4000)
    labels = (rng.random(4000) < 1.0 / (1.0 + np.exp(-4.0 * logit))).astype(np.int64)
    soft = 1.0 / (1.0 + np.exp(-logit))
    gate = noise_gate(labels, np.column_stack([1.0 - soft, soft]))
    assert gate is not None
    assert 3.5 < gate.slope < 4.5
    assert abs(gate.intercept) < 0.3
    calibrated = gate.calibrated(np.array([[0.73, 0.27]]))
    assert calibrated[0, 1] == pytest.approx(
        1.0 / (1.0 + np.exp(-(gate.slope * np.log(0.27 / 0.73) + gate.intercept)))
    )
    assert calibrated[0, 1] < 0.05
    assert noise_gate(np.array([0, 1, 2]), np.full((3, 3), 1.0 / 3)) is None


def _ambiguous_binary(n: int = 3000, seed: int = 0, offset: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes with labels drawn from a logistic posterior: clean, yet ambiguous where it is near 0.5.

    A larger ``offset`` makes class 1 rarer (3.0: about a quarter of the rows; 6.0: about a tenth).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    p_one = 1.0 / (1.0 + np.exp(-(4.0 * x[:, 0] + 2.0 * x[:, 1] - offset)))
    return x, (rng.random(n) < p_one).astype(np.int64)


def _channel_flags(x: np.ndarray, y: np.ndarray) -> tuple[set[int], dict[str, float]]:
    names = np.array(["stay", "churn"])
    result = run_label_channel(from_arrays(x, names[y], kind="tabular", path="t.csv"), OPTIONS)
    return {f.row for f in result.flags}, result.summary["noise_rates"]


def test_noise_gate_quiets_a_clean_ambiguous_table_and_keeps_real_flips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = _ambiguous_binary()
    rng = np.random.default_rng(1)
    flipped_rows = rng.choice(y.size, 300, replace=False)
    noisy = y.copy()
    noisy[flipped_rows] = 1 - noisy[flipped_rows]
    gated_clean, clean_rates = _channel_flags(x, y)
    gated_noisy, noisy_rates = _channel_flags(x, noisy)
    monkeypatch.setattr(label, "FLIP_POSTERIOR_MIN", 0.0)
    ungated_clean, _ = _channel_flags(x, y)
    ungated_noisy, _ = _channel_flags(x, noisy)
    # The clean table shows almost no other label where the model is surest, so its improbable rows are
    # its own ambiguity: most of those flags go.
    assert max(clean_rates.values()) < 4.0
    assert len(gated_clean) <= 0.4 * len(ungated_clean)
    # 10% flips show up as rates near 10% each way, and the flips found stay found.
    assert min(noisy_rates.values()) > 7.0
    truth = set(flipped_rows.tolist())
    assert len(gated_noisy & truth) >= 0.95 * len(ungated_noisy & truth)
    assert len(gated_noisy & truth) >= 0.6 * len(truth)


def test_a_half_relabelled_minority_is_found_by_its_flip_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Half of a 10% minority relabelled as the majority: its region carries both labels about equally, so
    # no probability bar separates the flipped rows, but the rows the model is surest are the minority carry
    # the majority label 64% of the time, and that rate says whose rows they are.
    x, y = _ambiguous_binary(offset=6.0)
    rng = np.random.default_rng(0)
    minority = np.flatnonzero(y == 1)
    flipped_rows = rng.choice(minority, minority.size // 2, replace=False)
    noisy = y.copy()
    noisy[flipped_rows] = 0
    truth = set(flipped_rows.tolist())
    with_rule, rates = _channel_flags(x, noisy)
    clean_with_rule, _ = _channel_flags(x, y)
    monkeypatch.setattr(label, "FLIP_LIKELY", 2.0)
    without_rule, _ = _channel_flags(x, noisy)
    clean_without_rule, _ = _channel_flags(x, y)
    assert rates["churn -> stay"] > 40.0
    assert len(with_rule & truth) >= 0.5 * len(truth)
    assert len(without_rule & truth) <= 0.25 * len(truth)
    # On the clean table the rates are those of its own ambiguity, and the rule adds next to nothing.
    assert len(clean_with_rule) <= len(clean_without_rule) + 15


def test_audit_hands_the_outliers_to_the_label_channel() -> None:
    # 10% injected outliers with random labels on a two-class table: learning them, the label model misreads
    # the clean rows at the edge of the data. Handed over, they are neither learned from nor flagged twice.
    from bastion.data.audit.base import OUTLIER
    from bastion.data.audit.run import run_audit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6))
    y = (rng.random(2000) < 1.0 / (1.0 + np.exp(-(3.0 * x[:, 0] + 2.0 * x[:, 1] - 2.0)))).astype(np.int64)
    injected = x.mean(axis=0) + 5.0 * x.std(axis=0) * rng.normal(size=(200, 6))
    names = np.array(["stay", "churn"])
    labels = names[np.concatenate([y, rng.integers(0, 2, 200)])]
    data = from_arrays(np.vstack([x, injected]), labels, kind="tabular", path="t.csv")
    result = run_audit(data, AuditOptions(seed=0, channels=(LABEL, OUTLIER)))
    outliers = {f.row for f in result.channels[OUTLIER].flags}
    handed = {f.row for f in result.channels[LABEL].flags}
    alone = {f.row for f in run_label_channel(data, AuditOptions(seed=0)).flags}
    clean = set(range(2000))
    assert len(outliers - clean) >= 180
    assert not handed & outliers
    assert len(handed & clean) <= 0.85 * len(alone & clean)


def test_labels_the_features_cannot_predict_are_named_in_a_finding() -> None:
    # Labels drawn independently of the features: the flags can only follow the class balance, and the
    # report must say so rather than present them as rows whose features point elsewhere.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    y = rng.integers(0, 2, 600)
    result = run_label_channel(_named(x, y), OPTIONS)
    unpredictable = [f for f in result.findings if f.rule_id == rules.UNPREDICTABLE_LABELS]
    assert len(unpredictable) == 1
    assert "'ant', 'bee'" in unpredictable[0].message
    assert result.summary["unpredictable_classes"] == ["ant", "bee"]


def test_predictable_classes_pass_and_flips_do_not_hide_them() -> None:
    x, y = _blobs()
    noisy, _ = _flip(y, 0.2)
    probs = out_of_sample_probabilities(_named(x, noisy), OPTIONS)
    assert label.predictable_classes(noisy, probs).all()
    result = run_label_channel(_named(x, noisy), OPTIONS)
    assert result.summary["unpredictable_classes"] == []
    assert all(f.rule_id != rules.UNPREDICTABLE_LABELS for f in result.findings)


def test_a_class_the_probabilities_do_not_rank_is_unpredictable() -> None:
    labels = np.array([0] * 50 + [1] * 50 + [2] * 50)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 150)
    probs[:50, 0] += 1.0  # class 0's rows get more of class 0; classes 1 and 2 get noise
    probs[:, 2] = 1.0 / 3.0  # a constant column ranks nothing
    assert label.predictable_classes(labels, probs).tolist() == [True, False, False]
