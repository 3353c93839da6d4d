"""The corpus vocabulary: a Sample on disk, the Spec that builds it, and the registry of specs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Expected = Literal["malicious", "benign"]
Builder = Callable[[Path], Path]


@dataclass(frozen=True, slots=True)
class Sample:
    """One file or folder of the corpus and what a scanner should say about it."""

    path: Path
    technique: str  # unique id, e.g. "pip-main"
    expected: Expected
    reference: str  # CVE / GHSA / issue, or "" for benign samples
    description: str
    fmt: str = ""  # the container a user would call it by (pickle, torch-zip, keras, ...)


@dataclass(frozen=True, slots=True)
class Spec:
    """How to build one sample: ``build(out_dir)`` writes it and returns its path."""

    technique: str
    expected: Expected
    reference: str
    description: str
    fmt: str
    build: Builder

    def sample(self, path: Path) -> Sample:
        """The Sample this spec produced at ``path``."""
        return Sample(path, self.technique, self.expected, self.reference, self.description, self.fmt)


SPECS: dict[str, Spec] = {}


def technique(
    name: str, expected: Expected, fmt: str, reference: str = "", description: str = ""
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as the sample for ``name`` (ids are unique)."""

    def decorate(fn: Builder) -> Builder:
        if name in SPECS:
            raise ValueError(f"duplicate technique {name!r}")
        SPECS[name] = Spec(name, expected, reference, description or (fn.__doc__ or "").strip(), fmt, fn)
        return fn

    return decorate


def malicious(name: str, fmt: str, reference: str, description: str = "") -> Callable[[Builder], Builder]:
    """Register a malicious sample."""
    return technique(name, "malicious", fmt, reference, description)


def benign(name: str, fmt: str, description: str = "") -> Callable[[Builder], Builder]:
    """Register a benign sample."""
    return technique(name, "benign", fmt, "", description)
