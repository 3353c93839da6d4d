"""Tar, 7z and single-stream compression wrappers (gzip, bzip2, xz/lzma, zlib, lz4).

Each wrapper is opened with bounded, streaming decompression and its content handed back to the
engine, which identifies it by content: a joblib dump compressed with zlib is a pickle inside a
zlib wrapper, a ``.tar.gz`` is a tar inside a gzip. Nesting depth and the total number of bytes are
bounded by :meth:`ScanContext.scan_nested`. A wrapper's content is spooled to a temporary file
once it outgrows memory; a stream that expands more than ``Limits.max_ratio`` times or past
``Limits.max_total_bytes``, or a 7z member larger than ``Limits.max_member_bytes``, is reported as
incomplete and not read on.
"""

from __future__ import annotations

import bz2
import lzma
import posixpath
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import IO, Any, BinaryIO, Protocol, cast

from bastion.errors import LimitExceeded, MalformedInput
from bastion.findings import Location, Severity
from bastion.rules import OWASP_LLM03, Reference, Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.registry import scanner
from bastion.scan.zip_reader import window_source
from bastion.scan.zip_scan import Layout, classify, is_storage

ARCHIVE_LINK = register(
    Rule(
        code="BST-ARC-001",
        name="link-outside-archive",
        severity=Severity.LOW,
        summary="A tar member is a link that points outside the archive.",
        what_it_does=(
            "Reports symbolic and hard links in tar archives whose target is an absolute path or climbs "
            "out of the extraction directory with `..`."
        ),
        why_bad=(
            "Extracting such an archive with an old or careless extractor can read or overwrite files "
            "elsewhere on the machine (path traversal, CVE-2007-4559). Model archives have no reason to "
            "contain links."
        ),
        example="A member `weights.bin` that is a symlink to `/home/user/.ssh/id_rsa`.",
        use_instead=(
            "Extract with `tarfile`'s `filter='data'` (Python 3.12+) and re-pack the model without links."
        ),
        false_positives="Archives of whole directory trees sometimes carry links to system files on purpose.",
        references=(OWASP_LLM03, Reference("CWE-22: Path Traversal"), Reference("CVE-2007-4559")),
    )
)

_CHUNK = 1 << 20
_RATIO_FLOOR = 1 << 20  # below this much output a high ratio is ordinary, not a bomb
_SPOOL = 64 << 20  # decompressed content beyond this goes to a temporary file
_SUFFIXES = {
    ".gz": "",
    ".gzip": "",
    ".z": "",
    ".zlib": "",
    ".bz2": "",
    ".xz": "",
    ".lzma": "",
    ".lz4": "",
    ".tgz": ".tar",
    ".tbz2": ".tar",
    ".tbz": ".tar",
    ".txz": ".tar",
}
_SCAN_EXTRA = "the optional 'scan' extra (pip install 'bastion-ai[scan]')"


class _Decompressor(Protocol):
    """What bz2, lzma and lz4 frame decompressors have in common."""

    @property
    def eof(self) -> bool:
        """True once the end of the stream was reached."""

    @property
    def needs_input(self) -> bool:
        """True when more input is needed to produce output."""

    @property
    def unused_data(self) -> bytes:
        """Input found after the end of the stream."""

    def decompress(self, data: bytes, max_length: int = ...) -> bytes:
        """Decompress ``data`` into at most ``max_length`` bytes."""


# -- single-stream wrappers -------------------------------------------------------------------------


def inner_name(name: str) -> str:
    """The name of a wrapper's content: ``model.pkl.gz`` holds ``model.pkl``, ``x.tgz`` holds ``x.tar``."""
    path = PurePosixPath(name)
    replacement = _SUFFIXES.get(path.suffix.lower())
    if replacement is None:
        return name
    return path.stem + replacement if path.stem else name


