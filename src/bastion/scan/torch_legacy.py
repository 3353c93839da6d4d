"""The legacy (pre-1.6, non-zip) ``torch.save`` format: five stacked pickles, then raw storage bytes.

``torch.load`` unpickles, in order, the magic number, the protocol version, a ``sys_info`` dict, the
object itself (the dangerous one) and the list of storage keys; everything after that is tensor data
read as raw bytes. Only those five pickles are analysed; the storage bytes are never parsed, since
parsing weights as opcodes would both waste time and raise false alarms.
"""

from __future__ import annotations

import io
import logging
import pickletools
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, cast

from bastion.errors import LimitExceeded, MalformedInput
from bastion.findings import Location
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.registry import scanner

log = logging.getLogger(__name__)

LEGACY_PICKLES = 5
_END_ATTRS = ("end", "end_offset", "stop")

PickleStreamFn = Callable[..., Sequence[Any]]


@scanner(Format.PYTORCH_LEGACY)
def scan_torch_legacy(source: Source, location: Location, ctx: ScanContext) -> None:
    """Analyse the five pickles of a legacy torch.save file and leave its storage bytes alone."""
    analyse = _pickle_stream_fn()
    if analyse is None:
        _scan_by_extent(source, location, ctx)
        return
    offset = 0
    for _ in range(LEGACY_PICKLES):
        if offset >= source.size:
            ctx.incomplete(location.at(offset), "the legacy checkpoint ends before its five pickles do")
            return
        analyses = analyse(source, location, ctx, start=offset, stacked=False)
        end = _end_of(analyses)
        if end is None or end <= offset:
            return  # the analyser reported why it stopped; the rest cannot be located
        offset = end


def _end_of(analyses: Sequence[Any]) -> int | None:
    """The offset just past the last analysed pickle, if the analyser finished it cleanly."""
    if not analyses:
        return None
    last = analyses[-1]
    if getattr(last, "error", None):
        return None
    for attr in _END_ATTRS:
        value = getattr(last, attr, None)
        if isinstance(value, int):
            return value
    return None


def legacy_extent(
    source: Source, count: int = LEGACY_PICKLES, *, limit: int | None = None, strict: bool = True
) -> list[int]:
    """End offsets of the first ``count`` pickles laid end to end, found by decoding opcodes.

    Nothing is executed. Reading stops at ``limit`` (default: the end of the source). When a
    pickle cannot be delimited, ``strict`` raises :class:`MalformedInput`; otherwise the ends
    found so far are returned.
    """
    source.stream.seek(0)
    reader = _Bounded(source.stream, source.size if limit is None else min(limit, source.size))
    end = 0
    ends: list[int] = []
    for _ in range(count):
        try:
            for opcode, _arg, pos in pickletools.genops(cast(BinaryIO, reader)):
                if opcode.name == "STOP":
                    end = (pos or 0) + 1
                    break
            else:
                raise MalformedInput("a legacy checkpoint pickle has no STOP opcode")
        except (ValueError, EOFError, KeyError, TypeError, UnicodeDecodeError, MalformedInput) as exc:
            if not strict:
                return ends
            raise MalformedInput(f"cannot delimit the legacy checkpoint's pickles ({exc})") from None
        ends.append(end)
        reader.seek(end)
    return ends


def _scan_by_extent(source: Source, location: Location, ctx: ScanContext) -> None:
    """Without the stream analyser: cut out pickles two to five and scan them as nested pickles.

    The first pickle is the magic number the file was identified by; leaving it out keeps the
    nested bytes from being identified as a legacy checkpoint again.
    """
    try:
        ends = legacy_extent(source)
    except (MalformedInput, LimitExceeded) as exc:
        ctx.incomplete(location, exc.diagnostics())
        return
    start, end = ends[0], ends[-1]
    if end - start > ctx.limits.max_member_bytes:
        ctx.incomplete(location, "the legacy checkpoint's pickles are too large to analyse")
        return
    ctx.scan_nested(source.read_at(start, end - start), location.child("<pickles>"), "pickles.pkl")


class _Bounded(io.RawIOBase):
    """A reader over a stream that refuses to read past ``size`` (genops trusts length prefixes)."""

    def __init__(self, stream: Any, size: int) -> None:
        super().__init__()
        self._stream, self._size = stream, size

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def tell(self) -> int:
        """The underlying position."""
        return int(self._stream.tell())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Seek the underlying stream."""
        return int(self._stream.seek(offset, whence))

    def read(self, size: int = -1) -> bytes:
        """Read at most to the end of the stream, whatever length a pickle opcode claims."""
        left = max(0, self._size - self.tell())
        if size < 0 or size > left:
            size = left
        return cast(bytes, self._stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        """One line, bounded like read()."""
        return cast(bytes, self._stream.readline(1 << 16 if size is None or size < 0 else size))


def _pickle_stream_fn() -> PickleStreamFn | None:
    """The pickle analyser's stream entry point, if that module provides it."""
    from bastion.scan import pickle_scan  # imported late: the two modules are written independently

    fn = getattr(pickle_scan, "scan_pickle_stream", None)
    return cast(PickleStreamFn, fn) if callable(fn) else None
