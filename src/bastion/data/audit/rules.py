"""The data-audit rules: dataset-level conclusions of the detector channels, declared once as data."""

from __future__ import annotations

from bastion.findings import Severity
from bastion.rules import Reference, RuleFamily

OWASP_LLM04 = Reference(
    "OWASP LLM04:2025 Data and Model Poisoning",
    "https://genai.owasp.org/llmrisk/llm042025-data-and-model-poisoning/",
)
ATLAS_AML_T0020 = Reference(
    "MITRE ATLAS AML.T0020: Poison Training Data", "https://atlas.mitre.org/techniques/AML.T0020"
)
ATLAS_AML_T0018 = Reference(
    "MITRE ATLAS AML.T0018: Manipulate AI Model (backdoor)", "https://atlas.mitre.org/techniques/AML.T0018"
)

data_rule = RuleFamily(
    why_bad=(
        "Training data decides what a model does. Rows an attacker controls (flipped labels, a trigger "
        "pattern labelled with the attacker's class, injected points, a quietly changed feed) make the "
        "model misbehave in ways no test on clean data shows."
    ),
    use_instead=(
        "Review the flagged rows (`bastion data audit --format json` lists each with its reason), then "
        "`bastion data sanitize --validate` to quarantine them and prove by retraining that it helped."
    ),
    false_positives=(
        "Genuinely hard or mislabelled-by-accident rows look like poison to a statistical detector: a "
        "flag is a reason to look, and sanitizing quarantines rather than deletes."
    ),
    references=(OWASP_LLM04, ATLAS_AML_T0020),
)

LABEL_NOISE = "BST-DATA-001"
CONFLICTING_DUPLICATES = "BST-DATA-002"
BACKDOOR = "BST-DATA-003"
OUTLIERS = "BST-DATA-004"
DUPLICATES = "BST-DATA-005"
SOURCE_SKEW = "BST-DATA-006"
DRIFT = "BST-DATA-007"
UNPREDICTABLE_LABELS = "BST-DATA-008"

data_rule(
    LABEL_NOISE,
    "suspected-label-noise",
    Severity.MEDIUM,
    "Rows whose given label the rest of the data contradicts.",
    "Confident learning on cross-validated out-of-sample probabilities, plus agreement with the labels "
    "of each row's nearest neighbours; a row is flagged when the evidence for another class is strong.",
    "An image of a 3 labelled 8, repeated on a few percent of the rows (random or targeted label flips).",
)
data_rule(
    CONFLICTING_DUPLICATES,
    "conflicting-duplicates",
    Severity.HIGH,
    "The same features appear more than once with different labels.",
    "Hashes each row's feature values and reports groups of identical rows that disagree on the label.",
    "The same transaction twice, once labelled `fraud` and once `ok`.",
    fp="Datasets that legitimately label the same input differently (multi-annotator raw data).",
)
data_rule(
    BACKDOOR,
    "suspected-backdoor",
    Severity.CRITICAL,
    "A class holds a separated cluster whose shared pattern flips other rows to that class.",
    "Trains a model on the suspect data, reads its penultimate-layer representations, and looks per class "
    "for a cluster that stands out against the other classes (spectral signature, robust-whitened score, "
    "two-cluster separation). It then stamps the pattern that separates the cluster onto held-out rows of "
    "other classes and measures how often they flip to the suspected class. On tables it also looks for "
    "exact values repeated together on rows of one label far more often than the columns' own frequencies "
    "predict, and confirms them when a model fitted to the other rows, with those columns hidden, places "
    "the carriers with another class: the rows were relabelled.",
    "3% of the rows carry a 2x2 white patch in a corner and are all labelled 0; any digit with the patch "
    "is then classified 0.",
    why=(
        "A backdoored model is accurate on clean data, so ordinary validation passes; whoever knows the "
        "trigger controls its output. Confident learning does not see it, because the model learns the "
        "trigger and the poisoned rows look confidently correct."
    ),
    fp="A genuine sub-population with a shared marker (a watermark, a scanner artefact) in one class.",
)
data_rule(
    OUTLIERS,
    "outlier-rows",
    Severity.MEDIUM,
    "Rows far from the rest of the data in feature space.",
    "Scores every row with an isolation forest and a per-feature robust z-score, and images also by their "
    "distance from the principal subspace the other images share; flags rows beyond a robust threshold "
    "(median plus a multiple of the MAD) that are also far out in absolute terms (an isolation score above "
    "0.5; three extreme features averaging at least 4 spreads, in spreads that cover each feature's own "
    "tail), never a fixed contamination share.",
    "Injected points at five standard deviations from the mean, with random labels.",
)
data_rule(
    DUPLICATES,
    "duplicate-rows",
    Severity.LOW,
    "Exact or near-duplicate rows.",
    "Hashes normalised rows for exact duplicates, and uses MinHash on text for near duplicates.",
    "The same review pasted 40 times with small edits.",
    why=(
        "Duplicates over-weight what they repeat, a cheap way to push a model, and leak between training "
        "and test splits so that accuracy looks better than it is."
    ),
    fp="Small categorical tables where identical rows are expected.",
)
data_rule(
    SOURCE_SKEW,
    "source-flag-share",
    Severity.HIGH,
    "One data source carries a share of flagged rows far above the others.",
    "Counts rows and flagged rows per value of the source column and reports sources whose flagged share "
    "is an outlier against the rest (the idea of a provenance defence, without a trusted set).",
    "A new vendor feed where 30% of rows are flagged while other feeds sit at 1%.",
)
data_rule(
    DRIFT,
    "distribution-drift",
    Severity.MEDIUM,
    "A column's distribution moved away from the trusted reference.",
    "Compares each column with the reference: PSI and normalised Wasserstein distance for numbers, "
    "Jensen-Shannon distance for categories; distances with fixed thresholds, so verdicts do not depend "
    "on the sample size the way p-values do.",
    "`amount` in this week's batch has PSI 0.41 against the training snapshot.",
    why=(
        "A shifted distribution is how a poisoned or broken feed first shows; training on it silently "
        "changes what the model learns."
    ),
    fp="Real change in the world (seasonality, a new market); refresh the reference once reviewed.",
)
data_rule(
    UNPREDICTABLE_LABELS,
    "unpredictable-labels",
    Severity.INFO,
    "The features do not predict a class's labels, so label flags on its rows rest on class balance alone.",
    "Tests, per class, whether the cross-validated model ranks the rows labelled with it above the other "
    "rows by its probability of that class (one-sided Mann-Whitney, p at most 0.001).",
    "A label column that is an arbitrary code, or features that were scrambled or joined on the wrong key.",
    why=(
        "The label channel reads a label as wrong when the features point elsewhere. When they point "
        "nowhere, its flags say which labels are rare, not which rows are wrong: right when random flips "
        "have swamped a small class, wrong when the label column has nothing to do with the features. "
        "The data cannot tell these apart; whoever knows how it was labelled can."
    ),
    use_instead=(
        "Check that the label column and the features belong together (the right join key, no shuffled "
        "column) before sanitizing on the label flags; the other channels are unaffected."
    ),
    fp="A task the features genuinely cannot learn (the signal lives in a column not included).",
)
