"""The identity of a model artifact: per-file SHA-256 digests, sizes, one root digest, and its format.

The root digest is computed exactly as OpenSSF ``model-signing`` computes the in-toto subject digest of a
bundle it signs with file serialization and SHA-256: the SHA-256 of the concatenated raw file digests, in
the order model-signing sorts the files. So "this artifact is the registered one" and "this signature
covers the registered artifact" are both one string comparison. Hashing is model-signing's own (1 MiB
chunks, one thread per file), so the two can never drift apart.

Nothing here loads, imports or unpickles a model file: :func:`detect_format` reads file heads, JSON
configs and zip directories only.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import pickletools
import stat
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from bastion.errors import ConfigError, InputError
from bastion.registry.record import ArtifactFile

__all__ = [
    "DEFAULT_IGNORES",
    "DEFAULT_SIGNATURE_NAME",
    "ArtifactDigest",
    "detect_format",
    "hash_artifact",
    "list_files",
    "load_model_signing",
]

# The signature file `bastion sign` (and the model_signing CLI) writes inside a model directory.
DEFAULT_SIGNATURE_NAME = "model.sig"
# What model-signing ignores by default (its git paths) plus our signature file, so signing a directory
# never changes its digest. Paths are relative to the artifact root, matched by whole path components.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
DEFAULT_IGNORES = (*GIT_PATHS, DEFAULT_SIGNATURE_NAME)

CHUNK_SIZE = 1 << 20  # 1 MiB reads, as model-signing's default
_HEAD = 4096  # bytes read from each file to identify its format (identify() wants at least 512)
_CONFIG_LIMIT = 4 << 20  # config.json files larger than this are not parsed
_PICKLE_PEEK = 1 << 20  # bytes of a pickle (decompressed, for joblib) whose opcodes name its framework


@dataclass(frozen=True, slots=True)
class ArtifactDigest:
    """A model artifact's identity: its files (in model-signing order), total size and root digest.

    ``digest`` equals ``"sha256:" + sha256(b"".join(bytes.fromhex(f.sha256) for f in files))``, which is
    the subject digest model-signing records in a bundle signed with file serialization and SHA-256.
    Like model-signing's, it covers file contents and their order, not names: renaming a file without
    changing the order keeps ``digest``, so compare ``files`` too (a signature's resources do name them).
    """

    name: str  # the artifact's final path component (model-signing's subject name)
    digest: str  # "sha256:<hex>"
    files: tuple[ArtifactFile, ...]
    size: int
    is_dir: bool


def load_model_signing() -> ModuleType:
    """Import ``model_signing`` on first use, turning a missing (or undeclared) dependency into one line."""
    try:
        import model_signing
    except ImportError as exc:
        # model-signing imports pyOpenSSL (module "OpenSSL") without declaring it; name what is missing.
        missing = getattr(exc, "name", None) or str(exc)
        raise ConfigError(
            f"model signing is unavailable (cannot import {missing}): "
            "install the registry extra, pip install 'bastion[registry]' (model-signing and pyopenssl)"
        ) from exc
    return model_signing


def _ignored(rel: PurePosixPath, ignores: Sequence[PurePosixPath]) -> bool:
    """Whether ``rel`` is one of ``ignores`` or lies below one (model-signing's rule)."""
    return any(rel.is_relative_to(ignore) for ignore in ignores)


def _normalise_ignores(ignore: Sequence[str]) -> list[PurePosixPath]:
    out = []
    for item in ignore:
        rel = PurePosixPath(item.replace(os.sep, "/"))
        if rel.is_absolute() or ".." in rel.parts or str(rel) == ".":
            raise InputError(f"{item}: an ignored path must be relative to the artifact root")
        out.append(rel)
    return out


def list_files(path: Path, *, ignore: Sequence[str] = ()) -> list[tuple[str, int]]:
    """List an artifact's files as (POSIX path relative to the root, size), skipping ignored paths.

    A single file is listed under its own name. Raises InputError naming the path for a missing path,
    a symbolic link, a special file, an unreadable directory or an artifact with no file at all.
    """
    ignores = _normalise_ignores([*DEFAULT_IGNORES, *ignore])
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{path}: is a symbolic link; sign or register the file or directory it points to")
    if stat.S_ISREG(info.st_mode):
        return [(path.name, info.st_size)]
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: not a regular file or directory")
    files = sorted(_walk(path, PurePosixPath(), ignores), key=lambda item: _order_key(item[0]))
    if not files:
        raise InputError(f"{path}: empty directory (no file to hash)")
    return files


def _walk(root: Path, rel: PurePosixPath, ignores: Sequence[PurePosixPath]) -> Iterator[tuple[str, int]]:
    directory = root / rel
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise InputError(f"{directory}: cannot read directory ({exc.strerror or exc})") from None
    for entry in entries:
        child = rel / entry.name
        if _ignored(child, ignores):
            continue
        shown = root / child
        # lstat semantics throughout: a link is refused, never followed (model-signing refuses them too).
        if entry.is_symlink():
            raise InputError(f"{shown}: is a symbolic link; model artifacts may not contain links")
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, child, ignores)
        elif entry.is_file(follow_symlinks=False):
            yield str(child), entry.stat(follow_symlinks=False).st_size
        else:
            raise InputError(f"{shown}: not a regular file (a socket, pipe or device)")


def _order_key(rel: str) -> tuple[str, ...]:
    # model-signing sorts PurePosixPath keys, which compare component by component, not as strings
    # ("a/b" sorts before "a-c" although "-" < "/").
    return tuple(rel.split("/"))


def hash_artifact(
    path: Path, *, ignore: Sequence[str] = (), max_workers: int | None = None
) -> ArtifactDigest:
    """Hash a model file or directory with model-signing's file serialization (SHA-256, 1 MiB chunks).

    ``ignore`` adds paths (relative to the root) to skip besides ``.git*`` and ``model.sig``, e.g. a
    signature written under another name inside the directory. Files are hashed in parallel.
    """
    listed = list_files(path, ignore=ignore)
    is_dir = path.is_dir()
    ms = load_model_signing()
    config = ms.hashing.Config().use_file_serialization(
        hashing_algorithm="sha256", chunk_size=CHUNK_SIZE, max_workers=max_workers
    )
    # Our own walk already applied the ignores and refused links; hashing exactly these files keeps
    # model-signing from descending into ignored directories.
    targets = [path / rel for rel, _ in listed] if is_dir else [path]
    try:
        manifest = config.hash(path, files_to_hash=targets)
    except OSError as exc:
        raise InputError(f"{exc.filename or path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # model-signing's "cannot use ... as file or directory" for a race
        raise InputError(f"{path}: {(str(exc).strip() or type(exc).__name__).splitlines()[0]}") from None
    sizes = dict(listed)
    root = hashlib.sha256()
    files = []
    for descriptor in manifest.resource_descriptors():
        raw: bytes = descriptor.digest.digest_value
        root.update(raw)
        # A single file is named "." by model-signing; the registry records its file name.
        rel = path.name if descriptor.identifier == "." else str(descriptor.identifier)
        files.append(ArtifactFile(path=rel, sha256=raw.hex(), size=sizes[rel]))
    return ArtifactDigest(
        name=manifest.model_name,
        digest=f"sha256:{root.hexdigest()}",
        files=tuple(files),
        size=sum(f.size for f in files),
        is_dir=is_dir,
    )


# ---------------------------------------------------------------------------------------------------------
# Format and framework detection


# Weight formats in order of preference when two hold the same number of bytes (safer first).
_WEIGHT_FORMATS = (
    "safetensors",
    "gguf",
    "onnx",
    "savedmodel",
    "keras",
    "numpy",
    "hdf5",
    "torchscript",
    "pytorch",
    "pickle",
)
# Top-level module names in a pickle's globals -> the framework that wrote it.
_PICKLE_FRAMEWORKS = {
    "sklearn": "scikit-learn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "torch": "pytorch",
}
# ONNX producer_name -> framework.
_ONNX_PRODUCERS = {
    "pytorch": "pytorch",
    "tf2onnx": "tensorflow",
    "skl2onnx": "scikit-learn",
    "keras2onnx": "keras",
    "onnxmltools": "onnxmltools",
}
# The safetensors "__metadata__.format" values transformers and friends write.
_SAFETENSORS_FORMATS = {"pt": "pytorch", "tf": "tensorflow", "flax": "flax", "np": "numpy", "mlx": "mlx"}


def detect_format(path: Path) -> tuple[str, str | None]:
    """Return (format, framework) of a model file or directory from headers and configs, never loading it.

    Formats: safetensors, pytorch, torchscript, pickle, numpy, onnx, gguf, keras, hdf5, savedmodel, and
    for anything else the scanner's name for the content (zip, tar, json, data) or "directory" for a
    directory without weights. The framework is None unless the files say it.
    """
    listed = list_files(path)
    if not path.is_dir():
        return _file_format(path, path.name, listed[0][1])
    by_format: dict[str, int] = {}
    frameworks: dict[str, str | None] = {}
    for rel, size in listed:
        fmt, framework = _file_format(path / rel, rel, size)
        if fmt not in _WEIGHT_FORMATS:
            continue
        by_format[fmt] = by_format.get(fmt, 0) + size
        if frameworks.get(fmt) is None:
            frameworks[fmt] = framework
    names = {rel for rel, _ in listed}
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return "savedmodel", "tensorflow"
    dir_framework = _directory_framework(path, names)
    if not by_format:
        return "directory", dir_framework
    best = max(by_format, key=lambda f: (by_format[f], -_WEIGHT_FORMATS.index(f)))
    return best, dir_framework or frameworks.get(best)


def _read_head(path: Path, size: int = _HEAD) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _file_format(path: Path, rel: str, size: int) -> tuple[str, str | None]:
    from bastion.scan.formats import Format, identify

    head = _read_head(path)
    fmt = identify(head, size, rel)
    if fmt is Format.SAFETENSORS:
        return "safetensors", _safetensors_framework(path, head)
    if fmt is Format.PYTORCH_LEGACY:
        return "pytorch", "pytorch"
    if fmt is Format.ZIP:
        return _zip_format(path)
    if fmt is Format.PICKLE:
        return "pickle", _pickle_framework(head if size <= len(head) else _read_head(path, _PICKLE_PEEK))
    if fmt in (Format.ZLIB, Format.GZIP, Format.BZIP2, Format.XZ) and rel.lower().endswith(".joblib"):
        # A compressed joblib file: a bounded decompression of its start shows the pickle inside.
        inner = _decompress_head(path, fmt.value)
        if inner is not None and inner[:1] == b"\x80":
            return "pickle", _pickle_framework(inner)
        return "pickle", None
    if fmt is Format.NUMPY:
        return "numpy", None
    if fmt is Format.GGUF:
        return "gguf", None
    if fmt is Format.ONNX:
        return "onnx", _onnx_framework(head)
    if fmt is Format.HDF5:
        # Keras writes its version and model config as root attributes, near the start of the file.
        peek = _read_head(path, 1 << 16)
        if b"keras_version" in peek or b"model_config" in peek:
            return "keras", "keras"
        return "hdf5", None
    if fmt is Format.SAVEDMODEL:
        return "savedmodel", "tensorflow"
    return fmt.value, None


def _safetensors_framework(path: Path, head: bytes) -> str | None:
    length = int.from_bytes(head[:8], "little")
    if length > _CONFIG_LIMIT:
        return None
    raw = head[8 : 8 + length] if 8 + length <= len(head) else _read_head(path, 8 + length)[8:]
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    return _SAFETENSORS_FORMATS.get(fmt) if isinstance(fmt, str) else None


def _zip_format(path: Path) -> tuple[str, str | None]:
    from bastion.scan.zip_scan import classify

    try:
        # Only the central directory is read: no member is decompressed.
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip", None
    kind = classify(names).kind
    return {
        "pytorch": ("pytorch", "pytorch"),
        "torchscript": ("torchscript", "pytorch"),
        "npz": ("numpy", None),
        "keras": ("keras", "keras"),
    }.get(kind, ("zip", None))


def _decompress_head(path: Path, kind: str) -> bytes | None:
    """Decompress at most _PICKLE_PEEK bytes from the start of a compressed file, or None if it fails."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_PICKLE_PEEK)
        if kind == "zlib":
            return zlib.decompressobj().decompress(raw, _PICKLE_PEEK)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(raw, _PICKLE_PEEK)
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(raw, _PICKLE_PEEK)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
            return gz.read(_PICKLE_PEEK)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return None


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING", "SHORT_BINSTRING"}
)
_PUT_OPS = frozenset({"BINPUT", "LONG_BINPUT", "PUT"})
_GET_OPS = frozenset({"BINGET", "LONG_BINGET", "GET"})
_NO_PUSH_OPS = frozenset({"PROTO", "FRAME", "MEMOIZE", *_PUT_OPS})


def _pickle_framework(data: bytes) -> str | None:
    """Name the framework whose classes a pickle references, by parsing (never running) its opcodes."""
    modules: list[str] = []
    recent: list[str | None] = []  # what the last pushes were, when they were strings (STACK_GLOBAL operands)
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            top = recent[-1] if recent else None
            index = arg if isinstance(arg, int) else -1
            if name == "GLOBAL" and isinstance(arg, str):
                modules.append(arg.split(" ", 1)[0])
            elif name == "STACK_GLOBAL" and len(recent) >= 2 and recent[-2] is not None:
                modules.append(str(recent[-2]))
            elif name == "MEMOIZE":
                memo[len(memo)] = top
            elif name in _PUT_OPS:
                memo[index] = top
            if name in _NO_PUSH_OPS:
                continue
            if name in _STRING_OPS:
                recent.append(str(arg))
            elif name in _GET_OPS:
                recent.append(memo.get(index))
            else:
                recent.append(None)
            del recent[:-2]
            if len(modules) >= 64:
                break
    except (ValueError, EOFError, KeyError, TypeError):
        pass  # a truncated head ends the walk; the globals seen so far are what we know
    for module in modules:
        framework = _PICKLE_FRAMEWORKS.get(module.split(".", 1)[0])
        if framework is not None:
            return framework
    return None


def _onnx_framework(head: bytes) -> str | None:
    """Read ModelProto.producer_name (field 2) from the first bytes of an ONNX file."""
    pos = 0
    try:
        while pos < len(head):
            key, pos = _varint(head, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(head, pos)
            elif wire == 2:
                length, pos = _varint(head, pos)
                if field == 2:
                    producer = head[pos : pos + length].decode("utf-8", "replace").strip().lower()
                    return _ONNX_PRODUCERS.get(producer, producer or None)
                pos += length
            else:
                return None
    except IndexError:
        return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _directory_framework(root: Path, names: set[str]) -> str | None:
    """The framework a directory's top-level configs name (transformers, diffusers, sentence-transformers)."""
    if "model_index.json" in names and "_diffusers_version" in _json_config(root / "model_index.json"):
        return "diffusers"
    if "config_sentence_transformers.json" in names or "modules.json" in names:
        return "sentence-transformers"
    if "config.json" in names and isinstance(_json_config(root / "config.json").get("architectures"), list):
        return "transformers"
    return None


def _json_config(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _CONFIG_LIMIT:
            return {}
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
