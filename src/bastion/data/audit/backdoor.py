"""Backdoor channel: a class that holds a separated cluster whose shared input pattern flips other rows to it.

A dirty-label backdoor stamps a trigger on rows of many classes and labels them all with the target class.
A model trained on that data learns "trigger means target", so in its last hidden layer the poisoned rows
of the target class stand apart from the clean rows of the class. The channel:

1. trains a small MLP on most rows (a stratified share is held out for the probe) and reads the
   penultimate-layer activations of every row;
2. per class, derives candidate clusters from three views of those activations: the spectral signature
   (top singular direction), a robust-whitened (SPECTRE-like) score and its top direction, and two- and
   four-way k-means splits. No candidate assumes the poison is the smaller side or a given share: at 10%
   overall poison the trigger rows can be half the target class;
3. for each candidate cluster, looks in INPUT space for the features whose values are consistent inside
   the cluster and rare in every other row, then refines: the class rows carrying that pattern become the
   cluster, until the pattern is stable. A class is gated (probed) when a pattern's carriers stand apart
   from the rest of the class in the representation far beyond random subsets of the same size; the
   per-class statistics and a robust z against the other classes are reported;
4. stamps each pattern on held-out rows of the other classes and confirms a backdoor only when most of
   them flip to the class, far more than with the same values stamped on random features, and when the
   carriers themselves belong to other classes once the pattern is removed (a natural sub-population,
   such as the largest tumours of the malignant class, keeps its class). When the target is the majority
   class the model answers it for most rows already, so there is little to flip: a paired rise test then
   measures, row by row, how far the pattern lifts the target's log-odds against equally unusual control
   stamps, with the same unstamped and ablation checks;
5. flags every row that carries the confirmed pattern: recall close to 1 is the point, because the few
   poisoned rows a partial clean-up leaves behind keep the backdoor alive after retraining.

On the tuning data the representation statistics alone did not tell poison from natural sub-populations
(wide zeros in MNIST separate as strongly as a corner patch); the probe is what confirms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.data.audit import rules, value_trigger
from bastion.data.audit.base import (
    BACKDOOR,
    AuditData,
    AuditOptions,
    BoolArray,
    ChannelResult,
    FloatArray,
    IntArray,
    RowFlag,
)
from bastion.data.audit.representation import penultimate, train_mlp
from bastion.data.audit.stats import is_flag_column, mad
from bastion.findings import Finding, Location, Severity

CHECK = "trigger-probe"
VALUE_CHECK = "value-trigger"
# Share of each class held out from the representation model, so the probe stamps rows it never saw.
PROBE_SHARE = 0.25
# The model never trains on more rows than this; the activations are still computed for every row.
MAX_FIT_ROWS = 20_000
# A class needs this many rows for its statistics to mean anything.
MIN_CLASS_ROWS = 12
# Principal components of a class's activations used for the whitened score and the two-cluster split.
COMPONENTS = 8
# Gate: a pattern's carriers sit at least SEPARATION_MIN null-SDs from the rest of their class in the
# representation; random same-size subsets of the class give the null (NULL_DRAWS of them).
NULL_DRAWS = 20
SEPARATION_MIN = 4.0
# Input-space pattern: a feature value "matches" within TOLERANCE of the feature's 1-99% spread. A pattern
# feature matches in at least IN_MIN of the cluster and in at most OUT_MAX of all other rows.
TOLERANCE = 0.05
IN_MIN = 0.8
SEED_IN = 0.4
OUT_MAX = 0.05
ENRICHMENT = 5.0
REFINE_ROUNDS = 4
VALUE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
SHARE_SAMPLE = 20_000
MAX_PATTERN = 32
# A row carries the pattern when it matches at least this share of the pattern's features.
CARRY_SHARE = 0.75
# Probe: confirm when at least FLIP_MIN of the stamped held-out rows flip, FLIP_MARGIN above the control.
FLIP_MIN = 0.5
FLIP_MARGIN = 0.3
CONTROL_DRAWS = 5
# When the target is the majority class, the model answers the other classes for almost no held-out row,
# so there is nothing to flip. When the plain probe is not confirmed with fewer than MIN_PROBED such rows,
# it is run again (control, unstamped check and ablation included) deciding on the target's log-odds: a
# row counts as the target when its log-odds reach the median of the held-out target rows, a threshold
# taken from the data (no assumed rate) that gives the other classes back their rows.
MIN_PROBED = 20
# A trigger rides on rows that are otherwise other classes: with the pattern replaced by ordinary values,
# at least this share of the carriers must be predicted as another class. A natural sub-population (the
# largest tumours of the malignant class) keeps its class without the pattern and is not a backdoor.
UNSTAMPED_MIN = 0.5
MIN_DISTINCT_CARRIERS = 10
# Seeds: a representation cluster can hold the poison as a small minority (a tabular trigger at 3% of a
# large class spreads over a big k-means side), so besides the whole cluster, the cluster rows that share
# one of its SEEDS most enriched values (at SEED_ENRICHMENT times the rate in every other row) seed a
# pattern. Values are tried at the cluster's SEED_GRID quantiles.
SEEDS = 10
SEED_ENRICHMENT = 10.0
SEED_GRID = np.linspace(0.02, 0.98, 49)
# Ablation: a trigger is learned from its carriers alone. Retrained without them, the model must lose at
# least ABLATION_DROP of the flip rate; a natural predictor (a high interest rate means a bad loan) is
# learned from the rest of the data as well and keeps flipping rows. It must also keep at most
# ABLATION_KEEP of the pattern's lead over the control stamps: on Default with 20% of its labels flipped at
# random, the natural predictor `balance` flipped 70% of the held-out rows (control 1%) and, since the
# noise left few genuine defaulters outside the carriers, still 29% after the retrain, a drop of 0.41 but
# 42% of the lead kept. Real triggers on the tuning tables (`benchmarks/tune_backdoor.py --seeds 0,1`)
# kept at most 18%.
ABLATION_DROP = 0.3
ABLATION_KEEP = 1.0 / 3.0
# Rise test (the fallback when no flip probe confirms): on each held-out row of another class, the rise in
# the target's log-odds that the pattern gives minus the median rise of the CONTROL_DRAWS control stamps on
# the same row. Confirmed when the median of that excess is at least RISE_MIN (odds times e^2, about 7),
# the pattern beats the controls on at least RISE_WIN of the rows, at least UNSTAMPED_MIN of the carriers
# fall on the other classes' side once the pattern is removed, and a model retrained without the carriers
# keeps at most 1 - RISE_DROP of the excess. On the tuning tables (majority targets on mlc_churn, wa_churn,
# lending_club) the poison's excess was 2.8 to 10 and the ablation kept at most a fifth of it; natural
# predictors (a high balance means default, many service calls mean churn) kept more than three quarters.
# The carriers must also fall on that side more often than the target's own held-out rows do, by a one-sided
# binomial test at p <= UNSTAMPED_P: a dozen rows pass the UNSTAMPED_MIN share by chance. On Caravan with 20%
# of its labels flipped at random, 7 of 12 rows holding a boat policy, all labelled with the majority, fell
# on the other side, against 49% of the genuine majority rows (p = 0.35). Real triggers on the tuning tables
# gave p = 1e-4 (lending_club: 59% against 45% of 182 carriers) down to 1e-122.
RISE_MIN = 2.0
RISE_WIN = 0.8
RISE_DROP = 0.5
UNSTAMPED_P = 1e-3
# A dirty-label trigger gives its carriers the target's label, so most rows that carry a pattern must be
# labelled with its target. A rare natural value is held by rows of every class: on Caravan with random
# flips (seed 2), `APLEZIER = 1` (a boat policy) and the trailer-policy pair were confirmed as triggers for
# the small "Yes" class although only 10 of their 21 and 12 of their 25 holders were labelled "Yes".
# Real triggers on the tuning tables (`benchmarks/tune_backdoor.py --seeds 0,1`) gave at least 0.71. The
# bar sits between that and the natural predictor `total_day_minutes` of mlc_churn with 10% injected
# outliers (`tune_backdoor.py --outliers 0.10`), which passed the rise test by a hair with 51% of its
# holders labelled "churn" and flagged 250 clean rows at a bar of 0.5.
CARRIER_PURITY_MIN = 0.6
# A one-column pattern must be a spike (`_stamped`): the band within tolerance of its value holds at least
# SPIKE_MIN times the rows a smooth density would put there, judged from the flanks out to FLANK_WIDTHS
# tolerances on either side.
SPIKE_MIN = 3.0
FLANK_WIDTHS = 3.0


@dataclass(frozen=True, slots=True)
class TriggerPattern:
    """A candidate trigger in input space: set ``features`` to ``values`` and the model answers ``target``."""

    target: int
    target_name: str
    features: tuple[int, ...]
    feature_names: tuple[str, ...]
    values: tuple[float, ...]
    tolerances: tuple[float, ...] = ()

    def stamp(self, features: FloatArray) -> FloatArray:
        """A copy of ``features`` (rows x columns) with the pattern set on every row."""
        stamped = np.array(features, dtype=np.float64, copy=True)
        stamped[:, list(self.features)] = np.asarray(self.values, dtype=np.float64)
        return stamped

    def match_share(self, features: FloatArray) -> FloatArray:
        """Per row, the share of the pattern's features whose value is within tolerance of the pattern."""
        columns = np.asarray(features, dtype=np.float64)[:, list(self.features)]
        tol = np.asarray(self.tolerances or (1e-9,) * len(self.features), dtype=np.float64)
        close = np.abs(columns - np.asarray(self.values, dtype=np.float64)) <= tol
        return np.asarray(close.mean(axis=1), dtype=np.float64)

    def describe(self, limit: int = 8, encoder: Any = None) -> str:
        """``p0,p1,p8,p9 = 1.00`` style text (values listed once when they are all the same).

        With the table's encoder, values are shown in the column's own units rather than standardised.
        """
        names = list(self.feature_names[:limit]) + (["..."] if len(self.features) > limit else [])
        values = list(self.values)
        if encoder is not None:
            values = [encoder.raw_value(n, v) for n, v in zip(self.feature_names, self.values, strict=True)]
        if len(set(np.round(values, 2))) == 1:
            return f"{','.join(names)} = {values[0]:.2f}"
        pairs = [f"{n}={v:.2f}" for n, v in zip(self.feature_names[:limit], values[:limit], strict=False)]
        return ", ".join(pairs + (["..."] if len(self.features) > limit else []))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "target": self.target,
            "target_name": self.target_name,
            "features": list(self.features),
            "feature_names": list(self.feature_names),
            "values": list(self.values),
            "tolerances": list(self.tolerances),
        }

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> TriggerPattern:
        """Rebuild a pattern from ``to_json`` output."""
        return cls(
            target=int(spec["target"]),
            target_name=str(spec["target_name"]),
            features=tuple(int(i) for i in spec["features"]),
            feature_names=tuple(str(n) for n in spec["feature_names"]),
            values=tuple(float(v) for v in spec["values"]),
            tolerances=tuple(float(t) for t in spec.get("tolerances", ())),
        )


