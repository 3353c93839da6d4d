"""Which scanner functions examine which format; format modules register themselves on import."""

from __future__ import annotations

from collections.abc import Callable

from bastion.scan.context import ScannerFn
from bastion.scan.formats import Format

_SCANNERS: dict[Format, list[ScannerFn]] = {}


def scanner(fmt: Format) -> Callable[[ScannerFn], ScannerFn]:
    """Register the decorated function as a scanner of ``fmt`` (several may share one format)."""

    def decorate(fn: ScannerFn) -> ScannerFn:
        _SCANNERS.setdefault(fmt, []).append(fn)
        return fn

    return decorate


def scanners_for(fmt: Format) -> list[ScannerFn]:
    """The scanners registered for ``fmt``, in registration order."""
    return list(_SCANNERS.get(fmt, ()))
