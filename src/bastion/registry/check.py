"""Re-check a registered version against the bytes on disk: its files, its digest and its signature.

This is what `bastion verify` and the gate run before a decision, and what serving runs before it loads a
model: the artifact must still be the registered one, and its signature must verify with the trust
material recorded at signing time (or the key or CA chain the caller insists on).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bastion.errors import InputError
from bastion.registry.record import SignatureInfo, VersionRecord


@dataclass(frozen=True)
class VersionCheck:
    """What re-checking a version found; ``ok`` needs intact files and, when signed, a valid signature."""

    ref: str
    artifact: str
    digest: str | None  # what the files hash to now (None when they could not be read)
    intact: bool
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    signature: SignatureInfo | None  # with ``verified`` and ``detail`` filled in by this check
    detail: str

    @property
    def ok(self) -> bool:
        """Files intact and, if the version is signed, the signature verified."""
        return self.intact and (self.signature is None or self.signature.verified is True)

    def facts(self) -> dict[str, Any]:
        """The ``integrity`` facts a policy sees."""
        return {
            "ok": self.ok,
            "detail": self.detail,
            "changed": list(self.changed),
            "missing": list(self.missing),
            "extra": list(self.extra),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, as ``bastion verify --format json`` prints it."""
        sig = self.signature
        return {
            "ref": self.ref,
            "ok": self.ok,
            "artifact": self.artifact,
            "digest": self.digest,
            "intact": self.intact,
            "changed": list(self.changed),
            "missing": list(self.missing),
            "extra": list(self.extra),
            "signature": None
            if sig is None
            else {"method": sig.method, "signer": sig.signer, "verified": sig.verified, "detail": sig.detail},
            "detail": self.detail,
        }


def _compare_files(
    record: VersionRecord, artifact: Path
) -> tuple[str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from bastion.registry.artifacts import hash_artifact

    if not artifact.exists():
        return None, (), tuple(f.path for f in record.files), ()
    now = hash_artifact(artifact)
    registered = {f.path: f.sha256 for f in record.files}
    current = {f.path: f.sha256 for f in now.files}
    changed = tuple(sorted(p for p in registered.keys() & current.keys() if registered[p] != current[p]))
    missing = tuple(sorted(registered.keys() - current.keys()))
    extra = tuple(sorted(current.keys() - registered.keys()))
    return now.digest, changed, missing, extra


def _verify_signature(
    record: VersionRecord,
    artifact: Path,
    signature: SignatureInfo,
    public_key: Path | None,
    ca_chain: Sequence[Path],
    identity: str | None,
) -> SignatureInfo:
    from bastion.registry.signing import verify_model

    bundle = Path(signature.bundle_path)
    if not bundle.exists():
        return replace(signature, verified=False, detail=f"{bundle}: the signature file is missing")
    with tempfile.TemporaryDirectory(prefix="bastion-verify-") as scratch:
        key, chain = public_key, list(ca_chain)
        # Without explicit trust material, verify with what was recorded at signing time; policies pin the
        # signer (a key fingerprint or certificate identity), so a substituted key still fails the gate.
        if key is None and not chain and signature.public_key:
            material = Path(scratch) / "trust.pem"
            material.write_text(signature.public_key, "ascii")
            if signature.method == "key":
                key = material
            elif signature.method == "certificate":
                chain = [material]
        if signature.method == "key" and key is None:
            return replace(signature, verified=False, detail="no public key recorded or given (--public-key)")
        result = verify_model(
            artifact,
            bundle,
            public_key=key if signature.method == "key" else None,
            ca_chain=chain,
            identity=identity,
            expected_digest=record.digest,
        )
    return replace(
        signature,
        verified=result.ok,
        verified_at=dt.datetime.now(dt.UTC),
        detail=result.detail,
        signer=result.signer or signature.signer,
    )


def check_version(
    record: VersionRecord,
    *,
    artifact: Path | None = None,
    public_key: Path | None = None,
    ca_chain: Sequence[Path] = (),
    identity: str | None = None,
) -> VersionCheck:
    """Re-hash the artifact (at its registered location unless ``artifact`` is given) and verify it."""
    path = artifact or Path(record.location)
    if public_key is not None and not public_key.exists():
        raise InputError(f"{public_key}: no such public key file")
    digest, changed, missing, extra = _compare_files(record, path)
    # model-signing's digest covers contents in order, not names: a renamed file is caught by the lists.
    intact = digest == record.digest and not (changed or missing or extra)
    problems: list[str] = []
    if digest is None:
        problems.append(f"{path}: the artifact is gone")
    elif not intact:
        parts = [
            f"{len(v)} {k}" for k, v in (("changed", changed), ("missing", missing), ("added", extra)) if v
        ]
        first = (changed or missing or extra or ("?",))[0]
        problems.append(
            f"artifact differs from the registered one ({', '.join(parts) or 'digest'}; e.g. {first})"
        )
    signature = record.signature
    if signature is not None and digest is not None:
        signature = _verify_signature(record, path, signature, public_key, ca_chain, identity)
        if not signature.verified:
            problems.append(f"signature: {signature.detail}")
    elif signature is not None:
        signature = replace(signature, verified=False, detail="nothing to verify: the artifact is gone")
    detail = (
        "; ".join(problems)
        if problems
        else (
            "artifact matches the registered digest"
            + (" and its signature verifies" if signature else " (unsigned)")
        )
    )
    return VersionCheck(record.ref, str(path), digest, intact, changed, missing, extra, signature, detail)