@dataclass(frozen=True, slots=True)
class CarrierRule:
    """A confirmed trigger as a rule that finds its carriers in any rows encoded alike (a streamed chunk).

    A row carries it when it matches at least ``min_share`` of the pattern's features. ``check`` names the
    test that confirmed it, ``because`` says in words why the pattern is a trigger and ``evidence`` in
    numbers; ``strength`` (0..1) scales the flags' scores.
    """

    pattern: TriggerPattern
    check: str
    min_share: float
    strength: float
    what: str  # ends a carrier's reason: "carries <pattern>, <what>"
    because: str  # ends the finding: "class 'x' holds N rows carrying <pattern>; <because>"
    evidence: dict[str, Any] = field(default_factory=dict)
    neutral: tuple[
        float, ...
    ] = ()  # ordinary values of the pattern's features: the rows that do not carry it

    def shares(self, features: FloatArray) -> FloatArray:
        """Per row, the share of the pattern's features it matches."""
        return self.pattern.match_share(features)

    def unstamp(self, features: FloatArray) -> FloatArray:
        """A copy of ``features`` with the pattern's features set to ordinary values (the trigger removed)."""
        x = np.array(features, dtype=np.float64, copy=True)
        if self.neutral:
            x[:, list(self.pattern.features)] = np.asarray(self.neutral, dtype=np.float64)
        return x

    def carries(self, features: FloatArray) -> BoolArray:
        """Per row, whether it carries the trigger."""
        return np.asarray(self.shares(features) >= self.min_share)

    def finding(
        self, path: str, rows: int, encoder: Any, where: str = "", evidence: dict[str, Any] | None = None
    ) -> Finding:
        """The critical finding for ``rows`` carriers; ``where`` says on which rows the evidence was taken."""
        pattern = self.pattern
        return Finding.make(
            rules.BACKDOOR,
            Severity.CRITICAL,
            f"class '{pattern.target_name}' holds {rows} rows carrying "
            f"{pattern.describe(encoder=encoder)}; {where}{self.because}",
            Location(path, (f"class:{pattern.target_name}",)),
            {**self.evidence, "flagged_rows": rows, **(evidence or {})},
        )

    def row_score(self, share: float) -> float:
        """A carrier's score: the trigger's strength, weighted by how much of the pattern the row holds."""
        return round(float(np.clip(0.5 + 0.5 * self.strength * share, 0.0, 1.0)), 4)


def attack_success_rate(
    predict: Callable[[FloatArray], IntArray], features: FloatArray, labels: IntArray, pattern: TriggerPattern
) -> float:
    """Share of non-target rows, predicted right without the trigger, that the trigger sends to the target."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    others = labels != pattern.target
    if not others.any():
        return 0.0
    x, y = features[others], labels[others]
    correct = np.asarray(predict(x)) == y
    if not correct.any():
        return 0.0
    flipped = np.asarray(predict(pattern.stamp(x[correct]))) == pattern.target
    return float(flipped.mean())


@dataclass(slots=True)
class _ClassStats:
    code: int
    rows: IntArray
    activations: FloatArray  # the class's penultimate activations, centred
    comps: FloatArray  # the same in the top principal components
    candidates: list[BoolArray]  # candidate poison clusters (masks over ``rows``) from the three views
    spectral_ratio: float
    outlier_share: float
    split_separation: float = 0.0
    patterns: list[_Candidate] = field(default_factory=list)
    separation_z: float = 0.0
    gate_z: float = 0.0
    gated: bool = False


@dataclass(slots=True)
class _Candidate:
    pattern: TriggerPattern
    carriers: IntArray
    separation: float
    separation_z: float


@dataclass(slots=True)
class _Rise:
    """The paired rise test of one pattern: per held-out row of another class, how far the pattern lifts the
    target's log-odds beyond what the control stamps do on the same row."""

    rise: float  # median over rows of the pattern's rise
    control_rise: float  # median over rows of the control stamps' (per-row median) rise
    excess: float  # median over rows of the pattern's rise minus the row's median control rise
    win_share: float  # share of rows where the pattern lifts more than the row's median control
    rows: int
    unstamped_other: float = 0.0  # share of carriers on the other classes' side once the pattern is removed
    unstamped_p: float = 1.0  # binomial p of that share against the target's own held-out rows' share
    informative: bool = False  # the ablation can tell (see _ablation_informative)
    ablated_excess: float | None = None  # the excess for a model retrained without the carriers

    @property
    def passes(self) -> bool:
        """Everything but the ablation holds (the ablation costs a retrain, so it runs only then)."""
        return (
            self.excess >= RISE_MIN
            and self.win_share >= RISE_WIN
            and self.unstamped_other >= UNSTAMPED_MIN
            and self.unstamped_p <= UNSTAMPED_P
            and self.informative
        )

    @property
    def confirmed(self) -> bool:
        return (
            self.passes
            and self.ablated_excess is not None
            and self.ablated_excess <= (1.0 - RISE_DROP) * self.excess
        )


