"""The integrity channel: exact, conflicting and near duplicates, drift against a reference, and sources.

Exact duplicates come from a 64-bit hash of each row's normalised values (vectorised by pandas); a group
of identical rows that agrees on the label keeps its first row and flags the copies, a group that
disagrees is a conflicting duplicate, which the label channel owns because it is a label-flip signal.
Near duplicates are only looked for in text, with MinHash over word 3-grams, on a bounded number of rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bastion.data.audit import rules
from bastion.data.audit.base import INTEGRITY, LABEL, AuditData, AuditOptions, ChannelResult, RowFlag
from bastion.data.audit.drift import ColumnDrift
from bastion.findings import Finding, Location, Severity
from bastion.rules import get_rule

UInt64Array = npt.NDArray[np.uint64]

EXACT_SCORE = 0.5  # a copy over-weights a row but is not by itself evidence of an attack
CONFLICT_SCORE = 0.9  # a row whose identical twin carries another label: one of them is wrong
CONFLICT_MAJORITY_SCORE = 0.6  # the rows that agree with the group's majority label
NEAR_THRESHOLD = 0.8  # Jaccard similarity of word 3-gram sets
# The LSH only proposes candidates, at a lower similarity than the flagging one: 12 bands of 5 of 64
# permutations propose 99% of pairs at similarity 0.8 (datasketch's banding for 0.8 proposed 36%), 32% at
# 0.5 and 3% at 0.3; the exact Jaccard similarity then decides, so loose candidates cost time, not precision.
NEAR_PERMUTATIONS = 64
_BANDS, _BAND_ROWS = 12, 5
NEAR_MAX_CANDIDATES = 20  # earlier rows per shared bucket verified, so a corpus of boilerplate stays bounded
NEAR_MAX_ROWS = 50_000  # bounded (20,000 texts take ~4 s on 2 cores): a seeded sample beyond this
_MERSENNE = (1 << 61) - 1
_MAX_HASH = (1 << 32) - 1
_SHINGLE_BLOCK = 50_000
NEAR_MAX_WORDS = 2_000  # words of one text that enter its shingles
SHINGLE = 3
EXAMPLES = 5
MAX_DRIFT_FINDINGS = (
    20  # image pixels or embeddings can drift in hundreds of columns; one finding each is noise
)

# Source skew: a source's flagged share must beat the pooled share of the other sources beyond both
# Wilson intervals (z = 3, so about 1 in 1000 per source by chance), by a minimum absolute excess, and
# with a minimum number of flagged rows, so that a source of a handful of rows never alerts on noise.
SOURCE_Z = 3.0
SOURCE_MIN_EXCESS = 0.05
SOURCE_MIN_FLAGGED = 5

_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def _severity(code: str) -> Severity:
    return get_rule(code).severity


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Values put in one spelling per meaning: -0.0 is 0.0, text is stripped with single spaces."""
    out: dict[str, pd.Series] = {}
    for i, column in enumerate(frame.columns):
        series = frame[column]
        key = f"c{i}"  # positional keys: duplicate or odd column names do not matter to a row hash
        if pd.api.types.is_float_dtype(series):
            out[key] = series.astype("float64") + 0.0
        elif pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            out[key] = series
        else:
            text = series.astype("string").str.strip()
            out[key] = text.str.replace(_WHITESPACE, " ", regex=True)
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def frame_row_hashes(frame: pd.DataFrame) -> UInt64Array:
    """A 64-bit hash per row of a table's normalised values (collisions: ~1e-8 at a million rows)."""
    if frame.shape[1] == 0:
        return np.zeros(len(frame), dtype=np.uint64)
    hashed = pd.util.hash_pandas_object(_normalised(frame), index=False)
    return np.asarray(hashed, dtype=np.uint64)


def array_row_hashes(features: npt.NDArray[Any]) -> UInt64Array:
    """A 64-bit hash per row of a numeric matrix (images, arrays)."""
    matrix = np.asarray(features, dtype=np.float64).reshape(len(features), -1) + 0.0
    return frame_row_hashes(pd.DataFrame(matrix))


