"""Which scanner functions examine which format, importing each format module only when needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from bastion.scan.context import ScannerFn
from bastion.scan.formats import Format

# The modules that hold each format's scanners, in the order they run. A module is imported the first
# time its format is met, so scanning one pickle from the CLI does not pay for HDF5, GGUF or Jinja2.
# The zip scanner also looks behind pickles and unknown data for an appended archive (polyglots).
FORMAT_MODULES: dict[Format, tuple[str, ...]] = {
    Format.PICKLE: ("pickle_scan", "zip_scan"),
    Format.PYTORCH_LEGACY: ("torch_legacy", "zip_scan"),
    Format.DATA: ("zip_scan",),
    Format.NUMPY: ("numpy_scan",),
    Format.ZIP: ("zip_scan",),
    Format.TAR: ("archives",),
    Format.GZIP: ("archives",),
    Format.BZIP2: ("archives",),
    Format.XZ: ("archives",),
    Format.ZLIB: ("archives",),
    Format.LZ4: ("archives",),
    Format.SEVENZIP: ("archives",),
    Format.HDF5: ("hdf5_scan",),
    Format.SAFETENSORS: ("safetensors_scan",),
    Format.GGUF: ("gguf_scan",),
    Format.ONNX: ("onnx_scan",),
    Format.SAVEDMODEL: ("savedmodel",),
    Format.JSON: ("keras_config", "hf_folder"),
    Format.PYTHON: ("hf_folder",),
}
ALL_MODULES: tuple[str, ...] = tuple(sorted({m for ms in FORMAT_MODULES.values() for m in ms}))

_SCANNERS: dict[Format, list[ScannerFn]] = {}


def scanner(fmt: Format) -> Callable[[ScannerFn], ScannerFn]:
    """Register the decorated function as a scanner of ``fmt`` (several may share one format)."""

    def decorate(fn: ScannerFn) -> ScannerFn:
        _SCANNERS.setdefault(fmt, []).append(fn)
        return fn

    return decorate


def _module_rank(fmt: Format, fn: ScannerFn) -> int:
    name = fn.__module__.rsplit(".", 1)[-1]
    modules = FORMAT_MODULES.get(fmt, ())
    return modules.index(name) if name in modules else len(modules)


def scanners_for(fmt: Format) -> list[ScannerFn]:
    """The scanners of ``fmt``, importing their modules on first use, in the documented order."""
    for module in FORMAT_MODULES.get(fmt, ()):
        importlib.import_module(f"bastion.scan.{module}")
    return sorted(_SCANNERS.get(fmt, ()), key=lambda fn: _module_rank(fmt, fn))


def load_all() -> None:
    """Import every format module, registering all scanners and rules (for catalogues, worker pools)."""
    for module in ALL_MODULES:
        importlib.import_module(f"bastion.scan.{module}")
