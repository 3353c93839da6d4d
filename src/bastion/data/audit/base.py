"""The audit's shared shapes: the dataset as detectors see it, one flagged row, one channel's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.findings import Finding

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# The four independent detector channels; a flagged row names every channel that flagged it.
LABEL = "label"
BACKDOOR = "backdoor"
OUTLIER = "outlier"
INTEGRITY = "integrity"
CHANNELS = (LABEL, BACKDOOR, OUTLIER, INTEGRITY)


@dataclass(slots=True)
class AuditData:
    """A dataset ready for the detectors: encoded features, integer labels and what they came from.

    ``features`` is the numeric encoding every channel works on: standardised numeric columns plus one-hot
    categoricals for tables, pixels scaled to [0, 1] for images, sentence embeddings for text.
    ``frame`` keeps the original feature columns (not the label or source) for duplicates and drift.
    """

    path: str
    kind: str  # "tabular" | "image" | "text"
    features: FloatArray
    labels: IntArray
    classes: list[str]
    feature_names: list[str]
    frame: Any = None  # pandas.DataFrame of the raw feature columns, row-aligned with ``features``
    sources: npt.NDArray[np.str_] | None = None
    texts: list[str] | None = None
    image_shape: tuple[int, ...] | None = None
    encoder: Any = None  # the TableEncoder that made ``features``, to encode a holdout or reference alike
    ignored_columns: list[str] = field(default_factory=list)  # row identifiers, not features

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.features.shape[0])

    def label_name(self, code: int) -> str:
        """The original label value for an integer label code."""
        return self.classes[code]


@dataclass(frozen=True, slots=True)
class RowFlag:
    """One channel's reason to distrust one row.

    ``row`` is the 0-based position in the input; ``score`` is in [0, 1], higher is more suspicious;
    ``remove`` says whether sanitizing quarantines the row on this flag alone (near duplicates only ask
    for review); ``suggested_label`` is the label the evidence points to, when there is one.
    """

    row: int
    channel: str
    check: str
    score: float
    reason: str
    suggested_label: str | None = None
    remove: bool = True


@dataclass(slots=True)
class ChannelResult:
    """What one channel found: per-row flags, dataset-level findings and a JSON-ready summary."""

    channel: str
    flags: list[RowFlag] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """Knobs shared by the channels; defaults are the tuned ones, none is an expected poison rate."""

    seed: int = 0
    folds: int = 5
    channels: tuple[str, ...] = CHANNELS
