"""Rewrite a pickle-based checkpoint as safetensors, loading it only through ``safe_load``.

The source is scanned and loaded with the allowlist-restricted loader (so nothing in it runs), its
tensors are collected (a state dict, or one nested under ``state_dict``/``model``, flattened with
dotted keys), and the result is written atomically: a temporary file in the destination directory,
then ``os.replace``. Non-tensor entries (epoch counters, optimizer settings) are skipped and listed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, InputError, UsageError
from bastion.safeload import safe_load

INSTALL_HINT = "pip install 'bastion-ai[convert]'"
# Keys under which training scripts nest the model's state dict.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights", "params")


class ConversionError(InputError):
    """The source cannot become safetensors (no tensors, unsupported tensor kinds, name clashes)."""


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """What a conversion wrote."""

    dst: Path
    tensors: int
    total_bytes: int
    skipped: tuple[str, ...] = ()  # entries that were not tensors, by dotted name
    cloned: tuple[str, ...] = ()  # tensors that shared memory with another and were copied


def _require_safetensors() -> None:
    try:
        import safetensors  # noqa: F401
    except ImportError as exc:
        raise BastionError(
            f"converting to safetensors needs the `safetensors` package; `{INSTALL_HINT}`"
        ) from exc


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "untyped_storage")


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def _is_tensor(value: Any) -> bool:
    if _is_array(value):
        return not bool(value.dtype.hasobject)
    return _is_torch_tensor(value)


def _has_tensors(value: Any) -> bool:
    return isinstance(value, Mapping) and any(_is_tensor(v) or isinstance(v, Mapping) for v in value.values())


def collect_tensors(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """Flatten ``obj`` into ``{dotted.name: tensor}`` plus the dotted names of non-tensor entries."""
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"the checkpoint holds a {type(obj).__module__}.{type(obj).__qualname__}, not a dict of tensors; "
            "only state dicts can be converted"
        )
    root: Mapping[Any, Any] = obj
    skipped: list[str] = []
    for key in CONTAINER_KEYS:
        if key in obj and _has_tensors(obj[key]) and not any(_is_tensor(v) for v in obj.values()):
            root = obj[key]
            skipped = [str(k) for k in obj if k != key]
            break
    tensors: dict[str, Any] = {}
    stack: list[tuple[str, Mapping[Any, Any]]] = [("", root)]
    while stack:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if _is_tensor(value):
                if name in tensors:
                    raise ConversionError(
                        f"two entries flatten to the same name {name!r}; rename one before converting"
                    )
                tensors[name] = value
            elif isinstance(value, Mapping):
                stack.append((name, value))
            else:
                skipped.append(name)
    return tensors, sorted(skipped)


def _prepare_torch(tensors: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    import torch

    ready: dict[str, Any] = {}
    owners: dict[int, list[str]] = {}
    for name, value in tensors.items():
        t = torch.from_numpy(value.copy()) if _is_array(value) else value
        if t.layout != torch.strided or t.is_quantized:
            raise ConversionError(
                f"tensor {name!r} is {t.layout}/{t.dtype}; safetensors holds only dense tensors"
            )
        t = t.detach().to("cpu")
        ready[name] = t
        if t.numel():
            owners.setdefault(t.untyped_storage().data_ptr(), []).append(name)
    cloned = sorted(n for names in owners.values() if len(names) > 1 for n in names)
    for name, t in ready.items():
        # Shared storages (tied weights) and views are copied: safetensors stores each tensor's own bytes.
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        ready[name] = t.contiguous().clone() if name in cloned or not whole else t.contiguous()
    return ready, cloned


def _write(tensors: dict[str, Any], path: str) -> tuple[int, list[str]]:
    if any(_is_torch_tensor(t) for t in tensors.values()):
        from safetensors.torch import save_file as save_torch

        ready, cloned = _prepare_torch(tensors)
        save_torch(ready, path, metadata={"format": "pt"})
        return sum(t.numel() * t.element_size() for t in ready.values()), cloned
    import numpy as np
    from safetensors.numpy import save_file as save_numpy

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_numpy(arrays, path, metadata={"format": "np"})
    return sum(int(a.nbytes) for a in arrays.values()), []


def convert_to_safetensors(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    profile: str | None = None,
) -> ConversionResult:
    """Convert the checkpoint ``src`` to the safetensors file ``dst`` (scanned and safely loaded first)."""
    _require_safetensors()
    source, target = Path(src), Path(dst)
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists; pass --overwrite to replace it")
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise UsageError("the destination is the source; write the safetensors file elsewhere")
    if not target.parent.is_dir():
        raise InputError(f"{target.parent}: no such directory")
    tensors, skipped = collect_tensors(safe_load(source, profile=profile))
    if not tensors:
        raise ConversionError(f"{source}: no tensors found (entries: {', '.join(skipped[:10]) or 'none'})")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            total, cloned = _write(tensors, tmp)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ConversionError(f"{source}: cannot write safetensors ({exc})") from exc
        if target.exists() and not overwrite:
            raise UsageError(f"{target} appeared while converting; pass --overwrite to replace it")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ConversionResult(target, len(tensors), total, tuple(skipped), tuple(cloned))
