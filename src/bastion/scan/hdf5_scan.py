"""HDF5 scanner: Keras configs stored in attributes of legacy ``.h5`` models.

Only attributes are read (``model_config``, ``training_config`` at the root, then every attribute that
holds Keras-shaped JSON); dataset contents, the weights, are never read, and links to other files are
never followed. h5py comes from the optional ``scan`` extra; without it the file is reported as not
fully analysed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bastion.errors import LimitExceeded, MalformedInput
from bastion.findings import Location
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.keras_config import check_keras_config, is_keras_config
from bastion.scan.registry import scanner

log = logging.getLogger(__name__)

_ROOT_CONFIGS = ("model_config", "training_config")
_MAX_OBJECTS = 100_000
_MAX_ATTRS = 1_000  # per object


def _text(value: object) -> str | None:
    """An attribute value as text if it is a scalar string (h5py gives bytes, str or a numpy scalar)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return _text(item())
    return None


def _json_attr(value: object) -> object | None:
    text = _text(value)
    if text is None or not text.lstrip().startswith(("{", "[")):
        return None
    try:
        parsed: object = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return parsed


def _attrs(obj: Any) -> list[tuple[str, object]]:
    names = list(obj.attrs.keys())
    if len(names) > _MAX_ATTRS:
        raise LimitExceeded(f"HDF5 object with more than {_MAX_ATTRS} attributes")
    out = []
    for name in names:
        try:
            out.append((str(name), obj.attrs[name]))
        except (OSError, TypeError, ValueError, KeyError, RuntimeError):  # exotic types hold no Keras JSON
            continue
    return out


def _check_root(h5: Any, location: Location, ctx: ScanContext) -> None:
    for name, value in _attrs(h5):
        if name not in _ROOT_CONFIGS:
            continue
        obj = _json_attr(value)
        if obj is None:
            if _text(value):
                ctx.incomplete(location, f"root attribute {name} is not valid JSON")
            continue
        # training_config is not model-shaped but holds losses, metrics and optimizers that Keras rebuilds.
        check_keras_config(
            obj, location, ctx, assume_keras=True, container=f"/@{name} (h5 ignores safe_mode)"
        )


def _walk_objects(h5: Any, location: Location, ctx: ScanContext) -> None:
    try:
        _walk_bounded(h5, location, ctx)
    except LimitExceeded as exc:
        # Keras only executes the root configs; nested attributes are checked as defence in depth.
        # A huge plain-data file that hits the cap is not a model, so only a Keras file fails closed.
        if any(name in h5.attrs for name in (*_ROOT_CONFIGS, "keras_version")):
            ctx.incomplete(location, exc.diagnostics())
        else:
            log.debug("stopped walking %s: %s", location.display, exc.diagnostics())


def _walk_bounded(h5: Any, location: Location, ctx: ScanContext) -> None:
    import h5py

    stack: list[tuple[str, Any]] = [("/", h5)]
    visited: set[Any] = {h5.id}  # hard links can make cycles and diamonds; visit each object once
    seen = 0
    while stack:
        path, group = stack.pop()
        for name in list(group.keys()):
            seen += 1
            if seen > _MAX_OBJECTS:
                raise LimitExceeded(f"HDF5 file with more than {_MAX_OBJECTS} objects")
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):  # soft and external links are not followed
                continue
            child = group[name]
            if child.id in visited:
                continue
            visited.add(child.id)
            child_path = f"{path.rstrip('/')}/{name}"
            for attr, value in _attrs(child):
                obj = _json_attr(value)
                if obj is not None and is_keras_config(obj):
                    check_keras_config(obj, location, ctx, container=f"{child_path}/@{attr}")
            if isinstance(child, h5py.Group):
                stack.append((child_path, child))
    for attr, value in _attrs(h5):
        obj = _json_attr(value)
        if attr not in _ROOT_CONFIGS and obj is not None and is_keras_config(obj):
            check_keras_config(obj, location, ctx, container=f"/@{attr}")


@scanner(Format.HDF5)
def scan_hdf5(source: Source, location: Location, ctx: ScanContext) -> None:
    """Examine a (Keras) HDF5 file's attributes for Lambda layers and other code-loading configs."""
    try:
        import h5py
    except ImportError:
        ctx.incomplete(location, "h5py is not installed; install bastion[scan] to examine HDF5 files")
        return
    try:
        source.stream.seek(0)
        h5 = h5py.File(source.stream, "r")
    except (OSError, ValueError, OverflowError) as exc:
        # OverflowError: a superblock address beyond any offset (h5py's file-object driver cannot seek there).
        raise MalformedInput(f"not a readable HDF5 file ({exc})") from None
    with h5:
        try:
            _check_root(h5, location, ctx)
            _walk_objects(h5, location, ctx)
        except (OSError, KeyError, RuntimeError, OverflowError) as exc:
            raise MalformedInput(f"corrupt HDF5 structure ({exc})") from None