@dataclass(slots=True)
class _Probe:
    pattern: TriggerPattern
    cluster: IntArray
    flip_rate: float
    control_rate: float
    probed_rows: int
    by_score: bool  # decisions were made on the target's log-odds (see MIN_PROBED)
    unstamped_other: float  # share of carriers the model puts in another class once the pattern is removed
    ablated_rate: float = 1.0  # flip rate of a model retrained without the carriers (1.0 = not yet run)
    rise: _Rise | None = None  # the paired rise test, run when the flip probes do not confirm
    purity: float = 1.0  # share of the rows carrying the pattern that are labelled with its target

    @property
    def flips(self) -> bool:
        """The stamp flips most held-out rows, far more than an equally unusual stamp elsewhere."""
        return self.flip_rate >= FLIP_MIN and self.flip_rate - self.control_rate >= FLIP_MARGIN

    @property
    def flip_confirmed(self) -> bool:
        return (
            self.flips
            and self.unstamped_other >= UNSTAMPED_MIN
            and self.flip_rate - self.ablated_rate >= ABLATION_DROP
            and self.ablated_rate - self.control_rate <= ABLATION_KEEP * (self.flip_rate - self.control_rate)
        )

    @property
    def by_rise(self) -> bool:
        """Confirmed by the rise test rather than by flips."""
        return not self.flip_confirmed and self.rise is not None and self.rise.confirmed

    @property
    def confirmed(self) -> bool:
        return (self.flip_confirmed or self.by_rise) and self.purity >= CARRIER_PURITY_MIN

    @property
    def strength(self) -> float:
        """The probe's effect on a 0..1 scale: the flip rate, or the share of rows the rise test won."""
        return self.rise.win_share if self.by_rise and self.rise is not None else self.flip_rate


def _split_rows(labels: IntArray, seed: int) -> tuple[IntArray, IntArray]:
    """Stratified fit/probe split; classes too small to spare rows stay whole in the fit part."""
    rng = np.random.default_rng(seed)
    fit: list[IntArray] = []
    probe: list[IntArray] = []
    for code in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == code))
        n_probe = int(len(rows) * PROBE_SHARE) if len(rows) >= 2 * MIN_CLASS_ROWS else 0
        probe.append(rows[:n_probe])
        fit.append(rows[n_probe:])
    fit_rows = np.sort(np.concatenate(fit)).astype(np.int64)
    if len(fit_rows) > MAX_FIT_ROWS:
        fit_rows = np.sort(rng.choice(fit_rows, MAX_FIT_ROWS, replace=False)).astype(np.int64)
    return fit_rows, np.sort(np.concatenate(probe)).astype(np.int64)


