"""The AI-BOM as SPDX 3.0.1 JSON-LD with the AI and Dataset profiles (spdx-python-model's v3_0_1 bindings).

One ``ai_AIPackage`` per version, one ``dataset_DatasetPackage`` per dataset (by manifest digest), and
relationships for what the registry knows: ``trainedOn`` (model to its datasets), ``descendantOf``
(a fine-tune to its parent) and ``hasDeclaredLicense``. The bindings check SHACL cardinalities and types
while serializing, so a document that serializes is well-formed against the 3.0.1 model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from bastion import __version__
from bastion.errors import InputError
from bastion.registry.card import (
    audit_lines,
    dataset_label,
    digest_hex,
    meta_list,
    meta_mapping,
    meta_text,
    plural,
)
from bastion.registry.record import DatasetRef, VersionRecord

SPEC_VERSION = "3.0.1"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S*$")
# Characters an SPDX licence expression is made of; anything else becomes a LicenseRef.
_LICENSE = re.compile(r"^[A-Za-z0-9.+\-() ]+$")


def _slug(text: str) -> str:
    return quote(text, safe="@+-._~")


def _license_expression(text: str) -> str:
    if _LICENSE.match(text):
        return text
    return "LicenseRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


class _Builder:
    """Creates the document's elements with ids under one namespace and a shared CreationInfo."""

    def __init__(self, namespace: str, now: datetime, creator: str | None) -> None:
        from spdx_python_model import v3_0_1 as spdx

        self.m = spdx
        self.ns = namespace
        self.objects = spdx.SHACLObjectSet()
        self.elements: list[Any] = []
        self.agents: dict[str, Any] = {}
        self.info = spdx.CreationInfo(specVersion=SPEC_VERSION, created=now)
        self.tool = self.add(spdx.Tool(spdxId=f"{namespace}tool/bastion", name=f"bastion {__version__}"))
        bastion_agent = self.add(spdx.SoftwareAgent(spdxId=f"{namespace}agent/bastion", name="bastion"))
        self.info.createdBy = [bastion_agent] + ([self.agent(creator)] if creator else [])
        self.info.createdUsing = [self.tool]

    def add(self, element: Any) -> Any:
        """Attach the shared CreationInfo and keep ``element`` in the document."""
        element.creationInfo = self.info
        self.objects.add(element)
        self.elements.append(element)
        return element

    def agent(self, name: str) -> Any:
        """The Agent named ``name``, created once."""
        if name not in self.agents:
            self.agents[name] = self.add(self.m.Agent(spdxId=f"{self.ns}agent/{_slug(name)}", name=name))
        return self.agents[name]

    def sha256(self, digest: str, comment: str) -> list[Any]:
        """A Hash integrity method when ``digest`` is SHA-256, else nothing."""
        hex_part = digest_hex(digest)
        if not _SHA256.match(hex_part):
            return []
        return [
            self.m.Hash(algorithm=self.m.HashAlgorithm.sha256, hashValue=hex_part.lower(), comment=comment)
        ]

    def relationship(self, key: str, source: Any, kind: str, targets: Sequence[Any]) -> Any:
        """A relationship ``source kind targets`` with a stable id."""
        return self.add(
            self.m.Relationship(
                spdxId=f"{self.ns}relationship/{key}/{kind}",
                from_=source,
                to=list(targets),
                relationshipType=getattr(self.m.RelationshipType, kind),
            )
        )


def _model(b: _Builder, record: VersionRecord) -> Any:
    meta = record.metadata
    authors = meta_list(meta, "authors")
    # The supplier is the model's author when recorded, else whoever put it in the registry.
    supplier = b.agent(authors[0] if authors else record.created_by)
    pkg = b.m.ai_AIPackage(
        spdxId=f"{b.ns}model/{_slug(record.ref)}",
        name=record.name,
        software_packageVersion=str(record.version),
        # The artifact's location is a machine path, never published: NOASSERTION is the honest value.
        software_downloadLocation="NOASSERTION",
        software_primaryPurpose=b.m.software_SoftwarePurpose.model,
        releaseTime=record.created_at,
        suppliedBy=supplier,
        verifiedUsing=b.sha256(record.digest, "bastion artifact digest over the sorted (path, sha256) list"),
    )
    if description := meta_text(meta, "description"):
        pkg.description = description
    if architecture := meta_text(meta, "architecture"):
        pkg.ai_typeOfModel = [architecture]
    if task := meta_text(meta, "task"):
        pkg.ai_domain = [task]
    if uses := meta_list(meta, "intended_use"):
        pkg.ai_informationAboutApplication = "\n".join(uses)
    if limits := meta_list(meta, "limitations"):
        pkg.ai_limitation = "\n".join(limits)
    metrics = meta_mapping(meta, "metrics") or {}
    pkg.ai_metric = [
        b.m.DictionaryEntry(key=k, value=v if isinstance(v, str) else json.dumps(v))
        for k, v in sorted(metrics.items())
    ]
    if record.datasets:
        pkg.ai_informationAboutTraining = "Trained on " + ", ".join(
            f"{dataset_label(d)} ({d.digest})" for d in record.datasets
        )
    pkg.comment = _governance_comment(record)
    return b.add(pkg)


