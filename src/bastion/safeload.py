"""Load model files without running their code: scan first, then unpickle with an exact allowlist.

``safe_load`` is the safe path for people who must open a pickle-based file. It refuses any file the
scanner rates high or worse, then loads it with a loader that cannot import anything outside
Bastion's curated safe list (:mod:`bastion.scan.globals_policy`):

- raw pickles (and joblib files): :class:`RestrictedUnpickler`, whose ``find_class`` allows only listed
  globals and whose ``persistent_load`` refuses;
- PyTorch checkpoints: every pickle in the archive is first walked by a *dry* unpickler that checks
  each global against the allowlist and builds only inert stand-ins, then PyTorch's own restricted
  loader (``torch.load(weights_only=True)``, torch >= 2.6) rebuilds the tensors;
- numpy ``.npy``/``.npz`` (``allow_pickle=False``) and safetensors, which hold no code.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from bastion.errors import BastionError, InputError, UsageError
from bastion.findings import Finding, Severity, sort_findings
from bastion.scan.formats import Format, identify
from bastion.scan.globals_policy import PROFILES, normalise, rate_import, safe_globals

SUPPORTED = (
    "pickle and joblib files, PyTorch checkpoints (.pt/.pth/.bin, zip or legacy; needs torch >= 2.6), "
    "numpy .npy/.npz, and safetensors"
)
_MIN_TORCH = (2, 6)  # CVE-2025-32434: weights_only=True could be bypassed before 2.6
_COMPRESSED = frozenset({Format.ZLIB, Format.GZIP, Format.BZIP2, Format.XZ, Format.LZ4})


class UnsafeGlobalError(BastionError):
    """A pickle asked for a global that is not on Bastion's safe list; nothing was imported."""

    def __init__(self, module: str, name: str, reason: str) -> None:
        self.module, self.name, self.reason = module, name, reason
        super().__init__(
            f"refused to load the global {module}.{name}: {reason}; only globals on Bastion's safe list are "
            "allowed, so obtain the model in a format without code (safetensors) from a trusted source"
        )


class UnsafeFileError(BastionError):
    """The scan before loading found problems at or above the refusal threshold."""

    def __init__(self, path: str, findings: list[Finding], threshold: Severity) -> None:
        self.path, self.findings, self.threshold = path, findings, threshold
        worst = findings[0]
        super().__init__(
            f"{path}: refusing to load: the scan found {len(findings)} finding(s) at {threshold.label} "
            f"or above (worst: {worst.rule_id} {worst.severity.label}: {worst.message}); "
            f"run `bastion scan {path}` for details"
        )


class _NeedsJoblib(BastionError):
    """Internal signal: the pickle is a joblib file with inline numpy arrays."""


class UnsupportedFormatError(InputError):
    """``safe_load`` does not know how to load this kind of file safely."""


# ---- the restricted unpicklers ----------------------------------------------------------------


def allowed_globals(profile: str | None) -> frozenset[tuple[str, str]]:
    """The pairs ``profile`` allows, plus the plain-Python containers (every curated profile when None)."""
    if profile is None:
        return safe_globals(None)
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    # Every framework's pickles use dicts, lists and OrderedDicts, so a profile always includes them.
    return safe_globals({profile, "python"} & set(PROFILES))


def _check_global(module: str, name: str, allowed: frozenset[tuple[str, str]]) -> tuple[str, str]:
    # Map Python 2 names the way pickle does for protocols 0-2, then require an exact allowlist entry.
    pair = normalise(module, name)
    if pair not in allowed:
        raise UnsafeGlobalError(module, name, rate_import(module, name).reason)
    return pair


