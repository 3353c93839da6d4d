"""GGUF (llama.cpp) files: a bounded, iterative reader of the header, metadata and tensor table.

GGUF stores no code, but model servers render its ``tokenizer.chat_template`` with Jinja2, which is
how GGUF files execute commands (CVE-2024-34359, CVE-2026-5760); every chat template goes through
:func:`bastion.scan.jinja_check.check_template`. The structure is validated too, because readers that
trust counts and nesting crash (gguf-py's recursive ``GGUFReader`` hits ``RecursionError`` on nested
arrays) or read outside the file. Only metadata is read; tensor data, often gigabytes, never is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bastion.errors import LimitExceeded
from bastion.findings import Location, Severity
from bastion.rules import OWASP_LLM03, Reference, RuleFamily
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.gguf_types import (
    GGML_TYPES,
    MAX_DIMS,
    VALUE_SIZES,
    ValueType,
    array_min_size,
    tensor_nbytes,
)
from bastion.scan.jinja_check import check_template
from bastion.scan.registry import scanner

MAX_KEY_BYTES = 65_535  # the GGUF specification's limit for keys
MAX_TENSORS = 1 << 20  # the largest real models have a few thousand tensors
MAX_KVS = 1 << 20
MAX_NAME_BYTES = 63  # llama.cpp's GGML_MAX_NAME - 1
MAX_SANE_DIMS = 64  # beyond this the tensor table is garbage; stop reading it
MAX_ARRAY_DEPTH = 8  # nesting a recursive reader survives comfortably; real files use 1
MAX_STACK = 100_000  # nesting we track at all before giving up
MAX_STRING_ITEMS = 10_000_000  # strings walked in all arrays (vocabularies have ~250k)
MAX_TEMPLATE_BYTES = 8 << 20
MAX_TEMPLATES_PER_KEY = 64
MAX_TRAILING_SCAN = 64 << 20
DEFAULT_ALIGNMENT = 32
_CHUNK = 1 << 20

_GGUF_REFS = (
    OWASP_LLM03,
    Reference("GGUF specification", "https://github.com/ggml-org/ggml/blob/master/docs/gguf.md"),
    Reference("gguf-py GGUFReader RecursionError on nested arrays (2026)"),
)
_DIFFERENTIAL = (
    "llama.cpp, gguf-py and other readers check GGUF files to different degrees; a file that one refuses "
    "and another reads differently lets a payload through the lenient path, and crafted counts and "
    "offsets crash readers or make them read outside the file."
)


_rule = RuleFamily(
    why_bad=_DIFFERENTIAL,
    use_instead=(
        "Re-convert the model with llama.cpp's `convert_hf_to_gguf.py` or gguf-py's `GGUFWriter` "
        "from a trusted source."
    ),
    false_positives="Files written by llama.cpp or gguf-py never trigger it.",
    references=_GGUF_REFS,
)


_rule(
    "BST-GGUF-001",
    "gguf-invalid-header",
    Severity.HIGH,
    "The GGUF header has an unsupported version or counts that cannot fit in the file.",
    "Checks the version (1, 2 or 3, either byte order) and that the tensor and metadata counts are "
    "possible for the file's size.",
    "A 2 KB file announcing 2^40 metadata entries, or version 7.",
)
_rule(
    "BST-GGUF-002",
    "gguf-invalid-metadata",
    Severity.HIGH,
    "A GGUF metadata entry is malformed (unknown value type, invalid key, invalid alignment or text).",
    "Checks every key (valid UTF-8, at most 65,535 bytes), every value type (0-12), `general.alignment` "
    "(a UINT32 power of two) and that chat templates are valid UTF-8.",
    "A key with value type 13, or `general.alignment = 0`.",
)
_rule(
    "BST-GGUF-003",
    "gguf-deep-array-nesting",
    Severity.HIGH,
    "A GGUF metadata array nests arrays more than 8 levels deep.",
    "Walks ARRAY values iteratively and reports nesting deeper than 8 levels (real files use one).",
    "An ARRAY of ARRAY of ARRAY … 5,000 levels deep.",
    why=(
        "Recursive readers, including gguf-py's `GGUFReader`, crash with `RecursionError` on deep nesting: "
        "a denial of service for every Python tool (scanners included) that opens the file, and a way "
        "to make a scanner error out instead of reporting the file."
    ),
)
_rule(
    "BST-GGUF-004",
    "gguf-duplicate-key",
    Severity.HIGH,
    "A GGUF metadata key or tensor name appears twice, and readers disagree on which one wins.",
    "Reports repeated metadata keys and repeated tensor names.",
    "Two `tokenizer.chat_template` entries: a scanner reading the first sees a harmless template, a "
    "server reading the last renders another.",
)
_rule(
    "BST-GGUF-005",
    "gguf-invalid-tensor-info",
    Severity.HIGH,
    "A GGUF tensor description is invalid (too many dimensions, unknown type, impossible shape).",
    "Checks each tensor's name length, dimension count (at most 4), ggml type, that the first dimension "
    "is a multiple of the type's block size, and that the element count does not overflow.",
    "A tensor with 9 dimensions or ggml type 99.",
)
_rule(
    "BST-GGUF-006",
    "gguf-tensor-out-of-bounds",
    Severity.HIGH,
    "A GGUF tensor's data lies (partly) outside the file.",
    "Computes each tensor's byte range from its offset, shape and type and checks it against the file size.",
    "A tensor whose offset points 1 TB past the end of a 4 GB file.",
)
_rule(
    "BST-GGUF-007",
    "gguf-overlapping-tensors",
    Severity.HIGH,
    "Two GGUF tensors share bytes.",
    "Sorts tensors by offset and reports any whose data begins before the previous one ends.",
    "Tensors `a` at [0, 4096) and `b` at [2048, 6144).",
)
_rule(
    "BST-GGUF-008",
    "gguf-tensor-layout",
    Severity.MEDIUM,
    "GGUF tensor data is misaligned, leaves gaps, or is followed by unreferenced bytes.",
    "Checks that tensor offsets are multiples of `general.alignment` and that tensors follow each other "
    "without gaps; trailing bytes after the last tensor are noted and scanned as content of their own.",
    "A tensor at offset 3 with alignment 32, or a zip archive appended after the last tensor.",
    why=(
        "llama.cpp refuses such files but lenient readers accept them, and bytes that belong to no tensor "
        "can carry a second payload (an appended archive is still a valid zip to other loaders)."
    ),
)


class _Truncated(Exception):
    """The file ended inside a structure."""


class _Stop(Exception):
    """The structure cannot be followed further (reported already)."""


class _Reader:
    """Sequential reads through a window over the source, so millions of tiny fields stay fast."""

    def __init__(self, source: Source, endian: str, wide: bool) -> None:
        self.source = source
        self.size = source.size
        self.pos = 0
        self.endian = endian
        self.len_fmt = "Q" if wide else "I"
        self.len_size = 8 if wide else 4
        self._buf = b""
        self._buf_start = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        rel = self.pos - self._buf_start
        if rel < 0 or rel + n > len(self._buf):
            if n > _CHUNK:
                data = self.source.read_at(self.pos, n)
                if len(data) < n:
                    raise _Truncated
                self.pos += n
                return data
            self._buf = self.source.read_at(self.pos, _CHUNK)
            self._buf_start = self.pos
            rel = 0
            if len(self._buf) < n:
                raise _Truncated
        self.pos += n
        return self._buf[rel : rel + n]

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        value: int = struct.unpack(self.endian + fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return self.unpack("I")

    def length(self) -> int:
        return self.unpack(self.len_fmt)

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` length-prefixed strings (vocabularies: hundreds of thousands of them)."""
        fmt = struct.Struct(self.endian + self.len_fmt)
        width = self.len_size
        while count:
            rel = self.pos - self._buf_start
            buf = self._buf
            if rel < 0 or rel + width > len(buf):
                self.take(width)  # refills the window (or raises _Truncated)
                self.pos -= width
                continue
            end = len(buf)
            # Walk the strings that lie wholly inside the window without leaving this loop.
            while count and rel + width <= end:
                (length,) = fmt.unpack_from(buf, rel)
                if self._buf_start + rel + width + length > self.size:
                    raise _Truncated
                rel += width + length
                count -= 1
            self.pos = self._buf_start + rel
            if rel > end:  # the last string ran past the window; its bytes exist, so just move on
                self._buf, self._buf_start = b"", self.pos

    @property
    def remaining(self) -> int:
        return self.size - self.pos


