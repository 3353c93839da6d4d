"""The MLflow connector: import MLflow model versions, write Bastion's verdicts back as MLflow tags.

MLflow's registry has versions, aliases and tags but no signatures, scans, approvals or alias history, so
Bastion stays the system of record and MLflow a source and a display: :func:`import_from_mlflow` downloads
each version's artifacts into a local cache folder (which must keep existing: ``bastion verify`` re-hashes
the registered location), registers them (scanned like any version) and keeps what MLflow knew in
``metadata["mlflow"]``; :func:`write_back` sets ``bastion.*`` tags on the MLflow versions so people and
MLflow-side automation see the state, the scan, the signature, the last verification and the last gate.

MLflow is an optional extra and imports slowly (seconds), so it is imported on first use only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy import select

from bastion.errors import ConfigError, InputError, UsageError
from bastion.registry.record import BLOCKED_STATES, VersionRecord
from bastion.registry.versions import Registry, check_name
from bastion.store.events import EventFilter, list_events
from bastion.store.schema import model_versions

__all__ = [
    "CHANGED",
    "IMPORTED",
    "MISSING",
    "SKIPPED",
    "UNCHANGED",
    "WRITTEN",
    "ImportResult",
    "TagResult",
    "bastion_name",
    "default_artifacts_dir",
    "desired_tags",
    "import_from_mlflow",
    "public_uri",
    "write_back",
]

INSTALL_HINT = "mlflow is not installed: pip install 'bastion-ai[mlflow]'"
# Import statuses.
IMPORTED = "imported"  # first import of this MLflow version
UNCHANGED = "unchanged"  # already imported with the same artifact: nothing done
CHANGED = "changed"  # already imported, but MLflow now serves other bytes: registered as a new version
SKIPPED = "skipped"  # MLflow has not finished registering the version (no artifact to import)
# Write-back statuses.
WRITTEN = "written"
MISSING = "missing"  # the MLflow version no longer exists

TAG_PREFIX = "bastion."
# MLflow tags copied to the top level of Bastion's free metadata, where cards, the AI-BOM and policies
# look for them (the keys `bastion.registry.card.META_EXAMPLES` documents).
METADATA_TAGS = (
    "license",
    "task",
    "architecture",
    "authors",
    "contact",
    "intended_use",
    "out_of_scope",
    "limitations",
    "risks",
    "metrics",
    "fairness",
    "privacy",
)
_JSON_TAGS = frozenset({"metrics", "fairness", "privacy"})
# Query parameters that carry credentials in database and cloud URIs; never recorded.
_SECRET_PARAMS = re.compile(r"pass|secret|token|key|sig|credential|auth", re.IGNORECASE)
_PAGE = 200
# URIs without a scheme that MLflow reads as a service, not as a local folder.
_BARE_REMOTE = frozenset({"databricks", "databricks-uc", "uc"})


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What importing one MLflow model version did."""

    mlflow_name: str
    mlflow_version: str
    ref: str | None  # the Bastion version (the existing one when unchanged); None when skipped
    status: str  # imported | unchanged | changed | skipped
    digest: str | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, as ``bastion mlflow import --format json`` prints it."""
        return {
            "mlflow_name": self.mlflow_name,
            "mlflow_version": self.mlflow_version,
            "ref": self.ref,
            "status": self.status,
            "digest": self.digest,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class TagResult:
    """What writing Bastion's verdict back to one MLflow model version did."""

    ref: str
    mlflow_name: str
    mlflow_version: str
    status: str  # written | unchanged | missing
    tags: Mapping[str, str] = field(default_factory=dict)  # every bastion.* tag the version now carries
    changed: tuple[str, ...] = ()  # tag keys set or removed by this write-back
    removed_aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, as ``bastion mlflow sync-tags --format json`` prints it."""
        return {
            "ref": self.ref,
            "mlflow_name": self.mlflow_name,
            "mlflow_version": self.mlflow_version,
            "status": self.status,
            "tags": dict(self.tags),
            "changed": list(self.changed),
            "removed_aliases": list(self.removed_aliases),
        }


# --- MLflow itself ----------------------------------------------------------------------------------


def _load_mlflow() -> Any:
    """Import mlflow on first use; a missing install is one line, not a traceback."""
    try:
        # importlib keeps mypy from type-checking the whole (typed, very large) mlflow package.
        return importlib.import_module("mlflow")
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Run MLflow calls without progress bars, INFO chatter or minutes of retries against a dead server.

    Each setting is changed only while the connector runs and only when the user has not chosen it.
    """
    defaults = {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # MLflow retries 7 times with exponential backoff (minutes); an import should fail in seconds.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    added = [k for k in defaults if k not in os.environ]
    for key in added:
        os.environ[key] = defaults[key]
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def public_uri(uri: str) -> str:
    """The tracking URI as recorded and shown: no password, no credential query parameters.

    A relative ``sqlite:///`` path or a bare path is made absolute, so the same registry is recognised
    whichever directory the command ran from. Nothing else is rewritten.
    """
    text = uri.strip()
    scheme = urlsplit(text).scheme.lower()
    if scheme == "sqlite" and text.startswith("sqlite:///") and not text.startswith("sqlite:////"):
        path, sep, query = text[len("sqlite:///") :].partition("?")
        if path and path != ":memory:":
            text = "sqlite:///" + str(Path(path).expanduser().resolve()) + sep + query
    elif not scheme and text and text not in _BARE_REMOTE:
        return str(Path(text).expanduser().resolve())
    parts = urlsplit(text)
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        text = text.replace("//" + parts.netloc, "//" + (f"{user}@{host}" if user else host), 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not _SECRET_PARAMS.search(k)]
        if len(kept) != len(pairs):
            head = text.partition("?")[0]
            text = head + ("?" + urlencode(kept) if kept else "")
            text += "#" + parts.fragment if parts.fragment else ""
    return text


def _check_local_store(uri: str) -> None:
    """Refuse a local MLflow store that does not exist: MLflow would silently create an empty one."""
    text = uri.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    path: str | None = None
    if scheme == "sqlite" and text.startswith("sqlite:///"):
        path = text[len("sqlite:///") :].partition("?")[0]
        if path == ":memory:":
            raise ConfigError(f"{public_uri(uri)}: an in-memory MLflow store holds no models")
    elif scheme == "file":
        path = parts.path
    elif scheme == "" and text and text not in _BARE_REMOTE:
        path = text
    if path is not None and not Path(path).expanduser().exists():
        raise ConfigError(
            f"{public_uri(uri)}: no MLflow store there ({Path(path).expanduser()} does not exist)"
        )


def _first_line(text: object, width: int = 240) -> str:
    line = (str(text).strip().splitlines() or [""])[0].strip()
    return line if len(line) <= width else line[: width - 1] + "…"


def _network_reason(message: str) -> str:
    """The cause inside MLflow's long request error: "[Errno 111] Connection refused", a timeout..."""
    errno = re.search(r"\[Errno -?\d+\] [^'\"()]+", message)
    if errno:
        return errno.group(0).strip()
    for cause in ("timed out", "Failed to resolve", "certificate verify failed", "SSLError"):
        if cause in message:
            return cause
    return _first_line(message.split("failed with exception", 1)[-1], 120)


def _mlflow_error(mlflow: Any, error: BaseException, uri: str, what: str) -> Exception:
    """Turn an MLflow or network exception into a one-line Bastion error naming the URI or the model."""
    shown = public_uri(uri)
    message = str(error)
    if isinstance(error, mlflow.exceptions.MlflowException):
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return InputError(f"{what}: not found in the MLflow registry at {shown}")
        if "API request to" in message and "failed with exception" in message:
            return ConfigError(
                f"{shown}: cannot reach the MLflow tracking server ({_network_reason(message)})"
            )
        if "unsupported URI" in message:
            return ConfigError(f"{shown}: not an MLflow tracking or registry URI MLflow supports")
        return ConfigError(f"{shown}: MLflow refused {what}: {_first_line(message)}")
    # Not MLflow's own error: a network failure outside its retry wrapper, or a local disk error.
    return ConfigError(f"{shown}: {what} failed ({_first_line(message) or type(error).__name__})")


@contextlib.contextmanager
def _calling(mlflow: Any, uri: str, what: str) -> Iterator[None]:
    """Map the exceptions of the MLflow calls inside to one-line errors about ``what``."""
    try:
        yield
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise _mlflow_error(mlflow, error, uri, what) from None


def _client(tracking_uri: str, registry_uri: str | None) -> tuple[Any, Any]:
    """The mlflow module and a client bound to the URIs (no global MLflow state is changed)."""
    if not tracking_uri.strip():
        raise UsageError("--tracking-uri: give the MLflow tracking URI (e.g. http://mlflow:5000)")
    _check_local_store(tracking_uri)
    if registry_uri:
        _check_local_store(registry_uri)
    mlflow = _load_mlflow()
    with _calling(mlflow, tracking_uri, "the connection"):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    return mlflow, client


# --- names and folders ------------------------------------------------------------------------------


def bastion_name(mlflow_name: str) -> str:
    """The Bastion model name for an MLflow registered model: the same name when Bastion allows it."""
    try:
        return check_name(mlflow_name)
    except UsageError:
        pass
    # MLflow allows spaces and most punctuation; keep what Bastion allows and join the rest with "-".
    cleaned = re.sub(r"[^A-Za-z0-9._/-]+", "-", mlflow_name).lstrip("._-/").rstrip("-")[:200]
    if not cleaned:
        raise InputError(f"{mlflow_name!r}: an MLflow model name Bastion cannot use (no letter or digit)")
    return check_name(cleaned)


def _folder(text: str) -> str:
    """One safe path component for a name: never a separator, never ``.`` or ``..``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    return cleaned if cleaned.strip(".") else "_" + cleaned


def default_artifacts_dir(registry: Registry) -> Path:
    """``mlflow-artifacts`` beside a SQLite store, else in the user's data directory."""
    database = registry.store.engine.url.database if registry.store.is_sqlite else None
    if database and database != ":memory:":
        return Path(database).resolve().parent / "mlflow-artifacts"
    from platformdirs import user_data_dir

    return Path(user_data_dir("bastion", appauthor=False)) / "mlflow-artifacts"


# --- what Bastion already holds ---------------------------------------------------------------------


def _mlflow_records(registry: Registry, name: str | None = None) -> list[tuple[str, int, dict[str, Any]]]:
    """``(name, version, metadata["mlflow"])`` of every version imported from MLflow (of ``name``)."""
    query = select(model_versions.c.name, model_versions.c.version, model_versions.c.metadata).where(
        model_versions.c.metadata.contains('"mlflow":', autoescape=True)
    )
    if name is not None:
        query = query.where(model_versions.c.name == name)
    found: list[tuple[str, int, dict[str, Any]]] = []
    with registry.store.read() as conn:
        for row in conn.execute(query.order_by(model_versions.c.name, model_versions.c.version)):
            try:
                meta = json.loads(row.metadata).get("mlflow")
            except (ValueError, AttributeError):
                continue
            if isinstance(meta, dict) and "name" in meta and "version" in meta:
                found.append((row.name, row.version, meta))
    return found


def _same_source(meta: Mapping[str, Any], registry_uri: str, name: str, version: str) -> bool:
    return (
        str(meta.get("registry_uri") or meta.get("tracking_uri")) == registry_uri
        and str(meta.get("name")) == name
        and str(meta.get("version")) == version
    )


# --- import -----------------------------------------------------------------------------------------


def _registered_models(mlflow: Any, client: Any, uri: str, names: Sequence[str]) -> list[Any]:
    """The MLflow registered models to import: those named (each must exist), else all of them."""
    if names:
        found = []
        for name in dict.fromkeys(names):  # keep order, drop repeats
            with _calling(mlflow, uri, f"model {name!r}"):
                found.append(client.get_registered_model(name))
        return found
    models: list[Any] = []
    token = None
    with _calling(mlflow, uri, "the model listing"):
        while True:
            page = client.search_registered_models(max_results=_PAGE, page_token=token)
            models.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
    return sorted(models, key=lambda m: m.name)


def _filter_for(name: str) -> str:
    quote = "'" if "'" not in name else '"'
    if quote in name:
        raise InputError(f"{name!r}: an MLflow model name with both quote characters cannot be searched")
    return f"name = {quote}{name}{quote}"


def _versions(mlflow: Any, client: Any, uri: str, name: str) -> list[Any]:
    """Every version of an MLflow model, oldest first."""
    versions: list[Any] = []
    token = None
    with _calling(mlflow, uri, f"the versions of {name!r}"):
        while True:
            page = client.search_model_versions(_filter_for(name), max_results=_PAGE, page_token=token)
            versions.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
    return sorted(versions, key=lambda v: int(v.version))


def _run_metrics(mlflow: Any, client: Any, run_id: str | None) -> dict[str, float]:
    """The latest metrics of the run that produced the version; none when the run is gone or private."""
    if not run_id:
        return {}
    try:
        run = client.get_run(run_id)
    except (mlflow.exceptions.MlflowException, OSError):  # a missing run only means no metrics to copy
        return {}
    return {str(k): float(v) for k, v in sorted(run.data.metrics.items())}


def _metadata(
    model: Any, version: Any, tracking_uri: str, registry_uri: str, metrics: Mapping[str, float]
) -> dict[str, Any]:
    """What MLflow knows about a version, as Bastion's free metadata (bastion.* tags left out)."""
    model_tags = {str(k): str(v) for k, v in (model.tags or {}).items() if not str(k).startswith(TAG_PREFIX)}
    version_tags = {
        str(k): str(v) for k, v in (version.tags or {}).items() if not str(k).startswith(TAG_PREFIX)
    }
    number = str(version.version)
    aliases = sorted(str(a) for a, v in (model.aliases or {}).items() if str(v) == number)
    aliases = sorted(set(aliases) | {str(a) for a in (version.aliases or ())})
    mlflow_meta: dict[str, Any] = {
        "tracking_uri": tracking_uri,
        "registry_uri": registry_uri,
        "name": str(version.name),
        "version": number,
        "run_id": version.run_id or None,
        "source": str(version.source),
        "status": str(version.status),
        "created_ms": version.creation_timestamp,
        "user_id": version.user_id or None,
        "description": version.description or None,
        "model_description": model.description or None,
        "tags": version_tags,
        "model_tags": model_tags,
        # MLflow aliases are recorded, never copied: a Bastion alias moves only under Bastion's approvals.
        "aliases": aliases,
    }
    meta: dict[str, Any] = {"mlflow": mlflow_meta}
    merged = {**model_tags, **version_tags}  # a version's own tag wins over its model's
    for key in METADATA_TAGS:
        if merged.get(key, "").strip():
            value: Any = merged[key].strip()
            if key in _JSON_TAGS:
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            meta[key] = value
    if "metrics" not in meta and metrics:
        meta["metrics"] = dict(metrics)
    description = version.description or model.description or merged.get("description")
    if description:
        meta["description"] = str(description)
    return meta


def _download(mlflow: Any, client: Any, version: Any, tracking_uri: str, into: Path) -> Path:
    """Download a version's artifacts into the folder ``into``; return the artifact root inside it."""
    label = f"{version.name} version {version.version}"
    with _calling(mlflow, tracking_uri, f"the artifacts of {label}"):
        uri = client.get_model_version_download_uri(version.name, str(version.version))
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(into), tracking_uri=tracking_uri
        )
    root = Path(local)
    if not root.exists() or not root.resolve().is_relative_to(into.resolve()):
        raise InputError(f"{label}: MLflow returned no artifact for {version.source}")
    return root


