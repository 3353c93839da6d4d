"""A tiny protobuf wire-format encoder for building test samples by hand (no protobuf runtime needed).

Test modules import it as ``from protobuf_encode import ...``: tests/ has no ``__init__.py``, so pytest's
default ``prepend`` import mode puts this directory on ``sys.path`` when it collects the tests here.
"""

from __future__ import annotations

VARINT_TYPE = 0
LEN_TYPE = 2


def varint(n: int) -> bytes:
    """Encode a non-negative integer as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    """Encode the tag that starts a field: field number and wire type."""
    return varint(number << 3 | wire_type)


def vfield(number: int, value: int) -> bytes:
    """Encode a varint field (wire type 0)."""
    return key(number, VARINT_TYPE) + varint(value)


def lfield(number: int, data: bytes | str) -> bytes:
    """Encode a length-delimited field (wire type 2); a str is UTF-8 encoded first."""
    raw = data.encode() if isinstance(data, str) else data
    return key(number, LEN_TYPE) + varint(len(raw)) + raw
