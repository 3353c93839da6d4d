"""Ed25519 signatures over a manifest's canonical bytes, and key files with clear errors."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.atomic import atomic_write_bytes
from bastion.data.manifest import Manifest, Signature
from bastion.errors import InputError

ALGORITHM = "ed25519"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(f"{path}: the private key is encrypted; use an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
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


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Write a new unencrypted Ed25519 private key (PKCS#8 PEM, mode 0600) to ``path``; never overwrite."""
    if path.exists():
        raise InputError(f"{path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        atomic_write_bytes(path, pem, private=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the key ({exc.strerror or exc})") from None
    return key