@dataclass(slots=True)
class _Output:
    """Decompressed bytes, spooled to a temporary file past a few MiB, with both caps applied as they grow."""

    cap: int
    ratio_cap: int
    file: IO[bytes]
    size: int = 0

    def add(self, chunk: bytes) -> None:
        """Append ``chunk`` and enforce both caps."""
        self.file.write(chunk)
        self.size += len(chunk)
        if self.size > self.cap:
            raise LimitExceeded(f"decompresses to more than {self.cap} bytes")
        if self.size > self.ratio_cap:
            raise LimitExceeded("expands more than the allowed ratio (a decompression bomb)")

    @property
    def room(self) -> int:
        """How much one decompress call may produce (bounded, so a bomb cannot inflate at once)."""
        return min(_CHUNK, self.cap + 1 - self.size)


def _inflate_zlib(source: Source, out: _Output, wbits: int) -> None:
    """zlib or gzip (several gzip members in a row are read one after the other)."""
    source.stream.seek(0)
    dec = zlib.decompressobj(wbits)
    data = b""
    while True:
        if not data:
            data = dec.unconsumed_tail or source.stream.read(_CHUNK)
            if not data:
                if dec.eof:
                    return
                raise MalformedInput("the compressed stream is truncated")
        try:
            out.add(dec.decompress(data, out.room))
        except zlib.error as exc:
            raise MalformedInput(f"corrupt compressed data ({exc})") from None
        data = dec.unconsumed_tail
        if dec.eof:
            rest = dec.unused_data or source.stream.read(_CHUNK)
            if wbits != 31 or not rest.strip(b"\0"):
                return
            dec, data = zlib.decompressobj(wbits), rest


def _inflate_stream(source: Source, out: _Output, make: Callable[[], _Decompressor]) -> None:
    """bz2, xz/lzma or lz4: these keep unconsumed input themselves and may hold several streams."""
    source.stream.seek(0)
    dec = make()
    while True:
        if dec.eof:
            rest = dec.unused_data or source.stream.read(_CHUNK)
            if not rest.strip(b"\0"):
                return
            dec = make()
            chunk = dec.decompress(rest, out.room)
        elif dec.needs_input:
            raw = source.stream.read(_CHUNK)
            if not raw:
                raise MalformedInput("the compressed stream is truncated")
            chunk = dec.decompress(raw, out.room)
        else:
            chunk = dec.decompress(b"", out.room)
        out.add(chunk)


def _lz4_decompressor() -> _Decompressor:
    import lz4.frame  # type: ignore[import-untyped]  # optional 'scan' extra without type stubs

    dec: _Decompressor = lz4.frame.LZ4FrameDecompressor()
    return dec


_STREAMS: dict[Format, Callable[[], _Decompressor]] = {
    Format.BZIP2: bz2.BZ2Decompressor,
    Format.XZ: lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),
    Format.LZ4: _lz4_decompressor,
}


