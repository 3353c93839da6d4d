"""A tolerant zip reader that reads archives the way model loaders do and records every oddity.

Python's ``zipfile`` refuses archives that PyTorch's miniz-based reader loads happily (a bad CRC, a
local name that differs from the central one, an "encrypted" flag), so a scanner built on it can be
made to give up while the loader goes on. This reader locates the end-of-central-directory record,
walks the central directory, reads each local header, and keeps going past anything it can: each
disagreement becomes an :class:`Anomaly` for the caller to report. Only the directory, the local
headers and the members asked for are read, never the rest (the tensor data of a checkpoint).
"""

from __future__ import annotations

import bz2
import io
import itertools
import lzma
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from bastion.errors import LimitExceeded, MalformedInput
from bastion.scan.context import Limits, Source

_EOCD_SIG = b"PK\x05\x06"
_EOCD64_SIG = b"PK\x06\x06"
_LOCATOR64_SIG = b"PK\x06\x07"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_CENTRAL_FMT = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL_FMT = struct.Struct("<4sHHHHHIIIHH")
_CHUNK = 1 << 20
_MAX_CENTRAL_BYTES = 256 << 20
# Below this much output a high ratio is ordinary (a small run of zeros), not a bomb.
_RATIO_FLOOR = 1 << 20

STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14
_METHODS = {STORED: "stored", DEFLATED: "deflate", BZIP2: "bzip2", LZMA: "lzma"}
# General-purpose bits that make zipfile refuse an entry (encryption, patched data, strong encryption).
SUSPICIOUS_FLAGS = 0x0001 | 0x0020 | 0x0040 | 0x2000
_DATA_DESCRIPTOR = 0x0008


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One place where this archive's views disagree or its structure is off."""

    kind: str  # prefix, trailing, name-mismatch, header-mismatch, crc, flags, duplicate, overlap, corrupt
    message: str
    offset: int | None = None
    member: str | None = None
    evidence: tuple[tuple[str, str], ...] = ()

    @property
    def evidence_map(self) -> dict[str, str]:
        """The evidence as a dict."""
        return dict(self.evidence)


def _anomaly(
    kind: str, message: str, offset: int | None = None, member: str | None = None, **ev: object
) -> Anomaly:
    return Anomaly(kind, message, offset, member, tuple((k, str(v)) for k, v in ev.items()))


@dataclass(slots=True)
class ZipEntry:
    """One central-directory record, with what its local header says beside it."""

    index: int
    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    uncompressed_size: int
    header_offset: int  # absolute offset of the local header in the file
    data_offset: int | None = None  # absolute offset of the member bytes; None if the local header is bad
    local_name: str | None = None

    @property
    def is_dir(self) -> bool:
        """True for directory entries (a name ending in a slash and no content)."""
        return self.name.endswith("/") and self.uncompressed_size == 0

    @property
    def method_name(self) -> str:
        """The compression method as a word."""
        return _METHODS.get(self.method, f"method-{self.method}")


