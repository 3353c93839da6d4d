"""Hand-assemble pickle opcode streams, so samples can hold exactly the bytes an attacker would write.

Nothing here unpickles anything: it only concatenates opcodes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

PAYLOAD_CMD = "echo bastion-test"
PAYLOAD_PY = "__import__('os').system('echo bastion-test')"

MARK = b"("
STOP = b"."
POP = b"0"
TUPLE = b"t"
EMPTY_TUPLE = b")"
EMPTY_LIST = b"]"
EMPTY_DICT = b"}"
APPEND = b"a"
APPENDS = b"e"
SETITEM = b"s"
SETITEMS = b"u"
REDUCE = b"R"
BUILD = b"b"
STACK_GLOBAL = b"\x93"
NEWOBJ = b"\x81"
MEMOIZE = b"\x94"
NONE = b"N"
NEWTRUE = b"\x88"
NEWFALSE = b"\x89"


class Raw(bytes):
    """Opcodes that push one value, inserted as they are (a nested call, a memo get)."""


def proto(n: int) -> bytes:
    """PROTO opcode (protocol 2 and up)."""
    return b"\x80" + bytes([n])


def string(text: str) -> bytes:
    """Push a str with the shortest binary unicode opcode."""
    data = text.encode("utf-8")
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def binbytes(data: bytes) -> bytes:
    """Push bytes (protocol 3+)."""
    if len(data) < 256:
        return b"C" + bytes([len(data)]) + data
    return b"B" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    """Push an int."""
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"J" + struct.pack("<i", value)


def put(slot: int) -> bytes:
    """BINPUT into memo slot ``slot``."""
    return b"q" + bytes([slot])


def get(slot: int) -> Raw:
    """BINGET from memo slot ``slot``."""
    return Raw(b"h" + bytes([slot]))


def value(arg: object) -> bytes:
    """Push a Python constant (str, bytes, int, bool, None, list, tuple, dict) or raw opcodes."""
    if isinstance(arg, Raw):
        return bytes(arg)
    if arg is None:
        return NONE
    if isinstance(arg, bool):
        return NEWTRUE if arg else NEWFALSE
    if isinstance(arg, int):
        return integer(arg)
    if isinstance(arg, str):
        return string(arg)
    if isinstance(arg, bytes):
        return binbytes(arg)
    if isinstance(arg, list):
        return EMPTY_LIST + (MARK + b"".join(value(a) for a in arg) + APPENDS if arg else b"")
    if isinstance(arg, tuple):
        return MARK + b"".join(value(a) for a in arg) + TUPLE
    if isinstance(arg, dict):
        items = b"".join(value(k) + value(v) for k, v in arg.items())
        return EMPTY_DICT + (MARK + items + SETITEMS if arg else b"")
    raise TypeError(f"cannot encode {type(arg).__name__}")


def glob(module: str, name: str) -> Raw:
    """Push a global with STACK_GLOBAL (protocol 4+; ``name`` may be dotted)."""
    return Raw(string(module) + string(name) + STACK_GLOBAL)


def old_glob(module: str, name: str) -> Raw:
    """Push a global with the text GLOBAL opcode (every protocol)."""
    return Raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")


def call(func: bytes, *args: object) -> Raw:
    """Push ``func(*args)``: the callable, an argument tuple, REDUCE."""
    return Raw(func + value(tuple(args)) + REDUCE)


def call_global(module: str, name: str, *args: object, protocol: int = 4) -> Raw:
    """Push ``module.name(*args)`` using STACK_GLOBAL (protocol 4+) or GLOBAL."""
    func = glob(module, name) if protocol >= 4 else old_glob(module, name)
    return call(func, *args)


def program(body: bytes, *, protocol: int = 4, stop: bool = True) -> bytes:
    """Wrap opcodes that leave one value on the stack into a whole pickle."""
    head = proto(protocol) if protocol >= 2 else b""
    return head + body + (STOP if stop else b"")


def system_pickle(protocol: int = 4, cmd: str = PAYLOAD_CMD) -> bytes:
    """The textbook payload: ``os.system(cmd)``."""
    return program(call_global("os", "system", cmd, protocol=protocol), protocol=protocol)


def calls(*steps: Sequence[object]) -> bytes:
    """Push each (module, name, *args) call and pop all but the last: a chain of side effects."""
    out = b""
    for i, (module, name, *args) in enumerate(steps):
        out += call_global(str(module), str(name), *args)
        if i < len(steps) - 1:
            out += POP
    return out