@dataclass
class _Importer:
    """One import run: the MLflow client, the URIs as recorded, the cache folder and who is acting."""

    registry: Registry
    mlflow: Any
    client: Any
    tracking_uri: str  # as given (it may carry credentials MLflow needs)
    shown_tracking: str
    shown_registry: str
    cache: Path
    actor: str

    def model(self, model: Any) -> list[ImportResult]:
        """Import every version of one registered model, oldest first."""
        mlflow_name = str(model.name)
        name = bastion_name(mlflow_name)
        known = [
            (f"{n}@{v}", meta)
            for n, v, meta in _mlflow_records(self.registry, name)
            if str(meta.get("name")) == mlflow_name
        ]
        results = []
        for version in _versions(self.mlflow, self.client, self.shown_registry, mlflow_name):
            number = str(version.version)
            if str(version.status) != "READY":
                detail = f"MLflow status {version.status}: no artifact yet"
                results.append(ImportResult(mlflow_name, number, None, SKIPPED, None, detail))
                continue
            earlier = [
                ref for ref, meta in known if _same_source(meta, self.shown_registry, mlflow_name, number)
            ]
            result, meta = self.version(name, model, version, earlier[-1] if earlier else None)
            if meta is not None and result.ref is not None:
                known.append((result.ref, meta))
            results.append(result)
        return results

    def version(
        self, name: str, model: Any, version: Any, previous: str | None
    ) -> tuple[ImportResult, dict[str, Any] | None]:
        """Download one version; register it unless ``previous`` already holds the same artifact."""
        from bastion.registry.artifacts import hash_artifact

        mlflow_name, number = str(model.name), str(version.version)
        folder = self.cache / _folder(name) / _folder(number)
        folder.mkdir(parents=True, exist_ok=True)
        # Downloaded beside its final place, so moving it there is one rename on the same filesystem.
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder))
        try:
            root = _download(self.mlflow, self.client, version, self.tracking_uri, incoming)
            artifact = hash_artifact(root)
            # Compare with the newest import only: bytes that changed and then changed back make a new
            # version again, so the newest import of an MLflow version always matches what it serves.
            same = self.registry.get(previous) if previous else None
            if (
                same is not None
                and same.digest == artifact.digest
                and {(f.path, f.sha256) for f in same.files} == {(f.path, f.sha256) for f in artifact.files}
            ):
                return ImportResult(mlflow_name, number, same.ref, UNCHANGED, same.digest), None
            final = folder / artifact.digest.removeprefix("sha256:")[:16]
            target = final / root.relative_to(incoming)
            if not final.exists():
                os.replace(incoming, final)
            elif not target.exists() or hash_artifact(target).digest != artifact.digest:
                # Left by an earlier import (into another store, or interrupted before registering):
                # reused only while it holds exactly these bytes.
                raise InputError(
                    f"{final}: the artifact cache folder holds other files than {mlflow_name} version "
                    f"{number}; move it away and import again"
                )
            metrics = _run_metrics(self.mlflow, self.client, version.run_id)
            metadata = _metadata(model, version, self.shown_tracking, self.shown_registry, metrics)
            if previous:
                metadata["mlflow"]["previous"] = previous
            record = self.registry.add(name, target, actor=self.actor, metadata=metadata)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        if previous:
            detail = f"changed in MLflow since {previous}"
            return ImportResult(mlflow_name, number, record.ref, CHANGED, record.digest, detail), metadata[
                "mlflow"
            ]
        return ImportResult(mlflow_name, number, record.ref, IMPORTED, record.digest), metadata["mlflow"]