def _class_stats(code: int, rows: IntArray, activations: FloatArray, seed: int) -> _ClassStats:
    """Spectral signature, robust-whitened score and two-cluster split of one class's activations."""
    from scipy.stats import chi2
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    centred = activations - activations.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    energy = sing**2
    spectral = (centred @ vt[0]) ** 2
    spectral_ratio = float(energy[0] / max(energy.sum(), 1e-12))
    k = int(max(1, min(COMPONENTS, len(rows) // 4, int((energy > 1e-9 * energy[0]).sum()))))
    comps = centred @ vt[:k].T
    whitened = _robust_whiten(comps)
    d2 = (whitened**2).sum(axis=1)
    outliers = d2 > chi2.ppf(0.999, k)
    # SPECTRE-like: after robust whitening a coherent poison group owns the top direction.
    _, _, wvt = np.linalg.svd(whitened - whitened.mean(axis=0), full_matrices=False)
    projection = (whitened - whitened.mean(axis=0)) @ wvt[0]
    high = projection > 0
    with warnings.catch_warnings():
        # Rows with identical activations (duplicates, saturated units) make k-means report fewer distinct
        # clusters than asked; the split is still usable and the warning says nothing about poison.
        warnings.simplefilter("ignore", ConvergenceWarning)
        side = KMeans(n_clusters=2, n_init=4, random_state=seed).fit_predict(comps) == 1
        # A small poison group can hide inside one side of a two-way split; a four-way split isolates it.
        four = KMeans(n_clusters=min(4, len(rows)), n_init=2, random_state=seed).fit_predict(comps)
    candidates = [
        spectral > np.quantile(spectral, 0.9),
        d2 > np.quantile(d2, 0.9),
        outliers,
        side,
        ~side,
        high,
        ~high,
    ]
    candidates += [four == g for g in range(int(four.max()) + 1)]
    stats = _ClassStats(code, rows, centred, comps, candidates, spectral_ratio, float(outliers.mean()))
    stats.split_separation = _separation(comps, side)
    return stats


def _robust_whiten(comps: FloatArray) -> FloatArray:
    """Centre on the median and whiten by the covariance of the most central half of the rows.

    Whitening with a covariance the poison cannot inflate is the SPECTRE idea: the poison direction then
    stands out instead of being scaled away. The result is rescaled so that the median squared norm sits at
    the chi-squared median, as it would for clean Gaussian rows.
    """
    from scipy.stats import chi2

    k = comps.shape[1]
    centre = np.median(comps, axis=0)
    scale = np.median(np.abs(comps - centre), axis=0) * 1.4826
    scale[scale < 1e-12] = 1.0
    rough = np.sqrt((((comps - centre) / scale) ** 2).sum(axis=1))
    core = comps[rough <= np.median(rough)]
    cov = np.cov(core, rowvar=False).reshape(k, k)
    # A small ridge keeps the inverse finite when the core is degenerate in some direction.
    cov = cov + np.eye(k) * (1e-9 + 1e-3 * float(np.trace(cov)) / k)
    vals, vecs = np.linalg.eigh(cov)
    whitened = (comps - core.mean(axis=0)) @ vecs / np.sqrt(np.maximum(vals, 1e-12))
    d2 = (whitened**2).sum(axis=1)
    factor = float(chi2.median(k)) / max(float(np.median(d2)), 1e-12)
    return np.asarray(whitened * np.sqrt(factor), dtype=np.float64)


def _separation(comps: FloatArray, side: BoolArray) -> float:
    """Gap between the two groups along the line joining their centres, in pooled within-group SDs."""
    if side.all() or not side.any():
        return 0.0
    a, b = comps[side], comps[~side]
    direction = a.mean(axis=0) - b.mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-12:
        return 0.0
    pa, pb = a @ direction / norm, b @ direction / norm
    pooled = np.sqrt((pa.var() * len(pa) + pb.var() * len(pb)) / (len(pa) + len(pb)))
    return float(abs(pa.mean() - pb.mean()) / max(pooled, 1e-12))


def _gate(stats: list[_ClassStats]) -> None:
    """Mark the classes holding a pattern cluster that stands apart in the representation.

    ``gate_z`` also compares each class's best separation with the other classes' (robust z on a floor of
    one unit, because most classes hold no pattern and score 0). It is reported, not required: on the
    tuning data natural sub-populations (wide zeros in MNIST) separate as strongly as poison does, so the
    trigger probe, not this comparison, is what confirms a backdoor.
    """
    if not stats:
        return
    values = np.array([s.separation_z for s in stats], dtype=np.float64)
    centre = float(np.median(values))
    spread = max(mad(values), 1.0)
    for s in stats:
        s.gate_z = (s.separation_z - centre) / spread
        s.gated = s.separation_z >= SEPARATION_MIN


def _tolerances(features: FloatArray) -> FloatArray:
    lo, hi = np.percentile(features, [1.0, 99.0], axis=0)
    spread = hi - lo
    full = features.max(axis=0) - features.min(axis=0)
    spread = np.where(spread > 1e-12, spread, full)
    return np.asarray(np.maximum(TOLERANCE * spread, 1e-9), dtype=np.float64)


def _stamped(features: FloatArray, pattern: TriggerPattern) -> bool:
    """Whether a one-column pattern's value is a spike of its column, as a stamped value is.

    Either many rows hold its exact value, SPIKE_MIN times as many as hold the nearest values on either
    side (a trigger stamps one value; a continuous column holds each value once), or the band within
    tolerance of it holds SPIKE_MIN times the rows a smooth density would put there, judged from the flanks
    out to FLANK_WIDTHS tolerances. On a continuous column, the band of a class next to its decision
    boundary looks like a pattern too (the class's rows there are consistent and no other row is near):
    on a clean table labelled by `a > 0`, the class-1 rows with `a` in 0.02..0.46 were confirmed as a
    trigger `a = 0.28`, since stamping it flips the other class; neither count makes that band a spike.
    Patterns over several columns are left to the probe's other checks.
    """
    if len(pattern.features) != 1:
        return True
    column = features[:, pattern.features[0]]
    value, tolerance = pattern.values[0], pattern.tolerances[0]
    levels, counts = np.unique(column, return_counts=True)
    at = int(np.searchsorted(levels, value))
    if at < len(levels) and levels[at] == value and counts[at] >= MIN_DISTINCT_CARRIERS:
        beside = [int(counts[i]) for i in (at - 1, at + 1) if 0 <= i < len(levels)]
        if counts[at] >= SPIKE_MIN * max(float(np.mean(beside)) if beside else 0.0, 1.0):
            return True
    distance = np.abs(column - value)
    band = int(np.count_nonzero(distance <= tolerance))
    flanks = int(np.count_nonzero((distance > tolerance) & (distance <= FLANK_WIDTHS * tolerance)))
    # The flanks are FLANK_WIDTHS - 1 times as wide as the band; a smooth density puts as many times its rows
    # there.
    return band >= SPIKE_MIN * flanks / (FLANK_WIDTHS - 1.0)


def _pattern_for(
    data: AuditData, code: int, cluster: IntArray, tol: FloatArray
) -> tuple[TriggerPattern, IntArray] | None:
    """The features whose values are consistent in ``cluster`` and rare in every other row, refined.

    A representation cluster is rarely pure, so the first pass accepts features where the value is merely
    enriched (at least SEED_IN of the cluster, at most OUT_MAX elsewhere); the rows of the class that carry
    that first pattern then become the cluster and the pattern is re-derived with the strict IN_MIN, until
    it stops changing. Returns the pattern and its carriers in the class, or None.
    """
    class_rows = np.flatnonzero(data.labels == code)
    pattern = _consistent_features(data, code, cluster, tol, SEED_IN)
    carriers = cluster
    for _ in range(REFINE_ROUNDS):
        if pattern is None:
            return None
        carriers_now = class_rows[pattern.match_share(data.features[class_rows]) >= CARRY_SHARE]
        if len(carriers_now) < 2:
            return None
        refined = _consistent_features(data, code, carriers_now, tol, IN_MIN)
        stable = refined is not None and refined.features == pattern.features
        pattern, carriers = refined, carriers_now
        if stable:
            break
    if pattern is None:
        return None
    return pattern, carriers


def _consistent_features(
    data: AuditData, code: int, cluster: IntArray, tol: FloatArray, in_min: float
) -> TriggerPattern | None:
    """One pass: per feature, the cluster quantile value that is most enriched in the cluster."""
    x = data.features
    rest_mask = np.ones(data.n_rows, dtype=bool)
    rest_mask[cluster] = False
    # Shares are estimated on at most SHARE_SAMPLE rows a side, so memory stays bounded on big data.
    rng = np.random.default_rng(len(cluster))
    inside, rest = x[_at_most(rng, cluster)], x[_at_most(rng, np.flatnonzero(rest_mask))]
    best_lift = np.full(x.shape[1], -np.inf)
    best_value = np.zeros(x.shape[1])
    best_in = np.zeros(x.shape[1])
    best_out = np.ones(x.shape[1])
    values = np.quantile(inside, VALUE_QUANTILES, axis=0)
    in_shares = np.stack([(np.abs(inside - value) <= tol).mean(axis=0) for value in values])
    # A feature whose share in the cluster reaches in_min at none of the values cannot be chosen, whatever
    # value wins its lift, so its share among the other rows (the cost: they are most of the data) is not
    # computed. With `_BandCounter` it halved the audit of 1,000 32x32 RGB images (benchmarks/image_folder.py,
    # docs/benchmarks.md).
    open_ = np.flatnonzero((in_shares >= in_min).any(axis=0))
    rest, open_tol = rest[:, open_], tol[open_]
    for value, in_share in zip(values[:, open_], in_shares[:, open_], strict=True):
        out_share = (np.abs(rest - value) <= open_tol).mean(axis=0) if len(rest) else np.zeros(open_.size)
        lift = in_share - out_share
        better = lift > best_lift[open_]
        best_lift[open_] = np.where(better, lift, best_lift[open_])
        best_value[open_] = np.where(better, value, best_value[open_])
        best_in[open_] = np.where(better, in_share, best_in[open_])
        best_out[open_] = np.where(better, out_share, best_out[open_])
    chosen = np.flatnonzero((best_in >= in_min) & (best_out <= OUT_MAX) & (best_in >= ENRICHMENT * best_out))
    if chosen.size == 0:
        return None
    chosen = np.sort(chosen[np.argsort(-best_lift[chosen], kind="stable")][:MAX_PATTERN])
    return TriggerPattern(
        target=code,
        target_name=data.label_name(code),
        features=tuple(int(i) for i in chosen),
        feature_names=tuple(data.feature_names[i] for i in chosen),
        values=tuple(float(best_value[i]) for i in chosen),
        tolerances=tuple(float(tol[i]) for i in chosen),
    )


def _at_most(rng: np.random.Generator, rows: IntArray) -> IntArray:
    if len(rows) <= SHARE_SAMPLE:
        return rows
    return np.sort(rng.choice(rows, SHARE_SAMPLE, replace=False))


def _decider(
    model: Any, data: AuditData, pattern: TriggerPattern, probe_rows: IntArray, by_score: bool
) -> Callable[[FloatArray], IntArray]:
    """The model's answers: plain argmax, or (``by_score``) the target wherever its log-odds reach the
    median log-odds of the held-out target rows that do not carry the pattern (else the likeliest other).
    """
    if not by_score:
        return lambda x: np.asarray(model.predict(x))
    classes = np.asarray(model.classes_)
    at = int(np.flatnonzero(classes == pattern.target)[0]) if (classes == pattern.target).any() else -1
    own = probe_rows[data.labels[probe_rows] == pattern.target]
    own = own[pattern.match_share(data.features[own]) < CARRY_SHARE]
    log_odds = _log_odds(model, pattern.target)
    if at < 0 or len(own) == 0 or log_odds is None:
        return lambda x: np.asarray(model.predict(x))
    threshold = float(np.median(log_odds(data.features[own])))

    def decide(x: FloatArray) -> IntArray:
        proba = np.asarray(model.predict_proba(x), dtype=np.float64)
        rest = proba.copy()
        rest[:, at] = -1.0
        answer = classes[np.argmax(rest, axis=1)]
        return np.asarray(np.where(log_odds(x) >= threshold, pattern.target, answer))

    return decide


def _log_odds(model: Any, target: int) -> Callable[[FloatArray], FloatArray] | None:
    """The model's log-odds of ``target`` (clipped to about +-27.6), or None when it never saw the class."""
    classes = np.asarray(model.classes_)
    if not (classes == target).any():
        return None
    at = int(np.flatnonzero(classes == target)[0])

    def log_odds(x: FloatArray) -> FloatArray:
        proba = np.clip(np.asarray(model.predict_proba(x), dtype=np.float64), 1e-12, 1.0)
        return np.asarray(np.log(proba[:, at]) - np.log(np.clip(1.0 - proba[:, at], 1e-12, 1.0)))

    return log_odds


def _is_two_valued(data: AuditData, column: int) -> bool:
    """Whether the column is one-hot or a flag, stray junk rows aside (``stats.is_flag_column``).

    Counting distinct values instead, a flag column holding junk rows passed for a column of many values:
    on the benchmark's email table with 5% injected outliers that let the rise test confirm the natural flag
    `to_multiple = 1` as a trigger for ham and quarantine 440 clean rows (the junk rows at or beyond 1 made
    the ablation look informative).
    """
    return is_flag_column(data.features[:, column])


def _two_valued(data: AuditData) -> BoolArray:
    return np.array([_is_two_valued(data, c) for c in range(data.features.shape[1])])


def _any_two_valued(data: AuditData, features: tuple[int, ...]) -> bool:
    """Whether any of ``features`` is a two-valued (one-hot) column; checks those columns only."""
    return any(_is_two_valued(data, c) for c in features)


def _control_patterns(
    data: AuditData, pattern: TriggerPattern, seed: int, matched: bool, two_valued: BoolArray
) -> list[TriggerPattern]:
    """Up to CONTROL_DRAWS equally unusual stamps elsewhere.

    Each random feature is set to the value at the same quantile of its own column as the pattern's value
    holds in the pattern's column. Copying the raw values instead would push standardised columns to
    arbitrary extremes and flip rows by itself. With ``matched``, each control column is of the same kind
    (two-valued or not) as the pattern column it stands for: a saturated model answers the majority for
    any rare one-hot value.
    """
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(data.features.shape[1]), np.asarray(pattern.features))
    sample = data.features[_at_most(rng, np.arange(data.n_rows))]
    ranks = [float(np.mean(sample[:, f] <= v)) for f, v in zip(pattern.features, pattern.values, strict=True)]
    controls: list[TriggerPattern] = []
    for _ in range(CONTROL_DRAWS):
        if pool.size < len(pattern.features):
            break
        cols = rng.choice(pool, len(pattern.features), replace=False)
        if matched:
            cols = _matched_columns(rng, pool, two_valued, pattern.features, cols)
        values = tuple(float(np.quantile(sample[:, c], q)) for c, q in zip(cols, ranks, strict=True))
        controls.append(
            TriggerPattern(pattern.target, pattern.target_name, tuple(int(c) for c in cols), (), values)
        )
    return controls


def _probe(
    model: Any,
    data: AuditData,
    pattern: TriggerPattern,
    probe_rows: IntArray,
    seed: int,
    by_score: bool,
) -> tuple[float, float, int]:
    """Flip rate of the stamped held-out rows of other classes, the control's flip rate, rows probed."""
    x = data.features[probe_rows]
    y = data.labels[probe_rows]
    keep = (y != pattern.target) & (pattern.match_share(x) < CARRY_SHARE)
    x, y = x[keep], y[keep]
    two_valued = _two_valued(data)
    if by_score and two_valued[list(pattern.features)].any():
        # On lending_club a saturated model sends rows to the majority for any rare one-hot value and a
        # retrain without the carriers never sees the value at all, so neither the control nor the ablation
        # can tell a one-hot trigger from a rare category: such patterns are not confirmed in score mode.
        return 0.0, 0.0, 0
    predict = _decider(model, data, pattern, probe_rows, by_score)
    if len(y):
        correct = predict(x) == y
        x = x[correct]
    if len(x) == 0:
        return 0.0, 0.0, 0
    flip = float(np.mean(predict(pattern.stamp(x)) == pattern.target))
    # The control is an equally unusual stamp elsewhere (kind-matched in score mode, see _control_patterns).
    controls = [
        float(np.mean(predict(c.stamp(x)) == pattern.target))
        for c in _control_patterns(data, pattern, seed, by_score, two_valued)
    ]
    control = float(np.mean(controls)) if controls else 0.0
    return flip, control, len(x)


def _rise(model: Any, data: AuditData, pattern: TriggerPattern, probe_rows: IntArray, seed: int) -> _Rise:
    """The paired rise test on the held-out rows of the other classes that do not carry the pattern.

    Per row: the rise in the target's log-odds when the pattern is stamped, minus the median rise of the
    kind-matched control stamps on the same row. It needs no answer to flip, so it still measures a
    trigger when the target is the majority class and the model answers it for almost every row. Every
    held-out row of another class counts, whatever the model answers for it unstamped.
    """
    log_odds = _log_odds(model, pattern.target)
    x = data.features[probe_rows]
    x = x[(data.labels[probe_rows] != pattern.target) & (pattern.match_share(x) < CARRY_SHARE)]
    controls = _control_patterns(data, pattern, seed, True, _two_valued(data))
    if log_odds is None or len(x) == 0 or not controls:
        return _Rise(0.0, 0.0, 0.0, 0.0, 0)
    base = log_odds(x)
    rise = log_odds(pattern.stamp(x)) - base
    control = np.median(np.stack([log_odds(c.stamp(x)) - base for c in controls]), axis=0)
    return _Rise(
        rise=float(np.median(rise)),
        control_rise=float(np.median(control)),
        excess=float(np.median(rise - control)),
        win_share=float(np.mean(rise > control)),
        rows=len(x),
    )


def _unstamped_side(
    model: Any, data: AuditData, pattern: TriggerPattern, probe_rows: IntArray, carriers: IntArray
) -> tuple[float, float]:
    """Share of the carriers that fall on the other classes' side once the pattern is removed, and its p.

    The side is judged on the target's log-odds, against the midpoint between the median log-odds of the
    held-out rows of the target and of the other classes: with the target as the majority class the
    model's answer is the target for almost every row, so the answer cannot tell. The pattern's features
    are set to the non-carriers' median, as in ``_unstamped_suggestions``. The p-value is a one-sided
    binomial test of the carriers' count on that side against the share of the target's own held-out
    rows there: genuine rows of the target fall on the other side too, a trigger's carriers far more often.
    """
    from scipy.stats import binomtest

    log_odds = _log_odds(model, pattern.target)
    if log_odds is None or len(carriers) == 0:
        return 0.0, 1.0
    held = probe_rows[pattern.match_share(data.features[probe_rows]) < CARRY_SHARE]
    own = held[data.labels[held] == pattern.target]
    other = held[data.labels[held] != pattern.target]
    if len(own) == 0 or len(other) == 0:
        return 0.0, 1.0
    own_odds = log_odds(data.features[own])
    middle = (np.median(own_odds) + np.median(log_odds(data.features[other]))) / 2
    rest = np.ones(data.n_rows, dtype=bool)
    rest[carriers] = False
    x = np.array(data.features[carriers], dtype=np.float64, copy=True)
    x[:, list(pattern.features)] = np.median(data.features[rest][:, list(pattern.features)], axis=0)
    across = log_odds(x) < middle
    own_share = float(np.mean(own_odds < middle))
    # A target whose own rows all fall on the other side leaves nothing to compare against.
    p = 1.0 if own_share >= 1.0 else float(binomtest(int(across.sum()), len(x), own_share, "greater").pvalue)
    return float(np.mean(across)), p


def _ablation_informative(data: AuditData, pattern: TriggerPattern, fit_rows: IntArray) -> bool:
    """Whether a model retrained without the carriers still sees each pattern value, so that the ablation
    compares learned answers.

    For every pattern feature, at least MIN_DISTINCT_CARRIERS of the rows kept for the retrain must hold a
    value as extreme as the pattern's (at or beyond it, on its side of the column's median). A rare value
    (one-hot, a count that is almost always 0) is held only by its carriers: a model that never saw it
    answers it arbitrarily, and on lending_club and Caravan that looked like an ablated trigger.
    """
    x = data.features[fit_rows]
    kept = x[pattern.match_share(x) < CARRY_SHARE]
    tol = np.asarray(pattern.tolerances or (1e-9,) * len(pattern.features), dtype=np.float64)
    for f, v, t in zip(pattern.features, pattern.values, tol, strict=True):
        column = kept[:, f]
        beyond = column >= v - t if v >= np.median(x[:, f]) else column <= v + t
        if int(beyond.sum()) < MIN_DISTINCT_CARRIERS:
            return False
    return True


def _matched_columns(
    rng: np.random.Generator,
    pool: IntArray,
    two_valued: BoolArray,
    features: tuple[int, ...],
    fallback: IntArray,
) -> IntArray:
    """Distinct random columns from ``pool``, each of the same kind as the matching pattern feature."""
    chosen: list[int] = []
    for f in features:
        options = np.setdiff1d(pool[two_valued[pool] == two_valued[f]], np.asarray(chosen, dtype=np.int64))
        if options.size == 0:
            return fallback
        chosen.append(int(rng.choice(options)))
    return np.asarray(chosen, dtype=np.int64)


def _ablated_model(
    data: AuditData, pattern: TriggerPattern, fit_rows: IntArray, seed: int, cache: dict[bytes, Any]
) -> Any:
    """A model retrained without every fit row that carries the pattern (None: one class would be left).

    The retrain is the costly step, so the model is kept per set of kept rows for the other probes."""
    carrying = pattern.match_share(data.features[fit_rows]) >= CARRY_SHARE
    kept = fit_rows[~carrying]
    key = kept.tobytes()
    if key not in cache:
        many = len(np.unique(data.labels[kept])) >= 2
        cache[key] = train_mlp(data.features[kept], data.labels[kept], seed) if many else None
    return cache[key]


def _ablated_flip(
    data: AuditData,
    pattern: TriggerPattern,
    fit_rows: IntArray,
    probe_rows: IntArray,
    seed: int,
    by_score: bool,
    cache: dict[bytes, Any],
) -> float:
    """The probe's flip rate for a model retrained without every row that carries the pattern."""
    model = _ablated_model(data, pattern, fit_rows, seed, cache)
    if model is None:
        return 0.0
    # The same decision rule as the probe it is compared with, on the retrained model's own scores.
    flip, _, _ = _probe(model, data, pattern, probe_rows, seed, by_score)
    return flip


def _find_patterns(
    data: AuditData, stats: _ClassStats, tol: FloatArray, every_row: _BandCounter, seed: int
) -> list[_Candidate]:
    """Every distinct input pattern behind the candidate clusters, with how far its carriers stand apart.

    The separation is a z against random subsets of the class of the same size: a chance subset scores
    near 0. A class can hold a natural sub-population with its own pattern (wide zeros, a scanner mark)
    as well as the poison, so every pattern is kept for the probe rather than only the most separated.
    """
    rng = np.random.default_rng(seed)
    found: dict[tuple[int, ...], _Candidate] = {}
    seeds: list[IntArray] = []
    class_rows = _BandCounter.of(every_row.levels, data.features[stats.rows])
    for candidate in stats.candidates:
        if candidate.sum() < 2:
            continue
        cluster = stats.rows[candidate]
        seeds.append(cluster)
        seeds.extend(_enriched_seeds(data, cluster, tol, every_row, class_rows))
    tried: set[bytes] = set()
    for cluster in seeds:
        key = np.sort(cluster).tobytes()
        if key in tried:
            continue
        tried.add(key)
        result = _pattern_for(data, stats.code, cluster, tol)
        if result is None or result[0].features in found:
            continue
        pattern, carriers = result
        if _distinct_rows(data.features[carriers]) < MIN_DISTINCT_CARRIERS:
            # Copies of one row share every value; a trigger rides on many different rows.
            continue
        if not _stamped(data.features, pattern):
            continue
        inside = np.isin(stats.rows, carriers)
        separation = _separation(stats.activations, inside)
        null = np.array(
            [
                _separation(stats.activations, _random_mask(rng, len(stats.rows), int(inside.sum())))
                for _ in range(NULL_DRAWS)
            ]
        )
        z = float((separation - null.mean()) / max(float(null.std()), 1e-3))
        found[pattern.features] = _Candidate(pattern, carriers, separation, z)
    return sorted(found.values(), key=lambda c: -c.separation_z)


@dataclass(frozen=True, slots=True)
class _BandCounter:
    """How many of some rows hold a value inside a band, for every column at once, exactly.

    Each value is replaced by its rank among ``levels`` (every distinct value of the data), and a value in
    column f becomes the key ``f * stride + rank``: the keys of all columns then sort as one array, so a
    single ``searchsorted`` answers every column's band where a loop over columns made a call per column
    (a third of the backdoor channel's time on images of 3,072 pixels; benchmarks/image_folder.py times
    it). Comparisons are made between the floats alone, in ``levels``, so every count equals
    ``searchsorted`` on the sorted column itself.
    """

    levels: FloatArray  # the data's distinct values, ascending
    keys: IntArray  # column-major keys of the counted rows, ascending
    rows: int  # how many rows are counted

    @classmethod
    def of(cls, levels: FloatArray, values: FloatArray) -> _BandCounter:
        """The counter of ``values`` (rows x columns), every value one of ``levels``."""
        ranks = np.sort(np.searchsorted(levels, values), axis=0).astype(np.int64)
        offsets = np.arange(values.shape[1], dtype=np.int64) * (len(levels) + 1)
        return cls(levels=levels, keys=(ranks + offsets).T.ravel(), rows=values.shape[0])

    def between(self, lo: FloatArray, hi: FloatArray) -> IntArray:
        """Per query and column (arrays of queries x columns), the rows with lo <= value <= hi."""
        offsets = np.arange(lo.shape[1], dtype=np.int64) * (len(self.levels) + 1)
        # The rows whose value is at most hi: ranks below the count of levels <= hi; then below lo.
        upper = np.searchsorted(self.keys, np.searchsorted(self.levels, hi, "right") + offsets, "left")
        lower = np.searchsorted(self.keys, np.searchsorted(self.levels, lo, "left") + offsets, "left")
        return np.asarray(upper - lower, dtype=np.int64)


def _enriched_seeds(
    data: AuditData, cluster: IntArray, tol: FloatArray, every_row: _BandCounter, class_rows: _BandCounter
) -> list[IntArray]:
    """The cluster rows sharing each of its SEEDS most enriched values (one value per feature).

    A value is enriched when its share in the cluster is at least SEED_ENRICHMENT times its share in the
    other classes (not the rest of the class: the cluster rarely holds all the poison, and the carriers
    left outside it would hide the enrichment); the seeds are ranked by how many cluster rows carry the
    value, weighted by the log of that enrichment, so a trigger carried by a few percent of a big cluster
    still seeds its own pattern.
    """
    inside = data.features[cluster]
    n_in, n_rest = len(cluster), data.n_rows - class_rows.rows
    if n_in < MIN_DISTINCT_CARRIERS or n_rest < 1:
        return []
    values = np.quantile(inside, SEED_GRID, axis=0)  # grid x features
    lo, hi = values - tol, values + tol
    count_in = _BandCounter.of(every_row.levels, inside).between(lo, hi)
    count_all, count_class = every_row.between(lo, hi), class_rows.between(lo, hi)
    in_share = count_in / n_in
    out_share = np.maximum(count_all - count_class, 1) / n_rest
    ratio = in_share / out_share
    score = np.where(
        (ratio >= SEED_ENRICHMENT) & (out_share <= OUT_MAX) & (count_in >= MIN_DISTINCT_CARRIERS),
        count_in * np.log(np.maximum(ratio, 1.0)),
        0.0,
    )
    at = np.argmax(score, axis=0)  # the first best grid value of each feature
    columns = np.arange(inside.shape[1])
    best_score, best_value = score[at, columns], values[at, columns]
    seeds: list[IntArray] = []
    for f in np.argsort(-best_score, kind="stable")[:SEEDS]:
        if best_score[f] <= 0:
            break
        carrying = np.abs(inside[:, f] - best_value[f]) <= tol[f]
        seeds.append(cluster[carrying])
    return seeds


def _distinct_rows(features: FloatArray) -> int:
    return len(np.unique(np.round(features, 6), axis=0))


def _random_mask(rng: np.random.Generator, n: int, size: int) -> BoolArray:
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, min(size, n - 1), replace=False)] = True
    return mask


