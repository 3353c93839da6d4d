"""A small, bounded reader of the protobuf wire format, so SavedModel and ONNX need no TensorFlow or onnx.

Messages are decoded lazily: a :class:`Message` is a view of bytes; its length-delimited fields are
opened as sub-messages only when a caller asks, one level deeper each time, with a hard cap on nesting
depth and on the total number of fields read from one file.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field

from bastion.errors import LimitExceeded, MalformedInput
from bastion.scan.context import Source

VARINT = 0
I64 = 1
LEN = 2
START_GROUP = 3
END_GROUP = 4
I32 = 5

_MAX_VARINT_BYTES = 10

Buffer = bytes | bytearray | memoryview | mmap.mmap


@dataclass(slots=True)
class Budget:
    """Shared caps for one parse: how deep sub-messages may nest and how many fields may be read."""

    max_depth: int = 100
    max_fields: int = 20_000_000
    fields_read: int = field(default=0)

    def spend(self) -> None:
        """Count one field read; raise :class:`LimitExceeded` past the cap."""
        self.fields_read += 1
        if self.fields_read > self.max_fields:
            raise LimitExceeded(f"more than {self.max_fields} protobuf fields")


@dataclass(frozen=True, slots=True)
class Field:
    """One decoded field: its number, wire type, value (int or bytes view) and absolute byte offset."""

    number: int
    wire_type: int
    value: int | memoryview
    offset: int

    @property
    def data(self) -> memoryview:
        """The bytes of a length-delimited field; raise :class:`MalformedInput` for other wire types."""
        if not isinstance(self.value, memoryview):
            raise MalformedInput(
                f"protobuf field {self.number} at offset {self.offset} is not length-delimited"
            )
        return self.value

    @property
    def text(self) -> str:
        """The field as UTF-8 text (undecodable bytes replaced)."""
        return bytes(self.data).decode("utf-8", "replace")

    @property
    def integer(self) -> int:
        """The field as an integer (varint or fixed-width)."""
        if isinstance(self.value, memoryview):
            raise MalformedInput(f"protobuf field {self.number} at offset {self.offset} is not numeric")
        return self.value


def read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return (value, next position)."""
    result = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise MalformedInput(f"truncated varint at offset {pos}")
        byte = data[pos + i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos + i + 1
    raise MalformedInput(f"varint longer than {_MAX_VARINT_BYTES} bytes at offset {pos}")


def _read_field(data: memoryview, pos: int, base: int) -> tuple[Field, int]:
    start = pos
    key, pos = read_varint(data, pos)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise MalformedInput(f"protobuf field number 0 at offset {base + start}")
    value: int | memoryview
    if wire_type == VARINT:
        value, pos = read_varint(data, pos)
    elif wire_type in (I64, I32):
        width = 8 if wire_type == I64 else 4
        if pos + width > len(data):
            raise MalformedInput(f"truncated fixed-width field at offset {base + start}")
        value = int.from_bytes(data[pos : pos + width], "little")
        pos += width
    elif wire_type == LEN:
        length, pos = read_varint(data, pos)
        if length > len(data) - pos:
            raise MalformedInput(f"length-delimited field at offset {base + start} runs past its message")
        value = data[pos : pos + length]
        pos += length
    else:
        # Groups are deprecated and unused by SavedModel and ONNX; accepting them only widens the surface.
        raise MalformedInput(f"unsupported protobuf wire type {wire_type} at offset {base + start}")
    return Field(number, wire_type, value, base + start), pos


class Message:
    """A lazily decoded protobuf message over a byte view."""

    __slots__ = ("_data", "budget", "depth", "offset")

    def __init__(self, data: Buffer, budget: Budget | None = None, depth: int = 0, offset: int = 0) -> None:
        """Wrap ``data`` (the message bytes, starting at absolute ``offset`` in the file)."""
        self._data = data if isinstance(data, memoryview) else memoryview(data)
        self.budget = budget if budget is not None else Budget()
        self.depth = depth
        self.offset = offset
        if depth > self.budget.max_depth:
            raise LimitExceeded(f"protobuf messages nested deeper than {self.budget.max_depth} levels")

    def __iter__(self) -> Iterator[Field]:
        """Yield every field in wire order."""
        data, pos, end = self._data, 0, len(self._data)
        while pos < end:
            self.budget.spend()
            fld, pos = _read_field(data, pos, self.offset)
            yield fld

    def sub(self, fld: Field) -> Message:
        """Open a length-delimited field as a nested message one level deeper."""
        data = fld.data
        # The value starts after the key and length varints.
        start = fld.offset + _header_size(fld.number, len(data))
        return Message(data, self.budget, self.depth + 1, start)

    def fields(self, number: int) -> Iterator[Field]:
        """Yield the fields with ``number``."""
        return (f for f in self if f.number == number)

    def messages(self, number: int) -> Iterator[Message]:
        """Yield the length-delimited fields with ``number`` opened as messages."""
        for f in self:
            if f.number == number:
                yield self.sub(f)

    def merged(self, number: int) -> list[Message]:
        """Every occurrence of a singular message field: protobuf merges them, so all of them count."""
        return list(self.messages(number))

    def strings(self, number: int) -> list[str]:
        """Every occurrence of a string field, decoded as UTF-8."""
        return [f.text for f in self.fields(number)]

    def string(self, number: int, default: str = "") -> str:
        """A singular string field (last occurrence wins, as in protobuf)."""
        values = self.strings(number)
        return values[-1] if values else default

    def integer(self, number: int, default: int = 0) -> int:
        """A singular numeric field (last occurrence wins)."""
        values = [f.integer for f in self.fields(number)]
        return values[-1] if values else default


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _header_size(number: int, length: int) -> int:
    return _varint_size((number << 3) | LEN) + _varint_size(length)


@contextlib.contextmanager
def source_buffer(source: Source, max_bytes: int) -> Iterator[Buffer]:
    """Map (or read) the whole of ``source`` for parsing; memory-map real files so weights are never read."""
    if source.size > max_bytes:
        raise LimitExceeded(f"protobuf file larger than {max_bytes} bytes")
    mapped: mmap.mmap | None = None
    if source.fs_path is not None and source.size > 0:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mapped = mmap.mmap(source.stream.fileno(), 0, access=mmap.ACCESS_READ)
    if mapped is None:
        yield source.read_at(0, source.size)
        return
    try:
        yield mapped
    finally:
        # Views into the map may still exist if a caller leaked one; never fail the scan over it.
        with contextlib.suppress(BufferError):
            mapped.close()
