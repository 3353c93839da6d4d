"""Value triggers: exact values repeated on rows of one label that, without them, look like another class.

A tabular dirty-label backdoor sets a few columns to fixed values on rows taken from other classes and
relabels them all with the target. The representation probe of ``backdoor.py`` confirms such a trigger by
what a model learned from it, which needs held-out rows to flip; when the target is the majority class the
model answers it for almost every row already, and the probe has nothing to measure. This check reads the
data instead, and asks two questions a trigger cannot dodge:

1. Do some rows share *exact* values in several columns far more often than the columns' own frequencies
   predict? Per column with at least MIN_LEVELS distinct values (and not a flag with a few junk rows, see
   ``stats.is_flag_column``), every value held by at least MIN_CARRIERS rows is a spike; per pair of
   columns, the rows holding both spikes are counted against what independence predicts (LIFT_MIN). A
   column whose values are otherwise nearly all distinct may carry a one-column trigger: a value repeated
   MIN_CARRIERS times there is a candidate by itself. The candidate grows by every other column on which
   most carriers share one exact value that is rare elsewhere.
2. Are the carriers relabelled rows? They must almost all carry one label (PURITY_MIN), and a model fitted to
   the other rows *without the pattern's columns* must place them with the other classes: on the target's
   log-odds, the share of carriers below the midpoint of the held-out target rows' and other rows' medians
   must lie at least HALFWAY from the target rows' share to the other rows' share, and beat the target
   rows' share in a binomial test (P_MAX). Judging against both held-out groups, rather than a fixed share,
   keeps the test fair when the model can barely tell the classes apart (an unpredictable minority class).
   A natural sub-population that shares values (zeros, caps, imputed medians) keeps its label once those
   columns are hidden; rows taken from another class do not.

The model never sees the carriers or the pattern's columns, so neither memorisation nor the trigger itself
can pull the carriers to their given label. Thresholds were set on the tuning tables of
``benchmarks/tune_backdoor.py`` only (never on the benchmark's evaluation tables).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.data.audit.base import AuditData, FloatArray, IntArray
from bastion.data.audit.stats import is_flag_counts

# A spike value is held by at least this many rows; a trigger on fewer rows cannot teach a model much.
MIN_CARRIERS = 10
# Spike values kept per column (the most frequent ones).
TOP_VALUES = 16
# Columns with fewer distinct values are categories or flags, where repeated values are the norm.
MIN_LEVELS = 10
# A column counts as continuous (a one-column trigger is possible) when this share of its rows hold a value
# no other row holds; there a value is a spike when held by SPIKE_RATIO times as many rows as the column's
# 99th percentile of per-value counts (a column of round amounts repeats values all the time).
UNIQUE_SHARE = 0.5
SPIKE_RATIO = 5.0
# Two spikes co-occur suspiciously when their joint count is this many times what independence predicts,
# and at least one of them is held by SPIKE_RATIO times the column's median count per value. The lift of
# a trigger on a share r of the rows is at most 1/r (its values are held by its carriers and few others),
# so a high bar would miss exactly the heavy attacks: at 10% the lift is 10 at best.
LIFT_MIN = 3.0
# A trigger's values are held by its carriers and hardly anyone else, so the rows holding both values are
# most of the rows holding either: their coverage (joint count squared over the product of the two counts,
# the geometric mean of the two shares) is at least COVERAGE_MIN. Natural associations of common values
# (a usual line count in plain-text mail) co-occur above chance but cover a small share of either value.
COVERAGE_MIN = 0.25
# A further column joins the pattern when this share of the carriers hold one exact value there, and at
# most EXTEND_OUT of the other rows.
EXTEND_IN = 0.8
EXTEND_OUT = 0.05
# A row carries the pattern when it holds at least this share of the pattern's values.
CARRY_SHARE = 0.75
# At least this share of the carriers carry the pattern's label.
PURITY_MIN = 0.9
# Relabelled test (see the module docstring): the carriers' other-side share at least HALFWAY from the
# held-out target rows' share to the other rows' share, those two at least MIN_GAP apart (else the model tells
# nothing), and a binomial p-value against the target rows' share below P_MAX.
HALFWAY = 0.5
MIN_GAP = 0.05
P_MAX = 1e-6
# At most this share of a class may carry the candidate, so that the rest of the class is a fair reference.
MAX_CLASS_SHARE = 0.5
# Candidates tested per dataset (each costs one model fit), best first.
MAX_CANDIDATES = 6
# Rows the no-pattern model fits on at most.
MAX_FIT_ROWS = 5_000
REFERENCE_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class ValueTrigger:
    """One candidate: the exact values, their carriers, and the relabelled test's numbers."""

    target: int
    columns: tuple[int, ...]
    values: tuple[float, ...]
    carriers: IntArray
    lift: float  # joint count over the count independence predicts (inf for a one-column spike)
    purity: float  # share of the carriers labelled ``target``
    other_side: float  # share of the carriers a no-pattern model puts on another class's side
    reference_side: float  # the same share for held-out rows labelled ``target``
    others_side: float  # the same share for held-out rows of the other classes
    p_value: float
    suggestions: tuple[int, ...]  # per carrier, the likeliest other class under the no-pattern model

    @property
    def confirmed(self) -> bool:
        """Label-pure carriers that look like another class once the pattern is hidden."""
        gap = self.others_side - self.reference_side
        return (
            self.purity >= PURITY_MIN
            and gap >= MIN_GAP
            and self.other_side - self.reference_side >= HALFWAY * gap
            and self.p_value <= P_MAX
        )

    def to_json(self, data: AuditData) -> dict[str, Any]:
        """JSON-ready fields, column names and label included."""
        return {
            "target": data.label_name(self.target),
            "features": [data.feature_names[c] for c in self.columns],
            "carriers": len(self.carriers),
            "lift": None if not np.isfinite(self.lift) else round(self.lift, 2),
            "purity": round(self.purity, 4),
            "other_side": round(self.other_side, 4),
            "reference_side": round(self.reference_side, 4),
            "others_side": round(self.others_side, 4),
            "p_value": float(f"{self.p_value:.3g}"),
            "confirmed": self.confirmed,
        }