def decompress(source: Source, fmt: Format, ctx: ScanContext, name: str) -> Source:
    """Decompress a whole gzip/bzip2/xz/zlib/lz4 stream within the limits; raise on corrupt input.

    The result is spooled to a temporary file once it outgrows memory, so a multi-gigabyte
    ``model.tar.gz`` costs disk, not RAM; the caller closes ``result.stream``. The size cap is what
    is left of ``Limits.max_total_bytes`` for this file.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115  (closed by the caller)
    ratio_cap = max(_RATIO_FLOOR, int(ctx.limits.max_ratio * max(source.size, 1)))
    out = _Output(max(0, ctx.limits.max_total_bytes - ctx.total_bytes), ratio_cap, spool)
    try:
        if fmt is Format.GZIP:
            _inflate_zlib(source, out, 31)
        elif fmt is Format.ZLIB:
            _inflate_zlib(source, out, 15)
        else:
            _inflate_stream(source, out, _STREAMS[fmt])
    except (OSError, EOFError, lzma.LZMAError, ValueError, RuntimeError) as exc:
        spool.close()
        raise MalformedInput(f"corrupt compressed data ({exc})") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Source(cast(BinaryIO, spool), out.size, name)


def _scan_inner(inner: Source, location: Location, ctx: ScanContext) -> None:
    try:
        ctx.scan_nested(inner, location.child(inner.name), inner.name)
    finally:
        inner.stream.close()


@scanner(Format.GZIP)
@scanner(Format.BZIP2)
@scanner(Format.XZ)
@scanner(Format.LZ4)
def scan_compressed(source: Source, location: Location, ctx: ScanContext) -> None:
    """Decompress a gzip, bzip2, xz or lz4 file within the limits and scan what it holds."""
    fmt = _format_of(source)
    if fmt is Format.LZ4 and not _have_lz4():
        ctx.incomplete(location, f"LZ4 support is not installed; it comes with {_SCAN_EXTRA}")
        return
    _scan_inner(decompress(source, fmt, ctx, inner_name(source.name)), location, ctx)


@scanner(Format.ZLIB)
def scan_zlib(source: Source, location: Location, ctx: ScanContext) -> None:
    """Decompress a zlib stream (joblib's default compression) and scan what it holds."""
    try:
        inner = decompress(source, Format.ZLIB, ctx, inner_name(source.name))
    except MalformedInput:
        # Two bytes are a weak signature: if not even the start inflates, this is data that only looks
        # like zlib, and a loader could not inflate it either.
        if not _inflates_at_all(source):
            return
        raise
    _scan_inner(inner, location, ctx)


def _inflates_at_all(source: Source) -> bool:
    try:
        return bool(zlib.decompressobj(15).decompress(source.head(4096), 1))
    except zlib.error:
        return False


def _format_of(source: Source) -> Format:
    head = source.head(6)
    if head.startswith(b"\x1f\x8b"):
        return Format.GZIP
    if head.startswith(b"BZh"):
        return Format.BZIP2
    if head.startswith(b"\x04\x22\x4d\x18"):
        return Format.LZ4
    return Format.XZ


def _have_lz4() -> bool:
    try:
        import lz4.frame  # noqa: F401  (optional dependency probe)
    except ImportError:
        return False
    return True


# -- tar --------------------------------------------------------------------------------------------

_TORCH_TAR_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})


@scanner(Format.TAR)
def scan_tar(source: Source, location: Location, ctx: ScanContext) -> None:
    """Scan every regular member of a tar archive by content; note links that leave the archive."""
    source.stream.seek(0)
    members: list[tarfile.TarInfo] = []
    error: str | None = None
    try:
        with tarfile.open(fileobj=source.stream, mode="r:") as tar:
            for member in tar:
                if len(members) >= ctx.limits.max_members:
                    error = f"more than {ctx.limits.max_members} members in one archive"
                    break
                members.append(member)
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        error = f"the tar archive is corrupt after {len(members)} members ({exc})"
    if {m.name for m in members} >= _TORCH_TAR_MEMBERS:
        _refine_format(ctx, location, "pytorch-tar")
    for member in members:
        _scan_tar_member(source, member, location, ctx)
    if error is not None:
        ctx.incomplete(location, error)


def _scan_tar_member(source: Source, member: tarfile.TarInfo, location: Location, ctx: ScanContext) -> None:
    where = location.child(member.name)
    if member.issym() or member.islnk():
        _check_link(member, where, ctx)
        return
    if not member.isreg():
        return  # directories, devices and fifos hold no content a loader reads
    if member.offset_data + member.size > source.size:
        ctx.incomplete(where, "the member runs past the end of the archive")
        return
    if member.issparse():
        ctx.incomplete(where, "sparse tar members are not analysed")
        return
    name = posixpath.basename(member.name) or member.name
    ctx.scan_nested(window_source(source, member.offset_data, member.size, name), where, name)


