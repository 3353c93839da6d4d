"""Compare two manifests: which files and, inside row formats, which rows were added, removed or changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bastion.data.manifest import SYMLINK, FileEntry, Manifest, Survey, Unverified

# The row alignment costs O((N + M) * E) for E edits in the worst case (rows that repeat) and keeps
# O(E**2) of state; past this many steps per compared row (plus a constant), or this many edits, it falls
# back to a linear multiset match, so no file can make verify quadratic.
DIFF_STEPS_PER_ROW = 8
DIFF_STEPS_BASE = 500_000
MAX_EDITS = 500


@dataclass(frozen=True, slots=True)
class RowDiff:
    """Row indices (0-based): ``removed`` in the old file, ``added`` and ``changed`` in the new one."""

    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file present in both manifests whose bytes differ (``rows_error``: why its rows are missing)."""

    path: str
    old_sha256: str
    new_sha256: str
    schema_changed: bool
    rows: RowDiff | None
    rows_error: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of ``bastion data verify``: identical only with no differences and no signature error.

    ``unverified`` lists paths in the data that could not be fingerprinted (a symlink leaving the dataset, a
    FIFO, a name that is not UTF-8); ``manifest_error`` says how the manifest contradicts itself.
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[FileChange, ...]
    signature_error: str | None = None
    signed: bool = False
    unverified: tuple[Unverified, ...] = ()
    manifest_error: str | None = None

    @property
    def identical(self) -> bool:
        """True when no file differs and nothing in the data was left unverified."""
        return not (self.added or self.removed or self.changed or self.unverified)

    @property
    def ok(self) -> bool:
        """True when nothing differs, the manifest is consistent and the signature (if any) holds."""
        return self.identical and self.signature_error is None and self.manifest_error is None


def diff_rows(old: Sequence[str], new: Sequence[str]) -> RowDiff:
    """Align two row-hash sequences (fewest edits) so an inserted row does not mark later rows as changed."""
    # Trim the common prefix and suffix first: typical edits are local.
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    old_mid, new_mid = old[start : len(old) - end], new[start : len(new) - end]
    budget = DIFF_STEPS_BASE + DIFF_STEPS_PER_ROW * (len(old_mid) + len(new_mid))
    hunks = _edit_hunks(old_mid, new_mid, budget)
    if hunks is None:
        return _multiset_diff(old_mid, new_mid, start)
    added: list[int] = []
    removed: list[int] = []
    changed: list[int] = []
    for deleted, inserted in hunks:
        # Within one run of edits the first rows pair up as changed in place; the rest are added or removed.
        paired = min(len(deleted), len(inserted))
        changed.extend(start + j for j in inserted[:paired])
        removed.extend(start + i for i in deleted[paired:])
        added.extend(start + j for j in inserted[paired:])
    return RowDiff(tuple(added), tuple(removed), tuple(changed))