def row_hashes(data: AuditData) -> UInt64Array:
    """The row hashes of a dataset: of its raw columns when it has them, else of its feature matrix."""
    if data.frame is not None:
        return frame_row_hashes(data.frame)
    return array_row_hashes(data.features)


def duplicate_groups(hashes: UInt64Array) -> list[npt.NDArray[np.int64]]:
    """Groups (two rows or more) of rows with the same hash, each ascending, ordered by first row."""
    if hashes.size == 0:
        return []
    dup = pd.Series(hashes).duplicated(keep=False).to_numpy()
    rows = np.flatnonzero(dup).astype(np.int64)
    if rows.size == 0:
        return []
    keys = hashes[rows]
    order = np.lexsort((rows, keys))
    rows, keys = rows[order], keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    groups = np.split(rows, starts[1:])
    return sorted(groups, key=lambda g: int(g[0]))


def _names(data: AuditData, codes: Sequence[int]) -> list[str]:
    return [data.label_name(int(c)) for c in codes]


def _duplicate_flags(
    data: AuditData, groups: list[npt.NDArray[np.int64]]
) -> tuple[list[RowFlag], list[RowFlag], list[npt.NDArray[np.int64]]]:
    """Exact-duplicate flags, conflicting-duplicate flags and the conflicting groups."""
    exact: list[RowFlag] = []
    conflicting: list[RowFlag] = []
    conflict_groups: list[npt.NDArray[np.int64]] = []
    for group in groups:
        labels = data.labels[group]
        if np.all(labels == labels[0]):
            first = int(group[0])
            reason = f"same features and label as row {first}"
            # A copy with the same label is not evidence of poisoning (real tables repeat rows), so it is
            # listed for review and kept; copies that disagree on the label are quarantined instead.
            exact.extend(
                RowFlag(int(r), INTEGRITY, "exact-duplicate", EXACT_SCORE, reason, remove=False)
                for r in group[1:]
            )
            continue
        conflict_groups.append(group)
        values, counts = np.unique(labels, return_counts=True)
        top = int(np.argmax(counts))
        strict = counts[top] * 2 > group.size
        majority = data.label_name(int(values[top])) if strict else None
        names = _names(data, labels.tolist())
        for row, name in zip(group.tolist(), names, strict=True):
            others = [f"{r} ('{n}')" for r, n in zip(group.tolist(), names, strict=True) if r != row]
            shown = ", ".join(others[:EXAMPLES])
            if len(others) > EXAMPLES:
                shown += f" and {len(others) - EXAMPLES} more"
            reason = f"same features as row{'s' if len(others) > 1 else ''} {shown} but labelled '{name}'"
            if majority is None:
                reason += "; no label has a majority in the group"
            in_majority = majority is not None and name == majority
            conflicting.append(
                RowFlag(
                    int(row),
                    LABEL,
                    "conflicting-duplicate",
                    CONFLICT_MAJORITY_SCORE if in_majority else CONFLICT_SCORE,
                    reason,
                    suggested_label=None if in_majority else majority,
                )
            )
    return exact, conflicting, conflict_groups


