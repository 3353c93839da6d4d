"""Strict validation of safetensors files: the header is parsed and checked, the tensor bytes never read.

A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping tensor
names to ``{dtype, shape, data_offsets}`` (plus an optional ``__metadata__`` string map), then the
tensor bytes. The format cannot run code, so what matters is that every reader sees the same tensors:
a header that different parsers read differently (duplicate keys, overlapping or out-of-bounds
offsets) or bytes outside any tensor (room for a second, hidden payload) are what we report.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.findings import Location, Severity
from bastion.rules import OWASP_LLM03, Reference, RuleFamily
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.registry import scanner

# The reference implementation refuses headers above 100 MB; anything larger is a crafted file.
MAX_HEADER_BYTES = 100_000_000
# Training tools store run notes in __metadata__ (kilobytes); megabytes of it hide something.
MAX_METADATA_BYTES = 16 << 20
# Bytes after the last tensor are scanned as content of their own up to this size.
MAX_TRAILING_SCAN = 64 << 20

# Bits per element of every dtype the reference implementation knows (sub-byte types included).
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
}

_ST_REFS = (
    OWASP_LLM03,
    Reference("safetensors format specification", "https://github.com/huggingface/safetensors"),
)
_DIFFERENTIAL = (
    "Different safetensors readers (the Rust reference, hand-written parsers in other tools, memory-mapping "
    "loaders) would see different tensors in this file, so what a scanner or reviewer approved is not what "
    "a model server loads. Crafted headers are also how parser crashes and out-of-bounds reads are triggered."
)
_REEXPORT = (
    "Re-export the weights with the `safetensors` library (`save_file`) from a trusted copy of the model."
)


_rule = RuleFamily(
    why_bad=_DIFFERENTIAL,
    use_instead=_REEXPORT,
    false_positives="Files written by the `safetensors` library never trigger it.",
    references=_ST_REFS,
)


_rule(
    "BST-ST-001",
    "safetensors-header-length",
    Severity.HIGH,
    "The safetensors header length does not fit the file or exceeds the 100 MB limit.",
    "Reads the 8-byte little-endian header length and checks that it is at least 2, at most 100 MB, and "
    "that the header it announces lies inside the file.",
    "A 1 KB file whose first 8 bytes announce a header of 2^63 bytes.",
    "Readers that trust the length allocate or read past the end of the file (a crash or denial of service), "
    "while others stop early, so scanners and loaders disagree about what the file holds.",
)
_rule(
    "BST-ST-002",
    "safetensors-header-not-json",
    Severity.HIGH,
    "The safetensors header is not a valid UTF-8 JSON object.",
    "Decodes the header as strict UTF-8 and parses it as a JSON object whose values are objects.",
    "A header with invalid UTF-8 bytes, a JSON array, trailing garbage or a tensor entry that is a string.",
)
_rule(
    "BST-ST-003",
    "safetensors-duplicate-key",
    Severity.HIGH,
    "A key appears twice in the safetensors header, and readers disagree on which one wins.",
    "Parses the header keeping every key/value pair and reports any key repeated in the same object.",
    '`{"w": {...offsets [0, 16]...}, "w": {...offsets [16, 32]...}}`: one reader loads the first tensor, '
    "another the second.",
)
_rule(
    "BST-ST-004",
    "safetensors-unknown-dtype",
    Severity.HIGH,
    "A tensor declares a dtype that the safetensors format does not define.",
    "Checks each tensor's dtype against the dtypes of the reference implementation (BOOL, U8 … F64, the F8, "
    "F6 and F4 families, C64).",
    '`"dtype": "OBJ"` or `"dtype": "f32"`.',
)
_rule(
    "BST-ST-005",
    "safetensors-invalid-tensor-entry",
    Severity.HIGH,
    "A tensor entry's shape or data offsets are malformed or disagree with its dtype.",
    "Checks that shape is a list of non-negative integers, data_offsets is [begin, end] with end >= begin, "
    "and that end - begin equals the element count times the dtype size.",
    '`"shape": [2, 2], "dtype": "F32", "data_offsets": [0, 8]` (16 bytes expected).',
)
_rule(
    "BST-ST-006",
    "safetensors-offsets-out-of-bounds",
    Severity.HIGH,
    "A tensor's data offsets point past the end of the file.",
    "Checks that every tensor's byte range lies inside the data section that follows the header.",
    "A tensor at offsets [0, 4096] in a file with 64 data bytes.",
)
_rule(
    "BST-ST-007",
    "safetensors-overlapping-tensors",
    Severity.HIGH,
    "Two tensors share bytes in the safetensors data section.",
    "Sorts the tensors by offset and reports any range that starts before the previous one ends.",
    "Tensors `a` at [0, 16] and `b` at [8, 24].",
)
_rule(
    "BST-ST-008",
    "safetensors-unreferenced-bytes",
    Severity.MEDIUM,
    "The safetensors data section has bytes that belong to no tensor (a gap or trailing data).",
    "Checks that the tensors cover the data section contiguously from its start to the end of the file, "
    "as the specification requires; trailing bytes are also scanned as content of their own.",
    "A valid file with a zip archive or a pickle appended after the last tensor (a polyglot).",
    "The reference loader refuses such files, but lenient readers accept them, and the unreferenced bytes "
    "can carry a second payload: a zip appended to a safetensors file is still a valid zip to `torch.load`.",
)
_rule(
    "BST-ST-009",
    "safetensors-invalid-metadata",
    Severity.HIGH,
    "The safetensors `__metadata__` entry is not a map of strings to strings, or is unreasonably large.",
    "Checks that `__metadata__` is an object whose values are all strings, and that it stays under 16 MiB.",
    '`"__metadata__": {"format": {"nested": 1}}` or tens of megabytes of metadata.',
)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    begin: int
    end: int


class _Pairs(list[tuple[str, Any]]):
    """The key/value pairs of one JSON object, in order, duplicates kept."""


def _keep_pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    return _Pairs(pairs)


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN and Infinity; strict JSON readers (the Rust reference) do not.
    raise ValueError(f"{name} is not valid JSON")


@scanner(Format.SAFETENSORS)
def scan_safetensors(source: Source, location: Location, ctx: ScanContext) -> None:
    """Validate a safetensors header against the specification without reading tensor bytes."""
    prefix = source.read_at(0, 8)
    if len(prefix) < 8:
        ctx.incomplete(location, "file shorter than the 8-byte safetensors header length")
        return
    (length,) = struct.unpack("<Q", prefix)
    if not _check_length(length, source.size, location, ctx):
        return
    raw = source.read_at(8, length)
    if len(raw) < length:
        ctx.incomplete(location, "header shorter than announced")
        return
    header = _parse_header(raw, location, ctx)
    if header is None:
        return
    data_size = source.size - 8 - length
    entries = _check_entries(header, data_size, location, ctx)
    _check_layout(entries, data_size, 8 + length, location, ctx)
    _scan_trailing(source, entries, data_size, 8 + length, location, ctx)


def _check_length(length: int, size: int, location: Location, ctx: ScanContext) -> bool:
    evidence = {"header_length": length, "file_size": size}
    if length < 2:
        ctx.report(
            "BST-ST-001", location, "The header length is below 2 bytes; re-export the file.", evidence
        )
        return False
    if length > MAX_HEADER_BYTES:
        ctx.report(
            "BST-ST-001",
            location,
            "The header length exceeds the 100 MB limit of the reference reader; treat the file as crafted.",
            evidence,
        )
        return False
    if length > size - 8:
        ctx.report(
            "BST-ST-001",
            location,
            "The header length runs past the end of the file; treat the file as crafted or truncated.",
            evidence,
        )
        return False
    return True


def _parse_header(raw: bytes, location: Location, ctx: ScanContext) -> _Pairs | None:
    here = location.at(8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        ctx.report(
            "BST-ST-002",
            here,
            "The header is not valid UTF-8; re-export the file.",
            {"error": exc.reason, "position": exc.start},
        )
        return None
    try:
        parsed = json.loads(text, object_pairs_hook=_keep_pairs, parse_constant=_no_constants)
    except RecursionError:
        ctx.report(
            "BST-ST-002", here, "The header JSON is nested too deeply to parse; treat the file as crafted."
        )
        return None
    except ValueError as exc:
        ctx.report(
            "BST-ST-002", here, "The header is not valid JSON; re-export the file.", {"error": str(exc)[:200]}
        )
        return None
    if not isinstance(parsed, _Pairs):
        ctx.report(
            "BST-ST-002",
            here,
            "The header is not a JSON object; re-export the file.",
            {"type": type(parsed).__name__},
        )
        return None
    _report_duplicates(parsed, here, ctx, "")
    return parsed


def _report_duplicates(pairs: _Pairs, location: Location, ctx: ScanContext, path: str) -> None:
    # Iterative walk: the header may nest objects deeply.
    stack: list[tuple[_Pairs, str]] = [(pairs, path)]
    while stack:
        obj, where = stack.pop()
        seen: set[str] = set()
        for key, value in obj:
            if key in seen:
                ctx.report(
                    "BST-ST-003",
                    location,
                    f"The key {key[:100]!r} appears twice in the header; readers disagree on which wins.",
                    {"key": key[:200], "in": where or "<top level>"},
                )
            seen.add(key)
            if isinstance(value, _Pairs):
                stack.append((value, f"{where}.{key}" if where else key))


def _check_entries(header: _Pairs, data_size: int, location: Location, ctx: ScanContext) -> list[_Entry]:
    here = location.at(8)
    entries: list[_Entry] = []
    for name, value in header:
        if name == "__metadata__":
            _check_metadata(value, here, ctx)
            continue
        if not isinstance(value, _Pairs):
            ctx.report(
                "BST-ST-002",
                here,
                f"The header entry {name!r} is not an object; re-export the file.",
                {"tensor": name[:200], "type": type(value).__name__},
            )
            continue
        entry = _check_tensor(name, dict(value), data_size, here, ctx)
        if entry is not None:
            entries.append(entry)
    return entries


def _check_metadata(value: object, location: Location, ctx: ScanContext) -> None:
    if not isinstance(value, _Pairs):
        ctx.report(
            "BST-ST-009",
            location,
            "`__metadata__` is not an object of strings; the reference reader refuses it.",
            {"type": type(value).__name__},
        )
        return
    total = 0
    for key, item in value:
        if not isinstance(item, str):
            ctx.report(
                "BST-ST-009",
                location,
                f"`__metadata__` value {key!r} is not a string; the reference reader refuses it.",
                {"key": key[:200], "type": type(item).__name__},
            )
        total += len(key) + (len(item) if isinstance(item, str) else 0)
    if total > MAX_METADATA_BYTES:
        ctx.report(
            "BST-ST-009",
            location,
            "`__metadata__` is larger than 16 MiB; inspect what it carries.",
            {"bytes": total},
            severity=Severity.MEDIUM,
        )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tensor(
    name: str, info: dict[str, Any], data_size: int, location: Location, ctx: ScanContext
) -> _Entry | None:
    short = name[:200]
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        ctx.report(
            "BST-ST-004",
            location,
            f"Tensor {short!r} has unknown dtype {str(dtype)[:40]!r}; readers cannot agree on its bytes.",
            {"tensor": short, "dtype": str(dtype)[:40]},
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        _bad_entry(
            ctx,
            location,
            short,
            "its shape is not a list of non-negative integers",
            {"shape": str(shape)[:80]},
        )
        shape = None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        _bad_entry(
            ctx,
            location,
            short,
            "data_offsets is not a pair of non-negative integers",
            {"data_offsets": str(offsets)[:80]},
        )
        return None
    begin, end = offsets
    if end < begin:
        _bad_entry(
            ctx, location, short, "data_offsets ends before it begins", {"data_offsets": f"[{begin}, {end}]"}
        )
        return None
    if end > data_size:
        ctx.report(
            "BST-ST-006",
            location,
            f"Tensor {short!r} ends {end - data_size} bytes past the end of the file; treat it as crafted.",
            {"tensor": short, "data_offsets": f"[{begin}, {end}]", "data_size": data_size},
        )
    if bits is not None and shape is not None:
        _check_size(short, shape, bits, end - begin, location, ctx)
    return _Entry(name, begin, end)


def _check_size(
    name: str, shape: list[int], bits: int, length: int, location: Location, ctx: ScanContext
) -> None:
    # Bound the product: anything past 2**64 elements already disagrees with every real length.
    count = 1
    for dim in shape:
        count *= dim
        if count > 1 << 64:
            break
    total_bits = count * bits
    expected = math.ceil(total_bits / 8)
    if total_bits % 8 or expected != length:
        _bad_entry(
            ctx,
            location,
            name,
            f"its byte length {length} differs from shape x dtype size "
            f"({expected if count <= 1 << 64 else 'overflow'})",
            {"shape": str(shape)[:80], "bytes": length},
        )


def _bad_entry(
    ctx: ScanContext, location: Location, name: str, problem: str, evidence: dict[str, object]
) -> None:
    ctx.report(
        "BST-ST-005",
        location,
        f"Tensor {name!r} is malformed: {problem}; re-export the file.",
        {"tensor": name, **evidence},
    )


def _check_layout(
    entries: list[_Entry], data_size: int, data_start: int, location: Location, ctx: ScanContext
) -> None:
    cursor = 0
    previous: _Entry | None = None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if previous is not None and entry.begin < previous.end:
            ctx.report(
                "BST-ST-007",
                location.at(data_start + entry.begin),
                f"Tensors {previous.name[:100]!r} and {entry.name[:100]!r} share bytes; readers may load "
                "different values for them.",
                {"first": previous.name[:200], "second": entry.name[:200]},
            )
        elif entry.begin > cursor:
            _report_gap(
                ctx,
                location,
                data_start + cursor,
                entry.begin - cursor,
                f"before tensor {entry.name[:100]!r}",
            )
        if previous is None or entry.end > previous.end:
            previous = entry
        cursor = max(cursor, entry.end)
    if data_size > cursor:
        _report_gap(ctx, location, data_start + cursor, data_size - cursor, "after the last tensor")


def _report_gap(ctx: ScanContext, location: Location, offset: int, size: int, where: str) -> None:
    ctx.report(
        "BST-ST-008",
        location.at(offset),
        f"{size} bytes {where} belong to no tensor; the reference reader refuses the file and the bytes "
        "may hide a second payload.",
        {"bytes": size, "where": where, "offset": offset},
    )


def _scan_trailing(
    source: Source,
    entries: list[_Entry],
    data_size: int,
    data_start: int,
    location: Location,
    ctx: ScanContext,
) -> None:
    end = max((min(e.end, data_size) for e in entries), default=0)
    size = data_size - end
    if size <= 0:
        return
    if size > MAX_TRAILING_SCAN:
        ctx.incomplete(location, f"{size} trailing bytes after the last tensor are too many to examine")
        return
    ctx.scan_nested(
        source.read_at(data_start + end, size), location.child("<trailing bytes>"), "trailing.bin"
    )