def _edit_hunks(a: Sequence[str], b: Sequence[str], budget: int) -> list[tuple[list[int], list[int]]] | None:
    """Runs of edits (deleted old indices, inserted new indices) of a fewest-edits alignment of a and b.

    Edits are insertions, deletions and in-place changes, each costing one (Levenshtein distance, by
    Ukkonen's O((N + M) * E) diagonal algorithm): among rows that repeat, an edit in place is then cheaper
    than an insertion plus a deletion far away, so two changed rows among identical ones are reported as
    two changed rows. difflib's SequenceMatcher, used before, is quadratic on such files. None when the
    alignment would need more than MAX_EDITS edits or ``budget`` steps.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return [(list(range(n)), list(range(m)))] if n or m else []
    # Every row of one side without an equal row on the other needs an edit: a linear lower bound.
    surplus = Counter(a)
    surplus.subtract(b)
    if max(sum(c for c in surplus.values() if c > 0), -sum(c for c in surplus.values() if c < 0)) > MAX_EDITS:
        return None
    # levels[e][k + e]: the furthest x reachable on diagonal k = x - y with e edits, or -1 (out of reach).
    levels: list[list[int]] = [[_slide(a, b, 0, 0)]]
    steps = levels[0][0]
    for e in range(1, min(max(n, m), MAX_EDITS) + 1):
        previous = levels[-1]
        current = [-1] * (2 * e + 1)
        for k in range(max(-e, -m), min(e, n) + 1):
            # The same choice as _best_step, inlined: this loop is the hot path.
            x = -1
            i = k + e - 1  # diagonal k's index in ``previous``
            if -e < k < e and previous[i] >= 0:
                x = previous[i] + 1 if previous[i] < n and previous[i] - k < m else previous[i]
            if k > 1 - e and 0 <= previous[i - 1] < n and previous[i - 1] + 1 > x:
                x = previous[i - 1] + 1
            if k < e - 1 and previous[i + 1] >= 0 and previous[i + 1] - k <= m and previous[i + 1] > x:
                x = previous[i + 1]
            if x < 0:
                continue
            run = x
            while x < n and x - k < m and a[x] == b[x - k]:
                x += 1
            steps += 1 + x - run
            if steps > budget:  # checked per diagonal: one level alone can slide along every one of them
                return None
            current[k + e] = x
        levels.append(current)
        if abs(n - m) <= e and current[n - m + e] >= n:
            return _trace_back(levels, n, m)
    return None


def _slide(a: Sequence[str], b: Sequence[str], x: int, y: int) -> int:
    while x < len(a) and y < len(b) and a[x] == b[y]:
        x += 1
        y += 1
    return x


def _best_step(previous: list[int], e: int, k: int, n: int, m: int) -> tuple[int, str]:
    """The furthest x on diagonal k one edit beyond ``previous`` (level e - 1), and which edit gets there."""
    best, how = -1, ""
    # "stay": the point needs no edit at this level (it keeps the frontier monotonic at the grid's edge).
    # Preference on ties: no edit, a change in place, a deletion, then an insertion.
    moves = ((k, 0, "stay"), (k, 1, "change"), (k - 1, 1, "delete"), (k + 1, 0, "insert"))
    for source, dx, kind in moves:
        if abs(source) > e - 1 or previous[source + e - 1] < 0:
            continue
        x = previous[source + e - 1] + dx
        if x <= n and x - k <= m and x - k >= 0 and x > best:
            best, how = x, kind
    return best, how


def _trace_back(levels: list[list[int]], n: int, m: int) -> list[tuple[list[int], list[int]]]:
    # Walk back from (n, m): each level is one edit followed by a run of matched rows (maybe empty).
    edits: list[tuple[int | None, int | None, int]] = []  # (old index, new index, matched rows after it)
    x, k = n, n - m
    for e in range(len(levels) - 1, 0, -1):
        reached, how = _best_step(levels[e - 1], e, k, n, m)
        after = x - reached
        if how == "stay":
            x = reached
            continue
        if how == "change":
            edits.append((reached - 1, reached - 1 - k, after))
        elif how == "delete":
            edits.append((reached - 1, None, after))
            k -= 1
        else:
            edits.append((None, reached - k - 1, after))
            k += 1
        x = levels[e - 1][k + e - 1]
    hunks: list[tuple[list[int], list[int]]] = []
    joined = False  # the previous edit is followed directly by this one, with no matched row between
    for old_index, new_index, after in reversed(edits):
        if not joined:
            hunks.append(([], []))
        if old_index is not None:
            hunks[-1][0].append(old_index)
        if new_index is not None:
            hunks[-1][1].append(new_index)
        joined = after == 0
    return hunks


def _multiset_diff(old: Sequence[str], new: Sequence[str], start: int) -> RowDiff:
    """A linear fallback: rows match by hash in order of occurrence; unmatched rows pair up as changes."""
    unmatched_old = _unmatched(old, Counter(new))
    unmatched_new = _unmatched(new, Counter(old))
    paired = min(len(unmatched_old), len(unmatched_new))
    return RowDiff(
        added=tuple(start + j for j in unmatched_new[paired:]),
        removed=tuple(start + i for i in unmatched_old[paired:]),
        changed=tuple(start + j for j in unmatched_new[:paired]),
    )


def _unmatched(rows: Sequence[str], available: Counter[str]) -> list[int]:
    # The first occurrences of a row match the other side's copies; later ones beyond its count do not.
    unmatched: list[int] = []
    for index, row in enumerate(rows):
        if available[row] > 0:
            available[row] -= 1
        else:
            unmatched.append(index)
    return unmatched


def diff_file(old: FileEntry, new: FileEntry) -> FileChange | None:
    """None when the bytes are equal, else what changed."""
    # A symlink's sha256 is over its target text, which a regular file could hold: the kind must match too.
    same_kind = (old.kind == SYMLINK) == (new.kind == SYMLINK)
    if old.sha256 == new.sha256 and old.size == new.size and same_kind:
        return None
    rows = None
    if old.row_hashes is not None and new.row_hashes is not None and old.kind == new.kind:
        rows = diff_rows(old.row_hashes, new.row_hashes)
    return FileChange(old.path, old.sha256, new.sha256, old.schema != new.schema, rows)


def diff_manifests(old: Manifest, new: Manifest, survey: Survey | None = None) -> VerifyResult:
    """Files added, removed and changed from ``old`` (the recorded manifest) to ``new`` (the data now).

    ``survey`` (from building ``new``) adds what could not be fingerprinted and why rows are missing.
    """
    old_files = {f.path: f for f in old.files}
    new_files = {f.path: f for f in new.files}
    added = tuple(sorted(new_files.keys() - old_files.keys()))
    removed = tuple(sorted(old_files.keys() - new_files.keys()))
    changes = []
    for path in sorted(old_files.keys() & new_files.keys()):
        change = diff_file(old_files[path], new_files[path])
        if change is not None and survey is not None and path in survey.unreadable:
            # Rows that no longer parse say nothing about the schema either; only the bytes are compared.
            change = replace(change, rows_error=survey.unreadable[path], schema_changed=False)
        if change is not None:
            changes.append(change)
    unverified = tuple(survey.unverified) if survey is not None else ()
    return VerifyResult(added, removed, tuple(changes), unverified=unverified)
