"""The representation model: a small MLP trained on the suspect data and its penultimate-layer activations.

A backdoor is something the model learns, so it shows in what the model computes rather than in its
outputs: the poisoned rows of the target class form their own cluster in the last hidden layer, apart from
the clean rows of that class. The logits layer would merge them again (both map to the same class), which
is why the activations are read one layer below. scikit-learn's ``MLPClassifier`` keeps its weights in
``coefs_``/``intercepts_``, so the forward pass is a few matrix products and needs no deep-learning library.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from bastion.data.audit.base import FloatArray, IntArray

HIDDEN = (128, 64)
# Enough passes to learn a trigger on a few thousand rows; bounded so that a fit stays in seconds.
MAX_ITER = 40
# Large inputs train on mini-batches of this size (sklearn's default is min(200, n)).
BATCH = 256


def train_mlp(features: FloatArray, labels: IntArray, seed: int) -> Any:
    """Fit a seeded (128, 64) ReLU MLPClassifier on ``features`` and ``labels`` and return it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    model = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        activation="relu",
        alpha=1e-4,
        batch_size=min(BATCH, max(1, features.shape[0])),
        learning_rate_init=1e-3,
        max_iter=MAX_ITER,
        random_state=seed,
    )
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # Stopping at the iteration bound is a deliberate time cap, not a defect to report on every run.
        # One BLAS thread: these matrices are too small to gain from threads, and on a busy machine
        # oversubscribed threads made the fit six times slower.
        warnings.simplefilter("ignore", ConvergenceWarning)
        with interrupts_not_swallowed():
            model.fit(np.asarray(features, dtype=np.float64), np.asarray(labels))
    return model


# What scikit-learn's MLP warns when it catches a Ctrl-C during fit and returns the half-trained model.
_SWALLOWED_INTERRUPT = "Training interrupted by user"


@contextmanager
def interrupts_not_swallowed() -> Iterator[None]:
    """Let Ctrl-C stop an MLP fit: scikit-learn catches it and goes on with a half-trained model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=_SWALLOWED_INTERRUPT, category=UserWarning)
        try:
            yield
        except UserWarning as exc:
            if _SWALLOWED_INTERRUPT not in str(exc):
                raise
            raise KeyboardInterrupt from None


def penultimate(model: Any, features: FloatArray) -> FloatArray:
    """The activations of the last hidden layer of a fitted MLPClassifier, one row per input row."""
    coefs: list[FloatArray] = list(model.coefs_)
    intercepts: list[FloatArray] = list(model.intercepts_)
    activation = str(model.activation)
    hidden = np.asarray(features, dtype=np.float64)
    # Every layer but the output one; the output layer's softmax/logistic is what we want to avoid.
    for weights, bias in zip(coefs[:-1], intercepts[:-1], strict=True):
        hidden = _activate(hidden @ weights + bias, activation)
    return np.asarray(hidden, dtype=np.float64)


def _activate(values: FloatArray, activation: str) -> FloatArray:
    if activation == "relu":
        return np.maximum(values, 0.0)
    if activation == "tanh":
        return np.tanh(values)
    if activation == "logistic":
        return 1.0 / (1.0 + np.exp(-values))
    return values  # "identity"