def _governance_comment(record: VersionRecord) -> str:
    parts = [f"bastion state: {record.state}"]
    if record.aliases:
        parts.append("aliases: " + ", ".join(record.aliases))
    if record.scan is not None:
        parts.append(f"scan verdict: {record.scan.verdict}")
    if record.signature is not None:
        parts.append(f"signed by {record.signature.signer} ({record.signature.method})")
    else:
        parts.append("not signed")
    return "; ".join(parts)


def _stub_model(b: _Builder, ref: str) -> Any:
    name, _, version = ref.rpartition("@") if "@" in ref else (ref, "", "")
    pkg = b.m.ai_AIPackage(
        spdxId=f"{b.ns}model/{_slug(ref)}",
        name=name,
        software_downloadLocation="NOASSERTION",
        software_primaryPurpose=b.m.software_SoftwarePurpose.model,
        comment="Referenced as a parent; its registry record is not part of this document.",
    )
    if version:
        pkg.software_packageVersion = version
    return b.add(pkg)


def _dataset(b: _Builder, ds: DatasetRef) -> Any:
    size = plural(ds.files, "file")
    if ds.rows is not None:
        size = f"{plural(ds.rows, 'row')} in {size}"
    comment = f"bastion data manifest {ds.digest}: {size}"
    if ds.signed:
        comment += "; manifest signed (Ed25519)" + (f" by public key {ds.signer}" if ds.signer else "")
    pkg = b.m.dataset_DatasetPackage(
        spdxId=f"{b.ns}dataset/{_slug(digest_hex(ds.digest))}",
        name=dataset_label(ds),
        software_downloadLocation=ds.source if ds.source and _SCHEME.match(ds.source) else "NOASSERTION",
        software_primaryPurpose=b.m.software_SoftwarePurpose.data,
        # The manifest does not say what kind of data it holds; noAssertion says exactly that.
        dataset_datasetType=[b.m.dataset_DatasetType.noAssertion],
        verifiedUsing=b.sha256(
            ds.digest, "SHA-256 of the bastion data manifest that fingerprints every file and row"
        ),
        comment=comment,
    )
    if ds.audit:
        pkg.dataset_datasetNoise = "bastion data audit: " + "; ".join(audit_lines(ds.audit))
    return b.add(pkg)


def build_spdx(
    records: Sequence[VersionRecord], *, now: datetime, namespace: str, creator: str | None = None
) -> dict[str, Any]:
    """The SPDX 3.0.1 JSON-LD document of ``records``; element ids live under ``namespace`` (a URI)."""
    if not _SCHEME.match(namespace):
        raise InputError(f"SPDX namespace {namespace!r}: not a URI (e.g. https://example.com/spdx/ai-bom/)")
    if not namespace.endswith(("/", "#", ":")):
        namespace += "/"
    b = _Builder(namespace, now, creator)
    models = {r.ref: _model(b, r) for r in records}
    for record in records:
        if record.parent and record.parent not in models:
            models[record.parent] = _stub_model(b, record.parent)
    datasets: dict[str, Any] = {}
    for record in records:
        for ds in record.datasets:
            if ds.digest not in datasets:
                datasets[ds.digest] = _dataset(b, ds)
    licenses: dict[str, Any] = {}
    for record in records:
        key = _slug(record.ref)
        source = models[record.ref]
        if record.datasets:
            b.relationship(key, source, "trainedOn", [datasets[d.digest] for d in record.datasets])
        if record.parent:
            b.relationship(key, source, "descendantOf", [models[record.parent]])
        if license_text := meta_text(record.metadata, "license"):
            expression = _license_expression(license_text)
            if expression not in licenses:
                licenses[expression] = b.add(
                    b.m.simplelicensing_LicenseExpression(
                        spdxId=f"{namespace}license/{_slug(expression)}",
                        simplelicensing_licenseExpression=expression,
                    )
                )
            b.relationship(key, source, "hasDeclaredLicense", [licenses[expression]])
    document = b.m.SpdxDocument(
        spdxId=f"{namespace}document",
        name="AI-BOM",
        rootElement=[models[r.ref] for r in records],
        element=list(b.elements),
        profileConformance=[
            b.m.ProfileIdentifierType.core,
            b.m.ProfileIdentifierType.software,
            b.m.ProfileIdentifierType.ai,
            b.m.ProfileIdentifierType.dataset,
        ],
        dataLicense=b.add(
            b.m.simplelicensing_LicenseExpression(
                spdxId=f"{namespace}license/data", simplelicensing_licenseExpression="CC0-1.0"
            )
        ),
    )
    b.add(document)
    try:
        data: dict[str, Any] = b.m.JSONLDSerializer().serialize_data(b.objects)
    except (ValueError, TypeError) as exc:
        # The bindings enforce the 3.0.1 model's cardinalities; a record that breaks one is bad input.
        raise InputError(f"SPDX document: {_brief(exc)}") from None
    return data


def _brief(exc: Exception) -> str:
    # The bindings list every allowed enum IRI in their messages; one line of it is enough for a person.
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def read_spdx(data: Mapping[str, Any]) -> Any:
    """Deserialize an SPDX 3.0.1 JSON-LD document into the bindings' object set (InputError if invalid)."""
    from spdx_python_model import v3_0_1 as spdx

    objects = spdx.SHACLObjectSet()
    try:
        spdx.JSONLDDeserializer().deserialize_data(dict(data), objects)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"SPDX document: {_brief(exc)}") from None
    return objects


def spdx_json(document: Mapping[str, Any]) -> str:
    """The document as indented JSON text with a final newline, the form `bastion bom --spdx` writes."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