@dataclass(slots=True)
class _Tensor:
    name: str
    offset: int
    nbytes: int | None


@dataclass(slots=True)
class _State:
    location: Location
    ctx: ScanContext
    reader: _Reader
    alignment: int = DEFAULT_ALIGNMENT
    strings_seen: int = 0
    stage: str = "header"


@scanner(Format.GGUF)
def scan_gguf(source: Source, location: Location, ctx: ScanContext) -> None:
    """Validate a GGUF file's header, metadata and tensor table, and check every chat template."""
    header = source.read_at(0, 8)
    if len(header) < 8:
        ctx.incomplete(location, "file ends inside the GGUF header")
        return
    endian, version = _version(header)
    if endian is None:
        ctx.report(
            "BST-GGUF-001",
            location.at(4),
            "The GGUF version is not 1, 2 or 3; no reader agrees on how to read the file.",
            {"version": version},
        )
        return
    state = _State(location, ctx, _Reader(source, endian, wide=version >= 2))
    state.reader.pos = 8
    try:
        tensors = _read_all(state)
    except _Truncated:
        ctx.incomplete(location, f"file ends inside the GGUF {state.stage}", {"offset": state.reader.pos})
        return
    except _Stop:
        return
    _check_layout(state, tensors)


def _version(header: bytes) -> tuple[str | None, int]:
    (little,) = struct.unpack_from("<I", header, 4)
    if little in (1, 2, 3):
        return "<", little
    (big,) = struct.unpack_from(">I", header, 4)
    if big in (2, 3):
        return ">", big
    return None, little


