"""The opcode handlers of the symbolic pickle machine and the 256-entry tables that dispatch to them.

:data:`HANDLERS` maps each opcode byte to a function that executes it on a
:class:`~bastion.scan.pickle_vm.Machine` (None for an invalid opcode); handlers read their arguments
through the machine's reader and raise PickleError or LimitHit. :data:`FAST` maps the common
fixed-size opcodes to decoders that work in place on the reader's chunk, for the main loop's hot path;
they never raise. Nothing here imports or calls anything named by the pickle.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.scan.pickle_values import (
    Build,
    BytesRef,
    Call,
    Container,
    Ext,
    Global,
    ImportRecord,
    PersistentId,
    PickleError,
    Unknown,
    add_item,
    add_items,
    filled,
    is_joblib_wrapper,
    pairs,
)

if TYPE_CHECKING:
    from bastion.scan.pickle_vm import Machine

__all__ = ["FAST", "HANDLERS", "KEEP_BYTES", "OPCODES", "decode_escaped"]

KEEP_BYTES = 4096  # bytes constants kept in memory; larger ones are re-read by offset when needed

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct(">d")
_U16 = struct.Struct("<H")
_F64_FROM = _F64.unpack_from
_I32_FROM = _I32.unpack_from
_U16_FROM = _U16.unpack_from
_U32_FROM = _U32.unpack_from

_Handler = Callable[["Machine"], bool | None]


def decode_escaped(raw: bytes) -> str:
    """Decode a protocol 0 STRING argument (a quoted Python literal) the way pickle does."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b"'", b'"'):
        raw = raw[1:-1]
    else:
        raise PickleError("the STRING opcode argument must be quoted")
    decoded, _ = codecs.escape_decode(raw)
    return bytes(decoded).decode("latin-1")


# --- opcode handlers: each executes one opcode on the machine; STOP returns True ----------------------

# structure


def op_MARK(m: Machine) -> None:
    m.mark()


def op_STOP(m: Machine) -> bool:
    m.a.result = m.pop()
    return True


def op_POP(m: Machine) -> None:
    # CPython pops a MARK when it sits on top of the object stack.
    if not m.stack and m.metastack:
        m.pop_mark()
    else:
        m.pop()


def op_POP_MARK(m: Machine) -> None:
    m.pop_mark()


def op_DUP(m: Machine) -> None:
    m.push(m.top())


def op_PROTO(m: Machine) -> None:
    proto = m.r.byte()
    if proto > 5:
        raise PickleError(f"unsupported pickle protocol {proto}")
    m.a.protocol = max(m.a.protocol, proto)


def op_FRAME(m: Machine) -> None:
    # Frames only batch reads; the opcodes inside are contiguous with the rest of the stream.
    m.r.read(8)


# constants


def op_NONE(m: Machine) -> None:
    m.push(None)


def op_NEWTRUE(m: Machine) -> None:
    m.push(True)


def op_NEWFALSE(m: Machine) -> None:
    m.push(False)


def op_INT(m: Machine) -> None:
    line = m.line()
    m.push(False if line == b"00" else True if line == b"01" else int(line))


def op_BININT(m: Machine) -> None:
    m.push(_I32.unpack(m.r.read(4))[0])


def op_BININT1(m: Machine) -> None:
    m.push(m.r.byte())


def op_BININT2(m: Machine) -> None:
    m.push(_U16.unpack(m.r.read(2))[0])


def op_LONG(m: Machine) -> None:
    line = m.line()
    m.push(int(line[:-1] if line.endswith(b"L") else line))


def op_LONG1(m: Machine) -> None:
    m.push(int.from_bytes(m.r.read(m.r.byte()), "little", signed=True))


def op_LONG4(m: Machine) -> None:
    n = _I32.unpack(m.r.read(4))[0]
    if n < 0:
        raise PickleError("LONG pickle has negative byte count")
    if n > 1 << 16:
        m.r.skip(n)
        m.push(Unknown(f"integer of {n} bytes"))
    else:
        m.push(int.from_bytes(m.r.read(n), "little", signed=True))


def op_FLOAT(m: Machine) -> None:
    m.push(float(m.line()))


def op_BINFLOAT(m: Machine) -> None:
    m.push(_F64.unpack(m.r.read(8))[0])


def op_STRING(m: Machine) -> None:
    m.push(decode_escaped(m.line()))


def op_BINSTRING(m: Machine) -> None:
    m.push(m.text(_I32.unpack(m.r.read(4))[0], "latin-1"))


def op_SHORT_BINSTRING(m: Machine) -> None:
    m.push(m.text(m.r.byte(), "latin-1"))


def op_UNICODE(m: Machine) -> None:
    m.push(m.line().decode("raw-unicode-escape"))


def op_BINUNICODE(m: Machine) -> None:
    m.push(m.text(_U32.unpack(m.r.read(4))[0], "utf-8"))


def op_SHORT_BINUNICODE(m: Machine) -> None:
    m.push(m.text(m.r.byte(), "utf-8"))