def _shingles(text: str) -> set[str]:
    words = _WORD.findall(text.lower())[:NEAR_MAX_WORDS]
    if len(words) < SHINGLE:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def minhash_signatures(sets: Sequence[set[str]], seed: int = 1) -> npt.NDArray[np.uint64]:
    """MinHash signatures (one row of ``NEAR_PERMUTATIONS`` per non-empty set), computed in numpy.

    The same universal-hash scheme as datasketch's MinHash ((a * h + b) mod 2^61 - 1 over 32-bit shingle
    hashes), vectorised: datasketch hashes shingle by shingle with SHA-1, 5x slower on 20,000 texts.
    """
    lengths = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    flat = np.fromiter((x for s in sets for x in s), dtype=object, count=int(lengths.sum()))
    shingle_hashes = pd.util.hash_array(flat, categorize=False) & np.uint64(_MAX_HASH)
    rng = np.random.default_rng(seed)  # fixed permutations: the same text always gets the same signature
    a = rng.integers(1, _MERSENNE, NEAR_PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, _MERSENNE, NEAR_PERMUTATIONS, dtype=np.uint64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    signatures = np.empty((len(sets), NEAR_PERMUTATIONS), dtype=np.uint64)
    first = 0
    while first < len(sets):  # blocks of texts keep the shingle x permutation matrix small
        last = int(np.searchsorted(starts, starts[first] + _SHINGLE_BLOCK, side="right"))
        last = max(last, first + 1)
        lo, hi = int(starts[first]), int(starts[last - 1] + lengths[last - 1])
        with np.errstate(over="ignore"):  # uint64 products wrap, as in datasketch: still a hash family
            values = ((shingle_hashes[lo:hi, None] * a + b) % np.uint64(_MERSENNE)) & np.uint64(_MAX_HASH)
        signatures[first:last] = np.minimum.reduceat(values, starts[first:last] - lo, axis=0)
        first = last
    return signatures


def near_duplicates(
    texts: Sequence[str], rows: Sequence[int], threshold: float = NEAR_THRESHOLD
) -> list[tuple[int, int, float]]:
    """(row, earlier row it nearly copies, Jaccard similarity) for the given rows of ``texts``.

    Banded MinHash signatures (locality-sensitive hashing) propose candidate pairs; the exact Jaccard
    similarity of the two shingle sets confirms them, so the LSH's false positives never become flags.
    """
    sets = {row: _shingles(texts[row]) for row in rows}
    usable = [row for row in rows if sets[row]]
    if len(usable) < 2:
        return []
    signatures = minhash_signatures([sets[row] for row in usable])
    positions = np.asarray(usable, dtype=np.int64)
    candidates: dict[int, set[int]] = {}
    for band in range(_BANDS):
        block = pd.DataFrame(signatures[:, band * _BAND_ROWS : (band + 1) * _BAND_ROWS])
        keys = np.asarray(pd.util.hash_pandas_object(block, index=False), dtype=np.uint64)
        for group in duplicate_groups(keys):
            members = positions[group].tolist()
            for k in range(1, len(members)):
                candidates.setdefault(members[k], set()).update(members[: min(k, NEAR_MAX_CANDIDATES)])
    found: list[tuple[int, int, float]] = []
    for row in sorted(candidates):
        best: tuple[float, int] | None = None
        for other in sorted(candidates[row]):
            a, b = sets[row], sets[other]
            similarity = len(a & b) / len(a | b)
            if similarity >= threshold and (best is None or similarity > best[0]):
                best = (similarity, other)
        if best is not None:
            found.append((row, best[1], best[0]))
    return found


def _near_flags(data: AuditData, skip: set[int], seed: int) -> tuple[list[RowFlag], dict[str, Any]]:
    """Review-only flags for texts that nearly copy an earlier text."""
    texts = data.texts
    if texts is None:
        return [], {}
    candidates = [row for row in range(len(texts)) if row not in skip]
    sampled = len(candidates) > NEAR_MAX_ROWS
    if sampled:
        rng = np.random.default_rng(seed)
        candidates = sorted(rng.choice(candidates, size=NEAR_MAX_ROWS, replace=False).tolist())
    flags: list[RowFlag] = []
    for row, other, similarity in near_duplicates(texts, candidates):
        here, there = data.label_name(int(data.labels[row])), data.label_name(int(data.labels[other]))
        reason = f"near copy of row {other} ({similarity:.0%} of word 3-grams shared)"
        score = 0.5 * similarity
        if here != there:
            reason += f", which is labelled '{there}' (this row: '{here}')"
            score = 0.9
        flags.append(RowFlag(row, INTEGRITY, "near-duplicate", score, reason, remove=False))
    summary = {
        "near_duplicate_rows": len(flags),
        "near_duplicate_searched": len(candidates),
        "near_duplicate_sampled": sampled,
    }
    return flags, summary


def _drift_frames(data: AuditData, reference: AuditData) -> tuple[pd.DataFrame, pd.DataFrame]:
    if data.frame is not None and reference.frame is not None:
        return reference.frame, data.frame
    # Images (no raw frame): compare the feature matrices, column by column.
    return (
        pd.DataFrame(reference.features, columns=reference.feature_names),
        pd.DataFrame(data.features, columns=data.feature_names),
    )


def _drift(data: AuditData, reference: AuditData) -> tuple[list[Finding], dict[str, Any]]:
    from bastion.data.audit.drift import drift_report, is_numeric_column, schema_changes

    ref_frame, frame = _drift_frames(data, reference)
    schema = schema_changes(
        [str(c) for c in ref_frame.columns],
        [str(c) for c in frame.columns],
        {str(c) for c in ref_frame.columns if is_numeric_column(ref_frame[c])},
        {str(c) for c in frame.columns if is_numeric_column(frame[c])},
    )
    return drift_findings(data.path, reference.path, drift_report(ref_frame, frame), schema)


def drift_findings(
    path: str, reference: str | None, report: list[ColumnDrift], schema: dict[str, list[str]]
) -> tuple[list[Finding], dict[str, Any]]:
    """BST-DATA-007 findings and the JSON summary for a drift report; shared with the streaming audit."""
    drifted = [d for d in report if d.drifted]
    findings: list[Finding] = []
    severity = _severity(rules.DRIFT)
    for item in sorted(drifted, key=lambda d: -(d.psi or 0.0) - (d.js or 0.0))[:MAX_DRIFT_FINDINGS]:
        evidence = {
            k: v for k, v in item.to_json().items() if v is not None and k not in ("column", "reason")
        }
        findings.append(
            Finding.make(
                rules.DRIFT,
                severity,
                f"column '{item.column}' moved away from the reference: {item.reason}",
                Location(path, (f"column:{item.column}",)),
                evidence,
            )
        )
    if len(drifted) > MAX_DRIFT_FINDINGS:
        rest = [d.column for d in drifted[MAX_DRIFT_FINDINGS:]]
        findings.append(
            Finding.make(
                rules.DRIFT,
                severity,
                f"{len(rest)} more columns moved away from the reference (e.g. {', '.join(rest[:EXAMPLES])})",
                Location(path),
                {"columns": len(rest)},
            )
        )
    retyped = schema.get("retyped", [])
    if schema["missing"] or schema["added"] or retyped:
        parts = []
        if schema["missing"]:
            parts.append(f"missing here: {', '.join(schema['missing'][:EXAMPLES])}")
        if schema["added"]:
            parts.append(f"not in the reference: {', '.join(schema['added'][:EXAMPLES])}")
        if retyped:
            parts.append(f"numbers on one side, text on the other: {', '.join(retyped[:EXAMPLES])}")
        evidence = {"missing": len(schema["missing"]), "added": len(schema["added"])}
        if retyped:
            evidence["retyped"] = len(retyped)
        findings.append(
            Finding.make(
                rules.DRIFT,
                severity,
                "the columns differ from the reference (" + "; ".join(parts) + ")",
                Location(path),
                evidence,
            )
        )
    summary = {
        "reference": reference,
        "columns": len(report),
        "drifted": [d.column for d in drifted],
        "moderate": [d.column for d in report if d.level == "moderate"],
        "skipped": [d.column for d in report if d.level == "skipped"],
        "schema": schema,
        "per_column": [d.to_json() for d in report],
    }
    return findings, summary


def _examples(groups: list[npt.NDArray[np.int64]]) -> str:
    return "; ".join(", ".join(str(r) for r in g[:EXAMPLES].tolist()) for g in groups[:3])


def run_integrity_channel(
    data: AuditData, options: AuditOptions, reference: AuditData | None
) -> ChannelResult:
    """Exact, conflicting and near duplicates, and drift against ``reference`` when one is given."""
    result = ChannelResult(INTEGRITY)
    groups = duplicate_groups(row_hashes(data)) if data.n_rows else []
    exact, conflicting, conflict_groups = _duplicate_flags(data, groups)
    result.flags.extend(exact)
    result.flags.extend(conflicting)
    conflict_firsts = {int(g[0]) for g in conflict_groups}
    exact_groups = [g for g in groups if int(g[0]) not in conflict_firsts]
    if exact:
        result.findings.append(
            Finding.make(
                rules.DUPLICATES,
                _severity(rules.DUPLICATES),
                f"{len(exact)} rows repeat an earlier row with the same label "
                f"({len(exact_groups)} groups; e.g. rows {_examples(exact_groups)})",
                Location(data.path),
                {"rows": len(exact), "groups": len(exact_groups)},
            )
        )
    if conflicting:
        result.findings.append(
            Finding.make(
                rules.CONFLICTING_DUPLICATES,
                _severity(rules.CONFLICTING_DUPLICATES),
                f"{len(conflict_groups)} groups of identical rows disagree on the label "
                f"({len(conflicting)} rows; e.g. rows {_examples(conflict_groups)})",
                Location(data.path),
                {"rows": len(conflicting), "groups": len(conflict_groups)},
            )
        )
    result.summary = {
        "exact_duplicate_rows": len(exact),
        "exact_duplicate_groups": len(exact_groups),
        "conflicting_duplicate_rows": len(conflicting),
        "conflicting_duplicate_groups": len(conflict_groups),
    }
    near, near_summary = _near_flags(data, {f.row for f in (*exact, *conflicting)}, options.seed)
    result.flags.extend(near)
    result.summary.update(near_summary)
    if near:
        result.findings.append(
            Finding.make(
                rules.DUPLICATES,
                _severity(rules.DUPLICATES),
                f"{len(near)} texts nearly copy an earlier text (flagged for review, not removed)",
                Location(data.path, ("check:near-duplicate",)),
                {"rows": len(near)},
            )
        )
    if reference is not None:
        drift_findings, drift_summary = _drift(data, reference)
        result.findings.extend(drift_findings)
        result.summary["drift"] = drift_summary
    return result


def wilson_bounds(successes: int, trials: int, z: float = SOURCE_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial share; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * float(np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def source_summary(data: AuditData, removed_rows: list[int]) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Rows, flagged rows and flagged share per source, and a finding for a source that stands out."""
    if data.sources is None:
        return [], []
    names, codes = np.unique(np.asarray(data.sources).astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    removed = np.zeros(len(codes), dtype=bool)
    if removed_rows:
        removed[np.asarray(removed_rows, dtype=np.int64)] = True
    rows = np.bincount(codes, minlength=len(names))
    flagged = np.bincount(codes, weights=removed.astype(np.float64), minlength=len(names)).astype(np.int64)
    total_rows, total_flagged = int(rows.sum()), int(flagged.sum())
    summary: list[dict[str, Any]] = []
    findings: list[Finding] = []
    severity = _severity(rules.SOURCE_SKEW)
    for i, name in enumerate(names.tolist()):
        n, k = int(rows[i]), int(flagged[i])
        share = k / n if n else 0.0
        other_n, other_k = total_rows - n, total_flagged - k
        other_share = other_k / other_n if other_n else 0.0
        low, _ = wilson_bounds(k, n)
        _, other_high = wilson_bounds(other_k, other_n)
        skewed = (
            other_n > 0
            and k >= SOURCE_MIN_FLAGGED
            and share - other_share >= SOURCE_MIN_EXCESS
            and low > other_high
        )
        summary.append(
            {
                "source": name,
                "rows": n,
                "flagged": k,
                "flagged_share": round(share, 4),
                "skewed": bool(skewed),
            }
        )
        if skewed:
            findings.append(
                Finding.make(
                    rules.SOURCE_SKEW,
                    severity,
                    f"source '{name}': {k} of {n} rows flagged ({share:.1%}) against {other_share:.1%} "
                    "in the other sources",
                    Location(data.path, (f"source:{name}",)),
                    {
                        "rows": n,
                        "flagged": k,
                        "share": round(share, 4),
                        "others_share": round(other_share, 4),
                        "share_lower_bound": round(low, 4),
                        "others_upper_bound": round(other_high, 4),
                    },
                )
            )
    return summary, findings
