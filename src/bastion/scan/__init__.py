"""Model-artifact scanning: find code that runs when a model file is loaded, without loading it.

The entry point is :func:`scan_paths`. Format modules register their scanners and rules when they are
imported, which :mod:`bastion.scan.registry` does lazily, the first time a format is met.
"""

from __future__ import annotations

from bastion.scan import core_rules  # noqa: F401  (the engine's own rules are always needed)
from bastion.scan.engine import ScanOptions, scan_paths

__all__ = ["ScanOptions", "scan_paths"]