def _resolve(module: str, name: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports only allowlisted globals and refuses persistent references."""

    def __init__(self, file: IO[bytes], allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        """Return the global only if ``(module, name)`` is on the safe list, else raise UnsafeGlobalError."""
        pair = _check_global(module, name, self._allowed)
        if pair[1] == "NumpyArrayWrapper":
            raise _NeedsJoblib(
                module
            )  # its array bytes follow the opcodes; only joblib's unpickler reads them
        return _resolve(*pair)

    def persistent_load(self, pid: Any) -> Any:
        """Refuse: raw pickles have no business referring to external objects."""
        raise InputError(
            "the pickle refers to an external object (persistent id); raw pickles may not do that"
        )


class _Inert:
    """What the dry run builds for every global: accepts any construction and state, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        """Accept APPEND."""

    def extend(self, items: Iterable[Any]) -> None:
        """Accept APPENDS."""

    def add(self, item: Any) -> None:
        """Accept ADDITEMS."""


class DryRunUnpickler(pickle.Unpickler):
    """Checks every global of a pickle against the allowlist while building only inert stand-ins."""

    def __init__(self, file: IO[bytes], allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        """Check the global and hand back an inert class instead of importing it."""
        _check_global(module, name, self._allowed)
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        """Storages are referenced by persistent id in PyTorch pickles; an inert stand-in is enough."""
        return _Inert()


def _unpickle(stream: IO[bytes], allowed: frozenset[tuple[str, str]], what: str) -> Any:
    try:
        return RestrictedUnpickler(stream, allowed).load()
    except BastionError:
        raise
    except Exception as exc:  # allowed constructors fed bad arguments raise anything
        raise InputError(f"{what}: cannot load the pickle ({type(exc).__name__}: {exc})") from exc


def _dry_run(stream: IO[bytes], allowed: frozenset[tuple[str, str]], what: str) -> None:
    try:
        DryRunUnpickler(stream, allowed).load()
    except BastionError:
        raise
    except Exception as exc:
        raise InputError(f"{what}: the pickle is malformed ({type(exc).__name__}: {exc})") from exc


# ---- the scan gate ----------------------------------------------------------------------------


def _gate(path: Path, threshold: Severity) -> None:
    from bastion.scan.engine import ScanOptions, scan_file

    result = scan_file(path, str(path), ScanOptions(jobs=1))
    bad = sort_findings(f for f in result.findings if f.severity >= threshold)
    if bad:
        raise UnsafeFileError(str(path), bad, threshold)


# ---- per-format loaders -----------------------------------------------------------------------


def _load_pickle(path: Path, allowed: frozenset[tuple[str, str]]) -> Any:
    with path.open("rb") as fh:
        try:
            return _unpickle(fh, allowed, str(path))
        except _NeedsJoblib:
            pass
    return _load_joblib(path, allowed)


def _joblib_unpickler(allowed: frozenset[tuple[str, str]]) -> type[Any]:
    """joblib's unpickler (it reads the arrays stored after the opcodes) restricted to the allowlist."""
    import joblib  # type: ignore[import-untyped]  # joblib ships no type information
    from joblib.numpy_pickle import NumpyUnpickler  # type: ignore[import-untyped]  # as above

    version = tuple(int(p) for p in joblib.__version__.split(".")[:2] if p.isdigit())
    if version < (1, 6):
        # Before 1.6 joblib read object arrays with a plain, unrestricted pickle.load.
        raise UnsupportedFormatError(
            f"joblib {joblib.__version__} cannot be restricted safely; upgrade to joblib >= 1.6"
        )

    class _RestrictedJoblib(NumpyUnpickler):  # type: ignore[misc]  # joblib is untyped
        def find_class(self, module: str, name: str) -> Any:
            return _resolve(*_check_global(module, name, allowed))

        def persistent_load(self, pid: Any) -> Any:
            raise InputError(
                "the pickle refers to an external object (persistent id); joblib files may not do that"
            )

    return _RestrictedJoblib


def _load_joblib(path: Path, allowed: frozenset[tuple[str, str]]) -> Any:
    try:
        from joblib.numpy_pickle_utils import (  # type: ignore[import-untyped]  # untyped
            _validate_fileobject_and_memmap,
        )

        unpickler = _joblib_unpickler(allowed)
    except ImportError as exc:
        raise UnsupportedFormatError(
            f"{path}: loading joblib files needs joblib >= 1.6; `pip install joblib`"
        ) from exc
    try:
        with path.open("rb") as fh, _validate_fileobject_and_memmap(fh, str(path), None) as (stream, _):
            return unpickler(str(path), stream, ensure_native_byte_order=True).load()
    except BastionError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot load the joblib file ({type(exc).__name__}: {exc})") from exc


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise UnsupportedFormatError(
            "loading PyTorch checkpoints needs torch >= 2.6; `pip install torch`"
        ) from exc
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < _MIN_TORCH:
        raise UnsupportedFormatError(
            f"torch {torch.__version__} has a weights_only bypass (CVE-2025-32434); upgrade to torch >= 2.6"
        )
    return torch


def _torch_zip_pickles(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if any(n.endswith(("constants.pkl", ".py")) or "/code/" in n for n in names):
        raise UnsupportedFormatError(
            f"{path}: TorchScript archives contain code; `bastion load` does not load them"
        )
    pickles = [n for n in names if n.endswith(".pkl")]
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in pickles):
        raise UnsupportedFormatError(
            f"{path}: a zip archive that is not a PyTorch checkpoint; supported: {SUPPORTED}"
        )
    return pickles


def _load_torch(path: Path, allowed: frozenset[tuple[str, str]], fmt: Format) -> Any:
    members = _torch_zip_pickles(path) if fmt is Format.ZIP else []
    torch = _require_torch()
    if fmt is Format.ZIP:
        with zipfile.ZipFile(path) as zf:
            for member in members:
                _dry_run(io.BytesIO(zf.read(member)), allowed, f"{path}!{member}")
    else:
        # Legacy format: magic number, protocol, system info and the object, each its own pickle.
        with path.open("rb") as fh:
            for _ in range(4):
                _dry_run(fh, allowed, str(path))
    try:
        return torch.load(str(path), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: PyTorch's restricted loader refused the file ({exc})") from exc
    except (RuntimeError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot load the checkpoint ({exc})") from exc


def _load_numpy(path: Path) -> Any:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise UnsupportedFormatError(
            f"{path}: {exc} (object arrays need pickle, which `bastion load` refuses)"
        ) from exc


def _load_npz(path: Path) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        raise UnsupportedFormatError(
            f"{path}: {exc} (object arrays need pickle, which `bastion load` refuses)"
        ) from exc


def _load_safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise UnsupportedFormatError(
            "loading safetensors needs the `safetensors` package; `pip install 'bastion-ai[convert]'`"
        ) from exc
    try:
        result: dict[str, Any] = load_file(str(path))
        return result
    except (TypeError, ValueError):
        # bfloat16 and float8 have no numpy dtype; torch has them.
        from safetensors.torch import load_file as load_torch

        result = load_torch(str(path))
        return result


def _is_npz(path: Path) -> bool:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)


def _identify(path: Path) -> Format:
    with path.open("rb") as fh:
        head = fh.read(512)
    return identify(head, path.stat().st_size, path.name)


# ---- public API -------------------------------------------------------------------------------


def safe_load(path: str | os.PathLike[str], *, profile: str | None = None, scan: bool = True) -> Any:
    """Load ``path`` with no code from it running: scan it, then use an allowlist-restricted loader."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    allowed = allowed_globals(profile)
    try:
        fmt = _identify(p)
        torch_like = fmt is Format.PYTORCH_LEGACY or (fmt is Format.ZIP and not _is_npz(p))
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{p}: cannot read ({exc})") from exc
    if scan:
        # PyTorch's loader does the unpickling itself, so the scan must find nothing even unknown there.
        _gate(p, Severity.MEDIUM if torch_like else Severity.HIGH)
    loader = _loader_for(fmt, torch_like, allowed)
    if loader is None:
        raise UnsupportedFormatError(
            f"{p}: {fmt} files are not supported by `bastion load`; supported: {SUPPORTED}"
        )
    return loader(p)


def _loader_for(
    fmt: Format, torch_like: bool, allowed: frozenset[tuple[str, str]]
) -> Callable[[Path], Any] | None:
    if torch_like:
        return lambda p: _load_torch(p, allowed, fmt)
    if fmt is Format.PICKLE:
        return lambda p: _load_pickle(p, allowed)
    if fmt in _COMPRESSED:
        return lambda p: _load_joblib(p, allowed)
    if fmt is Format.ZIP:
        return _load_npz
    if fmt is Format.NUMPY:
        return _load_numpy
    if fmt is Format.SAFETENSORS:
        return _load_safetensors
    return None


def safe_loads(data: bytes, *, profile: str | None = None, scan: bool = True, name: str = "data.pkl") -> Any:
    """Like :func:`safe_load` for bytes in memory (``name`` hints the format, as a file name would)."""
    with tempfile.TemporaryDirectory(prefix="bastion-load-") as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        return safe_load(path, profile=profile, scan=scan)


def restricted_loads(data: bytes, *, profile: str | None = None) -> Any:
    """Unpickle ``data`` with the allowlist only (no scan): the building block for callers with bytes."""
    return _unpickle(io.BytesIO(data), allowed_globals(profile), "<bytes>")


# ---- describing what was loaded ---------------------------------------------------------------

_MAX_LINES = 40


def _brief(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        kind = "tensor" if type(value).__module__.startswith("torch") else type(value).__name__
        return f"{kind} {dtype} {tuple(shape)}"
    if isinstance(value, Mapping):
        return f"{type(value).__name__} with {len(value)} key{'' if len(value) == 1 else 's'}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{type(value).__name__} of {len(value)} items"
    if isinstance(value, (str, bytes, int, float, bool, complex)) or value is None:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__module__}.{type(value).__qualname__}"


def describe(obj: Any) -> str:
    """A short human summary of a loaded object: its type, keys or items, and tensor shapes."""
    lines = [_brief(obj)]
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    total = len(obj) if isinstance(obj, (Mapping, list, tuple)) else 0
    for count, (key, value) in enumerate(items):
        if count >= _MAX_LINES:
            lines.append(f"  ... and {total - count} more")
            break
        lines.append(f"  {key}: {_brief(value)}")
    return "\n".join(lines)