def _read_all(state: _State) -> list[_Tensor]:
    r = state.reader
    n_tensors, n_kvs = r.length(), r.length()
    # Every KV needs a key length, a type and a byte; every tensor a name length, n_dims, type and offset.
    if (
        n_kvs * (r.len_size + 5) + n_tensors * (r.len_size + 16) > r.remaining
        and n_kvs <= MAX_KVS
        and n_tensors <= MAX_TENSORS
    ):
        raise _Truncated  # plausible counts in a short file: a truncated download, not a crafted header
    if n_kvs > MAX_KVS or n_tensors > MAX_TENSORS:
        state.ctx.report(
            "BST-GGUF-001",
            state.location.at(8),
            "The GGUF header announces more tensors or metadata entries than real files hold; it is crafted.",
            {"tensors": n_tensors, "kv_count": n_kvs, "file_size": r.size},
        )
        raise _Stop
    keys: set[str] = set()
    for index in range(n_kvs):
        state.stage = f"metadata entry {index + 1} of {n_kvs}"
        _read_kv(state, keys)
    tensors = []
    names: set[str] = set()
    for index in range(n_tensors):
        state.stage = f"tensor info {index + 1} of {n_tensors}"
        tensors.append(_read_tensor(state, names))
    return tensors


def _key(state: _State) -> str:
    r = state.reader
    start = r.pos
    length = r.length()
    if length > MAX_KEY_BYTES:
        state.ctx.report(
            "BST-GGUF-002",
            state.location.at(start),
            f"A metadata key is {length} bytes long, above the 65,535-byte limit; treat the file as crafted.",
            {"length": length},
        )
        r.skip(length)
        return f"<{length}-byte key at offset {start}>"
    raw = r.take(length)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        key = raw.decode("utf-8", "replace")
        state.ctx.report(
            "BST-GGUF-002",
            state.location.at(start),
            f"The metadata key {key[:80]!r} is not valid UTF-8; readers disagree on its name.",
            {"key": key[:200]},
        )
        return key


def _read_kv(state: _State, keys: set[str]) -> None:
    r = state.reader
    start = r.pos
    key = _key(state)
    if key in keys:
        state.ctx.report(
            "BST-GGUF-004",
            state.location.at(start),
            f"The metadata key {key[:80]!r} appears twice; readers disagree on which value wins.",
            {"key": key[:200]},
        )
    keys.add(key)
    value_type = r.u32()
    if value_type not in VALUE_SIZES and value_type not in (ValueType.STRING, ValueType.ARRAY):
        _bad_type(state, key, value_type, r.pos - 4)
    wants_text = "chat_template" in key
    if value_type == ValueType.STRING:
        at = r.pos
        text = _string(state, key, wants_text)
        if text is not None:
            check_template(text, state.location.at(at), state.ctx, key=key)
    elif value_type == ValueType.ARRAY:
        _array(state, key, wants_text)
    elif key == "general.alignment":
        _alignment(state, value_type)
    else:
        r.skip(VALUE_SIZES[value_type])


def _bad_type(state: _State, key: str, value_type: int, offset: int) -> None:
    state.ctx.report(
        "BST-GGUF-002",
        state.location.at(offset),
        f"The metadata entry {key[:80]!r} has unknown value type {value_type}; no reader can go past it.",
        {"key": key[:200], "type": value_type},
    )
    state.ctx.incomplete(state.location, f"unknown GGUF value type {value_type} in {key[:80]!r}")
    raise _Stop


