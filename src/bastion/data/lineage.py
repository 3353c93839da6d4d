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
    """Names of a dataset from one fingerprint: ``data`` (manifest digest), ``data_root`` and, for a single
    file, ``data_sha256`` (its bytes' SHA-256).

    The manifest digest names a manifest built here and not written anywhere, so only ``data_root`` and
    ``data_sha256`` can be matched later against data or a written manifest; both are always recorded.
    """
    from bastion.data.manifest import build_manifest

    manifest = build_manifest(path)
    identity = {"data": "manifest-sha256:" + manifest.digest(), "data_root": "merkle-sha256:" + manifest.root}
    if path.is_file() and len(manifest.files) == 1:
        identity["data_sha256"] = "sha256:" + manifest.files[0].sha256
    return identity


def identity_from_manifest(path: Path, manifest_path: Path, identity: dict[str, str]) -> dict[str, str]:
    """``identity`` with ``data`` naming the written manifest at ``manifest_path``, once ``path`` matches it.

    The input must be one of the manifest's files (by name, or its only file) with the same SHA-256; an
    input that differs from what was fingerprinted is refused rather than recorded as that manifest's data.
    """
    from bastion.data.manifest import load_manifest
    from bastion.errors import InputError

    manifest = load_manifest(manifest_path)
    entries = [f for f in manifest.files if f.path == path.name or f.path.endswith("/" + path.name)]
    if not entries and len(manifest.files) == 1:
        entries = list(manifest.files)
    if len(entries) != 1:
        raise InputError(f"--input-manifest {manifest_path}: it does not list {path.name}")
    actual = identity.get("data_sha256") or file_digest(path)
    if "sha256:" + entries[0].sha256 != actual:
        raise InputError(f"--input-manifest {manifest_path}: {path} differs from the file it fingerprinted")
    return {**identity, "data": "manifest-sha256:" + manifest.digest(), "input_manifest": str(manifest_path)}


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