@dataclass(slots=True)
class ZipView:
    """The central directory of one archive, its anomalies, and bounded access to members."""

    source: Source
    limits: Limits
    entries: list[ZipEntry] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    prefix_length: int = 0
    end_offset: int = 0  # first byte after the end-of-central-directory record and its comment
    truncated_directory: bool = False
    members_capped: bool = False  # more entries than Limits.max_members; the rest were not read

    @classmethod
    def open(cls, source: Source, limits: Limits) -> ZipView:
        """Parse the archive's directory; raise :class:`MalformedInput` if there is no usable one."""
        view = cls(source, limits)
        view._parse()
        return view

    # -- reading members ------------------------------------------------------------------------

    def peek_member(self, entry: ZipEntry, size: int = 512) -> bytes:
        """The first ``size`` decompressed bytes of ``entry`` (fewer if it is shorter or unreadable)."""
        out = bytearray()
        try:
            for chunk in self._decompress(entry, size, check_ratio=False):
                out += chunk
                if len(out) >= size:
                    break
        except (MalformedInput, LimitExceeded):
            pass
        return bytes(out[:size])

    def read_member(self, entry: ZipEntry, max_bytes: int | None = None) -> bytes:
        """All of ``entry``'s decompressed bytes, bounded by ``max_bytes`` and the bomb ratio."""
        cap = self.limits.max_member_bytes if max_bytes is None else max_bytes
        out = bytearray()
        crc = 0
        for chunk in self._decompress(entry, cap + 1, check_ratio=True):
            out += chunk
            crc = zlib.crc32(chunk, crc)
            if len(out) > cap:
                raise LimitExceeded(f"member {entry.name!r} is larger than {cap} bytes")
        if crc != entry.crc:
            self.anomalies.append(
                _anomaly(
                    "crc",
                    "the stored CRC-32 does not match the member's content",
                    entry.header_offset,
                    entry.name,
                    stored=f"{entry.crc:08x}",
                    computed=f"{crc:08x}",
                )
            )
        return bytes(out)

    def member_source(self, entry: ZipEntry, name: str) -> Source:
        """A Source for ``entry``: a window onto the archive if stored (nothing read), else its bytes."""
        if entry.method == STORED and entry.data_offset is not None:
            size = max(0, min(entry.compressed_size, self.source.size - entry.data_offset))
            if size < entry.compressed_size:
                raise MalformedInput(f"member {entry.name!r} runs past the end of the archive")
            return window_source(self.source, entry.data_offset, size, name)
        return Source.from_bytes(self.read_member(entry), name)

    def _decompress(self, entry: ZipEntry, want: int, *, check_ratio: bool) -> Iterator[bytes]:
        if entry.data_offset is None:
            raise MalformedInput(f"member {entry.name!r} has no readable local header")
        end = entry.data_offset + entry.compressed_size
        if end > self.source.size:
            raise MalformedInput(f"member {entry.name!r} runs past the end of the archive")
        produced = 0
        decoder = _decoder(entry.method)
        pos = entry.data_offset
        ratio_cap = max(_RATIO_FLOOR, int(self.limits.max_ratio * max(entry.compressed_size, 1)))
        while produced < want:
            step = min(_CHUNK, want - produced)  # bounded per call: one call must not inflate a bomb
            chunk = decoder.feed(b"", step)
            if not chunk and not decoder.finished:
                raw = self.source.read_at(pos, min(_CHUNK, end - pos)) if pos < end else b""
                pos += len(raw)
                if not raw:
                    if entry.method not in (STORED, LZMA):
                        raise MalformedInput(f"member {entry.name!r} ends before its compressed stream does")
                    return
                chunk = decoder.feed(raw, step)
            if not chunk:
                if decoder.finished:
                    return
                continue
            produced += len(chunk)
            if check_ratio and produced > ratio_cap:
                raise LimitExceeded(
                    f"member {entry.name!r} expands more than {self.limits.max_ratio:g} times (a zip bomb)"
                )
            yield chunk

    # -- parsing the directory ------------------------------------------------------------------

    def _parse(self) -> None:
        size = self.source.size
        tail_start = max(0, size - (_EOCD_SIZE + _MAX_COMMENT + 20 + 56))
        tail = self.source.read_at(tail_start, size - tail_start)
        eocd = _find_eocd(tail)
        if eocd is None:
            raise MalformedInput("no end-of-central-directory record: not a readable zip archive")
        pos_in_tail, count, cd_size, cd_offset, comment_len = eocd
        eocd_pos = tail_start + pos_in_tail
        directory_end = eocd_pos  # the central directory ends where the (zip64) end records begin
        zip64 = _read_zip64(tail, pos_in_tail)
        if zip64 is not None:
            count, cd_size, cd_offset, rec_pos = zip64
            directory_end = tail_start + rec_pos
        self.end_offset = min(size, eocd_pos + _EOCD_SIZE + comment_len)
        if eocd_pos + _EOCD_SIZE + comment_len < size:
            extra = size - (eocd_pos + _EOCD_SIZE + comment_len)
            self.anomalies.append(
                _anomaly(
                    "trailing", f"{extra} bytes follow the end of the archive", self.end_offset, length=extra
                )
            )
        # Bytes in front of the archive shift every offset; zipfile and this reader compensate.
        shift = directory_end - cd_size - cd_offset
        if shift < 0 or cd_size > _MAX_CENTRAL_BYTES:
            raise MalformedInput("the central directory's size and offset do not fit the file")
        self._walk_central(self.source.read_at(cd_offset + shift, cd_size), count, shift)
        self._check_layout()

    def _walk_central(self, data: bytes, count: int, shift: int) -> None:
        pos = 0
        limit = self.limits.max_members
        while pos + _CENTRAL_FMT.size <= len(data) and data[pos : pos + 4] == _CENTRAL_SIG:
            if len(self.entries) >= limit:
                self.members_capped = True
                return
            fields = _CENTRAL_FMT.unpack_from(data, pos)
            flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
            name_len, extra_len, comment_len, offset = fields[10], fields[11], fields[12], fields[16]
            start = pos + _CENTRAL_FMT.size
            raw_name = data[start : start + name_len]
            extra = data[start + name_len : start + name_len + extra_len]
            usize, csize, offset = _apply_zip64(extra, usize, csize, offset)
            entry = ZipEntry(
                len(self.entries), _decode(raw_name, flags), method, flags, crc, csize, usize, offset + shift
            )
            self.entries.append(entry)
            self._read_local(entry)
            pos = start + name_len + extra_len + comment_len
        if len(self.entries) != count:
            self.truncated_directory = len(self.entries) < count
            self.anomalies.append(
                _anomaly(
                    "corrupt",
                    f"the end record announces {count} entries, the directory holds {len(self.entries)}",
                    None,
                    announced=count,
                    found=len(self.entries),
                )
            )

    def _read_local(self, entry: ZipEntry) -> None:
        raw = self.source.read_at(entry.header_offset, _LOCAL_FMT.size)
        if len(raw) < _LOCAL_FMT.size or raw[:4] != _LOCAL_SIG:
            self.anomalies.append(
                _anomaly(
                    "corrupt",
                    "the central directory points at no local header",
                    entry.header_offset,
                    entry.name,
                )
            )
            return
        _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL_FMT.unpack(raw)
        raw_name = self.source.read_at(entry.header_offset + _LOCAL_FMT.size, name_len)
        entry.local_name = _decode(raw_name, flags)
        entry.data_offset = entry.header_offset + _LOCAL_FMT.size + name_len + extra_len
        if entry.local_name != entry.name:
            self.anomalies.append(
                _anomaly(
                    "name-mismatch",
                    "the local header names the member differently from the central directory",
                    entry.header_offset,
                    entry.name,
                    central=entry.name,
                    local=entry.local_name,
                )
            )
        self._compare_headers(entry, flags, method, crc, csize, usize)

    def _compare_headers(
        self, entry: ZipEntry, flags: int, method: int, crc: int, csize: int, usize: int
    ) -> None:
        diffs: dict[str, str] = {}
        if method != entry.method:
            diffs["method"] = f"{method}!={entry.method}"
        if (flags | entry.flags) & SUSPICIOUS_FLAGS:
            self.anomalies.append(
                _anomaly(
                    "flags",
                    "the entry sets encryption or patched-data flag bits that readers treat differently",
                    entry.header_offset,
                    entry.name,
                    central_flags=f"0x{entry.flags:04x}",
                    local_flags=f"0x{flags:04x}",
                )
            )
        if not flags & _DATA_DESCRIPTOR and 0xFFFFFFFF not in (csize, usize):
            if csize != entry.compressed_size:
                diffs["compressed_size"] = f"{csize}!={entry.compressed_size}"
            if usize != entry.uncompressed_size:
                diffs["uncompressed_size"] = f"{usize}!={entry.uncompressed_size}"
            if crc != entry.crc:
                diffs["crc"] = f"{crc:08x}!={entry.crc:08x}"
        if diffs:
            self.anomalies.append(
                _anomaly(
                    "header-mismatch",
                    "the local header and the central directory disagree about the member",
                    entry.header_offset,
                    entry.name,
                    **diffs,
                )
            )

    def _check_layout(self) -> None:
        for name, n in Counter(e.name for e in self.entries).items():
            if n > 1:
                self.anomalies.append(
                    _anomaly("duplicate", f"{n} entries share one name", None, name, copies=n)
                )
        placed = sorted((e for e in self.entries if e.data_offset is not None), key=lambda e: e.header_offset)
        if placed and placed[0].header_offset > 0:
            self.prefix_length = placed[0].header_offset
            self.anomalies.append(
                _anomaly(
                    "prefix",
                    f"{self.prefix_length} bytes precede the first member",
                    0,
                    length=self.prefix_length,
                )
            )
        for a, b in itertools.pairwise(placed):
            assert a.data_offset is not None
            if a.data_offset + a.compressed_size > b.header_offset:
                self.anomalies.append(
                    _anomaly(
                        "overlap",
                        "two members' bytes overlap, so one region is read as both",
                        b.header_offset,
                        b.name,
                        other=a.name,
                    )
                )