def _spike_columns(
    x: FloatArray,
) -> tuple[dict[int, tuple[FloatArray, IntArray]], dict[int, float], dict[int, float]]:
    """Per column with enough levels: its most frequent values and their counts, and its median count per
    value; per continuous column, its 99th-percentile count per value."""
    n = x.shape[0]
    spikes: dict[int, tuple[FloatArray, IntArray]] = {}
    typical: dict[int, float] = {}
    continuous: dict[int, float] = {}
    for c in range(x.shape[1]):
        values, counts = np.unique(x[:, c], return_counts=True)
        # A flag with a few junk rows has many distinct values, all but two of them held by one row each:
        # still a flag. Searched, the one-hot pair `student` of ISLR Default with 5% injected outliers was
        # confirmed as a trigger and 2,060 clean rows flagged (`tune_backdoor.py --outliers`).
        if len(values) < MIN_LEVELS or is_flag_counts(counts):
            continue
        typical[c] = float(np.median(counts))
        if counts[counts == 1].sum() >= UNIQUE_SHARE * n:
            continuous[c] = float(np.quantile(counts, 0.99))
        # The TOP_VALUES most frequent values only: a trigger value is among them (it is repeated on every
        # poisoned row), and pairs of columns stay cheap on wide, long tables.
        frequent = np.flatnonzero(counts >= MIN_CARRIERS)
        frequent = np.sort(frequent[np.argsort(-counts[frequent], kind="stable")][:TOP_VALUES])
        if frequent.size:
            spikes[c] = (values[frequent], counts[frequent].astype(np.int64))
    return spikes, typical, continuous