def import_from_mlflow(
    registry: Registry,
    tracking_uri: str,
    *,
    actor: str,
    names: Sequence[str] = (),
    registry_uri: str | None = None,
    artifacts_dir: Path | None = None,
) -> list[ImportResult]:
    """Import every version of the MLflow models (all, or those in ``names``) into the registry.

    Each version's artifacts are downloaded under ``artifacts_dir/<model>/<version>/<digest>/`` (default
    :func:`default_artifacts_dir`), kept there, and registered with what MLflow knows in
    ``metadata["mlflow"]``. A version already imported with the same artifact is left alone (unchanged);
    one whose artifact changed in MLflow is registered as a new Bastion version (changed).
    """
    mlflow, client = _client(tracking_uri, registry_uri)
    importer = _Importer(
        registry=registry,
        mlflow=mlflow,
        client=client,
        tracking_uri=tracking_uri,
        shown_tracking=public_uri(tracking_uri),
        shown_registry=public_uri(registry_uri or tracking_uri),
        cache=(artifacts_dir or default_artifacts_dir(registry)).expanduser().resolve(),
        actor=actor,
    )
    results: list[ImportResult] = []
    with _quiet():
        for model in _registered_models(mlflow, client, importer.shown_registry, names):
            results.extend(importer.model(model))
    return results