def _alignment(state: _State, value_type: int) -> None:
    r = state.reader
    offset = r.pos
    fmt = _INT_FORMATS.get(value_type)
    value = r.unpack(fmt) if fmt is not None else None
    if value is None:
        r.skip(VALUE_SIZES[value_type])
    if value_type != ValueType.UINT32 or value is None or value <= 0 or value & (value - 1):
        state.ctx.report(
            "BST-GGUF-002",
            state.location.at(offset),
            "`general.alignment` is not a UINT32 power of two; readers disagree on where tensor data starts.",
            {"type": value_type, "value": value},
        )
        return
    state.alignment = value


_INT_FORMATS: dict[int, str] = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
}


def _string(state: _State, key: str, wanted: bool) -> str | None:
    r = state.reader
    length = r.length()
    if length > r.remaining:
        raise _Truncated
    if not wanted:
        r.skip(length)
        return None
    if length > MAX_TEMPLATE_BYTES:
        r.skip(length)
        state.ctx.incomplete(
            state.location, f"chat template {key[:80]!r} is larger than {MAX_TEMPLATE_BYTES} bytes"
        )
        return None
    at = r.pos
    raw = r.take(length)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        state.ctx.report(
            "BST-GGUF-002",
            state.location.at(at),
            f"The chat template {key[:80]!r} is not valid UTF-8; readers decode it differently.",
            {"key": key[:200]},
        )
        return raw.decode("utf-8", "replace")


def _array(state: _State, key: str, wants_text: bool) -> None:
    """Walk an ARRAY value (arrays of arrays included) with an explicit stack, never recursion."""
    r = state.reader
    stack: list[list[int]] = []
    deepest = 0
    checked = 0
    _push(state, stack, key)
    while stack:
        deepest = max(deepest, len(stack))
        top = stack[-1]
        element_type, remaining = top
        if remaining == 0:
            stack.pop()
        elif element_type in VALUE_SIZES:
            r.skip(VALUE_SIZES[element_type] * remaining)
            top[1] = 0
        elif element_type == ValueType.STRING and not wants_text:
            state.strings_seen += remaining
            if state.strings_seen > MAX_STRING_ITEMS:
                raise LimitExceeded(f"more than {MAX_STRING_ITEMS} strings in GGUF metadata")
            r.skip_strings(remaining)
            top[1] = 0
        elif element_type == ValueType.STRING:
            top[1] -= 1
            state.strings_seen += 1
            if state.strings_seen > MAX_STRING_ITEMS:
                raise LimitExceeded(f"more than {MAX_STRING_ITEMS} strings in GGUF metadata")
            at = r.pos
            text = _string(state, key, wants_text and checked < MAX_TEMPLATES_PER_KEY)
            if text is not None:
                checked += 1
                check_template(text, state.location.at(at), state.ctx, key=key)
        else:  # ARRAY
            top[1] -= 1
            _push(state, stack, key)
    if deepest > MAX_ARRAY_DEPTH:
        state.ctx.report(
            "BST-GGUF-003",
            state.location,
            f"The metadata entry {key[:80]!r} nests arrays {deepest} levels deep; recursive readers crash.",
            {"key": key[:200], "depth": deepest},
        )


def _push(state: _State, stack: list[list[int]], key: str) -> None:
    r = state.reader
    at = r.pos
    element_type, count = r.u32(), r.length()
    if element_type not in VALUE_SIZES and element_type not in (ValueType.STRING, ValueType.ARRAY):
        _bad_type(state, key, element_type, at)
    if count * array_min_size(element_type, r.len_size) > r.remaining:
        raise _Truncated
    if len(stack) >= MAX_STACK:
        state.ctx.report(
            "BST-GGUF-003",
            state.location.at(at),
            f"The metadata entry {key[:80]!r} nests arrays over {MAX_STACK} levels deep; readers crash.",
            {"key": key[:200], "depth": len(stack)},
        )
        state.ctx.incomplete(state.location, f"array nesting deeper than {MAX_STACK} levels in {key[:80]!r}")
        raise _Stop
    stack.append([element_type, count])