def op_BINUNICODE8(m: Machine) -> None:
    m.push(m.text(_U64.unpack(m.r.read(8))[0], "utf-8"))


def op_BINBYTES(m: Machine) -> None:
    m.push(m.bytes_ref(_U32.unpack(m.r.read(4))[0]))


def op_SHORT_BINBYTES(m: Machine) -> None:
    m.push(m.bytes_ref(m.r.byte()))


def op_BINBYTES8(m: Machine) -> None:
    m.push(m.bytes_ref(_U64.unpack(m.r.read(8))[0]))


def op_BYTEARRAY8(m: Machine) -> None:
    m.push(m.bytes_ref(_U64.unpack(m.r.read(8))[0], mutable=True))


def op_NEXT_BUFFER(m: Machine) -> None:
    m.push(Unknown("out-of-band buffer"))


def op_READONLY_BUFFER(m: Machine) -> None:
    m.top()


# containers


def op_EMPTY_TUPLE(m: Machine) -> None:
    m.push(())


def op_TUPLE(m: Machine) -> None:
    m.push(tuple(m.pop_mark()))


def op_TUPLE1(m: Machine) -> None:
    m.push((m.pop(),))


def op_TUPLE2(m: Machine) -> None:
    b = m.pop()
    m.push((m.pop(), b))


def op_TUPLE3(m: Machine) -> None:
    c = m.pop()
    b = m.pop()
    m.push((m.pop(), b, c))


def op_EMPTY_LIST(m: Machine) -> None:
    m.push(Container("list"))


def op_LIST(m: Machine) -> None:
    m.push(filled("list", m.pop_mark()))


def op_EMPTY_DICT(m: Machine) -> None:
    m.push(Container("dict"))


def op_DICT(m: Machine) -> None:
    m.push(filled("dict", pairs(m.pop_mark())))


def op_EMPTY_SET(m: Machine) -> None:
    m.push(Container("set"))


def op_FROZENSET(m: Machine) -> None:
    m.push(filled("frozenset", m.pop_mark()))


def op_APPEND(m: Machine) -> None:
    value = m.pop()
    add_item(m.top(), value)


def op_APPENDS(m: Machine) -> None:
    items = m.pop_mark()
    add_items(m.top(), items)


def op_ADDITEMS(m: Machine) -> None:
    op_APPENDS(m)


def op_SETITEM(m: Machine) -> None:
    value = m.pop()
    key = m.pop()
    add_item(m.top(), (key, value))


def op_SETITEMS(m: Machine) -> None:
    items = m.pop_mark()
    add_items(m.top(), pairs(items))


# memo


def op_PUT(m: Machine) -> None:
    m.memo_put(int(m.line()), m.top())


def op_BINPUT(m: Machine) -> None:
    m.memo_put(m.r.byte(), m.top())


def op_LONG_BINPUT(m: Machine) -> None:
    m.memo_put(_U32.unpack(m.r.read(4))[0], m.top())


def op_MEMOIZE(m: Machine) -> None:
    m.memo_put(len(m.memo), m.top())


def op_GET(m: Machine) -> None:
    m.memo_get(int(m.line()))


def op_BINGET(m: Machine) -> None:
    m.memo_get(m.r.byte())


def op_LONG_BINGET(m: Machine) -> None:
    m.memo_get(_U32.unpack(m.r.read(4))[0])


# imports and calls


def op_GLOBAL(m: Machine) -> None:
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    value = Global(module, name, "GLOBAL", m.off)
    m.record_import(value)
    m.push(value)


def op_STACK_GLOBAL(m: Machine) -> None:
    name = m.pop()
    module = m.pop()
    resolved = isinstance(module, str) and isinstance(name, str)
    value = Global(module, name, "STACK_GLOBAL", m.off, resolved)
    m.record_import(value)
    m.push(value)


def op_INST(m: Machine) -> None:
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    value = Global(module, name, "INST", m.off)
    m.record_import(value)
    m.call("INST", value, tuple(m.pop_mark()))


def op_OBJ(m: Machine) -> None:
    items = m.pop_mark()
    if not items:
        raise PickleError("OBJ without a class")
    m.call("OBJ", items[0], tuple(items[1:]))


def op_REDUCE(m: Machine) -> None:
    args = m.pop()
    func = m.pop()
    m.call("REDUCE", func, args)


def op_NEWOBJ(m: Machine) -> None:
    args = m.pop()
    cls = m.pop()
    m.call("NEWOBJ", cls, args)


def op_NEWOBJ_EX(m: Machine) -> None:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    m.call("NEWOBJ_EX", cls, args, kwargs)


def op_BUILD(m: Machine) -> None:
    state = m.pop()
    obj = m.top()
    m.a.calls.append(Call(obj, state, "BUILD", m.off))
    m.stack[-1] = Build(obj, state, m.off)
    if m.joblib and is_joblib_wrapper(obj):
        m.stack[-1] = m.joblib_array(state)


