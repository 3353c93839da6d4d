"""The .npy format: validate the header; object arrays carry a pickle, which is scanned as one."""

from __future__ import annotations

import ast
import re
import struct

from bastion.errors import MalformedInput
from bastion.findings import Location, Severity
from bastion.rules import Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.pickle_scan import scan_pickle_stream
from bastion.scan.registry import scanner

register(
    Rule(
        code="BST-NPY-001",
        name="numpy-object-array",
        severity=Severity.LOW,
        summary="A .npy file holds an object array, whose data is a pickle that needs allow_pickle=True.",
        what_it_does=(
            "Parses the .npy header; when the dtype holds Python objects it reports that and scans the "
            "payload with the pickle scanner."
        ),
        why_bad=(
            "`numpy.load(..., allow_pickle=True)` unpickles the payload, which can run code. The pickle "
            "scanner reports what it imports; this note explains why a pickle appears in a .npy file."
        ),
        example="`numpy.save('a.npy', numpy.array([{'a': 1}], dtype=object))`.",
        use_instead="Store numeric arrays only, or use safetensors; keep allow_pickle=False when loading.",
        false_positives="Object arrays of plain Python values are benign; the pickle findings tell which.",
        tags=("numpy",),
    )
)

_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 16  # numpy itself refuses headers over 10 KiB unless told otherwise
_DESCR = re.compile(r"^[<>|=]?([?bBhHiIlLqQpPefdgFDGSUVOMmca])(\d*)(\[[a-zA-Z0-9]+\])?$")
_SIZES = dict(
    zip(
        "?bBhHiIlLqQpPefdgFDGOMm",
        (1, 1, 1, 2, 2, 4, 4, 8, 8, 8, 8, 8, 8, 2, 4, 8, 16, 8, 16, 32, 8, 8, 8),
        strict=True,
    )
)


def _header(source: Source) -> tuple[dict[str, object], int]:
    head = source.read_at(0, 12)
    if len(head) < 10 or not head.startswith(_MAGIC):
        raise MalformedInput("not a .npy file (bad magic)")
    major = head[6]
    if major == 1:
        (length,), start = struct.unpack("<H", head[8:10]), 10
    elif major in (2, 3):
        if len(head) < 12:
            raise MalformedInput(".npy header is truncated")
        (length,), start = struct.unpack("<I", head[8:12]), 12
    else:
        raise MalformedInput(f"unsupported .npy format version {major}.{head[7]}")
    if length > _MAX_HEADER:
        raise MalformedInput(f".npy header of {length} bytes is larger than {_MAX_HEADER}")
    raw = source.read_at(start, length)
    if len(raw) < length:
        raise MalformedInput(".npy header is truncated")
    text = raw.decode("utf-8" if major == 3 else "latin-1")
    try:
        header = ast.literal_eval(text)  # literals only: never calls or imports anything
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise MalformedInput(f".npy header is not a Python literal ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise MalformedInput(".npy header must be a dict with exactly descr, fortran_order and shape")
    return header, start + length


def _has_object(descr: object) -> bool:
    """True when the dtype description holds Python objects anywhere (including structured fields)."""
    pending = [descr]
    steps = 0
    while pending:
        steps += 1
        if steps > 10_000:
            raise MalformedInput(".npy dtype description is too large")
        item = pending.pop()
        if isinstance(item, str):
            if _DESCR.match(item) and item.lstrip("<>|=").startswith("O"):
                return True
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def _itemsize(descr: object) -> int | None:
    """Bytes per element of a simple dtype string, or None when the layout is structured."""
    if not isinstance(descr, str):
        return None
    m = _DESCR.match(descr)
    if m is None:
        raise MalformedInput(f".npy dtype {descr!r} is not a valid type description")
    kind, digits = m.group(1), m.group(2)
    if digits:
        return int(digits) * (4 if kind == "U" else 1)
    if kind in "SUV":
        return None
    return _SIZES.get(kind)


@scanner(Format.NUMPY)
def scan_numpy(source: Source, location: Location, ctx: ScanContext) -> None:
    """Validate a .npy header and scan object-array payloads as pickles."""
    header, offset = _header(source)
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise MalformedInput(".npy shape must be a tuple of non-negative integers")
    if not isinstance(header["fortran_order"], bool):
        raise MalformedInput(".npy fortran_order must be True or False")
    descr = header["descr"]
    if _has_object(descr):
        ctx.report(
            "BST-NPY-001",
            location,
            "The array holds Python objects, so loading it needs allow_pickle=True and unpickles its data; "
            "keep allow_pickle=False unless the pickle findings are clean.",
            {"descr": str(descr)[:100], "shape": str(shape)[:100]},
        )
        scan_pickle_stream(source, location, ctx, start=offset, stacked=False)
        return
    itemsize = _itemsize(descr)
    if itemsize is None:
        return  # structured dtype without objects: plain bytes, nothing executes
    count = 1
    for n in shape:
        count *= n
    if source.size - offset < count * itemsize:
        ctx.incomplete(
            location,
            f"array data is truncated ({source.size - offset} bytes for {count * itemsize} expected)",
        )
