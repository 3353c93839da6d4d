"""Dataset integrity: fingerprint a dataset into a signed manifest and verify data against it later."""

from __future__ import annotations

from bastion.data.manifest import FileEntry, Manifest, Signature, build_manifest, load_manifest
from bastion.data.verify import FileChange, RowDiff, VerifyResult, diff_manifests

__all__ = [
    "FileChange",
    "FileEntry",
    "Manifest",
    "RowDiff",
    "Signature",
    "VerifyResult",
    "build_manifest",
    "diff_manifests",
    "load_manifest",
]
