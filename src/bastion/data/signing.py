"""Ed25519 signatures over a manifest's canonical bytes, and key files with clear errors."""

from __future__ import annotations

import base64
import errno
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.atomic import current_umask
from bastion.data.manifest import Manifest, Signature
from bastion.data.readers import printable
from bastion.errors import InputError

ALGORITHM = "ed25519"


def _shown(path: Path) -> str:
    # A control character in a file name must not split the one-line error.
    return printable(str(path), escape_backslash=False)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{_shown(path)}: cannot read the {what} ({exc.strerror or exc})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(
            f"{_shown(path)}: the private key is encrypted; use an unencrypted PEM key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{_shown(path)}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{_shown(path)}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{_shown(path)}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{_shown(path)}: not an Ed25519 public key ({type(key).__name__})")
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64: how a manifest carries it."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_pem(key: Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM text."""
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def sign_manifest(manifest: Manifest, key: Ed25519PrivateKey) -> Manifest:
    """A copy of ``manifest`` carrying a signature over its canonical bytes without a signature."""
    value = key.sign(manifest.signing_bytes())
    signature = Signature(ALGORITHM, public_key_text(key.public_key()), base64.b64encode(value).decode())
    return replace(manifest, signature=signature)


def verify_manifest_signature(manifest: Manifest, expected: Ed25519PublicKey | None = None) -> str | None:
    """None if the signature is valid (and made by ``expected`` when given), else why it fails."""
    sig = manifest.signature
    if sig is None:
        return "the manifest is not signed" if expected is not None else None
    if sig.algorithm != ALGORITHM:
        return f"unsupported signature algorithm {sig.algorithm!r}"
    try:
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(sig.public_key, validate=True))
        value = base64.b64decode(sig.value, validate=True)
    except ValueError:
        return "the signature or its public key is not valid base64 Ed25519 data"
    if expected is not None and public_key_text(expected) != sig.public_key:
        return "the manifest was signed by a different key than --public-key"
    try:
        embedded.verify(value, manifest.signing_bytes())
    except InvalidSignature:
        return "the signature does not match the manifest (tampered or corrupted)"
    return None


def public_key_path(path: Path) -> Path:
    """Where keygen puts the public half of the private key ``path``: ``<stem>.pub.pem`` beside it."""
    return path.with_name(path.stem + ".pub.pem")


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Write a new unencrypted Ed25519 private key (PKCS#8 PEM, mode 0600) to ``path``; never overwrite."""
    key = Ed25519PrivateKey.generate()
    _write_new([(path, _private_pem(key), True, "the key")])
    return key


def generate_key_pair(path: Path) -> tuple[Ed25519PrivateKey, Path]:
    """Write a new private key to ``path`` (0600) and its public key beside it, both or neither.

    Returns the key and the public key's path (:func:`public_key_path`); never overwrites either file.
    """
    public = public_key_path(path)
    key = Ed25519PrivateKey.generate()
    pem = public_key_pem(key.public_key()).encode("ascii")
    _write_new([(path, _private_pem(key), True, "the key"), (public, pem, False, f"its public key {public}")])
    return key, public


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_new(files: list[tuple[Path, bytes, bool, str]]) -> None:
    """Create every (path, data, private, what) as a new file, all or none; errors name the user's path."""
    for path, _, _, _ in files:
        if os.path.lexists(path):
            raise InputError(f"{_shown(path)}: already exists; refusing to overwrite a key")
    staged: list[tuple[Path, Path, str]] = []
    created: list[Path] = []
    current = files[0][0], files[0][3]
    try:
        # Everything is written to short temporary names first (a temporary name built from a long
        # file name can be too long when the name itself is not), then linked into place.
        for path, data, private, what in files:
            current = path, what
            staged.append((_stage(path, data, private), path, what))
        for tmp, path, what in staged:
            current = path, what
            _link_new(tmp, path)
            created.append(path)
    except OSError as exc:
        for path in created:  # a half-written pair would make the next keygen refuse
            path.unlink(missing_ok=True)
        failed, what = current
        if exc.errno == errno.EEXIST:
            raise InputError(f"{_shown(failed)}: already exists; refusing to overwrite a key") from None
        # Named by the path the user gave (the private key's), never by a temporary file.
        problem = printable(f"cannot write {what} ({exc.strerror or exc})", escape_backslash=False)
        raise InputError(f"{_shown(files[0][0])}: {problem}; nothing was written") from None
    finally:
        for tmp, _, _ in staged:
            tmp.unlink(missing_ok=True)


def _stage(path: Path, data: bytes, private: bool) -> Path:
    directory = path.parent if str(path.parent) else Path(".")
    # mkstemp creates the file 0600, so a private key is never readable by others, even for a moment.
    fd, name = tempfile.mkstemp(prefix=".bastion-key-", suffix=".tmp", dir=directory)
    tmp = Path(name)
    try:
        if not private:
            os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _link_new(tmp: Path, path: Path) -> None:
    # A hard link fails if the name exists (even if it appeared after the check above), where a rename
    # would replace it; file systems without hard links fall back to a checked rename.
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)