def _unstamped_suggestions(
    predict: Callable[[FloatArray], IntArray],
    data: AuditData,
    pattern: TriggerPattern,
    rows: IntArray,
    carriers: BoolArray,
) -> list[str | None]:
    """What the model says for each row once the pattern's features hold the non-carriers' median."""
    if len(rows) == 0:
        return []
    x = np.array(data.features[rows], dtype=np.float64, copy=True)
    x[:, list(pattern.features)] = neutral_values(data, pattern, carriers)
    predicted = predict(x)
    return [data.label_name(int(p)) if int(p) != pattern.target else None for p in predicted]


def neutral_values(data: AuditData, pattern: TriggerPattern, carriers: BoolArray) -> tuple[float, ...]:
    """The median of the pattern's features over the rows that do not carry it: the trigger removed."""
    others = data.features[~carriers] if (~carriers).any() else data.features
    return tuple(float(v) for v in np.median(others[:, list(pattern.features)], axis=0))


def run_backdoor_channel(data: AuditData, options: AuditOptions) -> ChannelResult:
    """Find classes with a separated, trigger-carrying cluster, confirm by probe, flag the carriers."""
    return find_backdoors(data, options)[0]


def find_backdoors(data: AuditData, options: AuditOptions) -> tuple[ChannelResult, list[CarrierRule]]:
    """The channel's result and, per confirmed trigger, the rule that finds its carriers in other rows."""
    from threadpoolctl import threadpool_limits

    # The matrices here are small; BLAS threads only add contention (six times slower on a busy host).
    with threadpool_limits(limits=1):
        return _run(data, options)