def _seeds(x: FloatArray) -> list[tuple[tuple[int, ...], tuple[float, ...], float, float]]:
    """Candidate (columns, values, lift, rank score), best first."""
    n = x.shape[0]
    spikes, typical, continuous = _spike_columns(x)
    codes: dict[int, IntArray] = {}
    for c, (values, _) in spikes.items():
        at = np.searchsorted(values, x[:, c])
        at = np.clip(at, 0, len(values) - 1)
        codes[c] = np.where(values[at] == x[:, c], at, -1).astype(np.int64)
    found: list[tuple[tuple[int, ...], tuple[float, ...], float, float]] = []
    columns = sorted(spikes)
    for i, f in enumerate(columns):
        vf, cf = spikes[f]
        for g in columns[i + 1 :]:
            vg, cg = spikes[g]
            both = (codes[f] >= 0) & (codes[g] >= 0)
            if not both.any():
                continue
            joint = np.bincount(codes[f][both] * len(vg) + codes[g][both], minlength=len(vf) * len(vg))
            expected = np.outer(cf, cg).ravel() / n
            lift = joint / np.maximum(expected, 1e-12)
            coverage = joint.astype(np.float64) ** 2 / np.outer(cf, cg).ravel()
            chosen = (joint >= MIN_CARRIERS) & (lift >= LIFT_MIN) & (coverage >= COVERAGE_MIN)
            for k in np.flatnonzero(chosen).tolist():
                a, b = divmod(k, len(vg))
                # Columns tied by a formula (a share rented and a share owned) co-occur at every value;
                # a trigger value stands out in its own column too.
                if max(cf[a] / typical[f], cg[b] / typical[g]) < SPIKE_RATIO:
                    continue
                score = float(joint[k] * np.log(lift[k]))  # the Poisson surprise, to first order
                found.append(((f, g), (float(vf[a]), float(vg[b])), float(lift[k]), score))
    for c, usual in sorted(continuous.items()):
        values, counts = spikes.get(c, (np.zeros(0), np.zeros(0, dtype=np.int64)))
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            # A repeated value in a column of distinct values: ranked by the same surprise as a pair.
            if count >= SPIKE_RATIO * usual:
                found.append(((c,), (float(value),), float("inf"), float(count * np.log(count / usual))))
    found.sort(key=lambda item: -item[3])
    return found


def _extend(
    x: FloatArray, columns: tuple[int, ...], values: tuple[float, ...]
) -> tuple[list[int], list[float]]:
    """Add every column on which most of the seed's carriers share one exact value that is rare elsewhere."""
    carriers = np.all(x[:, list(columns)] == np.asarray(values), axis=1)
    cols, vals = list(columns), list(values)
    inside, outside = x[carriers], x[~carriers]
    for c in range(x.shape[1]):
        if c in cols:
            continue
        levels, counts = np.unique(inside[:, c], return_counts=True)
        top = int(np.argmax(counts))
        if counts[top] < EXTEND_IN * len(inside):
            continue
        value = float(levels[top])
        if len(outside) and float(np.mean(outside[:, c] == value)) > EXTEND_OUT:
            continue
        cols.append(c)
        vals.append(value)
    order = np.argsort(cols)
    return [cols[i] for i in order], [vals[i] for i in order]


def carrying(x: FloatArray, columns: tuple[int, ...], values: tuple[float, ...]) -> np.ndarray:
    """Rows that hold at least CARRY_SHARE of the pattern's exact values."""
    share = (x[:, list(columns)] == np.asarray(values)).mean(axis=1)
    return np.asarray(share >= CARRY_SHARE - 1e-9)


