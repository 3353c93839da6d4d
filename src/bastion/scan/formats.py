"""Format identification by content (magic bytes and structure); the extension is only a hint."""

from __future__ import annotations

import enum
import io
import struct
from pathlib import PurePosixPath


class Format(enum.StrEnum):
    """Every kind of content the scanner knows how to examine."""

    PICKLE = "pickle"
    PYTORCH_LEGACY = "pytorch-legacy"
    NUMPY = "numpy"
    ZIP = "zip"  # includes PyTorch, TorchScript, .keras and .npz, told apart by the zip scanner
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZLIB = "zlib"
    LZ4 = "lz4"
    SEVENZIP = "7z"
    HDF5 = "hdf5"
    SAFETENSORS = "safetensors"
    GGUF = "gguf"
    ONNX = "onnx"
    SAVEDMODEL = "savedmodel"
    JSON = "json"
    PYTHON = "python"
    DATA = "data"  # nothing a model loader would execute (text, images, raw weights)


_PICKLE_PROTO = b"\x80"
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# Opcodes that can start a protocol 0/1 pickle and are unlikely as the first byte of text or weights.
_PROTO01_FIRST = frozenset(b"(cSVILFNR]}lde)tiJKMGXTU\x85\x86\x87\x88\x89")

# What each extension promises, used to report a mismatch with the content.
EXTENSION_FORMATS: dict[str, frozenset[Format]] = {
    ".pkl": frozenset({Format.PICKLE}),
    ".pickle": frozenset({Format.PICKLE}),
    ".joblib": frozenset({Format.PICKLE, Format.ZLIB, Format.GZIP, Format.BZIP2, Format.XZ, Format.LZ4}),
    ".dill": frozenset({Format.PICKLE}),
    ".pt": frozenset({Format.ZIP, Format.PYTORCH_LEGACY, Format.PICKLE, Format.TAR}),
    ".pth": frozenset({Format.ZIP, Format.PYTORCH_LEGACY, Format.PICKLE, Format.TAR}),
    ".ckpt": frozenset({Format.ZIP, Format.PYTORCH_LEGACY, Format.PICKLE, Format.TAR}),
    ".bin": frozenset({Format.ZIP, Format.PYTORCH_LEGACY, Format.PICKLE, Format.TAR, Format.DATA}),
    ".npy": frozenset({Format.NUMPY}),
    ".npz": frozenset({Format.ZIP}),
    ".safetensors": frozenset({Format.SAFETENSORS}),
    ".gguf": frozenset({Format.GGUF}),
    ".onnx": frozenset({Format.ONNX}),
    ".h5": frozenset({Format.HDF5}),
    ".hdf5": frozenset({Format.HDF5}),
    ".keras": frozenset({Format.ZIP}),
    ".zip": frozenset({Format.ZIP}),
    ".tar": frozenset({Format.TAR}),
    ".tgz": frozenset({Format.GZIP}),
    ".gz": frozenset({Format.GZIP}),
    ".bz2": frozenset({Format.BZIP2}),
    ".xz": frozenset({Format.XZ}),
    ".7z": frozenset({Format.SEVENZIP}),
    ".json": frozenset({Format.JSON}),
}


def _looks_like_safetensors(head: bytes, size: int, suffix: str = "") -> bool:
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack_from("<Q", head)
    # A header length that overruns the file is itself a finding of the safetensors scanner, so a
    # file named .safetensors with a JSON start is routed there even when the length does not fit.
    return 2 <= length <= size - 8 or (suffix == ".safetensors" and length >= 2)


def _looks_like_lzma_alone(head: bytes) -> bool:
    # The headerless ".lzma" format (joblib compress="lzma"): default properties byte, a dictionary
    # size of 2^n or 2^n + 2^(n-1), and an unknown (all ones) or plausible uncompressed size.
    if len(head) < 13 or head[0] != 0x5D:
        return False
    dict_size, out_size = struct.unpack_from("<IQ", head, 1)
    n = dict_size.bit_length() - 1
    shaped = dict_size in (1 << n, (1 << n) | (1 << max(n - 1, 0)))
    return 12 <= n <= 30 and shaped and (out_size == (1 << 64) - 1 or out_size < 1 << 40)