def op_PERSID(m: Machine) -> None:
    value = PersistentId(m.line().decode("ascii"), m.off)
    m.a.persistent_ids.append(value)
    m.push(value)


def op_BINPERSID(m: Machine) -> None:
    value = PersistentId(m.pop(), m.off)
    m.a.persistent_ids.append(value)
    m.push(value)


def _ext(m: Machine, opcode: str, code: int) -> None:
    value = Ext(code, m.off)
    m.a.ext_codes.append(value)
    m.a.imports.append(ImportRecord("copyreg._extension_registry", str(code), opcode, m.off, False, value))
    m.push(value)


def op_EXT1(m: Machine) -> None:
    _ext(m, "EXT1", m.r.byte())


def op_EXT2(m: Machine) -> None:
    _ext(m, "EXT2", _U16.unpack(m.r.read(2))[0])


def op_EXT4(m: Machine) -> None:
    _ext(m, "EXT4", _I32.unpack(m.r.read(4))[0])


# --- in-place decoders for the common fixed-size opcodes --------------------------------------------
# Each takes the machine, its current stack, the reader's chunk and the opcode's index in it (with at
# least 8 argument bytes after the opcode), and returns the index of the next opcode, or -1 to leave
# the opcode to the table handler (stack underflow, a value not in the chunk, a memo miss), which
# raises the precise error. None of them can raise.

_Fast = Callable[["Machine", list[object], bytes, int], int]


def _push_const(value: object) -> _Fast:
    """A decoder for an opcode that pushes an immutable constant."""

    def decode(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
        stack.append(value)
        return i + 1

    return decode


def _push_new(kind: str) -> _Fast:
    """A decoder for an opcode that pushes a new empty container."""

    def decode(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
        stack.append(Container(kind))
        return i + 1

    return decode


def _push_number(unpack_from: Callable[[bytes, int], tuple[int | float]], size: int) -> _Fast:
    """A decoder for an opcode whose fixed-size argument is the number it pushes."""

    def decode(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
        stack.append(unpack_from(buf, i + 1)[0])
        return i + 1 + size

    return decode


def _f_long1(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    j = i + 2 + buf[i + 1]
    if j > len(buf):
        return -1
    stack.append(int.from_bytes(buf[i + 2 : j], "little", signed=True))
    return j


def _f_short_binunicode(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    j = i + 2 + buf[i + 1]
    if j > len(buf):
        return -1
    try:
        stack.append(buf[i + 2 : j].decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        return -1
    return j


def _f_short_binbytes(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    j = i + 2 + buf[i + 1]
    if j > len(buf):
        return -1
    stack.append(BytesRef(m.r.base + i + 2, j - i - 2, buf[i + 2 : j]))
    return j


def _f_binbytes(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    n: int = _U32_FROM(buf, i + 1)[0]
    j = i + 5 + n
    if n > KEEP_BYTES or j > len(buf):
        return -1
    stack.append(BytesRef(m.r.base + i + 5, n, buf[i + 5 : j]))
    return j


def _f_tuple1(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if not stack:
        return -1
    stack[-1] = (stack[-1],)
    return i + 1


def _f_tuple2(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 2:
        return -1
    stack[-2:] = [(stack[-2], stack[-1])]
    return i + 1


def _f_tuple3(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 3:
        return -1
    stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
    return i + 1


def _f_reduce(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 2:
        return -1
    value = Call(stack[-2], stack[-1], "REDUCE", m.r.base + i)
    stack[-2:] = [value]
    m.a.calls.append(value)
    return i + 1


def _f_binpersid(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if not stack:
        return -1
    value = PersistentId(stack[-1], m.r.base + i)
    stack[-1] = value
    m.a.persistent_ids.append(value)
    return i + 1


def _f_memoize(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if not stack:
        return -1
    m.memo[len(m.memo)] = stack[-1]
    return i + 1


def _f_long_binget(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    key = _U32_FROM(buf, i + 1)[0]
    if key not in m.memo:
        return -1
    stack.append(m.memo[key])
    return i + 5


def _f_append(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 2:
        return -1
    value = stack.pop()
    add_item(stack[-1], value)
    return i + 1


def _f_setitem(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    if len(stack) < 3:
        return -1
    value = stack.pop()
    key = stack.pop()
    add_item(stack[-1], (key, value))
    return i + 1


def _f_frame(m: Machine, stack: list[object], buf: bytes, i: int) -> int:
    # Frames only batch reads; the opcodes inside are contiguous with the rest of the stream.
    return i + 9


OPCODES: dict[str, int] = {
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
        table[OPCODES[name]] = fn
    return table


FAST = _fast_table()


def _handler_table() -> list[_Handler | None]:
    """Each opcode byte's handler, found by name (``op_NAME``); None for an invalid opcode."""
    handlers = globals()
    table: list[_Handler | None] = [None] * 256
    for name, code in OPCODES.items():
        table[code] = handlers[f"op_{name}"]
    return table


HANDLERS = _handler_table()
