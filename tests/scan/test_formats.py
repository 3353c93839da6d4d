"""Format identification goes by content; the extension is only a hint."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile

import pytest

from bastion.scan.formats import Format, extension_mismatch, identify


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a", b"x")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (pickle.dumps({"a": 1}, protocol=2), "weights.safetensors", Format.PICKLE),
        (pickle.dumps([1, 2], protocol=0), "x", Format.PICKLE),
        (b"cos\nsystem\n(S'echo'\ntR.", "model.bin", Format.PICKLE),
        (_zip_bytes(), "model.pt", Format.ZIP),
        (_tar_bytes(), "model.pt", Format.TAR),
        (b"GGUF\x03\x00\x00\x00", "x.bin", Format.GGUF),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 16, "x", Format.HDF5),
        (b"\x93NUMPY\x01\x00", "a", Format.NUMPY),
        (struct.pack("<Q", 2) + b"{}", "a.safetensors", Format.SAFETENSORS),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "a", Format.SEVENZIP),
        (b"\x1f\x8b\x08\x00", "a", Format.GZIP),
        (b'{"architectures": []}', "config.json", Format.JSON),
        (b"import torch\n", "modeling_x.py", Format.PYTHON),
        (b"hello world, this is text", "README.md", Format.DATA),
        (b"(this is text in parentheses)", "notes.txt", Format.DATA),
    ],
)
def test_identify_by_content(data: bytes, name: str, expected: Format) -> None:
    assert identify(data, len(data), name) is expected


def test_extension_mismatch() -> None:
    assert extension_mismatch("model.safetensors", Format.PICKLE) == frozenset({Format.SAFETENSORS})
    assert extension_mismatch("pytorch_model.bin", Format.PICKLE) is None
    assert extension_mismatch("notes.unknownext", Format.PICKLE) is None


@pytest.mark.parametrize(
    "text",
    [b"import os\nimport json\n\nprint(1)\n", b"little", b"(this is text in parentheses)", b"3\n"],
)
def test_text_is_not_mistaken_for_a_pickle(text: bytes) -> None:
    assert identify(text, len(text), "notes") is not Format.PICKLE
