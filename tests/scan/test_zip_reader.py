"""The tolerant zip reader: it reads what loaders read and records every disagreement."""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import LimitExceeded, MalformedInput
from bastion.scan.context import Limits, Source
from bastion.scan.zip_reader import ZipView


def make_zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    """A zip with ``members`` written by the standard library."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are deliberate in some samples
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def central_offsets(data: bytes) -> list[int]:
    """Offsets of every central-directory record."""
    out, pos = [], data.find(b"PK\x01\x02")
    while pos >= 0:
        out.append(pos)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return out


def view_of(data: bytes, limits: Limits | None = None) -> ZipView:
    return ZipView.open(Source.from_bytes(data, "x.zip"), limits or Limits())


def kinds(view: ZipView) -> set[str]:
    return {a.kind for a in view.anomalies}


def test_clean_archive_has_no_anomalies_and_reads_every_method() -> None:
    payload = b"hello " * 1000
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        view = view_of(make_zip([("a/one.txt", payload), ("a/two.bin", b"\x00\x01")], method))
        assert [e.name for e in view.entries] == ["a/one.txt", "a/two.bin"]
        assert view.read_member(view.entries[0]) == payload
        assert view.peek_member(view.entries[0], 5) == b"hello"
        assert view.anomalies == []
        assert view.prefix_length == 0


def test_name_mismatch_is_recorded_and_the_member_still_read() -> None:
    data = make_zip([("archive/data.pkl", b"\x80\x02N.")])
    data = data.replace(b"archive/data.pkl", b"archive/data.pkX", 1)  # the local header comes first
    view = view_of(data)
    assert "name-mismatch" in kinds(view)
    assert view.entries[0].name == "archive/data.pkl"
    assert view.entries[0].local_name == "archive/data.pkX"
    assert view.read_member(view.entries[0]) == b"\x80\x02N."


def test_bad_crc_is_recorded_only_when_read() -> None:
    data = bytearray(make_zip([("data.pkl", b"\x80\x02N.")]))
    cen = central_offsets(bytes(data))[0]
    data[cen + 16 : cen + 20] = b"\xde\xad\xbe\xef"
    view = view_of(bytes(data))
    assert "crc" not in kinds(view)
    assert view.read_member(view.entries[0]) == b"\x80\x02N."
    assert "crc" in kinds(view)


def test_flag_bits_are_recorded_and_ignored_for_reading() -> None:
    data = bytearray(make_zip([("data.pkl", b"\x80\x02N.")]))
    data[6:8] = struct.pack("<H", 0x0001)
    cen = central_offsets(bytes(data))[0]
    data[cen + 8 : cen + 10] = struct.pack("<H", 0x0041)
    view = view_of(bytes(data))
    assert "flags" in kinds(view)
    assert view.read_member(view.entries[0]) == b"\x80\x02N."


def test_prefix_trailing_and_duplicates() -> None:
    data = b"JUNK" * 10 + make_zip([("a", b"1"), ("a", b"2")]) + b"tail"
    view = view_of(data)
    assert view.prefix_length == 40
    assert {"prefix", "trailing", "duplicate"} <= kinds(view)
    assert [view.read_member(e) for e in view.entries] == [b"1", b"2"]


def test_overlapping_entries_are_recorded() -> None:
    data = make_zip([("a", b"x" * 100)])
    cen = central_offsets(data)[0]
    eocd = data.rfind(b"PK\x05\x06")
    record = data[cen:eocd]
    second = record[:46] + b"b" + record[47:]  # a second entry pointing at the same local header
    cd = record + second
    end = bytearray(data[eocd:])
    struct.pack_into("<HHII", end, 8, 2, 2, len(cd), cen)
    view = view_of(data[:cen] + cd + bytes(end))
    assert "overlap" in kinds(view)


def test_corrupt_local_header_is_recorded_and_other_members_survive() -> None:
    data = bytearray(make_zip([("junk.txt", b"x"), ("archive/data.pkl", b"\x80\x02N.")]))
    data[0:4] = b"PK\x03\x05"
    view = view_of(bytes(data))
    assert "corrupt" in kinds(view)
    assert view.entries[0].data_offset is None
    assert view.read_member(view.entries[1]) == b"\x80\x02N."
    with pytest.raises(MalformedInput):
        view.read_member(view.entries[0])


def test_bomb_ratio_stops_early() -> None:
    data = make_zip([("bomb", bytes(8 << 20))], zipfile.ZIP_DEFLATED)
    view = view_of(data)
    assert view.entries[0].compressed_size < 100_000
    with pytest.raises(LimitExceeded, match="zip bomb"):
        view.read_member(view.entries[0])
    assert view.peek_member(view.entries[0], 16) == bytes(16)


def test_member_size_cap() -> None:
    view = view_of(make_zip([("big", b"y" * 5000)]))
    with pytest.raises(LimitExceeded):
        view.read_member(view.entries[0], max_bytes=1000)


def test_member_count_cap_is_flagged_not_raised() -> None:
    view = view_of(make_zip([(f"m{i}", b"") for i in range(10)]), Limits(max_members=3))
    assert view.members_capped
    assert len(view.entries) == 3


def test_stored_member_source_is_a_lazy_window() -> None:
    view = view_of(make_zip([("a.npy", b"0123456789")]))
    source = view.member_source(view.entries[0], "a.npy")
    assert source.size == 10
    assert source.read_at(3, 4) == b"3456"
    assert source.head(100) == b"0123456789"


def test_not_a_zip() -> None:
    with pytest.raises(MalformedInput):
        view_of(b"not a zip at all")


def test_truncated_deflate_member_is_malformed() -> None:
    data = bytearray(make_zip([("a", zlib.compress(b"q" * 10) * 50)], zipfile.ZIP_DEFLATED))
    cen = central_offsets(bytes(data))[0]
    struct.pack_into("<I", data, cen + 20, 3)  # compressed size cut to 3 bytes
    view = view_of(bytes(data))
    with pytest.raises(MalformedInput):
        view.read_member(view.entries[0])


SAMPLE = make_zip(
    [("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/x.txt", b"abc" * 50)], zipfile.ZIP_DEFLATED
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(SAMPLE)),
    flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), max_size=6),
)
def test_fuzz_reader_raises_only_bastion_errors(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLE)
    for pos, value in flips:
        data[pos] = value
    try:
        view = view_of(bytes(data[:cut]))
    except (MalformedInput, LimitExceeded):
        return
    for entry in view.entries:
        view.peek_member(entry, 32)
        with contextlib.suppress(MalformedInput, LimitExceeded):
            view.read_member(entry, max_bytes=1 << 20)


def test_zip64_end_records_are_followed() -> None:
    data = make_zip([("a/data.pkl", b"\x80\x02N."), ("a/b.txt", b"bee")])
    eocd = data.rfind(b"PK\x05\x06")
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack_from("<4sHHHHIIH", data, eocd)
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    view = view_of(data[:eocd] + record + locator + end)
    assert [e.name for e in view.entries] == ["a/data.pkl", "a/b.txt"]
    assert view.anomalies == []
    assert view.read_member(view.entries[1]) == b"bee"
