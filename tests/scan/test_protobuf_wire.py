"""The bounded protobuf wire reader: decoding, laziness, limits and hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protobuf_encode import lfield, varint, vfield

from bastion.errors import LimitExceeded, MalformedInput
from bastion.scan.protobuf_wire import I32, I64, LEN, VARINT, Budget, Message, read_varint


def test_decodes_every_wire_type() -> None:
    data = vfield(1, 300) + lfield(2, "hi") + varint(3 << 3 | 1) + (7).to_bytes(8, "little")
    data += varint(4 << 3 | 5) + (9).to_bytes(4, "little")
    fields = list(Message(data))
    assert [(f.number, f.wire_type) for f in fields] == [(1, VARINT), (2, LEN), (3, I64), (4, I32)]
    assert [fields[0].integer, fields[1].text, fields[2].integer, fields[3].integer] == [300, "hi", 7, 9]


def test_nested_messages_and_offsets() -> None:
    inner = lfield(1, "name") + vfield(2, 5)
    data = vfield(1, 1) + lfield(2, inner)
    msg = Message(data)
    (sub,) = list(msg.messages(2))
    assert sub.string(1) == "name"
    assert sub.integer(2) == 5
    assert sub.depth == 1
    assert data[sub.offset : sub.offset + len(inner)] == inner
    assert msg.string(9, "default") == "default"


def test_varint_limits() -> None:
    assert read_varint(memoryview(b"\xac\x02"), 0) == (300, 2)
    with pytest.raises(MalformedInput):
        read_varint(memoryview(b"\xff" * 11), 0)
    with pytest.raises(MalformedInput):
        read_varint(memoryview(b"\x80"), 0)


@pytest.mark.parametrize(
    "data",
    [
        lfield(1, "abc")[:-1],
        b"\x0b",
        b"\x0c",
        b"\x00\x01",
        varint(1 << 3 | 1) + b"\x00" * 3,
        varint(1 << 3 | 6),
    ],
)
def test_malformed_input_is_rejected(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        list(Message(data))


def test_groups_are_rejected() -> None:
    with pytest.raises(MalformedInput, match="wire type 3"):
        list(Message(varint(1 << 3 | 3)))


def test_depth_and_field_caps() -> None:
    data = b""
    for _ in range(10):
        data = lfield(1, data)
    msg = Message(data, Budget(max_depth=5))
    for _ in range(5):
        msg = msg.sub(next(iter(msg)))
    with pytest.raises(LimitExceeded):
        msg.sub(next(iter(msg)))
    with pytest.raises(LimitExceeded):
        list(Message(vfield(1, 1) * 100, Budget(max_fields=10)))


def _drain(msg: Message, depth: int) -> None:
    for f in msg:
        if f.wire_type == LEN and depth < 4:
            try:
                _drain(msg.sub(f), depth + 1)
            except MalformedInput:
                continue


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_only_raises_bastion_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedInput, LimitExceeded):
        _drain(Message(data, Budget(max_fields=10_000)), 0)