def _relabelled(
    data: AuditData,
    columns: tuple[int, ...],
    carriers: IntArray,
    suspects: npt.NDArray[np.bool_],
    target: int,
    seed: int,
) -> tuple[float, float, float, float, tuple[int, ...]]:
    """Other-side shares of the carriers, the held-out target rows and the held-out other rows under a
    no-pattern model, the p-value, and each carrier's likeliest other class."""
    from scipy.stats import binomtest
    from sklearn.ensemble import HistGradientBoostingClassifier

    keep = np.setdiff1d(np.arange(data.features.shape[1]), np.asarray(columns))
    rest = ~suspects
    rest[carriers] = False
    rng = np.random.default_rng(seed)
    rows = rng.permutation(np.flatnonzero(rest))
    n_ref = int(len(rows) * REFERENCE_SHARE)
    reference, fit = rows[:n_ref], rows[n_ref:]
    if len(fit) > MAX_FIT_ROWS:
        fit = fit[:MAX_FIT_ROWS]
    labels = data.labels
    ref_own = reference[labels[reference] == target]
    ref_other = reference[labels[reference] != target]
    if len(keep) == 0 or len(ref_own) == 0 or len(ref_other) == 0 or len(np.unique(labels[fit])) < 2:
        return 0.0, 0.0, 0.0, 1.0, tuple(target for _ in carriers)
    model = HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.08, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data.features[np.ix_(fit, keep)], labels[fit])
    classes = np.asarray(model.classes_)
    if not (classes == target).any():
        return 0.0, 0.0, 0.0, 1.0, tuple(target for _ in carriers)
    at = int(np.flatnonzero(classes == target)[0])

    def log_odds(rows: IntArray) -> tuple[FloatArray, FloatArray]:
        proba = np.clip(np.asarray(model.predict_proba(data.features[np.ix_(rows, keep)])), 1e-12, 1.0)
        odds = np.log(proba[:, at]) - np.log(np.clip(1.0 - proba[:, at], 1e-12, 1.0))
        return np.asarray(odds, dtype=np.float64), proba

    own_odds, _ = log_odds(ref_own)
    other_odds, _ = log_odds(ref_other)
    # The side is judged on the target's log-odds against the midpoint of the two groups' medians: with a
    # majority target the model's plain answer is the target for almost every row and could not tell.
    middle = (float(np.median(own_odds)) + float(np.median(other_odds))) / 2.0
    carrier_odds, carrier_proba = log_odds(carriers)
    other_side = float(np.mean(carrier_odds < middle))
    reference_side = float(np.mean(own_odds < middle))
    others_side = float(np.mean(other_odds < middle))
    below = int(np.sum(carrier_odds < middle))
    p_value = float(
        binomtest(below, len(carriers), min(max(reference_side, 1e-3), 1 - 1e-3), "greater").pvalue
    )
    carrier_proba[:, at] = -1.0
    suggestions = tuple(int(classes[i]) for i in np.argmax(carrier_proba, axis=1))
    return other_side, reference_side, others_side, p_value, suggestions


def find_value_triggers(data: AuditData, seed: int) -> list[ValueTrigger]:
    """Every tested candidate on a table (confirmed or not), best first; empty for images and text."""
    if data.kind != "tabular" or data.n_rows < 4 * MIN_CARRIERS:
        return []
    x = np.asarray(data.features, dtype=np.float64)
    class_sizes = np.bincount(data.labels, minlength=len(data.classes))
    candidates: list[tuple[tuple[int, ...], tuple[float, ...], IntArray, float, int, float]] = []
    seen: list[set[int]] = []
    pure = 0
    for columns, values, lift, _ in _seeds(x):
        if pure >= MAX_CANDIDATES:
            break
        cols, vals = _extend(x, columns, values)
        rows = np.flatnonzero(carrying(x, tuple(cols), tuple(vals))).astype(np.int64)
        if len(rows) < MIN_CARRIERS:
            continue
        # Copies of one row are duplicates (the integrity channel's business), not a trigger riding on rows.
        others = np.setdiff1d(np.arange(x.shape[1]), np.asarray(cols))
        if len(np.unique(np.round(x[np.ix_(rows, others)], 6), axis=0)) < MIN_CARRIERS:
            continue
        members = set(rows.tolist())
        if any(len(members & s) > 0.5 * len(members) for s in seen):
            continue
        seen.append(members)
        counts = np.bincount(data.labels[rows], minlength=len(data.classes))
        target = int(np.argmax(counts))
        purity = float(counts[target] / len(rows))
        pure += purity >= PURITY_MIN
        candidates.append((tuple(cols), tuple(vals), rows, lift, target, purity))
    # Every label-pure candidate's carriers stay out of the no-pattern models: a trigger hidden in the
    # columns of another candidate would otherwise teach the model that rows of its source class belong
    # to the target, and move an innocent candidate's carriers with them.
    suspects = np.zeros(data.n_rows, dtype=bool)
    for _, _, rows, _, _, purity in candidates:
        if purity >= PURITY_MIN:
            suspects[rows] = True
    tested: list[ValueTrigger] = []
    for pattern_cols, pattern_vals, rows, lift, target, purity in candidates:
        # When the carriers are most of their class, the rest of the class is no reference for it (a
        # natural sub-population that defines its class, such as zero spending for "no card").
        if purity < PURITY_MIN or len(rows) > MAX_CLASS_SHARE * class_sizes[target]:
            tested.append(
                ValueTrigger(target, pattern_cols, pattern_vals, rows, lift, purity, 0.0, 0.0, 0.0, 1.0, ())
            )
            continue
        sides = _relabelled(data, pattern_cols, rows, suspects, target, seed)
        tested.append(ValueTrigger(target, pattern_cols, pattern_vals, rows, lift, purity, *sides))
    return tested
