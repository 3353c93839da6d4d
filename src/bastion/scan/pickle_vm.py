"""A streaming pickle machine that models values symbolically and never imports or calls anything.

It walks the opcodes of protocols 0-5 the way CPython's unpickler does, but every import becomes a
:class:`Global`, every call a :class:`Call`, and every object whose type it cannot know an
:class:`Unknown` (the value types live in :mod:`bastion.scan.pickle_values`). The result lists each
import and each call with its opcode and byte offset, so a report reads like a decompilation. Hostile
input is bounded by :class:`~bastion.scan.context.Limits`; nothing recurses on attacker-controlled
nesting, and a parse error keeps everything seen before it.

Speed: the stream is read in large chunks and the common opcodes are decoded in place from the chunk
with ``struct.unpack_from``; the rest go through the 256-entry tables of decoders and handlers in
:mod:`bastion.scan.pickle_ops`. Marks are kept the way CPython's unpickler keeps them (a stack of
stacks), so "above the last mark" needs no bookkeeping.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from itertools import count as _count
from typing import BinaryIO

from bastion.scan.context import Limits
from bastion.scan.pickle_ops import FAST, HANDLERS, KEEP_BYTES, decode_escaped
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
    add_items,
    describe,
    describe_call,
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


_U32_FROM = struct.Struct("<I").unpack_from


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
    return Machine(reader, limits or Limits(), 0, joblib).run()


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


# --- the machine ----------------------------------------------------------------------------------


class Machine:
    """One pickle's stack, mark stack and memo; ``run`` returns a :class:`PickleAnalysis`."""

    __slots__ = ("a", "below", "depth", "joblib", "limits", "memo", "metastack", "off", "r", "stack")

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
        if n <= KEEP_BYTES:
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
        # inline, the other fixed-size ones by a function from FAST (which returns -1 to decline),
        # everything else by a handler from the table after syncing the reader. Stack and memo grow
        # by at most one entry per opcode, so checking every bound once per block keeps them bounded;
        # marks are checked as they open.
        r = self.r
        a = self.a
        memo = self.memo
        metastack = self.metastack
        table = HANDLERS
        fast = FAST
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
                    if handler(self):
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

    # joblib arrays stored inline

    def joblib_array(self, state: object) -> object:
        """Skip the raw array bytes joblib wrote after this BUILD, or analyse an object array's pickle."""
        layout = joblib_layout(state)
        offset = self.r.tell()
        if layout.has_object:
            if self.depth >= _MAX_NESTED:
                raise LimitHit("joblib object arrays nested too deeply")
            nested = Machine(self.r, self.limits, self.depth + 1, self.joblib).run()
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