# --- write-back -------------------------------------------------------------------------------------


def _latest(registry: Registry, action: str, ref: str) -> Mapping[str, Any] | None:
    found = list_events(registry.store, EventFilter(action=action, subject=ref), limit=1)
    return found[-1].payload if found else None


def _gate_verdict(payload: Mapping[str, Any]) -> str:
    """passed | blocked | error, from a ``gate.evaluated`` payload (older ones carry only ``passed``)."""
    verdict = payload.get("verdict")
    if verdict in ("passed", "blocked", "error"):
        return str(verdict)
    return "passed" if payload.get("passed") else "blocked"


def desired_tags(registry: Registry, record: VersionRecord) -> dict[str, str]:
    """The ``bastion.*`` tags an MLflow version should carry for this Bastion version."""
    verified = _latest(registry, "model.verified", record.ref)
    gate = _latest(registry, "gate.evaluated", record.ref)
    tags = {
        "bastion.ref": record.ref,
        "bastion.digest": record.digest,
        "bastion.state": record.state,
        "bastion.scan": record.scan.verdict if record.scan else "none",
        "bastion.signature": record.signature.signer if record.signature else "unsigned",
        "bastion.verified": "unknown" if verified is None else ("true" if verified.get("ok") else "false"),
        "bastion.gate": "none" if gate is None else _gate_verdict(gate),
    }
    if gate is not None and gate.get("policy"):
        tags["bastion.gate.policy"] = str(gate["policy"])
    if record.state in BLOCKED_STATES:
        tags["bastion.blocked"] = "true"
    return tags


