"""A streaming pickle machine that models values symbolically and never imports or calls anything.

It walks the opcodes of protocols 0-5 the way CPython's unpickler does, but every import becomes a
:class:`Global`, every call a :class:`Call`, and every object whose type it cannot know an
:class:`Unknown` (the value types live in :mod:`bastion.scan.pickle_values`). The result lists each
import and each call with its opcode and byte offset, so a report reads like a decompilation. Hostile
input is bounded by :class:`~bastion.scan.context.Limits`; nothing recurses on attacker-controlled
nesting, and a parse error keeps everything seen before it.

Speed: the stream is read in large chunks and the common opcodes are decoded in place from the chunk
with ``struct.unpack_from``; the rest go through a 256-entry table of handlers. Marks are kept the way
CPython's unpickler keeps them (a stack of stacks), so "above the last mark" needs no bookkeeping.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable, Iterator
from itertools import count as _count
from typing import BinaryIO

from bastion.scan.context import Limits
from bastion.scan.pickle_values import (
    EVIDENCE_CHARS,
    JOBLIB_WRAPPERS,
    Build,
    BytesRef,
    Call,
    CallRecord,
    Container,
    Ext,
    Global,
    ImportRecord,
    JoblibArray,
    LimitHit,
    PersistentId,
    PickleAnalysis,
    PickleError,
    Unknown,
    add_item,
    add_items,
    describe,
    describe_call,
    filled,
    is_joblib_wrapper,
    joblib_layout,
    pairs,
)

__all__ = [
    "EVIDENCE_CHARS",
    "JOBLIB_WRAPPERS",
    "Build",
    "BytesRef",
    "Call",
    "CallRecord",
    "Container",
    "Ext",
    "Global",
    "ImportRecord",
    "JoblibArray",
    "LimitHit",
    "PersistentId",
    "PickleAnalysis",
    "PickleError",
    "Unknown",
    "analyse_pickle",
    "decode_escaped",
    "describe",
    "describe_call",
    "iter_pickles",
    "stream_size",
]

_CHUNK = 1 << 20
_MAX_LINE = 1 << 16  # protocol 0 text arguments (numbers, module names, memo keys)
_MAX_TEXT = 1 << 24  # unicode strings larger than this are skipped, not decoded
_KEEP_BYTES = 4096  # bytes constants kept in memory; larger ones are re-read by offset when needed
_MAX_NESTED = 8  # joblib object arrays nested inside object arrays
_BLOCK = 1024  # opcodes between checks of the opcode, stack and memo bounds
_PENDING = 64  # stack and memo values kept as evidence when a stream breaks


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
_F64_FROM = _F64.unpack_from
_I32_FROM = _I32.unpack_from
_U16_FROM = _U16.unpack_from
_U32_FROM = _U32.unpack_from


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

_Handler = Callable[[], bool | None]


class _Machine:
    """One pickle's stack, mark stack and memo; ``run`` returns a :class:`PickleAnalysis`."""

    __slots__ = ("a", "below", "depth", "joblib", "limits", "memo", "metastack", "off", "r", "stack", "table")

    def __init__(self, reader: _Reader, limits: Limits, depth: int, joblib: bool = True) -> None:
        self.r = reader
        self.joblib = joblib
        self.limits = limits
        self.depth = depth
        self.stack: list[object] = []  # the values above the last MARK
        self.metastack: list[list[object]] = []  # the stacks below each open MARK
        self.below = 0  # values held in ``metastack``, for the stack bound
        self.memo: dict[int, object] = {}
        self.off = reader.tell()
        self.a = PickleAnalysis(start=reader.tell())
        self.table = self._table()

    # stack primitives

    def push(self, value: object) -> None:
        """Push, bounded by ``max_stack``."""
        self.stack.append(value)
        if len(self.stack) + self.below > self.limits.max_stack:
            raise LimitHit(f"pickle stack deeper than {self.limits.max_stack}")

    def pop(self) -> object:
        """Pop above the current mark, as CPython does."""
        if not self.stack:
            raise PickleError("stack underflow")
        return self.stack.pop()

    def top(self) -> object:
        """The value on top of the stack, above the current mark."""
        if not self.stack:
            raise PickleError("stack underflow")
        return self.stack[-1]

    def mark(self) -> None:
        """Open a MARK: the current values move below it."""
        if len(self.metastack) >= self.limits.max_stack:
            raise LimitHit(f"more than {self.limits.max_stack} nested marks")
        if len(self.stack) + self.below > self.limits.max_stack:
            raise LimitHit(f"pickle stack deeper than {self.limits.max_stack}")
        self.metastack.append(self.stack)
        self.below += len(self.stack)
        self.stack = []

    def pop_mark(self) -> list[object]:
        """Pop everything above the last MARK."""
        if not self.metastack:
            raise PickleError("could not find MARK")
        items = self.stack
        self.stack = self.metastack.pop()
        self.below -= len(self.stack)
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
        # The hot path. Opcodes are decoded in place from the reader's chunk: the most common ones
        # inline, the other fixed-size ones by a function from _FAST (which returns -1 to decline),
        # everything else by a handler from the table after syncing the reader. Stack and memo grow
        # by at most one entry per opcode, so checking every bound once per block keeps them bounded;
        # marks are checked as they open.
        r = self.r
        a = self.a
        memo = self.memo
        metastack = self.metastack
        table = self.table
        fast = _FAST
        max_marks = self.limits.max_stack  # bounds both mark nesting and stack depth
        u32 = _U32_FROM
        block = range(_BLOCK)
        stack = self.stack
        buf = r.buf
        i = r.i
        stop = len(buf) - 9  # fixed-size arguments (at most 8 bytes) fit when i <= stop
        in_fast = True
        done = k = 0
        try:
            for done in _count(0, _BLOCK):
                for k in block:
                    if i <= stop:
                        op = buf[i]
                        if op == 0x72 and stack:  # LONG_BINPUT
                            memo[u32(buf, i + 1)[0]] = stack[-1]
                            i += 5
                            continue
                        if op == 0x71 and stack:  # BINPUT
                            memo[buf[i + 1]] = stack[-1]
                            i += 2
                            continue
                        if op == 0x68:  # BINGET
                            key = buf[i + 1]
                            if key in memo:
                                stack.append(memo[key])
                                i += 2
                                continue
                        elif op == 0x4B:  # BININT1
                            stack.append(buf[i + 1])
                            i += 2
                            continue
                        elif op == 0x28:  # MARK
                            below = self.below + len(stack)
                            if len(metastack) < max_marks and below <= max_marks:
                                metastack.append(stack)
                                self.below = below
                                stack = []
                                i += 1
                                continue
                        elif op == 0x58:  # BINUNICODE
                            j = i + 5 + u32(buf, i + 1)[0]
                            if j <= len(buf):
                                stack.append(buf[i + 5 : j].decode("utf-8", "surrogatepass"))
                                i = j
                                continue
                        elif op == 0x74:  # TUPLE
                            if metastack:
                                items = stack
                                stack = metastack.pop()
                                self.below -= len(stack)
                                stack.append(tuple(items))
                                i += 1
                                continue
                        elif (op == 0x75 or op == 0x65) and metastack and metastack[-1]:  # SETITEMS, APPENDS
                            items = stack
                            stack = metastack.pop()
                            self.below -= len(stack)
                            add_items(stack[-1], pairs(items) if op == 0x75 else items)
                            i += 1
                            continue
                        f = fast[op]
                        if f is not None:
                            j = f(self, stack, buf, i)
                            if j >= 0:
                                i = j
                                continue
                    in_fast = False
                    r.i = i
                    self.off = r.base + i
                    a.opcodes = done + k + 1  # exact when a handler raises or stops
                    self.stack = stack
                    op = r.byte()
                    handler = table[op]
                    if handler is None:
                        raise PickleError(f"invalid opcode 0x{op:02x}")
                    if handler():
                        return
                    stack = self.stack
                    buf = r.buf
                    i = r.i
                    stop = len(buf) - 9
                    in_fast = True
                self.stack = stack
                r.i = i
                self.off = r.base + i
                a.opcodes = done + _BLOCK
                self._check_bounds()
        except BaseException:
            if in_fast:  # sync the reader and the stack so the error carries the opcode's offset
                self.stack = stack
                r.i = i
                self.off = r.base + i
                a.opcodes = done + k + 1
            raise

    def _check_bounds(self) -> None:
        limits = self.limits
        if self.a.opcodes > limits.max_opcodes:
            raise LimitHit(f"more than {limits.max_opcodes} opcodes")
        if len(self.stack) + self.below > limits.max_stack:
            raise LimitHit(f"pickle stack deeper than {limits.max_stack}")
        if len(self.memo) > limits.max_memo:
            raise LimitHit(f"more than {limits.max_memo} memo entries")

    def _fail(self, message: str, limit: bool = False) -> None:
        self.a.error = message
        self.a.error_offset = self.off
        self.a.limit_hit = limit
        self.a.pending = self._pending_values() + list(self.memo.values())[-_PENDING:]

    def _pending_values(self) -> list[object]:
        """The top values of the whole stack, across marks."""
        values = self.stack[-_PENDING:]
        for part in reversed(self.metastack):
            if len(values) >= _PENDING:
                break
            values = part[-(_PENDING - len(values)) :] + values
        return values

    def _table(self) -> list[_Handler | None]:
        t: list[_Handler | None] = [None] * 256
        for name, code in _OPCODES.items():
            t[code] = getattr(self, f"op_{name}")
        return t

    # --- opcodes: structure

    def op_MARK(self) -> None:
        self.mark()

    def op_STOP(self) -> bool:
        self.a.result = self.pop()
        return True

    def op_POP(self) -> None:
        # CPython pops a MARK when it sits on top of the object stack.
        if not self.stack and self.metastack:
            self.pop_mark()
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
        self.push(filled("list", self.pop_mark()))

    def op_EMPTY_DICT(self) -> None:
        self.push(Container("dict"))

    def op_DICT(self) -> None:
        self.push(filled("dict", pairs(self.pop_mark())))

    def op_EMPTY_SET(self) -> None:
        self.push(Container("set"))

    def op_FROZENSET(self) -> None:
        self.push(filled("frozenset", self.pop_mark()))

    def op_APPEND(self) -> None:
        value = self.pop()
        add_item(self.top(), value)

    def op_APPENDS(self) -> None:
        items = self.pop_mark()
        add_items(self.top(), items)

    def op_ADDITEMS(self) -> None:
        self.op_APPENDS()

    def op_SETITEM(self) -> None:
        value = self.pop()
        key = self.pop()
        add_item(self.top(), (key, value))

    def op_SETITEMS(self) -> None:
        items = self.pop_mark()
        add_items(self.top(), pairs(items))

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
        if self.joblib and is_joblib_wrapper(obj):
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

    def _joblib_array(self, state: object) -> object:
        """Skip the raw array bytes joblib wrote after this BUILD, or analyse an object array's pickle."""
        layout = joblib_layout(state)
        offset = self.r.tell()
        if layout.has_object:
            if self.depth >= _MAX_NESTED:
                raise LimitHit("joblib object arrays nested too deeply")
            nested = _Machine(self.r, self.limits, self.depth + 1, self.joblib).run()
            length = nested.end_offset - offset
            self.a.joblib_arrays.append(JoblibArray(offset, length, layout.descr, layout.shape, nested))
            if nested.error is not None:
                raise PickleError(f"nested pickle of a joblib object array: {nested.error}")
            return Unknown("joblib object array")
        if layout.aligned:
            self.r.skip(self.r.byte())
        self.r.skip(layout.nbytes)
        self.a.joblib_arrays.append(JoblibArray(offset, self.r.tell() - offset, layout.descr, layout.shape))
        return Unknown("joblib array")