def _run(data: AuditData, options: AuditOptions) -> tuple[ChannelResult, list[CarrierRule]]:
    result = ChannelResult(channel=BACKDOOR)
    rules_found: list[CarrierRule] = []
    codes, counts = np.unique(data.labels, return_counts=True)
    eligible = [int(c) for c, n in zip(codes, counts, strict=True) if n >= MIN_CLASS_ROWS]
    if len(codes) < 2 or not eligible or data.n_rows < 4 * MIN_CLASS_ROWS:
        result.summary = {"skipped": "needs at least two classes with enough rows", "patterns": []}
        return result, rules_found
    fit_rows, probe_rows = _split_rows(data.labels, options.seed)
    model = train_mlp(data.features[fit_rows], data.labels[fit_rows], options.seed)
    activations = penultimate(model, data.features)
    stats = [
        _class_stats(
            code,
            np.flatnonzero(data.labels == code).astype(np.int64),
            activations[data.labels == code],
            options.seed,
        )
        for code in eligible
    ]
    tol = _tolerances(data.features)
    every_row = _BandCounter.of(np.unique(data.features), data.features)
    for s in stats:
        s.patterns = _find_patterns(data, s, tol, every_row, options.seed)
        s.separation_z = max((c.separation_z for c in s.patterns), default=0.0)
    _gate(stats)
    probes: dict[int, _Probe] = {}
    retrained: dict[bytes, Any] = {}
    for s in stats:
        if not s.gated:
            continue
        for cand in s.patterns:
            if cand.separation_z < SEPARATION_MIN:
                continue
            probe = _assess(model, data, cand, fit_rows, probe_rows, options.seed, False, retrained)
            if not probe.confirmed and probe.probed_rows < MIN_PROBED:
                probe = _assess(model, data, cand, fit_rows, probe_rows, options.seed, True, retrained)
            if not probe.confirmed:
                probe.rise = _assess_rise(model, data, cand, fit_rows, probe_rows, options.seed, retrained)
            flip, control = probe.flip_rate, probe.control_rate
            best = probes.get(s.code)
            if best is None or (probe.confirmed, flip - control) > (
                best.confirmed,
                best.flip_rate - best.control_rate,
            ):
                probes[s.code] = probe
    confirmed = [p for p in probes.values() if p.confirmed]
    for probe in confirmed:
        by_score = probe.by_score or probe.by_rise
        rules_found.append(
            _flag(result, _decider(model, data, probe.pattern, probe_rows, by_score), data, probe)
        )
    # Tables also get the model-free check: exact values repeated on relabelled rows (value_trigger.py).
    triggers = value_trigger.find_value_triggers(data, options.seed)
    for trigger in triggers:
        if trigger.confirmed:
            rules_found.append(_flag_value_trigger(result, data, trigger))
    result.summary = _summary(data, stats, probes, fit_rows, probe_rows)
    result.summary["value_triggers"] = [t.to_json(data) for t in triggers]
    return result, rules_found


