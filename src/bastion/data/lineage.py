"""Lineage records: which data a step consumed and which it produced, each named by its digest.

A record is plain JSON, embedded in what the step writes (an audit report, a sanitized dataset's signed
manifest, a validation result), so that a model can be traced back through sanitize and audit to the exact
rows it learned from. Data is named by its manifest digest (``bastion data fingerprint``), other files by
their SHA-256.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bastion import __version__

RECORD_FORMAT = "bastion.lineage"


def dataset_digest(path: Path) -> str:
    """The manifest digest of a data file or directory: ``sha256:`` plus the manifest's identity."""
    from bastion.data.manifest import build_manifest

    return "manifest-sha256:" + build_manifest(path).digest()


def data_root(path: Path) -> str:
    """The Merkle root of a data file or directory's content: equal for equal data, whenever fingerprinted.

    A manifest digest also covers when and from where the data was fingerprinted, so two fingerprints of
    the same bytes differ; the root is what a later step (the registry) matches reports to manifests by.
    """
    from bastion.data.manifest import build_manifest

    return "merkle-sha256:" + build_manifest(path).root


def dataset_identity(path: Path) -> dict[str, str]:
    """Both names of a dataset from one fingerprint: ``data`` (manifest digest) and ``data_root``."""
    from bastion.data.manifest import build_manifest

    manifest = build_manifest(path)
    return {"data": "manifest-sha256:" + manifest.digest(), "data_root": "merkle-sha256:" + manifest.root}


def file_digest(path: Path) -> str:
    """``sha256:`` plus the hex digest of a file's bytes."""
    from bastion.data.manifest import file_sha256

    return "sha256:" + file_sha256(path)


def lineage_record(
    step: str,
    consumed: dict[str, str],
    produced: dict[str, str],
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One step's record: role -> digest for what it read and what it wrote, plus its parameters."""
    return {
        "format": RECORD_FORMAT,
        "step": step,
        "tool_version": __version__,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "consumed": dict(consumed),
        "produced": dict(produced),
        "parameters": dict(parameters or {}),
    }
