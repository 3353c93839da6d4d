"""The AI-BOM in CycloneDX 1.6 JSON: models, the datasets they learned from, the AI services they call.

cyclonedx-python-lib builds components, services and the dependency graph; it has no ``modelCard`` and no
``component.data`` yet (CycloneDX/cyclonedx-python-lib#912, #913), so both are added to its JSON output
afterwards, and the result is checked against the 1.6 schema the library bundles.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from bastion import __version__
from bastion.errors import InputError, UsageError
from bastion.registry.card import dataset_label, digest_hex, meta_list, meta_mapping, meta_text, plural
from bastion.registry.record import DatasetRef, VersionRecord

if TYPE_CHECKING:
    from cyclonedx.model.component import Component
    from cyclonedx.model.service import Service
    from cyclonedx.validation.json import JsonStrictValidator

SPEC_VERSION = "1.6"
# modelCard.modelParameters.approach.type values the 1.6 schema accepts.
APPROACHES = frozenset(
    {"supervised", "unsupervised", "reinforcement-learning", "semi-supervised", "self-supervised"}
)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")


def model_ref(ref: str) -> str:
    """The bom-ref of a model version named ``name@version``."""
    return f"model:{ref}"


def data_ref(digest: str) -> str:
    """The bom-ref of a dataset named by its manifest digest."""
    return f"data:{digest}"


def service_ref(provider: str, name: str) -> str:
    """The bom-ref of an external AI service."""
    return f"service:{provider}/{name}" if provider else f"service:{name}"


def _sha256_hashes(digest: str) -> list[Any]:
    from cyclonedx.model import HashAlgorithm, HashType

    hex_part = digest_hex(digest)
    # Only a SHA-256 digest can be stated as one; other schemes stay in the properties.
    if not _SHA256.match(hex_part) or not (
        digest.startswith(("sha256:", "manifest-sha256:")) or digest == hex_part
    ):
        return []
    return [HashType(alg=HashAlgorithm.SHA_256, content=hex_part.lower())]


def _props(pairs: Sequence[tuple[str, str | None]]) -> list[Any]:
    from cyclonedx.model import Property

    return [Property(name=k, value=v) for k, v in pairs if v not in (None, "")]


def _model_component(record: VersionRecord) -> Component:
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalContact

    pairs: list[tuple[str, str | None]] = [
        ("bastion:state", record.state),
        ("bastion:aliases", ",".join(record.aliases)),
        ("bastion:digest", record.digest),
        ("bastion:format", record.format),
        ("bastion:framework", record.framework),
        ("bastion:parent", record.parent),
        ("bastion:created", record.created_at.isoformat()),
        ("bastion:created_by", record.created_by),
    ]
    if record.scan is not None:
        pairs.append(("bastion:scan.verdict", record.scan.verdict))
        pairs.append(("bastion:scan.report_digest", record.scan.report_digest))
        pairs += [(f"bastion:scan.{sev}", str(n)) for sev, n in sorted(record.scan.counts.items())]
    if record.signature is not None:
        sig = record.signature
        pairs += [("bastion:signature.signer", sig.signer), ("bastion:signature.method", sig.method)]
        pairs.append(
            ("bastion:signature.verified", None if sig.verified is None else str(sig.verified).lower())
        )
    license_text = meta_text(record.metadata, "license")
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=model_ref(record.ref),
        name=record.name,
        version=str(record.version),
        description=meta_text(record.metadata, "description"),
        authors=[OrganizationalContact(name=a) for a in meta_list(record.metadata, "authors")],
        licenses=[LicenseFactory().make_from_string(license_text)] if license_text else [],
        hashes=_sha256_hashes(record.digest),
        properties=_props(pairs),
    )


def _stub_model_component(ref: str) -> Component:
    from cyclonedx.model.component import Component, ComponentType

    name, _, version = ref.rpartition("@") if "@" in ref else (ref, "", "")
    # A parent named by a version that is not in this export: its identity is all the BOM can say.
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=model_ref(ref),
        name=name,
        version=version or None,
        properties=_props([("bastion:inventory", "referenced as a parent; its record is not in this BOM")]),
    )


def _data_component(ds: DatasetRef) -> Component:
    from cyclonedx.model.component import Component, ComponentType

    return Component(
        type=ComponentType.DATA,
        bom_ref=data_ref(ds.digest),
        name=dataset_label(ds),
        hashes=_sha256_hashes(ds.digest),
        properties=_props([("bastion:manifest.digest", ds.digest)]),
    )


def _component_data(ds: DatasetRef) -> dict[str, Any]:
    props = [
        {"name": "bastion:manifest.digest", "value": ds.digest},
        {"name": "bastion:files", "value": str(ds.files)},
        {"name": "bastion:manifest.signed", "value": str(ds.signed).lower()},
    ]
    if ds.rows is not None:
        props.append({"name": "bastion:rows", "value": str(ds.rows)})
    if ds.signer:
        props.append({"name": "bastion:manifest.signer", "value": ds.signer})
    for key in sorted(ds.audit or {}):
        value = (ds.audit or {})[key]
        text = (
            json.dumps(value, sort_keys=True, default=str)
            if isinstance(value, Mapping | list)
            else str(value)
        )
        props.append({"name": f"bastion:audit.{key}", "value": text})
    contents: dict[str, Any] = {"properties": props}
    if ds.source and _URL.match(ds.source):
        contents["url"] = ds.source
    size = plural(ds.files, "file")
    if ds.rows is not None:
        size = f"{plural(ds.rows, 'row')} in {size}"
    return {
        "type": "dataset",
        "name": dataset_label(ds),
        "contents": contents,
        "description": f"Fingerprinted by bastion data fingerprint: {size}.",
    }


def _model_card(record: VersionRecord, dataset_refs: Sequence[str]) -> dict[str, Any]:
    meta = record.metadata
    params: dict[str, Any] = {}
    approach = meta_text(meta, "approach")
    if approach in APPROACHES:
        params["approach"] = {"type": approach}
    task = meta_text(meta, "task")
    if task:
        params["task"] = task
    architecture = meta_text(meta, "architecture")
    if architecture:
        params["modelArchitecture"] = architecture
    if dataset_refs:
        params["datasets"] = [{"ref": r} for r in dataset_refs]
    card: dict[str, Any] = {}
    if params:
        card["modelParameters"] = params
    metrics = meta_mapping(meta, "metrics")
    if metrics:
        card["quantitativeAnalysis"] = {
            "performanceMetrics": [{"type": k, "value": _text(v)} for k, v in sorted(metrics.items())]
        }
    considerations: dict[str, Any] = {}
    for key, field in (("intended_use", "useCases"), ("limitations", "technicalLimitations")):
        if items := meta_list(meta, key):
            considerations[field] = items
    if risks := meta_list(meta, "risks"):
        considerations["ethicalConsiderations"] = [{"name": r} for r in risks]
    fairness = meta_mapping(meta, "fairness") or {}
    assessments = [
        _fairness_assessment(group, value)
        for group, value in sorted(fairness.items())
        if isinstance(value, Mapping)
    ]
    if assessments:
        considerations["fairnessAssessments"] = assessments
    if considerations:
        card["considerations"] = considerations
    # What the schema has no field for is kept as properties rather than dropped or forced into one.
    props = [
        {"name": f"bastion:fairness.{k}", "value": _text(v)}
        for k, v in sorted(fairness.items())
        if not isinstance(v, Mapping)
    ]
    props += [
        {"name": f"bastion:privacy.{k}", "value": _text(v)}
        for k, v in sorted((meta_mapping(meta, "privacy") or {}).items())
    ]
    props += [{"name": "bastion:out_of_scope", "value": v} for v in meta_list(meta, "out_of_scope")]
    if approach and approach not in APPROACHES:
        props.append({"name": "bastion:approach", "value": approach})
    if props:
        card["properties"] = props
    return card


_FAIRNESS_KEYS = {
    "groupAtRisk": ("groupAtRisk", "group_at_risk", "group"),
    "benefits": ("benefits",),
    "harms": ("harms",),
    "mitigationStrategy": ("mitigationStrategy", "mitigation_strategy", "mitigation"),
}


def _fairness_assessment(group: str, value: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, keys in _FAIRNESS_KEYS.items():
        found = next((value[k] for k in keys if value.get(k) not in (None, "")), None)
        if found is not None:
            out[field] = _text(found)
    out.setdefault("groupAtRisk", group)
    return out


def _text(value: Any) -> str:
    return (
        json.dumps(value, sort_keys=True, default=str)
        if isinstance(value, Mapping | list | tuple)
        else str(value)
    )


def _service_spec(raw: Any, where: str) -> dict[str, Any]:
    """Normalise a service given as a mapping, or as ``"provider/name"`` text, to a plain dict."""
    if isinstance(raw, str):
        provider, _, name = raw.strip().rpartition("/")
        if not name:
            raise InputError(f"{where}: a service needs a name")
        return {"provider": provider, "name": name}
    if not isinstance(raw, Mapping):
        raise InputError(
            f"{where}: a service must be a mapping or 'provider/name' text, not {type(raw).__name__}"
        )
    name = str(raw.get("name") or "").strip()
    if not name:
        raise InputError(f"{where}: a service needs a name")
    endpoints = raw.get("endpoints") or []
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    evidence = raw.get("evidence") or []
    if isinstance(evidence, str):
        evidence = [evidence]
    return {
        "provider": str(raw.get("provider") or "").strip(),
        "name": name,
        "endpoints": [str(e) for e in endpoints],
        "authenticated": raw.get("authenticated"),
        "trust_boundary": raw.get("trust_boundary"),
        "evidence": [str(e) for e in evidence],
    }


def _merge_service(into: dict[str, Any], spec: Mapping[str, Any]) -> None:
    into["endpoints"] = sorted({*into.get("endpoints", []), *spec.get("endpoints", [])})
    into["evidence"] = sorted({*into.get("evidence", []), *spec.get("evidence", [])})
    for key in ("authenticated", "trust_boundary"):
        if into.get(key) is None and spec.get(key) is not None:
            into[key] = spec[key]


def _service(spec: Mapping[str, Any]) -> Service:
    from cyclonedx.model import XsUri
    from cyclonedx.model.contact import OrganizationalEntity
    from cyclonedx.model.service import Service

    auth, boundary = spec.get("authenticated"), spec.get("trust_boundary")
    return Service(
        bom_ref=service_ref(spec["provider"], spec["name"]),
        name=spec["name"],
        provider=OrganizationalEntity(name=spec["provider"]) if spec["provider"] else None,
        endpoints=[XsUri(e) for e in spec.get("endpoints", [])],
        authenticated=None if auth is None else bool(auth),
        x_trust_boundary=None if boundary is None else bool(boundary),
        properties=_props([("bastion:evidence", e) for e in spec.get("evidence", [])]),
    )


def build_bom(
    records: Sequence[VersionRecord],
    *,
    services: Sequence[Mapping[str, Any]] = (),
    serial: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The CycloneDX 1.6 AI-BOM of ``records`` as JSON data; a given ``serial`` and ``now`` make it stable."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    try:
        serial_number = uuid.UUID(serial) if serial is not None else uuid.uuid4()
    except ValueError:
        raise InputError(f"BOM serial {serial!r}: not a UUID") from None
    bom = Bom(serial_number=serial_number)
    bom.metadata.timestamp = now if now is not None else datetime.now(UTC)
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="bastion", version=__version__, bom_ref="tool:bastion")
    )

    models: dict[str, Component] = {r.ref: _model_component(r) for r in records}
    datasets: dict[str, DatasetRef] = {}
    for record in records:
        for ds in record.datasets:
            datasets[ds.digest] = _richer(datasets.get(ds.digest), ds)
    data_components = {digest: _data_component(ds) for digest, ds in datasets.items()}

    specs: dict[str, dict[str, Any]] = {}
    uses: dict[str, list[str]] = {}
    for i, raw in enumerate(services):
        spec = _service_spec(raw, f"service #{i + 1}")
        _merge_service(specs.setdefault(service_ref(spec["provider"], spec["name"]), dict(spec)), spec)
    for record in records:
        listed = record.metadata.get("services") or []
        for i, raw in enumerate(listed if isinstance(listed, list | tuple) else [listed]):
            spec = _service_spec(raw, f"{record.ref} metadata services #{i + 1}")
            key = service_ref(spec["provider"], spec["name"])
            _merge_service(specs.setdefault(key, dict(spec)), spec)
            uses.setdefault(record.ref, []).append(key)
    service_objects = {key: _service(spec) for key, spec in specs.items()}

    for record in records:
        if record.parent and record.parent not in models:
            models[record.parent] = _stub_model_component(record.parent)
    for component in (*models.values(), *data_components.values()):
        bom.components.add(component)
    for service in service_objects.values():
        bom.services.add(service)
    for record in records:
        targets: list[Any] = [data_components[ds.digest] for ds in record.datasets]
        if record.parent:
            targets.append(models[record.parent])
        targets += [service_objects[key] for key in dict.fromkeys(uses.get(record.ref, []))]
        bom.register_dependency(models[record.ref], targets)

    data: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    by_ref = {c["bom-ref"]: c for c in data.get("components", [])}
    for record in records:
        card = _model_card(record, [data_ref(ds.digest) for ds in record.datasets])
        if card:
            by_ref[model_ref(record.ref)]["modelCard"] = card
    for digest, ds in datasets.items():
        by_ref[data_ref(digest)]["data"] = [_component_data(ds)]
    # The header first, as people expect to read it; the rest keeps the library's (sorted) order.
    header: tuple[str, ...] = ("$schema", "bomFormat", "specVersion", "serialNumber", "version")
    head = {k: data.pop(k) for k in header if k in data}
    return {**head, **data}


def _richer(old: DatasetRef | None, new: DatasetRef) -> DatasetRef:
    """Of two references to one dataset, the one that says more (an audit, a signer, a row count)."""
    if old is None:
        return new

    def score(d: DatasetRef) -> int:
        return sum(x is not None and x != "" for x in (d.audit, d.signer, d.rows, d.source)) + d.signed

    return new if score(new) > score(old) else old


@cache
def _validator() -> JsonStrictValidator:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def validate_bom(bom: Mapping[str, Any]) -> None:
    """Raise InputError naming the first place where ``bom`` breaks the CycloneDX 1.6 JSON schema."""
    from cyclonedx.exception import MissingOptionalDependencyException

    try:
        error = _validator().validate_str(json.dumps(bom, default=str))
    except MissingOptionalDependencyException:
        raise UsageError("checking the AI-BOM needs jsonschema: pip install 'bastion-ai[registry]'") from None
    if error is None:
        return
    detail = getattr(error, "data", error)
    path = "/".join(str(p) for p in getattr(detail, "absolute_path", ())) or "(document)"
    message = str(getattr(detail, "message", detail)).splitlines()[0]
    if len(message) > 200:
        message = message[:197] + "..."
    raise InputError(f"AI-BOM breaks the CycloneDX {SPEC_VERSION} schema at {path}: {message}")


def bom_json(bom: Mapping[str, Any]) -> str:
    """The BOM as indented JSON text with a final newline, the form `bastion bom` writes."""
    return json.dumps(bom, indent=2, ensure_ascii=False) + "\n"
