"""The symbolic opcode machine: every opcode, imports and offsets, limits, and evidence on errors."""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scan.context import Limits
from bastion.scan.pickle_vm import (
    BytesRef,
    Call,
    Container,
    Ext,
    Global,
    PersistentId,
    PickleAnalysis,
    Unknown,
    analyse_pickle,
    describe,
    iter_pickles,
)


def run(data: bytes, limits: Limits | None = None) -> PickleAnalysis:
    return analyse_pickle(io.BytesIO(data), 0, None, limits)


def su(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _genops_imports(data: bytes) -> list[tuple[str, int]]:
    """Reference: (opcode name, offset) of every import opcode, from pickletools (tests only)."""
    return [
        (op.name, pos)
        for op, _, pos in pickletools.genops(data)
        if op.name in ("GLOBAL", "INST", "STACK_GLOBAL")
    ]


SAMPLES = [
    {"a": [1, 2.5, "x", b"y" * 300, None, True, 2**70], "s": {1, 2}, "f": frozenset({3})},
    collections.OrderedDict(a=np.arange(3.0), b=np.float32(1)),
    [np.dtype("f8"), complex(1, 2), slice(1, 2), bytearray(b"abc")],
]


@pytest.mark.parametrize("proto", range(6))
@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_imports_match_pickletools(proto: int, index: int) -> None:
    data = pickle.dumps(SAMPLES[index], protocol=proto)
    a = run(data)
    assert a.error is None
    assert a.stopped
    assert a.end_offset == len(data)
    assert [(r.opcode, r.offset) for r in a.imports] == _genops_imports(data)
    assert all(r.resolved for r in a.imports)


def test_protocol_is_recorded() -> None:
    assert run(pickle.dumps(1, protocol=5)).protocol == 5
    assert run(pickle.dumps(1, protocol=0)).protocol == 0


def test_decompiled_call_and_values() -> None:
    data = b"\x80\x04" + su("os") + su("system") + b"\x93" + su("echo hi") + b"\x85R."
    a = run(data)
    (c,) = a.calls
    assert c.kind == "REDUCE"
    assert c.text == "os.system('echo hi')"
    assert isinstance(a.result, Call)
    assert describe(a.result) == "os.system('echo hi')"


def test_every_string_and_bytes_opcode() -> None:
    parts = [
        b"S'a\\nb'\n",  # STRING with an escape
        b"T" + struct.pack("<i", 2) + b"bs",  # BINSTRING
        b"U\x02us",  # SHORT_BINSTRING
        b"Vuni\\u00e9\n",  # UNICODE
        b"X" + struct.pack("<I", 2) + b"xx",  # BINUNICODE
        su("short"),  # SHORT_BINUNICODE
        b"\x8d" + struct.pack("<Q", 3) + b"b8u",  # BINUNICODE8
        b"B" + struct.pack("<I", 3) + b"bin",  # BINBYTES
        b"C\x02sb",  # SHORT_BINBYTES
        b"\x8e" + struct.pack("<Q", 2) + b"b8",  # BINBYTES8
        b"\x96" + struct.pack("<Q", 2) + b"ba",  # BYTEARRAY8
        b"\x97\x98",  # NEXT_BUFFER, READONLY_BUFFER
    ]
    a = run(b"\x80\x05(" + b"".join(parts) + b"t.")
    assert a.error is None
    values = a.result
    assert isinstance(values, tuple)
    assert values[:7] == ("a\nb", "bs", "us", "uni\u00e9", "xx", "short", "b8u")
    refs = values[7:11]
    assert all(isinstance(v, BytesRef) for v in refs)
    assert [v.data for v in refs if isinstance(v, BytesRef)] == [b"bin", b"sb", b"b8", b"ba"]
    assert isinstance(values[10], BytesRef)
    assert values[10].mutable
    assert isinstance(values[11], Unknown)


def test_numbers_and_memo_text_forms() -> None:
    data = (
        b"(I01\nI00\nI42\nL123L\nF1.5\nG"
        + struct.pack(">d", 2.5)
        + b"J"
        + struct.pack("<i", -7)
        + b"M\x01\x02\x8a\x02\x00\x01\x8b"
        + struct.pack("<i", 1)
        + b"\xff"
        + b"p7\n0g7\nt."
    )
    a = run(data)
    assert a.error is None
    assert a.result == (True, False, 42, 123, 1.5, 2.5, -7, 0x0201, 256, -1)


def test_stack_manipulation_opcodes() -> None:
    # MARK, DUP, POP, POP_MARK, TUPLE1-3, LIST, DICT, SETITEM(S), APPEND(S), ADDITEMS, FROZENSET.
    data = (
        b"\x80\x04("
        + b"K\x01" + b"2" + b"\x86"  # (1, 1)
        + b"(K\x09K\x09" + b"1"  # pushed then dropped by POP_MARK
        + b"K\x02" + b"0"  # pushed then popped
        + b"]" + b"K\x03a" + b"(K\x04K\x05e"  # [3, 4, 5]
        + b"}" + su("k") + b"K\x06s" + b"(" + su("j") + b"K\x07u"  # {'k': 6, 'j': 7}
        + b"\x8f(K\x08\x90"  # {8}
        + b"(K\x09\x91"  # frozenset({9})
        + b"(K\x0aK\x0bl"  # LIST
        + b"(" + su("z") + b"K\x0cd"  # DICT
        + b"K\x0d\x85K\x0eK\x0f\x87t"
        + b"."
    )  # fmt: skip
    a = run(data)
    assert a.error is None, a.error
    assert isinstance(a.result, tuple)
    assert a.result[0] == (1, 1)
    lst, dct, st, fs, lst2, dct2, t3 = a.result[1:]
    assert isinstance(lst, Container)
    assert lst.items == [3, 4, 5]
    assert isinstance(dct, Container)
    assert dct.items == [("k", 6), ("j", 7)]
    assert isinstance(st, Container)
    assert st.kind == "set"
    assert st.items == [8]
    assert isinstance(fs, Container)
    assert fs.kind == "frozenset"
    assert isinstance(lst2, Container)
    assert lst2.items == [10, 11]
    assert isinstance(dct2, Container)
    assert dct2.get("z") == 12
    assert t3 == ((13,), 14, 15)


def test_pop_removes_a_mark_like_cpython() -> None:
    # CPython pops the MARK itself when it is on top of the object stack.
    a = run(b"K\x01(0.")
    assert a.error is None
    assert a.result == 1


def test_frames_are_transparent() -> None:
    data = pickle.dumps({"k": list(range(100))}, protocol=4)
    assert data[2] == 0x95  # FRAME
    a = run(data)
    assert a.error is None
    assert a.stopped


def test_persistent_ids() -> None:
    a = run(b"Pstorage-0\n(" + su("storage") + su("1") + b"tQ\x86.")
    assert a.error is None
    ids = [p.value for p in a.persistent_ids]
    assert ids == ["storage-0", ("storage", "1")]
    assert isinstance(a.result, tuple)
    assert isinstance(a.result[0], PersistentId)


@pytest.mark.parametrize(
    ("ext", "code"), [(b"\x82\x07", 7), (b"\x83\x01\x01", 257), (b"\x84\x00\x00\x01\x00", 65536)]
)
def test_ext_opcodes(ext: bytes, code: int) -> None:
    a = run(b"\x80\x02" + ext + b")R.")
    assert [e.code for e in a.ext_codes] == [code]
    (rec,) = a.imports
    assert rec.opcode.startswith("EXT")
    assert not rec.resolved
    assert isinstance(rec.value, Ext)
    assert a.calls[0].text == f"copyreg._extension_registry[{code}]()"


def test_unresolved_stack_global() -> None:
    data = (
        b"\x80\x04"
        + su("builtins")
        + su("str")
        + b"\x93C\x02os"
        + su("ascii")
        + b"\x86R"
        + su("system")
        + b"\x93."
    )
    a = run(data)
    assert [r.resolved for r in a.imports] == [True, False]
    assert isinstance(a.result, Global)
    assert not a.result.resolved
    assert "computed" in a.result.dotted


def test_stacked_pickles() -> None:
    data = pickle.dumps(1, protocol=2) + pickle.dumps("two", protocol=4) + pickle.dumps([3], protocol=0)
    results = list(iter_pickles(io.BytesIO(data)))
    assert [r.result for r in results[:2]] == [1, "two"]
    assert len(results) == 3
    assert results[-1].end_offset == len(data)


def test_truncation_keeps_evidence() -> None:
    data = b"cos\nsystem\n(S'x'\ntR"
    a = run(data)
    assert a.error is not None
    assert "truncated" in a.error
    assert [r.name for r in a.imports] == ["system"]
    assert a.call_pending
    assert a.error_offset == len(data)


def test_invalid_opcode_offset() -> None:
    a = run(b"\x80\x02K\x01\xff.")
    assert a.error == "invalid opcode 0xff"
    assert a.error_offset == 4
    assert not a.call_pending


@pytest.mark.parametrize(
    "data",
    [b"0.", b"t.", b"h\x05.", b"\x80\x09.", b"(K\x01\x86.", b"S'unterminated\n.", b"X\xff\xff\xff\xffab"],
)
def test_malformed_streams_report_errors(data: bytes) -> None:
    a = run(data)
    assert a.error is not None
    assert not a.stopped


def test_limits_are_enforced() -> None:
    many = b"(" + b"K\x01" * 5000 + b"t."
    a = run(many, Limits(max_opcodes=2000))
    assert a.limit_hit
    assert a.error is not None
    a = run(b"K\x01" * 5000 + b".", Limits(max_stack=100))
    assert a.limit_hit
    a = run(
        b"K\x01" + b"".join(b"r" + struct.pack("<I", i) for i in range(5000)) + b".", Limits(max_memo=100)
    )
    assert a.limit_hit
    a = run(b"(" * 5000 + b".", Limits(max_stack=100))
    assert a.limit_hit


def test_cycles_describe_in_bounded_space() -> None:
    a = run(b"\x80\x04" + su("m") + su("f") + b"\x93]q\x00h\x00ah\x00a\x85R.")
    (c,) = a.calls
    assert len(c.text) <= 200


def test_long_text_is_skipped_not_decoded() -> None:
    n = (1 << 24) + 1
    data = b"\x80\x04\x8d" + struct.pack("<Q", n) + b"a" * n + b"."
    a = run(data)
    assert a.error is None
    assert isinstance(a.result, Unknown)


def test_huge_declared_length_is_truncation() -> None:
    a = run(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc.")
    assert a.error is not None
    assert "truncated" in a.error


def test_start_and_end_window() -> None:
    inner = pickle.dumps([1, 2], protocol=2)
    data = b"JUNK" + inner + b"MORE"
    a = analyse_pickle(io.BytesIO(data), 4, 4 + len(inner))
    assert a.error is None
    assert a.end_offset == 4 + len(inner)
    assert a.start == 4


def _to_python(value: object) -> object:
    """Turn a symbolic plain-data value back into Python, to compare with what was pickled."""
    if isinstance(value, tuple):
        return tuple(_to_python(v) for v in value)
    if isinstance(value, BytesRef):
        return bytearray(value.data or b"") if value.mutable else value.data
    if isinstance(value, Container):
        items = [_to_python(v) for v in value.items]
        if value.kind == "list":
            return items
        if value.kind == "dict":
            return dict(items)  # type: ignore[arg-type]  # dict items are pairs
        return set(items) if value.kind == "set" else frozenset(items)
    return value


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_data = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=5),
        st.frozensets(st.integers(), max_size=5),
        st.sets(st.text(max_size=5), max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=120, deadline=None)
@given(obj=_data, proto=st.integers(min_value=0, max_value=5))
def test_plain_data_round_trips_symbolically(obj: object, proto: int) -> None:
    data = pickle.dumps(obj, protocol=proto)
    a = run(data)
    assert a.error is None
    if proto >= 4 or not _has_set_or_bytes(obj):
        # Protocols 0-3 rebuild sets (and 0-2 bytes) through calls, which stay symbolic.
        assert _to_python(a.result) == obj


def _has_set_or_bytes(obj: object) -> bool:
    if isinstance(obj, set | frozenset | bytes):
        return True
    if isinstance(obj, list | tuple):
        return any(_has_set_or_bytes(v) for v in obj)
    if isinstance(obj, dict):
        return any(_has_set_or_bytes(v) for v in obj.values())
    return False


def test_describe_is_bounded_for_huge_values() -> None:
    big = b"\x8b" + struct.pack("<i", 60000) + b"\x01" * 60000
    name = "n" * 100000
    data = (
        b"\x80\x04"
        + su("m")
        + b"X"
        + struct.pack("<I", len(name))
        + name.encode()
        + b"\x93"
        + big
        + b"\x85R."
    )
    a = run(data)
    assert a.error is None
    (c,) = a.calls
    assert len(c.text) <= 200
    assert "bit integer" in c.text