def _targets(registry: Registry, registry_uri: str, refs: Sequence[str]) -> list[VersionRecord]:
    """The Bastion versions to write back: those named, else the newest import of each MLflow version."""
    if refs:
        records = []
        for ref in refs:
            record = registry.get(ref)
            meta = record.metadata.get("mlflow")
            if not isinstance(meta, Mapping) or "name" not in meta or "version" not in meta:
                raise InputError(f"{record.ref}: not imported from MLflow (no mlflow metadata)")
            source = str(meta.get("registry_uri") or meta.get("tracking_uri"))
            if source != registry_uri:
                raise InputError(
                    f"{record.ref}: imported from the MLflow registry at {source}, not {registry_uri}"
                )
            records.append(record)
        return records
    newest: dict[tuple[str, str], str] = {}
    for name, version, meta in _mlflow_records(registry):
        if str(meta.get("registry_uri") or meta.get("tracking_uri")) == registry_uri:
            newest[(str(meta["name"]), str(meta["version"]))] = f"{name}@{version}"  # rows come in order
    return [registry.get(ref) for ref in newest.values()]


def write_back(
    registry: Registry,
    tracking_uri: str,
    refs: Sequence[str] = (),
    *,
    actor: str,
    registry_uri: str | None = None,
    unalias_blocked: bool = False,
) -> list[TagResult]:
    """Set Bastion's verdicts as ``bastion.*`` tags on the MLflow versions Bastion imported.

    ``refs`` picks Bastion versions (default: the newest import of every MLflow version from this
    registry). A revoked or quarantined version also gets ``bastion.blocked=true`` and, with
    ``unalias_blocked``, loses its MLflow aliases so ``models:/name@alias`` stops resolving to it.
    Each write-back that changed something is an ``mlflow.tags_written`` event.
    """
    mlflow, client = _client(tracking_uri, registry_uri)
    shown = public_uri(registry_uri or tracking_uri)
    results: list[TagResult] = []
    with _quiet():
        for record in _targets(registry, shown, refs):
            meta = record.metadata["mlflow"]
            name, number = str(meta["name"]), str(meta["version"])
            label = f"{name} version {number}"
            try:
                with _calling(mlflow, shown, label):
                    current = client.get_model_version(name, number)
            except InputError:
                results.append(TagResult(record.ref, name, number, MISSING))
                continue
            have = {str(k): str(v) for k, v in (current.tags or {}).items()}
            want = desired_tags(registry, record)
            changed: list[str] = []
            removed: list[str] = []
            with _calling(mlflow, shown, label):
                for key, value in want.items():
                    if have.get(key) != value:
                        client.set_model_version_tag(name, number, key, value)
                        changed.append(key)
                # A tag Bastion no longer vouches for (blocked after reinstatement, a gate policy now gone).
                for key in sorted(k for k in have if k.startswith(TAG_PREFIX) and k not in want):
                    client.delete_model_version_tag(name, number, key)
                    changed.append(key)
                if unalias_blocked and record.state in BLOCKED_STATES:
                    pointing = client.get_registered_model(name).aliases or {}
                    for alias in sorted(str(a) for a, v in pointing.items() if str(v) == number):
                        client.delete_registered_model_alias(name, alias)
                        removed.append(alias)
            if changed or removed:
                registry.record_check(
                    record.ref,
                    "mlflow.tags_written",
                    {
                        "registry_uri": shown,
                        "name": name,
                        "version": number,
                        "tags": want,
                        "changed": changed,
                        "removed_aliases": removed,
                    },
                    actor=actor,
                )
            results.append(
                TagResult(
                    record.ref,
                    name,
                    number,
                    WRITTEN if changed or removed else UNCHANGED,
                    want,
                    tuple(changed),
                    tuple(removed),
                )
            )
    return results
