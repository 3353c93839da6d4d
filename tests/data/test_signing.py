"""Ed25519 manifest signatures: valid, tampered, wrong key, unsigned, and key-file errors."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from bastion.data.manifest import build_manifest, manifest_from_json
from bastion.data.signing import (
    generate_key,
    load_private_key,
    load_public_key,
    public_key_pem,
    sign_manifest,
    verify_manifest_signature,
)
from bastion.errors import InputError


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    generate_key(path)
    return path


def test_keygen_is_private_and_refuses_overwrite(key_path: Path) -> None:
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(InputError, match="already exists"):
        generate_key(key_path)


def test_signature_valid_and_survives_roundtrip(dataset: Path, key_path: Path) -> None:
    key = load_private_key(key_path)
    signed = sign_manifest(build_manifest(dataset, "s"), key)
    again = manifest_from_json(signed.to_json())
    assert verify_manifest_signature(again) is None
    assert verify_manifest_signature(again, key.public_key()) is None
    assert signed.digest() == replace(signed, signature=None).digest()


def test_tampered_manifest_fails(dataset: Path, key_path: Path) -> None:
    signed = sign_manifest(build_manifest(dataset, "s"), load_private_key(key_path))
    data = json.loads(signed.to_json())
    data["source"] = "someone else"
    tampered = manifest_from_json(json.dumps(data))
    assert (
        verify_manifest_signature(tampered)
        == "the signature does not match the manifest (tampered or corrupted)"
    )


def test_wrong_key_fails(dataset: Path, key_path: Path, tmp_path: Path) -> None:
    signed = sign_manifest(build_manifest(dataset), load_private_key(key_path))
    other = generate_key(tmp_path / "other.pem")
    error = verify_manifest_signature(signed, other.public_key())
    assert error is not None
    assert "different key" in error
    # A forger who swaps in their own key and signature is caught by --public-key, not by the embedded key.
    forged = sign_manifest(replace(signed, source="forged"), other)
    assert verify_manifest_signature(forged) is None
    assert verify_manifest_signature(forged, load_private_key(key_path).public_key()) is not None


def test_unsigned_manifest(dataset: Path, key_path: Path) -> None:
    manifest = build_manifest(dataset)
    assert verify_manifest_signature(manifest) is None
    assert verify_manifest_signature(manifest, load_private_key(key_path).public_key()) == (
        "the manifest is not signed"
    )


def test_garbage_signature(dataset: Path, key_path: Path) -> None:
    signed = sign_manifest(build_manifest(dataset), load_private_key(key_path))
    assert signed.signature is not None
    bad = replace(signed, signature=replace(signed.signature, value="!!!"))
    assert "base64" in (verify_manifest_signature(bad) or "")
    short = replace(signed, signature=replace(signed.signature, public_key=base64.b64encode(b"x").decode()))
    assert verify_manifest_signature(short) is not None


def test_key_file_errors(tmp_path: Path, key_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the private key"):
        load_private_key(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello", encoding="utf-8")
    with pytest.raises(InputError, match=r"junk\.pem: not a PEM private key"):
        load_private_key(junk)
    with pytest.raises(InputError, match=r"junk\.pem: not a PEM public key"):
        load_public_key(junk)
    ec = generate_private_key(SECP256R1())
    ec_path = tmp_path / "ec.pem"
    ec_path.write_bytes(
        ec.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(InputError, match="not an Ed25519 private key"):
        load_private_key(ec_path)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        load_private_key(key_path).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(InputError, match="encrypted"):
        load_private_key(encrypted)
    # A public key file given where a private key is expected is also a clear error.
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_pem(load_private_key(key_path).public_key()), encoding="utf-8")
    with pytest.raises(InputError, match="not a PEM private key"):
        load_private_key(pub)
    assert (
        load_public_key(pub).public_bytes_raw() == load_private_key(key_path).public_key().public_bytes_raw()
    )
