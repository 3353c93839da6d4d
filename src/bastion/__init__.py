"""Bastion: secure AI systems from training data to production answers.

Public entry points: :func:`bastion.scan.scan_paths` (model-file scanning), :func:`bastion.safe_load`
(restricted unpickling) and the ``bastion`` command.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "safe_load"]


def safe_load(path: str, *, profile: str | None = None) -> Any:
    """Unpickle ``path`` allowing only globals on the curated safe list (see :mod:`bastion.safeload`)."""
    from bastion.safeload import safe_load as _safe_load

    return _safe_load(path, profile=profile)