def _check_link(member: tarfile.TarInfo, where: Location, ctx: ScanContext) -> None:
    target = member.linkname
    base = posixpath.dirname(member.name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        ctx.report(
            ARCHIVE_LINK.code,
            where,
            "This tar member is a link that points outside the archive; extract with filter='data' and "
            "re-pack the model without links.",
            {"link": target, "kind": "symlink" if member.issym() else "hardlink"},
        )


def _refine_format(ctx: ScanContext, location: Location, kind: str) -> None:
    for i, target in enumerate(ctx.targets):
        if target.location == location:
            ctx.targets[i] = replace(target, format=kind)


# -- 7z ---------------------------------------------------------------------------------------------


@scanner(Format.SEVENZIP)
def scan_7z(source: Source, location: Location, ctx: ScanContext) -> None:
    """Scan the members of a 7z archive (py7zr), one at a time, within the size and ratio limits."""
    try:
        import py7zr
    except ImportError:
        ctx.incomplete(location, f"7z support is not installed; it comes with {_SCAN_EXTRA}")
        return
    source.stream.seek(0)
    try:
        with py7zr.SevenZipFile(source.stream, mode="r") as archive:
            infos = [i for i in archive.list() if not i.is_directory]
            budget = _check_7z_sizes(infos, source, location, ctx)
            if budget is None:
                return
            layout = classify([i.filename for i in infos])
            archive.max_extract_size = budget
            factory = _ScanningFactory(location, ctx, layout)
            archive.extract(factory=factory)
            factory.finish()
    except LimitExceeded:
        raise
    except Exception as exc:  # py7zr raises many types on hostile input; fail closed with the reason
        raise MalformedInput(f"cannot read the 7z archive ({type(exc).__name__}: {exc})") from None


def _check_7z_sizes(infos: list[Any], source: Source, location: Location, ctx: ScanContext) -> int | None:
    """The total bytes extraction may produce, or None (after reporting) if the declared sizes are hostile."""
    if len(infos) > ctx.limits.max_members:
        ctx.incomplete(location, f"more than {ctx.limits.max_members} members in one archive")
        return None
    total = sum(int(i.uncompressed or 0) for i in infos)
    biggest = max((int(i.uncompressed or 0) for i in infos), default=0)
    if biggest > ctx.limits.max_member_bytes:
        ctx.incomplete(location, f"a member is larger than {ctx.limits.max_member_bytes} bytes")
        return None
    if total > max(_RATIO_FLOOR, ctx.limits.max_ratio * max(source.size, 1)):
        ctx.incomplete(location, "expands more than the allowed ratio (a decompression bomb)")
        return None
    return total + _CHUNK


class _MemberWriter:
    """Collects one 7z member (bounded, spooled to disk past a few MiB) and scans it once complete."""

    def __init__(self, name: str, location: Location, ctx: ScanContext, keep: bool) -> None:
        self.name, self.location, self.ctx, self.keep = name, location, ctx, keep
        self.spool: IO[bytes] | None = None
        self.written = 0
        self.overflow = False

    def write(self, s: bytes | bytearray) -> int:
        """Keep the bytes unless over the member limit; report them all as written either way."""
        if not self.keep or self.overflow:
            return len(s)
        if self.written + len(s) > self.ctx.limits.max_member_bytes:
            self.overflow = True
            if self.spool is not None:
                self.spool.close()
            return len(s)
        if self.spool is None:
            self.spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115  (closed in close())
        self.spool.write(s)
        self.written += len(s)
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        """Nothing is read back through py7zr."""
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        """Writers are append-only."""
        return 0

    def flush(self) -> None:
        """Nothing to flush."""
        return None

    def size(self) -> int:
        """Bytes kept so far."""
        return self.written

    def close(self) -> None:
        """The member is complete: scan it once and drop the bytes."""
        if not self.keep:
            return
        self.keep = False
        where = self.location.child(self.name)
        if self.overflow:
            self.ctx.incomplete(where, f"member is larger than {self.ctx.limits.max_member_bytes} bytes")
            return
        spool, self.spool = self.spool, None
        name = posixpath.basename(self.name) or self.name
        if spool is None:
            self.ctx.scan_nested(b"", where, name)
            return
        try:
            spool.seek(0)
            self.ctx.scan_nested(Source(cast(BinaryIO, spool), self.written, name), where, name)
        finally:
            spool.close()


class _ScanningFactory:
    """py7zr WriterFactory: one bounded writer per member; torch storages are decompressed, not kept."""

    def __init__(self, location: Location, ctx: ScanContext, layout: Layout) -> None:
        self.location, self.ctx, self.layout = location, ctx, layout
        self.writers: list[_MemberWriter] = []

    def create(self, filename: str) -> _MemberWriter:
        """A writer for one member; torch storages are counted but not kept."""
        keep = not is_storage(filename, self.layout, None)
        writer = _MemberWriter(filename, self.location, self.ctx, keep)
        self.writers.append(writer)
        return writer

    def finish(self) -> None:
        """Scan any member whose writer py7zr did not close (closing twice is harmless)."""
        for writer in self.writers:
            writer.close()
