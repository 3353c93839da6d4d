"""A streaming pickle machine that models values symbolically and never imports or calls anything.

It walks the opcodes of protocols 0-5 the way CPython's unpickler does, but every import becomes a
:class:`Global`, every call a :class:`Call`, and every object whose type it cannot know an
:class:`Unknown`. The result lists each import and each call with its opcode and byte offset, so a
report reads like a decompilation. Hostile input is bounded by :class:`~bastion.scan.context.Limits`;
nothing recurses on attacker-controlled nesting, and a parse error keeps everything seen before it.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from bastion.scan.context import Limits

_CHUNK = 1 << 20
_MAX_LINE = 1 << 16  # protocol 0 text arguments (numbers, module names, memo keys)
_MAX_TEXT = 1 << 24  # unicode strings larger than this are skipped, not decoded
_KEEP_BYTES = 4096  # bytes constants kept in memory; larger ones are re-read by offset when needed
_MAX_ITEMS = 256  # container items kept for evidence; the rest are counted only
_MAX_NESTED = 8  # joblib object arrays nested inside object arrays

JOBLIB_WRAPPERS = frozenset(
    {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
    }
)


class PickleError(Exception):
    """The stream stops following the pickle format at the current offset."""


class LimitHit(PickleError):
    """A hostile-input bound (opcodes, memo, stack) was reached."""


# --- symbolic values --------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Global:
    """An import: ``module.name``, or an unresolved one whose operands were not literal strings."""

    module: object
    name: object
    opcode: str
    offset: int
    resolved: bool = True

    @property
    def dotted(self) -> str:
        """``module.name`` for display."""
        if self.resolved:
            return f"{_clip(str(self.module))}.{_clip(str(self.name))}"
        return f"<computed {describe(self.module)}>.<computed {describe(self.name)}>"


@dataclass(slots=True, eq=False)
class Call:
    """A call the loader makes (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, or BUILD's ``__setstate__``).

    The same object is the call's record and its symbolic result on the stack.
    """

    func: object
    args: object
    kind: str
    offset: int
    kwargs: object = None

    @property
    def text(self) -> str:
        """The call as Python-like source, truncated for evidence."""
        return describe_call(self)


CallRecord = Call  # the name callers use for entries of PickleAnalysis.calls


@dataclass(slots=True, eq=False)
class Build:
    """``obj`` after BUILD applied ``state`` (``obj.__setstate__(state)`` or a ``__dict__`` update)."""

    obj: object
    state: object
    offset: int


@dataclass(slots=True, eq=False)
class PersistentId:
    """What ``persistent_load(value)`` returns; PyTorch storages are referenced this way."""

    value: object
    offset: int


@dataclass(slots=True, eq=False)
class Ext:
    """An object fetched from copyreg's extension registry by integer code."""

    code: int
    offset: int


@dataclass(slots=True, eq=False)
class BytesRef:
    """A bytes or bytearray constant: where it is in the stream, and its content when small."""

    offset: int
    length: int
    data: bytes | None
    mutable: bool = False


@dataclass(slots=True, eq=False)
class Unknown:
    """A value the machine cannot model (an out-of-band buffer, a huge string)."""

    reason: str


@dataclass(slots=True, eq=False)
class Container:
    """A list, dict, set or frozenset; items beyond a cap are counted, not kept."""

    kind: str  # "list" | "dict" | "set" | "frozenset"
    items: list[object] = field(default_factory=list)  # dict items are (key, value) tuples
    dropped: int = 0

    def add(self, item: object) -> None:
        """Keep ``item`` as evidence unless the cap is reached."""
        if len(self.items) < _MAX_ITEMS:
            self.items.append(item)
        else:
            self.dropped += 1

    def get(self, key: str) -> object:
        """The value of dict key ``key`` (the last one set), or an Unknown."""
        for item in reversed(self.items):
            if isinstance(item, tuple) and len(item) == 2 and item[0] == key:
                return item[1]
        return Unknown(f"no key {key!r}")


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- records ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportRecord:
    """One import opcode: GLOBAL, INST, STACK_GLOBAL or EXT1/2/4."""

    module: str
    name: str
    opcode: str
    offset: int
    resolved: bool
    value: Global | Ext


@dataclass(slots=True)
class JoblibArray:
    """Raw array bytes that joblib writes inside the pickle stream after a NumpyArrayWrapper BUILD."""

    offset: int
    length: int
    dtype: str
    shape: tuple[int, ...]
    nested: PickleAnalysis | None = None  # object arrays are a nested pickle instead of raw bytes


@dataclass(slots=True)
class PickleAnalysis:
    """Everything seen in one pickle: imports, calls, persistent ids, and how it ended."""

    start: int
    end_offset: int = 0
    protocol: int = 0
    opcodes: int = 0
    imports: list[ImportRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    persistent_ids: list[PersistentId] = field(default_factory=list)
    ext_codes: list[Ext] = field(default_factory=list)
    joblib_arrays: list[JoblibArray] = field(default_factory=list)
    result: object = None
    stopped: bool = False  # reached STOP
    error: str | None = None
    error_offset: int | None = None
    limit_hit: bool = False
    pending: list[object] = field(default_factory=list)  # values on the stack when an error struck

    @property
    def call_pending(self) -> bool:
        """True when the stream broke after a call ran or with a callable import still on the stack."""
        return self.error is not None and (
            bool(self.calls) or any(isinstance(v, Global) for v in self.pending)
        )

    def nested(self) -> list[PickleAnalysis]:
        """Analyses of pickles nested in joblib object arrays."""
        return [a.nested for a in self.joblib_arrays if a.nested is not None]


# --- describing values ----------------------------------------------------------------------------

_DESCRIBE_DEPTH = 4
_DESCRIBE_ITEMS = 6
_DESCRIBE_STR = 60
EVIDENCE_CHARS = 200


def describe(value: object, depth: int = 0) -> str:
    """Render a symbolic value as short Python-like source; bounded in depth and width (cycles end)."""
    if depth > _DESCRIBE_DEPTH:
        return "..."
    if isinstance(value, str):
        text = value if len(value) <= _DESCRIBE_STR else value[:_DESCRIBE_STR] + "..."
        return repr(text)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<{value.bit_length()}-bit integer>"  # repr of huge ints is slow or refused
    if value is None or isinstance(value, bool | int | float | complex):
        return repr(value)
    if isinstance(value, tuple):
        inner = _describe_seq(value, depth)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, Call):
        return _describe_call(value.func, value.args, value.kind, value.kwargs, depth)
    if isinstance(value, Build):
        return f"{describe(value.obj, depth + 1)}.__setstate__({describe(value.state, depth + 1)})"
    if isinstance(value, PersistentId):
        return f"persistent_load({describe(value.value, depth + 1)})"
    if isinstance(value, Ext):
        return f"copyreg._extension_registry[{value.code}]"
    if isinstance(value, BytesRef):
        shown = repr(value.data[:24]) if value.data is not None else "b'...'"
        more = "..." if value.length > 24 else ""
        return f"{'bytearray' if value.mutable else 'bytes'}({shown}{more}, {value.length} bytes)"
    if isinstance(value, Container):
        return _describe_container(value, depth)
    if isinstance(value, Unknown):
        return f"<{value.reason}>"
    return f"<{type(value).__name__}>"


def _describe_seq(items: tuple[object, ...] | list[object], depth: int) -> str:
    shown = [describe(v, depth + 1) for v in items[:_DESCRIBE_ITEMS]]
    if len(items) > _DESCRIBE_ITEMS:
        shown.append("...")
    return ", ".join(shown)


def _describe_container(value: Container, depth: int) -> str:
    more = ", ..." if value.dropped else ""
    if value.kind == "dict":
        pairs = []
        for item in value.items[:_DESCRIBE_ITEMS]:
            k, v = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
            pairs.append(f"{describe(k, depth + 1)}: {describe(v, depth + 1)}")
        if len(value.items) > _DESCRIBE_ITEMS:
            pairs.append("...")
        return "{" + ", ".join(pairs) + more + "}"
    inner = _describe_seq(value.items, depth) + more
    if value.kind == "list":
        return f"[{inner}]"
    return f"{value.kind}([{inner}])"


def _describe_call(func: object, args: object, kind: str, kwargs: object, depth: int) -> str:
    target = describe(func, depth + 1)
    if kind in ("NEWOBJ", "NEWOBJ_EX"):
        target = f"{target}.__new__"
    parts = _describe_seq(args, depth) if isinstance(args, tuple) else f"*{describe(args, depth + 1)}"
    if isinstance(kwargs, Container) and kwargs.items:
        kw = ", ".join(
            f"{k}={describe(v, depth + 1)}" if isinstance(k, str) else f"**{{{describe(k, depth + 1)}: ...}}"
            for k, v in (i for i in kwargs.items[:_DESCRIBE_ITEMS] if isinstance(i, tuple) and len(i) == 2)
        )
        parts = f"{parts}, {kw}" if parts else kw
    return f"{target}({parts})"


def describe_call(call: CallRecord) -> str:
    """A call record as source, e.g. ``os.system('echo x')``, truncated to :data:`EVIDENCE_CHARS`."""
    if call.kind == "BUILD":
        text = f"{describe(call.func)}.__setstate__({describe(call.args)})"
    else:
        text = _describe_call(call.func, call.args, call.kind, call.kwargs, 0)
    return text if len(text) <= EVIDENCE_CHARS else text[: EVIDENCE_CHARS - 3] + "..."


# --- the byte reader ------------------------------------------------------------------------------


class _Reader:
    """Buffered reads from ``stream`` between absolute offsets ``start`` and ``end``."""

    __slots__ = ("base", "buf", "end", "i", "stream")

    def __init__(self, stream: BinaryIO, start: int, end: int) -> None:
        self.stream = stream
        self.base = start  # absolute offset of buf[0]
        self.buf = b""
        self.i = 0
        self.end = end

    def tell(self) -> int:
        """Absolute offset of the next byte."""
        return self.base + self.i

    def _fill(self, n: int) -> None:
        keep = self.buf[self.i :]
        self.base += self.i
        self.i = 0
        pos = self.base + len(keep)
        want = min(max(n - len(keep), _CHUNK), self.end - pos)
        more = b""
        if want > 0:
            self.stream.seek(pos)
            more = self.stream.read(want)
        self.buf = keep + more

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or PickleError at the end of the range."""
        if self.i + n > len(self.buf):
            self._fill(n)
            if n > len(self.buf):
                raise PickleError(f"truncated: needed {n} bytes, {len(self.buf)} left")
        out = self.buf[self.i : self.i + n]
        self.i += n
        return out

    def byte(self) -> int:
        """One byte, or PickleError at the end."""
        if self.i >= len(self.buf):
            self._fill(1)
            if not self.buf:
                raise PickleError("truncated: no STOP opcode before the end of the data")
        b = self.buf[self.i]
        self.i += 1
        return b

    def at_end(self) -> bool:
        """True when no byte is left in the range."""
        if self.i < len(self.buf):
            return False
        self._fill(1)
        return not self.buf

    def readline(self) -> bytes:
        """A protocol 0 text argument up to (not including) the newline."""
        while True:
            nl = self.buf.find(b"\n", self.i)
            if nl >= 0:
                line = self.buf[self.i : nl]
                self.i = nl + 1
                return line
            have = len(self.buf) - self.i
            if have > _MAX_LINE:
                raise LimitHit(f"text argument longer than {_MAX_LINE} bytes")
            self._fill(have + _CHUNK)
            if len(self.buf) == have:
                raise PickleError("truncated: text argument without a newline")

    def skip(self, n: int) -> None:
        """Move past ``n`` bytes without reading them, or PickleError if the range is shorter."""
        if self.tell() + n > self.end:
            raise PickleError(f"truncated: {n} bytes expected, {self.end - self.tell()} left")
        if self.i + n <= len(self.buf):
            self.i += n
        else:
            self.base = self.tell() + n
            self.buf = b""
            self.i = 0


_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct(">d")
_U16 = struct.Struct("<H")


def stream_size(stream: BinaryIO) -> int:
    """The size of a seekable stream."""
    here = stream.tell()
    size = stream.seek(0, 2)
    stream.seek(here)
    return size


def analyse_pickle(
    stream: BinaryIO,
    start: int = 0,
    end: int | None = None,
    limits: Limits | None = None,
    *,
    joblib: bool = True,
) -> PickleAnalysis:
    """Analyse the pickle that starts at ``start``; stops after its STOP opcode or at ``end``.

    With ``joblib`` (the default) the raw array bytes joblib writes after a NumpyArrayWrapper BUILD
    are skipped, as ``joblib.load`` does; without it the stream is read as plain ``pickle.load`` would.
    """
    if end is None:
        end = stream_size(stream)
    reader = _Reader(stream, start, end)
    return _Machine(reader, limits or Limits(), 0, joblib).run()


def iter_pickles(
    stream: BinaryIO,
    start: int = 0,
    end: int | None = None,
    limits: Limits | None = None,
    max_pickles: int = 4096,
) -> Iterator[PickleAnalysis]:
    """Analyse consecutive (stacked) pickles until the data ends, one fails, or ``max_pickles``."""
    if end is None:
        end = stream_size(stream)
    pos = start
    for _ in range(max_pickles):
        if pos >= end:
            return
        analysis = analyse_pickle(stream, pos, end, limits)
        yield analysis
        if analysis.error is not None or analysis.end_offset <= pos:
            return
        pos = analysis.end_offset


def decode_escaped(raw: bytes) -> str:
    """Decode a protocol 0 STRING argument (a quoted Python literal) the way pickle does."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b"'", b'"'):
        raw = raw[1:-1]
    else:
        raise PickleError("the STRING opcode argument must be quoted")
    decoded, _ = codecs.escape_decode(raw)
    return bytes(decoded).decode("latin-1")


# --- the machine ----------------------------------------------------------------------------------


def _is_global(value: object, pairs: frozenset[tuple[str, str]]) -> bool:
    return isinstance(value, Global) and value.resolved and (value.module, value.name) in pairs


_Handler = Callable[[], bool | None]
_RECONSTRUCTOR = frozenset({("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")})
_NUMPY_DTYPE = frozenset({("numpy", "dtype")})


class _Machine:
    """One pickle's stack, mark stack and memo; ``run`` returns a :class:`PickleAnalysis`."""

    def __init__(self, reader: _Reader, limits: Limits, depth: int, joblib: bool = True) -> None:
        self.r = reader
        self.joblib = joblib
        self.limits = limits
        self.depth = depth
        self.stack: list[object] = []
        self.marks: list[int] = []
        self.fence = 0
        self.memo: dict[int, object] = {}
        self.off = reader.tell()
        self.a = PickleAnalysis(start=reader.tell())
        self.table = self._table()

    # stack primitives

    def push(self, value: object) -> None:
        """Push, bounded by ``max_stack``."""
        self.stack.append(value)
        if len(self.stack) > self.limits.max_stack:
            raise LimitHit(f"pickle stack deeper than {self.limits.max_stack}")

    def pop(self) -> object:
        """Pop above the current mark, as CPython does."""
        if len(self.stack) <= self.fence:
            raise PickleError("stack underflow")
        return self.stack.pop()

    def top(self) -> object:
        """The value on top of the stack, above the current mark."""
        if len(self.stack) <= self.fence:
            raise PickleError("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[object]:
        """Pop everything above the last MARK."""
        if not self.marks:
            raise PickleError("could not find MARK")
        at = self.marks.pop()
        self.fence = self.marks[-1] if self.marks else 0
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def memo_put(self, key: int, value: object) -> None:
        """Store in the memo, bounded by ``max_memo``."""
        if key < 0:
            raise PickleError("negative memo key")
        if key not in self.memo and len(self.memo) >= self.limits.max_memo:
            raise LimitHit(f"more than {self.limits.max_memo} memo entries")
        self.memo[key] = value

    def memo_get(self, key: int) -> None:
        """Push a memo entry."""
        try:
            self.push(self.memo[key])
        except KeyError:
            raise PickleError(f"memo value not found at index {key}") from None

    # records

    def record_import(self, value: Global) -> None:
        """Note an import with its opcode and offset."""
        if value.resolved:
            module, name = str(value.module), str(value.name)
        else:
            module, name = describe(value.module), describe(value.name)
        self.a.imports.append(ImportRecord(module, name, value.opcode, value.offset, value.resolved, value))

    def call(self, kind: str, func: object, args: object, kwargs: object = None) -> None:
        """Record a call and push its symbolic result."""
        value = Call(func, args, kind, self.off, kwargs)
        self.a.calls.append(value)
        self.push(value)

    # reading helpers

    def text(self, n: int, encoding: str) -> object:
        """A string of ``n`` bytes, or an Unknown for huge ones (skipped, not decoded)."""
        if n < 0:
            raise PickleError("negative string size")
        if n > _MAX_TEXT:
            self.r.skip(n)
            return Unknown(f"string of {n} bytes")
        raw = self.r.read(n)
        return raw.decode(encoding, "surrogatepass") if encoding == "utf-8" else raw.decode(encoding)

    def bytes_ref(self, n: int, mutable: bool = False) -> BytesRef:
        """A bytes constant: kept when small, else skipped and re-readable by offset."""
        if n < 0:
            raise PickleError("negative bytes size")
        offset = self.r.tell()
        if n <= _KEEP_BYTES:
            return BytesRef(offset, n, self.r.read(n), mutable)
        self.r.skip(n)
        return BytesRef(offset, n, None, mutable)

    def line(self) -> bytes:
        """A protocol 0 text argument."""
        return self.r.readline()

    # the loop

    def run(self) -> PickleAnalysis:
        """Execute opcodes symbolically until STOP, an error, or a limit."""
        a = self.a
        try:
            self._loop()
            a.stopped = True
        except LimitHit as exc:
            self._fail(str(exc), limit=True)
        except PickleError as exc:
            self._fail(str(exc))
        except (ValueError, UnicodeError, OverflowError, struct.error) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
        a.end_offset = self.r.tell()
        return a

    def _loop(self) -> None:
        # The hot path: the opcodes that dominate real checkpoints are handled inline on the buffer;
        # everything else goes through the handler table. Stack and memo growth is at most one entry
        # per opcode, so checking their bounds every 1024 opcodes keeps them bounded.
        r = self.r
        table = self.table
        stack = self.stack
        memo = self.memo
        push = stack.append
        budget = self.limits.max_opcodes
        max_stack = self.limits.max_stack
        max_memo = self.limits.max_memo
        u32 = _U32.unpack_from
        calls = self.a.calls
        pids = self.a.persistent_ids
        count = 0
        buf = r.buf
        i = r.i
        while True:
            count += 1
            if not count & 1023:
                self.a.opcodes = count
                if count > budget:
                    raise LimitHit(f"more than {budget} opcodes")
                if len(stack) > max_stack:
                    raise LimitHit(f"pickle stack deeper than {max_stack}")
                if len(memo) > max_memo:
                    raise LimitHit(f"more than {max_memo} memo entries")
            if i + 9 <= len(buf):
                op = buf[i]
                if op == 0x71 and len(stack) > self.fence:  # BINPUT
                    memo[buf[i + 1]] = stack[-1]
                    i += 2
                    continue
                if op == 0x72 and len(stack) > self.fence:  # LONG_BINPUT
                    memo[u32(buf, i + 1)[0]] = stack[-1]
                    i += 5
                    continue
                if op == 0x94 and len(stack) > self.fence:  # MEMOIZE
                    memo[len(memo)] = stack[-1]
                    i += 1
                    continue
                if op == 0x68 and buf[i + 1] in memo:  # BINGET
                    push(memo[buf[i + 1]])
                    i += 2
                    continue
                if op == 0x6A:  # LONG_BINGET
                    key = u32(buf, i + 1)[0]
                    if key in memo:
                        push(memo[key])
                        i += 5
                        continue
                elif op == 0x4B:  # BININT1
                    push(buf[i + 1])
                    i += 2
                    continue
                elif op == 0x8C:  # SHORT_BINUNICODE
                    n = buf[i + 1]
                    if i + 2 + n <= len(buf):
                        push(buf[i + 2 : i + 2 + n].decode("utf-8", "surrogatepass"))
                        i += 2 + n
                        continue
                elif op == 0x52 and len(stack) - self.fence >= 2:  # REDUCE
                    value = Call(stack[-2], stack[-1], "REDUCE", r.base + i)
                    stack[-2:] = [value]
                    calls.append(value)
                    i += 1
                    continue
                elif op == 0x51 and len(stack) > self.fence:  # BINPERSID
                    pid = PersistentId(stack[-1], r.base + i)
                    stack[-1] = pid
                    pids.append(pid)
                    i += 1
                    continue
                elif op == 0x58:  # BINUNICODE
                    n = u32(buf, i + 1)[0]
                    if i + 5 + n <= len(buf):
                        push(buf[i + 5 : i + 5 + n].decode("utf-8", "surrogatepass"))
                        i += 5 + n
                        continue
                elif op == 0x86 and len(stack) - self.fence >= 2:  # TUPLE2
                    stack[-2:] = [(stack[-2], stack[-1])]
                    i += 1
                    continue
                elif op == 0x74 and self.marks:  # TUPLE
                    at = self.marks.pop()
                    self.fence = self.marks[-1] if self.marks else 0
                    stack[at:] = [tuple(stack[at:])]
                    i += 1
                    continue
                elif op == 0x28:  # MARK
                    self.marks.append(len(stack))
                    self.fence = len(stack)
                    if len(self.marks) > max_stack:
                        raise LimitHit(f"more than {max_stack} nested marks")
                    i += 1
                    continue
                elif op == 0x29:  # EMPTY_TUPLE
                    push(())
                    i += 1
                    continue
                elif op == 0x89:  # NEWFALSE
                    push(False)
                    i += 1
                    continue
            r.i = i
            self.off = r.base + i
            self.a.opcodes = count  # exact when a handler raises or stops
            op = r.byte()
            handler = table.get(op)
            if handler is None:
                raise PickleError(f"invalid opcode 0x{op:02x}")
            if handler():
                return
            buf = r.buf
            i = r.i

    def _fail(self, message: str, limit: bool = False) -> None:
        self.a.error = message
        self.a.error_offset = self.off
        self.a.limit_hit = limit
        self.a.pending = self.stack[-64:] + list(self.memo.values())[-64:]

    def _table(self) -> dict[int, _Handler]:
        t: dict[int, _Handler] = {}
        for name in dir(self):
            if name.startswith("op_"):
                code = _OPCODES[name[3:]]
                t[code] = getattr(self, name)
        return t

    # --- opcodes: structure

    def op_MARK(self) -> None:
        self.marks.append(len(self.stack))
        self.fence = len(self.stack)
        if len(self.marks) > self.limits.max_stack:
            raise LimitHit(f"more than {self.limits.max_stack} nested marks")

    def op_STOP(self) -> bool:
        self.a.result = self.pop()
        return True

    def op_POP(self) -> None:
        # CPython pops a MARK when it sits on top of the object stack.
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()
            self.fence = self.marks[-1] if self.marks else 0
        else:
            self.pop()

    def op_POP_MARK(self) -> None:
        self.pop_mark()

    def op_DUP(self) -> None:
        self.push(self.top())

    def op_PROTO(self) -> None:
        proto = self.r.byte()
        if proto > 5:
            raise PickleError(f"unsupported pickle protocol {proto}")
        self.a.protocol = max(self.a.protocol, proto)

    def op_FRAME(self) -> None:
        # Frames only batch reads; the opcodes inside are contiguous with the rest of the stream.
        self.r.read(8)

    # --- opcodes: constants

    def op_NONE(self) -> None:
        self.push(None)

    def op_NEWTRUE(self) -> None:
        self.push(True)

    def op_NEWFALSE(self) -> None:
        self.push(False)

    def op_INT(self) -> None:
        line = self.line()
        self.push(False if line == b"00" else True if line == b"01" else int(line))

    def op_BININT(self) -> None:
        self.push(_I32.unpack(self.r.read(4))[0])

    def op_BININT1(self) -> None:
        self.push(self.r.byte())

    def op_BININT2(self) -> None:
        self.push(_U16.unpack(self.r.read(2))[0])

    def op_LONG(self) -> None:
        line = self.line()
        self.push(int(line[:-1] if line.endswith(b"L") else line))

    def op_LONG1(self) -> None:
        self.push(int.from_bytes(self.r.read(self.r.byte()), "little", signed=True))

    def op_LONG4(self) -> None:
        n = _I32.unpack(self.r.read(4))[0]
        if n < 0:
            raise PickleError("LONG pickle has negative byte count")
        if n > 1 << 16:
            self.r.skip(n)
            self.push(Unknown(f"integer of {n} bytes"))
        else:
            self.push(int.from_bytes(self.r.read(n), "little", signed=True))

    def op_FLOAT(self) -> None:
        self.push(float(self.line()))

    def op_BINFLOAT(self) -> None:
        self.push(_F64.unpack(self.r.read(8))[0])

    def op_STRING(self) -> None:
        self.push(decode_escaped(self.line()))

    def op_BINSTRING(self) -> None:
        self.push(self.text(_I32.unpack(self.r.read(4))[0], "latin-1"))

    def op_SHORT_BINSTRING(self) -> None:
        self.push(self.text(self.r.byte(), "latin-1"))

    def op_UNICODE(self) -> None:
        self.push(self.line().decode("raw-unicode-escape"))

    def op_BINUNICODE(self) -> None:
        self.push(self.text(_U32.unpack(self.r.read(4))[0], "utf-8"))

    def op_SHORT_BINUNICODE(self) -> None:
        self.push(self.text(self.r.byte(), "utf-8"))

    def op_BINUNICODE8(self) -> None:
        self.push(self.text(_U64.unpack(self.r.read(8))[0], "utf-8"))

    def op_BINBYTES(self) -> None:
        self.push(self.bytes_ref(_U32.unpack(self.r.read(4))[0]))

    def op_SHORT_BINBYTES(self) -> None:
        self.push(self.bytes_ref(self.r.byte()))

    def op_BINBYTES8(self) -> None:
        self.push(self.bytes_ref(_U64.unpack(self.r.read(8))[0]))

    def op_BYTEARRAY8(self) -> None:
        self.push(self.bytes_ref(_U64.unpack(self.r.read(8))[0], mutable=True))

    def op_NEXT_BUFFER(self) -> None:
        self.push(Unknown("out-of-band buffer"))

    def op_READONLY_BUFFER(self) -> None:
        self.top()

    # --- opcodes: containers

    def op_EMPTY_TUPLE(self) -> None:
        self.push(())

    def op_TUPLE(self) -> None:
        self.push(tuple(self.pop_mark()))

    def op_TUPLE1(self) -> None:
        self.push((self.pop(),))

    def op_TUPLE2(self) -> None:
        b = self.pop()
        self.push((self.pop(), b))

    def op_TUPLE3(self) -> None:
        c = self.pop()
        b = self.pop()
        self.push((self.pop(), b, c))

    def op_EMPTY_LIST(self) -> None:
        self.push(Container("list"))

    def op_LIST(self) -> None:
        self.push(_filled("list", self.pop_mark()))

    def op_EMPTY_DICT(self) -> None:
        self.push(Container("dict"))

    def op_DICT(self) -> None:
        items = self.pop_mark()
        self.push(_filled("dict", list(zip(items[::2], items[1::2], strict=False))))

    def op_EMPTY_SET(self) -> None:
        self.push(Container("set"))

    def op_FROZENSET(self) -> None:
        self.push(_filled("frozenset", self.pop_mark()))

    def op_APPEND(self) -> None:
        value = self.pop()
        _add(self.top(), value)

    def op_APPENDS(self) -> None:
        items = self.pop_mark()
        target = self.top()
        for item in items:
            _add(target, item)

    def op_ADDITEMS(self) -> None:
        self.op_APPENDS()

    def op_SETITEM(self) -> None:
        value = self.pop()
        key = self.pop()
        _add(self.top(), (key, value))

    def op_SETITEMS(self) -> None:
        items = self.pop_mark()
        target = self.top()
        for pair in zip(items[::2], items[1::2], strict=False):
            _add(target, pair)

    # --- opcodes: memo

    def op_PUT(self) -> None:
        self.memo_put(int(self.line()), self.top())

    def op_BINPUT(self) -> None:
        self.memo_put(self.r.byte(), self.top())

    def op_LONG_BINPUT(self) -> None:
        self.memo_put(_U32.unpack(self.r.read(4))[0], self.top())

    def op_MEMOIZE(self) -> None:
        self.memo_put(len(self.memo), self.top())

    def op_GET(self) -> None:
        self.memo_get(int(self.line()))

    def op_BINGET(self) -> None:
        self.memo_get(self.r.byte())

    def op_LONG_BINGET(self) -> None:
        self.memo_get(_U32.unpack(self.r.read(4))[0])

    # --- opcodes: imports and calls

    def op_GLOBAL(self) -> None:
        module = self.line().decode("utf-8")
        name = self.line().decode("utf-8")
        value = Global(module, name, "GLOBAL", self.off)
        self.record_import(value)
        self.push(value)

    def op_STACK_GLOBAL(self) -> None:
        name = self.pop()
        module = self.pop()
        resolved = isinstance(module, str) and isinstance(name, str)
        value = Global(module, name, "STACK_GLOBAL", self.off, resolved)
        self.record_import(value)
        self.push(value)

    def op_INST(self) -> None:
        module = self.line().decode("utf-8")
        name = self.line().decode("utf-8")
        value = Global(module, name, "INST", self.off)
        self.record_import(value)
        self.call("INST", value, tuple(self.pop_mark()))

    def op_OBJ(self) -> None:
        items = self.pop_mark()
        if not items:
            raise PickleError("OBJ without a class")
        self.call("OBJ", items[0], tuple(items[1:]))

    def op_REDUCE(self) -> None:
        args = self.pop()
        func = self.pop()
        self.call("REDUCE", func, args)

    def op_NEWOBJ(self) -> None:
        args = self.pop()
        cls = self.pop()
        self.call("NEWOBJ", cls, args)

    def op_NEWOBJ_EX(self) -> None:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        self.call("NEWOBJ_EX", cls, args, kwargs)

    def op_BUILD(self) -> None:
        state = self.pop()
        obj = self.top()
        self.a.calls.append(Call(obj, state, "BUILD", self.off))
        self.stack[-1] = Build(obj, state, self.off)
        if self.joblib and self._is_joblib_wrapper(obj):
            self.stack[-1] = self._joblib_array(state)

    def op_PERSID(self) -> None:
        value = PersistentId(self.line().decode("ascii"), self.off)
        self.a.persistent_ids.append(value)
        self.push(value)

    def op_BINPERSID(self) -> None:
        value = PersistentId(self.pop(), self.off)
        self.a.persistent_ids.append(value)
        self.push(value)

    def _ext(self, opcode: str, code: int) -> None:
        value = Ext(code, self.off)
        self.a.ext_codes.append(value)
        self.a.imports.append(
            ImportRecord("copyreg._extension_registry", str(code), opcode, self.off, False, value)
        )
        self.push(value)

    def op_EXT1(self) -> None:
        self._ext("EXT1", self.r.byte())

    def op_EXT2(self) -> None:
        self._ext("EXT2", _U16.unpack(self.r.read(2))[0])

    def op_EXT4(self) -> None:
        self._ext("EXT4", _I32.unpack(self.r.read(4))[0])

    # --- joblib arrays stored inline

    def _is_joblib_wrapper(self, obj: object) -> bool:
        if not isinstance(obj, Call):
            return False
        if _is_global(obj.func, JOBLIB_WRAPPERS):
            return True
        args = obj.args
        return (
            _is_global(obj.func, _RECONSTRUCTOR)
            and isinstance(args, tuple)
            and bool(args)
            and _is_global(args[0], JOBLIB_WRAPPERS)
        )

    def _joblib_array(self, state: object) -> object:
        """Skip the raw array bytes joblib wrote after this BUILD, or analyse an object array's pickle."""
        if not isinstance(state, Container) or state.kind != "dict":
            raise PickleError("joblib array bytes could not be located: wrapper state is not a dict")
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise PickleError("joblib array bytes could not be located: shape is not a tuple of sizes")
        descr, itemsize, has_object = _dtype_info(state.get("dtype"))
        offset = self.r.tell()
        if has_object:
            if self.depth >= _MAX_NESTED:
                raise LimitHit("joblib object arrays nested too deeply")
            nested = _Machine(self.r, self.limits, self.depth + 1, self.joblib).run()
            self.a.joblib_arrays.append(JoblibArray(offset, nested.end_offset - offset, descr, shape, nested))
            if nested.error is not None:
                raise PickleError(f"nested pickle of a joblib object array: {nested.error}")
            return Unknown("joblib object array")
        aligned = state.get("numpy_array_alignment_bytes")
        if not isinstance(aligned, Unknown) and aligned is not None:
            self.r.skip(self.r.byte())
        count = 1
        for n in shape:
            count *= n
        self.r.skip(count * itemsize)
        self.a.joblib_arrays.append(JoblibArray(offset, self.r.tell() - offset, descr, shape))
        return Unknown("joblib array")


def _filled(kind: str, items: list[object]) -> Container:
    c = Container(kind)
    for item in items:
        c.add(item)
    return c


def _add(target: object, item: object) -> None:
    # Appending to a non-container calls its append/extend/__setitem__; the class import is rated already.
    if isinstance(target, Container):
        target.add(item)


def _dtype_info(dtype: object) -> tuple[str, int, bool]:
    """(descr, itemsize, has_object) from a symbolic ``numpy.dtype(descr, False, True)`` plus its state."""
    state: object = None
    if isinstance(dtype, Build):
        state = dtype.state
        dtype = dtype.obj
    if not (isinstance(dtype, Call) and _is_global(dtype.func, _NUMPY_DTYPE)):
        raise PickleError("joblib array bytes could not be located: dtype is not numpy.dtype(...)")
    args = dtype.args
    if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
        raise PickleError("joblib array bytes could not be located: dtype has no literal descriptor")
    descr = args[0]
    flags = state[7] if isinstance(state, tuple) and len(state) >= 8 and isinstance(state[7], int) else 0
    has_object = descr.startswith("O") or bool(flags & 0x01)
    elsize = state[5] if isinstance(state, tuple) and len(state) >= 6 and isinstance(state[5], int) else -1
    if elsize > 0:
        return descr, elsize, has_object
    digits = descr.lstrip("<>|=").lstrip("bBiufcmMOSUVa?")
    if has_object:
        return descr, 8, True
    if not digits.isdigit():
        raise PickleError(f"joblib array bytes could not be located: unsupported dtype {descr!r}")
    size = int(digits)
    if descr.lstrip("<>|=").startswith("U"):
        size *= 4
    return descr, size, False


_OPCODES: dict[str, int] = {
    "MARK": 0x28, "STOP": 0x2E, "POP": 0x30, "POP_MARK": 0x31, "DUP": 0x32, "FLOAT": 0x46, "INT": 0x49,
    "BININT": 0x4A, "BININT1": 0x4B, "LONG": 0x4C, "BININT2": 0x4D, "NONE": 0x4E, "PERSID": 0x50,
    "BINPERSID": 0x51, "REDUCE": 0x52, "STRING": 0x53, "BINSTRING": 0x54, "SHORT_BINSTRING": 0x55,
    "UNICODE": 0x56, "BINUNICODE": 0x58, "APPEND": 0x61, "BUILD": 0x62, "GLOBAL": 0x63, "DICT": 0x64,
    "EMPTY_DICT": 0x7D, "APPENDS": 0x65, "GET": 0x67, "BINGET": 0x68, "INST": 0x69, "LONG_BINGET": 0x6A,
    "LIST": 0x6C, "EMPTY_LIST": 0x5D, "OBJ": 0x6F, "PUT": 0x70, "BINPUT": 0x71, "LONG_BINPUT": 0x72,
    "SETITEM": 0x73, "TUPLE": 0x74, "EMPTY_TUPLE": 0x29, "SETITEMS": 0x75, "BINFLOAT": 0x47,
    "PROTO": 0x80, "NEWOBJ": 0x81, "EXT1": 0x82, "EXT2": 0x83, "EXT4": 0x84, "TUPLE1": 0x85, "TUPLE2": 0x86,
    "TUPLE3": 0x87, "NEWTRUE": 0x88, "NEWFALSE": 0x89, "LONG1": 0x8A, "LONG4": 0x8B, "BINBYTES": 0x42,
    "SHORT_BINBYTES": 0x43, "SHORT_BINUNICODE": 0x8C, "BINUNICODE8": 0x8D, "BINBYTES8": 0x8E,
    "EMPTY_SET": 0x8F, "ADDITEMS": 0x90, "FROZENSET": 0x91, "NEWOBJ_EX": 0x92, "STACK_GLOBAL": 0x93,
    "MEMOIZE": 0x94, "FRAME": 0x95, "BYTEARRAY8": 0x96, "NEXT_BUFFER": 0x97, "READONLY_BUFFER": 0x98,
}  # fmt: skip