def _flag_value_trigger(
    result: ChannelResult, data: AuditData, trigger: value_trigger.ValueTrigger
) -> CarrierRule:
    """Flag the carriers of a confirmed value trigger that no probe-confirmed pattern flagged already."""
    already = {flag.row for flag in result.flags}
    pattern = TriggerPattern(
        target=trigger.target,
        target_name=data.label_name(trigger.target),
        features=trigger.columns,
        feature_names=tuple(data.feature_names[c] for c in trigger.columns),
        values=trigger.values,
    )
    shown = pattern.describe(encoder=data.encoder)
    target = pattern.target_name
    n = len(trigger.carriers)
    other = round(100 * trigger.other_side)
    reference = round(100 * trigger.reference_side)
    labelled = round(trigger.purity * n)
    why = (
        f"{n} rows share {shown}, {labelled} of them ({round(100 * trigger.purity)}%) labelled '{target}'; "
        f"with those columns hidden, a model fitted to the other rows puts {other}% of them with another "
        f"class ({reference}% of held-out '{target}' rows)"
    )
    rule = CarrierRule(
        pattern,
        VALUE_CHECK,
        value_trigger.CARRY_SHARE,
        trigger.other_side,
        what=f"a repeated value combination: {why}",
        because=f"{why}, the signature of a dirty-label backdoor",
        evidence=trigger.to_json(data),
        neutral=neutral_values(data, pattern, np.isin(np.arange(data.n_rows), trigger.carriers)),
    )
    flagged = 0
    for row, suggestion in zip(trigger.carriers.tolist(), trigger.suggestions, strict=False):
        if row in already:
            continue
        label = data.label_name(int(data.labels[row]))
        reason = f"label '{label}'; carries {shown}, {rule.what}"
        suggested = data.label_name(suggestion) if suggestion != trigger.target else None
        result.flags.append(
            RowFlag(int(row), BACKDOOR, VALUE_CHECK, round(trigger.other_side, 4), reason, suggested)
        )
        flagged += 1
    if flagged:
        result.findings.append(
            Finding.make(
                rules.BACKDOOR,
                Severity.CRITICAL,
                f"class '{target}' holds a value trigger: {rule.because}",
                Location(data.path, (f"class:{target}",)),
                {**rule.evidence, "flagged_rows": flagged},
            )
        )
    return rule


def _ablation_decides(probe: _Probe, rare: bool) -> bool:
    """Whether an ablation can tell a trigger on ``probe``'s pattern; ``rare``: only its carriers hold it.

    Such a pattern is decided in the plain probe only, and only while the equally rare control stamps
    leave most rows alone (see ``_assess``).
    """
    return not rare or (not probe.by_score and probe.control_rate < FLIP_MIN)


def _assess(
    model: Any,
    data: AuditData,
    cand: _Candidate,
    fit_rows: IntArray,
    probe_rows: IntArray,
    seed: int,
    by_score: bool,
    retrained: dict[bytes, Any],
) -> _Probe:
    """Probe, unstamped check and (when both pass) ablation of one candidate under one decision rule."""
    flip, control, probed = _probe(model, data, cand.pattern, probe_rows, seed, by_score)
    carriers = np.zeros(data.n_rows, dtype=bool)
    carriers[cand.carriers] = True
    # Without the pattern, the carriers are judged by the same decision rule as the probe.
    predict = _decider(model, data, cand.pattern, probe_rows, by_score)
    suggestions = _unstamped_suggestions(predict, data, cand.pattern, cand.carriers, carriers)
    other = float(np.mean([x is not None for x in suggestions]))
    probe = _Probe(cand.pattern, cand.carriers, flip, control, probed, by_score, other)
    holders = data.labels[cand.pattern.match_share(data.features) >= CARRY_SHARE]
    probe.purity = float(np.mean(holders == cand.pattern.target)) if holders.size else 0.0
    # A rare value (held by its carriers only) makes the ablation arbitrary: a model that never saw it
    # answers it any way. In score mode that confirmed `acc_now_delinq = 1` on a clean lending_club, so
    # there such a pattern is not confirmed. The plain probe keeps its tuned behaviour (a patch on a corner
    # that is always 0 is such a value), except for a two-valued column of a table when the model is
    # saturated: if the equally rare control stamps already flip most rows, a flip says nothing of this
    # value. That confirmed `addr_state = DE` on lending_club with 20% of its labels flipped at random
    # (flip rate 0.94, control 0.60); the digits patch as a table flips 1.00 against a control of 0.001.
    one_hot = data.kind != "image" and _any_two_valued(data, cand.pattern.features)
    rare = (by_score or one_hot) and not _ablation_informative(data, cand.pattern, fit_rows)
    if probe.flips and probe.unstamped_other >= UNSTAMPED_MIN and _ablation_decides(probe, rare):
        probe.ablated_rate = _ablated_flip(
            data, cand.pattern, fit_rows, probe_rows, seed, by_score, retrained
        )
    return probe


