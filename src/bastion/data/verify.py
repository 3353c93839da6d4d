"""Compare two manifests: which files and, inside row formats, which rows were added, removed or changed."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.data.manifest import FileEntry, Manifest


@dataclass(frozen=True, slots=True)
class RowDiff:
    """Row indices (0-based): ``removed`` in the old file, ``added`` and ``changed`` in the new one."""

    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file present in both manifests whose bytes differ."""

    path: str
    old_sha256: str
    new_sha256: str
    schema_changed: bool
    rows: RowDiff | None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of ``bastion data verify``: identical only with no differences and no signature error."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[FileChange, ...]
    signature_error: str | None = None
    signed: bool = False

    @property
    def identical(self) -> bool:
        """True when no file differs."""
        return not (self.added or self.removed or self.changed)

    @property
    def ok(self) -> bool:
        """True when nothing differs and the signature (if any) holds."""
        return self.identical and self.signature_error is None


def diff_rows(old: Sequence[str], new: Sequence[str]) -> RowDiff:
    """Align two row-hash sequences (LCS-style) so an inserted row does not mark later rows as changed."""
    # Trim the common prefix and suffix first: typical edits are local and SequenceMatcher is superlinear.
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    old_mid, new_mid = old[start : len(old) - end], new[start : len(new) - end]
    added: list[int] = []
    removed: list[int] = []
    changed: list[int] = []
    matcher = difflib.SequenceMatcher(None, old_mid, new_mid, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        changed.extend(start + j for j in range(j1, j1 + paired))
        removed.extend(start + i for i in range(i1 + paired, i2))
        added.extend(start + j for j in range(j1 + paired, j2))
    return RowDiff(tuple(added), tuple(removed), tuple(changed))


def diff_file(old: FileEntry, new: FileEntry) -> FileChange | None:
    """None when the bytes are equal, else what changed."""
    if old.sha256 == new.sha256 and old.size == new.size:
        return None
    rows = None
    if old.row_hashes is not None and new.row_hashes is not None and old.kind == new.kind:
        rows = diff_rows(old.row_hashes, new.row_hashes)
    return FileChange(old.path, old.sha256, new.sha256, old.schema != new.schema, rows)


def diff_manifests(old: Manifest, new: Manifest) -> VerifyResult:
    """Files added, removed and changed from ``old`` (the recorded manifest) to ``new`` (the data now)."""
    old_files = {f.path: f for f in old.files}
    new_files = {f.path: f for f in new.files}
    added = tuple(sorted(new_files.keys() - old_files.keys()))
    removed = tuple(sorted(old_files.keys() - new_files.keys()))
    changes = (diff_file(old_files[p], new_files[p]) for p in sorted(old_files.keys() & new_files.keys()))
    return VerifyResult(added, removed, tuple(c for c in changes if c is not None))