def _looks_like_tar(head: bytes) -> bool:
    return len(head) >= 263 and head[257:262] == b"ustar"


def _looks_like_pickle(head: bytes) -> bool:
    if head[:1] == _PICKLE_PROTO:
        return len(head) >= 2 and head[1] <= 5
    return bool(head) and head[0] in _PROTO01_FIRST and _plausible_proto01(head)


def _plausible_proto01(head: bytes) -> bool:
    # Text may start with '(' or 'c' too, so ask the opcodes to parse: a GLOBAL naming an importable-
    # looking callable, a STOP, eight valid opcodes in a row, or four that run cleanly to the end of
    # the sample (a truncated pickle is still a pickle). Detection only; analysis uses our own VM.
    if head[:1] == b"c":
        module, _, rest = head[1:].partition(b"\n")
        name = rest.partition(b"\n")[0]
        if _dotted_identifier(module) and _dotted_identifier(name):
            return True
    import pickletools  # only text that starts like a protocol-0 pickle pays for this import

    stream = io.BytesIO(head)
    count = 0
    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST") and not _names_callable(arg):
                return False  # `import os` reads as INST "mport os"; a real one names module and attribute
            count += 1
            if opcode.name == "STOP" or count >= 8:
                return True
    except (ValueError, EOFError, UnicodeDecodeError):
        return count >= 4 and stream.tell() >= len(head)
    return False


def _names_callable(arg: object) -> bool:
    module, _, name = str(arg).partition(" ")
    return _dotted_identifier(module.encode()) and _dotted_identifier(name.encode())


def _dotted_identifier(text: bytes) -> bool:
    try:
        parts = text.decode("ascii").split(".")
    except UnicodeDecodeError:
        return False
    return 0 < len(text) < 200 and all(p.isidentifier() for p in parts)


# ModelProto fields an exporter may write first: ir_version, producer_name/version, domain,
# model_version, doc_string, graph, opset_import (tags of fields 1-8 with their wire types).
_ONNX_FIRST_KEYS = frozenset({0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42})


def _looks_like_onnx(head: bytes, name: str) -> bool:
    return bool(head) and head[0] in _ONNX_FIRST_KEYS and name.lower().endswith(".onnx")


def identify(head: bytes, size: int, name: str) -> Format:
    """Identify the format of content from its first bytes (at least 512 if available) and name."""
    suffix = PurePosixPath(name).suffix.lower()
    lower = name.lower()
    if head.startswith(b"\x93NUMPY"):
        return Format.NUMPY
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return Format.PYTORCH_LEGACY
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return Format.ZIP
    if head.startswith(b"GGUF"):
        return Format.GGUF
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Format.HDF5
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return Format.SEVENZIP
    # Before the short compression magics: a header length such as 0x...8b1f would otherwise read as gzip.
    if _looks_like_safetensors(head, size, suffix):
        return Format.SAFETENSORS
    if head.startswith(b"\x1f\x8b"):
        return Format.GZIP
    if head.startswith(b"BZh"):
        return Format.BZIP2
    if head.startswith(b"\xfd7zXZ\x00") or _looks_like_lzma_alone(head):
        return Format.XZ
    if head.startswith(b"\x04\x22\x4d\x18"):
        return Format.LZ4
    if _looks_like_tar(head):
        return Format.TAR
    if _looks_like_pickle(head):
        return Format.PICKLE
    if (
        len(head) >= 2
        and head[0] == 0x78
        and head[1] in (0x01, 0x5E, 0x9C, 0xDA)
        and (head[0] * 256 + head[1]) % 31 == 0
    ):
        return Format.ZLIB
    if lower.endswith(("saved_model.pb", "saved_model.pbtxt")) or suffix == ".pb":
        return Format.SAVEDMODEL
    if _looks_like_onnx(head, name):
        return Format.ONNX
    if suffix == ".json" or head.lstrip()[:1] == b"{":
        return Format.JSON
    if suffix == ".py":
        return Format.PYTHON
    return Format.DATA


def extension_mismatch(name: str, detected: Format) -> frozenset[Format] | None:
    """Return the formats the extension promises if the content is none of them, else None."""
    expected = EXTENSION_FORMATS.get(PurePosixPath(name).suffix.lower())
    if expected is None or detected in expected:
        return None
    return expected
