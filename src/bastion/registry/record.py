"""What the registry knows about one model version, as plain frozen data every consumer shares.

The store writes these records, and the gate (as CEL facts), the model card, the AI-BOM and the
compliance report read them; none of those needs the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The approval states, in the order a healthy version moves through them.
REGISTERED = "registered"
APPROVED = "approved"
DEPLOYED = "deployed"
DEPRECATED = "deprecated"
REVOKED = "revoked"
QUARANTINED = "quarantined"
STATES = (REGISTERED, APPROVED, DEPLOYED, DEPRECATED, REVOKED, QUARANTINED)
# Revoked and quarantined versions are blocked: promoting one again needs a reinstatement with a reason.
BLOCKED_STATES = frozenset({REVOKED, QUARANTINED})


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """One file of a model artifact, by its path relative to the artifact root."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """A dataset a version was trained on, as its `bastion data fingerprint` manifest describes it."""

    digest: str  # "manifest-sha256:<hex>", the manifest's canonical digest
    source: str | None = None
    path: str | None = None  # where the manifest was read from when registered
    rows: int | None = None
    files: int = 0
    signed: bool = False
    signer: str | None = None  # the manifest's public key (base64) when signed
    audit: Mapping[str, Any] | None = None  # the `bastion data audit` summary recorded in its lineage


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """The `bastion scan` result recorded with a version."""

    verdict: str  # clean | suspicious | malicious | error
    counts: Mapping[str, int]  # severity label -> number of findings
    findings: tuple[Mapping[str, str], ...] = ()  # rule, severity, message, location
    tool_version: str = ""
    scanned_at: datetime | None = None
    report_digest: str | None = None  # "sha256:<hex>" of the JSON report


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """A model-signing bundle recorded for a version and what verifying it showed."""

    method: str  # key | certificate | sigstore
    signer: str  # key fingerprint "sha256:<hex>" or the certificate subject / identity
    bundle_path: str
    signed_at: datetime
    digest: str  # the in-toto subject digest the bundle signs
    verified: bool | None = None
    verified_at: datetime | None = None
    detail: str = ""
    # The trust material verification needs, kept with the record: the public key PEM (key mode) or the
    # certificate chain PEM (certificate mode). Policies pin ``signer``, so a swapped key is still caught.
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class Approval:
    """One state change of a version, with who made it and why; ``event_id`` points into the event log."""

    state: str
    actor: str
    reason: str
    at: datetime
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """An immutable registered model version plus its mutable governance state (approvals, aliases)."""

    name: str
    version: int
    created_at: datetime
    created_by: str
    location: str  # the artifact path as registered (absolute)
    # "sha256:<hex>": model-signing's subject digest (SHA-256 of the per-file digests in its file order),
    # so a bundle that signs this artifact names exactly this digest; ``files`` adds the names.
    digest: str
    format: str  # pickle | pytorch | safetensors | onnx | gguf | keras | savedmodel | directory | ...
    framework: str | None
    size: int
    files: tuple[ArtifactFile, ...]
    datasets: tuple[DatasetRef, ...] = ()
    parent: str | None = None  # "name@version" of the model it was fine-tuned from
    scan: ScanSummary | None = None
    signature: SignatureInfo | None = None
    state: str = REGISTERED
    approvals: tuple[Approval, ...] = ()
    aliases: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)  # licence, description, metrics, fairness...

    @property
    def ref(self) -> str:
        """``name@version``: how commands name this version."""
        return f"{self.name}@{self.version}"