# --- in-place decoders for the common fixed-size opcodes --------------------------------------------
# Each takes the machine, its current stack, the reader's chunk and the opcode's index in it (with at
# least 8 argument bytes after the opcode), and returns the index of the next opcode, or -1 to leave
# the opcode to the table handler (stack underflow, a value not in the chunk, a memo miss), which
# raises the precise error. None of them can raise.

_Fast = Callable[[_Machine, list[object], bytes, int], int]


def _push_const(value: object) -> _Fast:
    """A decoder for an opcode that pushes an immutable constant."""

    def decode(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
        stack.append(value)
        return i + 1

    return decode


def _push_new(kind: str) -> _Fast:
    """A decoder for an opcode that pushes a new empty container."""

    def decode(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
        stack.append(Container(kind))
        return i + 1

    return decode


def _push_number(unpack_from: Callable[[bytes, int], tuple[int | float]], size: int) -> _Fast:
    """A decoder for an opcode whose fixed-size argument is the number it pushes."""

    def decode(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
        stack.append(unpack_from(buf, i + 1)[0])
        return i + 1 + size

    return decode


def _f_long1(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    j = i + 2 + buf[i + 1]
    if j > len(buf):
        return -1
    stack.append(int.from_bytes(buf[i + 2 : j], "little", signed=True))
    return j


def _f_short_binunicode(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    j = i + 2 + buf[i + 1]
    if j > len(buf):
        return -1
    try:
        stack.append(buf[i + 2 : j].decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        return -1
    return j


def _f_short_binbytes(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    j = i + 2 + buf[i + 1]
    if j > len(buf):
        return -1
    stack.append(BytesRef(m.r.base + i + 2, j - i - 2, buf[i + 2 : j]))
    return j


def _f_binbytes(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    n: int = _U32_FROM(buf, i + 1)[0]
    j = i + 5 + n
    if n > _KEEP_BYTES or j > len(buf):
        return -1
    stack.append(BytesRef(m.r.base + i + 5, n, buf[i + 5 : j]))
    return j


def _f_tuple1(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if not stack:
        return -1
    stack[-1] = (stack[-1],)
    return i + 1


def _f_tuple2(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 2:
        return -1
    stack[-2:] = [(stack[-2], stack[-1])]
    return i + 1


def _f_tuple3(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 3:
        return -1
    stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
    return i + 1


def _f_reduce(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 2:
        return -1
    value = Call(stack[-2], stack[-1], "REDUCE", m.r.base + i)
    stack[-2:] = [value]
    m.a.calls.append(value)
    return i + 1


def _f_binpersid(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if not stack:
        return -1
    value = PersistentId(stack[-1], m.r.base + i)
    stack[-1] = value
    m.a.persistent_ids.append(value)
    return i + 1


def _f_memoize(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if not stack:
        return -1
    m.memo[len(m.memo)] = stack[-1]
    return i + 1


def _f_long_binget(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    key = _U32_FROM(buf, i + 1)[0]
    if key not in m.memo:
        return -1
    stack.append(m.memo[key])
    return i + 5


def _f_append(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 2:
        return -1
    value = stack.pop()
    add_item(stack[-1], value)
    return i + 1


def _f_setitem(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 3:
        return -1
    value = stack.pop()
    key = stack.pop()
    add_item(stack[-1], (key, value))
    return i + 1


def _f_frame(m: _Machine, stack: list[object], buf: bytes, i: int) -> int:
    # Frames only batch reads; the opcodes inside are contiguous with the rest of the stream.
    return i + 9


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


def _fast_table() -> list[_Fast | None]:
    decoders: dict[str, _Fast] = {
        "NONE": _push_const(None), "NEWTRUE": _push_const(True), "NEWFALSE": _push_const(False),
        "EMPTY_TUPLE": _push_const(()), "EMPTY_DICT": _push_new("dict"), "EMPTY_LIST": _push_new("list"),
        "EMPTY_SET": _push_new("set"), "BININT": _push_number(_I32_FROM, 4),
        "BININT2": _push_number(_U16_FROM, 2), "BINFLOAT": _push_number(_F64_FROM, 8), "LONG1": _f_long1,
        "SHORT_BINUNICODE": _f_short_binunicode, "SHORT_BINBYTES": _f_short_binbytes,
        "BINBYTES": _f_binbytes, "TUPLE1": _f_tuple1, "TUPLE2": _f_tuple2, "TUPLE3": _f_tuple3,
        "REDUCE": _f_reduce, "BINPERSID": _f_binpersid, "MEMOIZE": _f_memoize,
        "LONG_BINGET": _f_long_binget, "APPEND": _f_append, "SETITEM": _f_setitem, "FRAME": _f_frame,
    }  # fmt: skip
    table: list[_Fast | None] = [None] * 256
    for name, fn in decoders.items():
        table[_OPCODES[name]] = fn
    return table


_FAST = _fast_table()