def _assess_rise(
    model: Any,
    data: AuditData,
    cand: _Candidate,
    fit_rows: IntArray,
    probe_rows: IntArray,
    seed: int,
    retrained: dict[bytes, Any],
) -> _Rise:
    """The rise test of one candidate, its unstamped check and (when everything else passes) its ablation.

    Patterns with a two-valued feature are not confirmed this way, as in score mode: a saturated model
    lifts the majority for any rare one-hot value, and no control or ablation tells a one-hot trigger
    from a rare category.
    """
    rise = _rise(model, data, cand.pattern, probe_rows, seed)
    rise.unstamped_other, rise.unstamped_p = _unstamped_side(
        model, data, cand.pattern, probe_rows, cand.carriers
    )
    one_hot = _any_two_valued(data, cand.pattern.features)
    rise.informative = not one_hot and _ablation_informative(data, cand.pattern, fit_rows)
    if rise.passes:
        ablated = _ablated_model(data, cand.pattern, fit_rows, seed, retrained)
        rise.ablated_excess = (
            _rise(ablated, data, cand.pattern, probe_rows, seed).excess if ablated is not None else 0.0
        )
    return rise


def _flag(
    result: ChannelResult, predict: Callable[[FloatArray], IntArray], data: AuditData, probe: _Probe
) -> CarrierRule:
    """Flag the pattern's carriers in any class, and cluster members that carry most of it."""
    pattern = probe.pattern
    share = pattern.match_share(data.features)
    carriers = share >= CARRY_SHARE
    in_cluster = np.zeros(data.n_rows, dtype=bool)
    in_cluster[probe.cluster] = True
    flagged = carriers | (in_cluster & (share >= 0.5))
    rows = np.flatnonzero(flagged).astype(np.int64)
    suggestions = _unstamped_suggestions(predict, data, pattern, rows, carriers)
    flip = round(100 * probe.flip_rate)
    what = f"the pattern that flips {flip}% of held-out rows to class '{pattern.target_name}'"
    effect = (
        f"it flips {flip}% of them to '{pattern.target_name}' (control {round(100 * probe.control_rate)}%)"
    )
    evidence: dict[str, Any] = {
        "flip_rate": round(probe.flip_rate, 4),
        "control_rate": round(probe.control_rate, 4),
        "probed_rows": probe.probed_rows,
    }
    if probe.by_rise and probe.rise is not None:
        rise = probe.rise
        what = (
            f"the pattern that raises the log-odds of class '{pattern.target_name}' by {rise.excess:.1f} "
            f"more than a control stamp on {round(100 * rise.win_share)}% of held-out rows"
        )
        effect = (
            f"it raises the log-odds of '{pattern.target_name}' by {rise.rise:.1f} (control "
            f"{rise.control_rise:.1f}), more than the control on {round(100 * rise.win_share)}% of them"
        )
        evidence = {
            "rise": round(rise.rise, 4),
            "control_rise": round(rise.control_rise, 4),
            "rise_excess": round(rise.excess, 4),
            "rise_win_share": round(rise.win_share, 4),
            "probed_rows": rise.rows,
        }
    rule = CarrierRule(
        pattern,
        CHECK,
        CARRY_SHARE,
        probe.strength,
        what=what,
        because=f"stamped on held-out rows of other classes {effect}",
        evidence={**evidence, "pattern_features": ",".join(pattern.feature_names)},
        neutral=neutral_values(data, pattern, carriers),
    )
    for row, suggestion in zip(rows, suggestions, strict=True):
        row_share = float(share[row])
        label = data.label_name(int(data.labels[row]))
        reason = f"label '{label}'; {carries_text(pattern, row_share, data.encoder)}, {what}"
        result.flags.append(RowFlag(int(row), BACKDOOR, CHECK, rule.row_score(row_share), reason, suggestion))
    result.findings.append(rule.finding(data.path, len(rows), data.encoder))
    return rule


def carries_text(pattern: TriggerPattern, share: float, encoder: Any) -> str:
    """``carries <pattern>``, or ``carries 75% of <pattern>`` for a row holding part of it."""
    if share >= 1.0:
        return f"carries {pattern.describe(encoder=encoder)}"
    return f"carries {round(100 * share)}% of {pattern.describe(encoder=encoder)}"


def _summary(
    data: AuditData,
    stats: list[_ClassStats],
    probes: dict[int, _Probe],
    fit_rows: IntArray,
    probe_rows: IntArray,
) -> dict[str, Any]:
    per_class = []
    for s in stats:
        entry: dict[str, Any] = {
            "class": data.label_name(s.code),
            "rows": len(s.rows),
            "spectral_ratio": round(s.spectral_ratio, 4),
            "robust_outlier_share": round(s.outlier_share, 4),
            "split_separation": round(s.split_separation, 3),
            "separation_z": round(s.separation_z, 3),
            "candidate_patterns": [
                {
                    "features": list(c.pattern.feature_names[:8]),
                    "carriers": len(c.carriers),
                    "separation_z": round(c.separation_z, 2),
                }
                for c in s.patterns
            ],
            "gate_z": round(s.gate_z, 3),
            "gated": s.gated,
        }
        probe = probes.get(s.code)
        if probe is not None:
            entry.update(
                {
                    "candidate_pattern": list(probe.pattern.feature_names),
                    "cluster_rows": len(probe.cluster),
                    "flip_rate": round(probe.flip_rate, 4),
                    "control_rate": round(probe.control_rate, 4),
                    "probed_rows": probe.probed_rows,
                    "by_score": probe.by_score,
                    "unstamped_other_class": round(probe.unstamped_other, 4),
                    "ablated_flip_rate": round(probe.ablated_rate, 4),
                    "carrier_purity": round(probe.purity, 4),
                    "confirmed": probe.confirmed,
                    "confirmed_by": (
                        ("rise" if probe.by_rise else "score" if probe.by_score else "flip")
                        if probe.confirmed
                        else None
                    ),
                }
            )
            if probe.rise is not None:
                rise = probe.rise
                entry["rise_test"] = {
                    "rise": round(rise.rise, 4),
                    "control_rise": round(rise.control_rise, 4),
                    "excess": round(rise.excess, 4),
                    "win_share": round(rise.win_share, 4),
                    "rows": rise.rows,
                    "unstamped_other_class": round(rise.unstamped_other, 4),
                    "unstamped_p": float(f"{rise.unstamped_p:.3g}"),
                    "ablation_informative": rise.informative,
                    "ablated_excess": None if rise.ablated_excess is None else round(rise.ablated_excess, 4),
                    "confirmed": rise.confirmed,
                }
        per_class.append(entry)
    return {
        "model": "mlp(128,64) penultimate layer",
        "fit_rows": len(fit_rows),
        "probe_rows": len(probe_rows),
        "gate": {"separation_z_min": SEPARATION_MIN},
        "ablation": {"drop_min": ABLATION_DROP, "keep_max": round(ABLATION_KEEP, 4)},
        "rise_test": {
            "excess_min": RISE_MIN,
            "win_share_min": RISE_WIN,
            "ablation_drop": RISE_DROP,
            "unstamped_p_max": UNSTAMPED_P,
        },
        "classes": per_class,
        "patterns": [p.pattern.to_json() for p in probes.values() if p.confirmed],
        "probes": {
            data.label_name(code): {
                "flip_rate": round(p.flip_rate, 4),
                "control_rate": round(p.control_rate, 4),
            }
            for code, p in probes.items()
        },
    }