class _Decoder:
    """Wraps one streaming decompressor behind feed(raw, max_out)."""

    def __init__(self, method: int) -> None:
        self.method = method
        self._pending = b""
        self.finished = False
        self._lzma_header = method == LZMA
        self._buffer = b""
        self._zlib = zlib.decompressobj(-15) if method == DEFLATED else None
        self._obj: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = None
        if method == BZIP2:
            self._obj = bz2.BZ2Decompressor()

    def feed(self, raw: bytes, max_out: int) -> bytes:
        """Decompress ``raw`` (plus anything held back) into at most ``max_out`` bytes."""
        if self.method == STORED:
            data = self._pending + raw
            self._pending = data[max_out:]
            return data[:max_out]
        if self._lzma_header:
            self._buffer += raw
            if len(self._buffer) < 4:
                return b""
            props_len = struct.unpack_from("<H", self._buffer, 2)[0]
            if len(self._buffer) < 4 + props_len:
                return b""
            props = self._buffer[4 : 4 + props_len]
            try:
                filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]  # how zipfile reads zip's LZMA header
            except lzma.LZMAError as exc:
                raise MalformedInput(f"bad LZMA properties: {exc}") from None
            self._obj = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])
            raw, self._buffer, self._lzma_header = self._buffer[4 + props_len :], b"", False
        return self._run(raw, max_out)

    def _run(self, raw: bytes, max_out: int) -> bytes:
        data = self._pending + raw
        self._pending = b""
        try:
            if self._zlib is not None:
                out = self._zlib.decompress(data, max_out)
                self._pending = self._zlib.unconsumed_tail
                self.finished = self._zlib.eof
                return out
            obj = self._obj
            if obj is None or obj.eof:
                return b""
            # bz2/lzma keep unconsumed input themselves; feeding b"" later drains them.
            out = obj.decompress(data, max_out)
            self.finished = obj.eof
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            raise MalformedInput(f"corrupt compressed data ({exc})") from None
        return out