def _read_tensor(state: _State, names: set[str]) -> _Tensor:
    r = state.reader
    start = r.pos
    length = r.length()
    if length > MAX_KEY_BYTES:
        r.skip(length)  # raises _Truncated when the name cannot even fit
        state.ctx.report(
            "BST-GGUF-005",
            state.location.at(start),
            f"A tensor name is {length} bytes long; treat the file as crafted.",
            {"length": length},
        )
        name = f"<{length}-byte name at offset {start}>"
    else:
        name = r.take(length).decode("utf-8", "replace")
    here = state.location.at(start)
    if name in names:
        _report_tensor(
            state, "BST-GGUF-004", here, name, "appears twice; readers disagree on which tensor it is"
        )
    names.add(name)
    if len(name.encode()) > MAX_NAME_BYTES:
        _report_tensor(
            state, "BST-GGUF-005", here, name, "has a name longer than llama.cpp accepts", Severity.MEDIUM
        )
    n_dims = r.u32()
    if n_dims > MAX_SANE_DIMS:
        _report_tensor(state, "BST-GGUF-005", here, name, f"claims {n_dims} dimensions")
        state.ctx.incomplete(state.location, f"tensor table unreadable after {name[:80]!r}")
        raise _Stop
    dims = [r.unpack("Q") for _ in range(n_dims)]
    ggml_type, offset = r.u32(), r.unpack("Q")
    if n_dims > MAX_DIMS:
        _report_tensor(state, "BST-GGUF-005", here, name, f"has {n_dims} dimensions (at most {MAX_DIMS})")
    nbytes = tensor_nbytes(ggml_type, dims)
    if ggml_type not in GGML_TYPES:
        _report_tensor(state, "BST-GGUF-005", here, name, f"has unknown ggml type {ggml_type}")
    elif nbytes is None:
        _report_tensor(state, "BST-GGUF-005", here, name, f"has a shape {dims[:8]} impossible for its type")
    return _Tensor(name, offset, nbytes)


def _report_tensor(
    state: _State, rule: str, location: Location, name: str, problem: str, severity: Severity | None = None
) -> None:
    state.ctx.report(
        rule,
        location,
        f"Tensor {name[:80]!r} {problem}; re-convert the model.",
        {"tensor": name[:200]},
        severity=severity,
    )


def _check_layout(state: _State, tensors: list[_Tensor]) -> None:
    r, ctx, align = state.reader, state.ctx, state.alignment
    data_start = -(-r.pos // align) * align
    cursor = 0
    previous: _Tensor | None = None
    for t in sorted(tensors, key=lambda t: t.offset):
        where = state.location.at(data_start + t.offset)
        if t.offset % align:
            _report_tensor(
                state,
                "BST-GGUF-008",
                where,
                t.name,
                f"starts at offset {t.offset}, not a multiple of the alignment {align}",
            )
        end = t.offset + (t.nbytes or 0)
        if data_start + end > r.size:
            ctx.report(
                "BST-GGUF-006",
                where,
                f"Tensor {t.name[:80]!r} ends {data_start + end - r.size} bytes past the end of the file; "
                "treat it as crafted or truncated.",
                {"tensor": t.name[:200], "offset": t.offset, "bytes": t.nbytes, "file_size": r.size},
            )
        if previous is not None and t.offset < cursor:
            ctx.report(
                "BST-GGUF-007",
                where,
                f"Tensors {previous.name[:60]!r} and {t.name[:60]!r} share bytes; readers may disagree.",
                {"first": previous.name[:200], "second": t.name[:200]},
            )
        elif t.offset > -(-cursor // align) * align:
            _report_tensor(
                state, "BST-GGUF-008", where, t.name, f"follows {t.offset - cursor} unreferenced bytes"
            )
        if end >= cursor:
            previous, cursor = t, end
    _trailing(state, data_start, cursor, bool(tensors))


def _trailing(state: _State, data_start: int, cursor: int, has_tensors: bool) -> None:
    r = state.reader
    end = data_start + -(-cursor // state.alignment) * state.alignment if has_tensors else r.pos
    extra = r.size - end
    if extra <= 0 or (not has_tensors and extra < state.alignment):
        return
    state.ctx.report(
        "BST-GGUF-008",
        state.location.at(end),
        f"{extra} bytes after the last tensor belong to nothing; they are scanned on their own.",
        {"bytes": extra, "offset": end},
        severity=Severity.LOW,
    )
    if extra > MAX_TRAILING_SCAN:
        state.ctx.incomplete(state.location, f"{extra} trailing bytes are too many to examine")
        return
    state.ctx.scan_nested(
        r.source.read_at(end, extra), state.location.child("<trailing bytes>"), "trailing.bin"
    )