def _decoder(method: int) -> _Decoder:
    if method not in _METHODS:
        raise MalformedInput(f"unsupported compression method {method}")
    return _Decoder(method)


def _find_eocd(tail: bytes) -> tuple[int, int, int, int, int] | None:
    """The last plausible end record in ``tail``: (position, count, size, offset, comment length)."""
    pos = tail.rfind(_EOCD_SIG)
    while pos >= 0:
        if pos + _EOCD_SIZE <= len(tail):
            _, disk, cd_disk, _, count, cd_size, cd_offset, comment_len = struct.unpack_from(
                "<4sHHHHIIH", tail, pos
            )
            if (disk, cd_disk) in ((0, 0), (0xFFFF, 0xFFFF)):
                return pos, count, cd_size, cd_offset, comment_len
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    return None


def _read_zip64(tail: bytes, eocd_pos: int) -> tuple[int, int, int, int] | None:
    """(count, size, offset, record position) from a zip64 end record just before the end record."""
    loc = eocd_pos - 20
    if loc < 0 or tail[loc : loc + 4] != _LOCATOR64_SIG:
        return None
    rec = loc - 56
    if rec < 0 or tail[rec : rec + 4] != _EOCD64_SIG:
        return None
    count, cd_size, cd_offset = struct.unpack_from("<QQQ", tail, rec + 32)
    return count, cd_size, cd_offset, rec


def _apply_zip64(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 0x0001:
            values = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return usize, csize, offset


def _decode(raw: bytes, flags: int) -> str:
    # Bit 11 promises UTF-8; otherwise cp437 like zipfile. Undecodable bytes stay visible, never raise.
    if flags & 0x0800:
        return raw.decode("utf-8", "surrogateescape")
    return raw.decode("cp437")


class _Window(io.RawIOBase):
    """A read-only view of ``size`` bytes at ``start`` of another seekable stream."""

    def __init__(self, base: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._base, self._start, self._size, self._pos = base, start, size, 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def tell(self) -> int:
        """The position within the window."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the window (clamped at zero)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # RawIOBase takes any buffer
        """Fill ``buffer`` from the window."""
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._base.seek(self._start + self._pos)
        data = self._base.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def window_source(parent: Source, start: int, size: int, name: str) -> Source:
    """A Source over ``size`` bytes of ``parent`` at ``start``, read lazily (no copy)."""
    return Source(cast(BinaryIO, _Window(parent.stream, start, size)), size, name)
