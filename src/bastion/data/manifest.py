"""Dataset integrity manifests: per-file and per-row hashes, Merkle roots, schema, canonical JSON."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import rfc8785

from bastion import __version__
from bastion.data import readers
from bastion.data.merkle import merkle_root, merkle_root_hex
from bastion.errors import InputError

MANIFEST_FORMAT = "bastion.data.manifest"
SCHEMA_VERSION = 1
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the dataset; row fields are None for formats without rows."""

    path: str
    size: int
    sha256: str
    kind: str
    schema: dict[str, Any] | None = None
    row_count: int | None = None
    row_root: str | None = None
    row_hashes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Signature:
    """A detached Ed25519 signature over the manifest's canonical bytes without this field."""

    algorithm: str
    public_key: str
    value: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a dataset looked like when it was fingerprinted."""

    source: str
    created: str
    tool_version: str
    files: tuple[FileEntry, ...]
    root: str
    signature: Signature | None = None
    schema_version: int = SCHEMA_VERSION
    # Lineage records of the step that produced this data (see bastion.data.lineage); signed with the rest.
    lineage: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, ``format`` marker first in meaning (key order is canonicalised anyway)."""
        data = asdict(self)
        data["format"] = MANIFEST_FORMAT
        data["files"] = [_file_dict(f) for f in self.files]
        if self.signature is None:
            del data["signature"]
        if self.lineage:
            data["lineage"] = [dict(record) for record in self.lineage]
        else:
            del data["lineage"]
        return data

    def to_json(self) -> bytes:
        """RFC 8785 canonical bytes of the whole manifest, signature included."""
        return rfc8785.dumps(self.to_dict())

    def signing_bytes(self) -> bytes:
        """Canonical bytes of the manifest without its signature: what a signature covers."""
        return replace(self, signature=None).to_json()

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`signing_bytes`: the manifest's identity, stable across re-signing."""
        return hashlib.sha256(self.signing_bytes()).hexdigest()

    def file(self, path: str) -> FileEntry | None:
        """The entry for ``path``, or None."""
        return next((f for f in self.files if f.path == path), None)


def _file_dict(entry: FileEntry) -> dict[str, Any]:
    data = asdict(entry)
    if entry.row_hashes is not None:
        data["row_hashes"] = list(entry.row_hashes)
    return {k: v for k, v in data.items() if v is not None}


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_file(path: Path, name: str) -> FileEntry:
    """Hash one file and, for row formats, each of its rows."""
    kind = readers.detect_kind(path)
    size = path.stat().st_size
    sha = file_sha256(path)
    if kind == "image":
        return FileEntry(name, size, sha, kind, schema=readers.image_schema(path))
    stream = readers.open_rows(path, kind)
    if stream is None:
        return FileEntry(name, size, sha, kind)
    hashes = tuple(hashlib.sha256(row).hexdigest() for row in stream.rows)
    root = merkle_root_hex(hashes)
    return FileEntry(name, size, sha, kind, stream.schema, len(hashes), root, hashes)


def dataset_root(files: Collection[FileEntry]) -> str:
    """Merkle root over ``path NUL sha256`` leaves in path order, so a rename changes the root too."""
    leaves = [f.path.encode("utf-8") + b"\x00" + bytes.fromhex(f.sha256) for f in files]
    return merkle_root(leaves).hex()


def _walk(root: Path, exclude: frozenset[Path]) -> Iterator[tuple[Path, str]]:
    # Symlinks are skipped: following them could fingerprint files outside the dataset.
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.resolve() in exclude:
            continue
        yield path, path.relative_to(root).as_posix()


def build_manifest(path: Path | str, source: str = "", *, exclude: Collection[Path] = ()) -> Manifest:
    """Fingerprint a file or a directory tree (``exclude``: files to leave out, e.g. the manifest itself)."""
    target = Path(path)
    skip = frozenset(p.resolve() for p in exclude)
    if target.is_dir():
        items = list(_walk(target, skip))
    elif target.is_file():
        items = [(target, target.name)]
    else:
        raise InputError(f"{target}: no such file or directory")
    try:
        files = tuple(fingerprint_file(p, name) for p, name in items)
    except OSError as exc:
        raise InputError(f"{exc.filename or target}: cannot read ({exc.strerror or exc})") from None
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Manifest(source, created, __version__, files, dataset_root(files))


def _require_type(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{what} has the wrong type")
    return value


def _entry_from(data: Any) -> FileEntry:
    _require_type(data, dict, "a file entry")
    hashes = data.get("row_hashes")
    if hashes is not None:
        hashes = tuple(_require_type(h, str, "a row hash") for h in _require_type(hashes, list, "row_hashes"))
    schema = data.get("schema")
    return FileEntry(
        path=_require_type(data["path"], str, "path"),
        size=_require_type(data["size"], int, "size"),
        sha256=_require_type(data["sha256"], str, "sha256"),
        kind=_require_type(data["kind"], str, "kind"),
        schema=None if schema is None else _require_type(schema, dict, "schema"),
        row_count=_require_type(data.get("row_count"), (int, type(None)), "row_count"),
        row_root=_require_type(data.get("row_root"), (str, type(None)), "row_root"),
        row_hashes=hashes,
    )


def manifest_from_dict(data: Any) -> Manifest:
    """Rebuild a manifest from parsed JSON; raises ValueError/KeyError when a field is missing or wrong."""
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a Bastion data manifest")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {data.get('schema_version')!r}")
    sig = data.get("signature")
    signature = None
    if sig is not None:
        _require_type(sig, dict, "signature")
        fields = (_require_type(sig[k], str, k) for k in ("algorithm", "public_key", "value"))
        signature = Signature(*fields)
    return Manifest(
        source=_require_type(data["source"], str, "source"),
        created=_require_type(data["created"], str, "created"),
        tool_version=_require_type(data["tool_version"], str, "tool_version"),
        files=tuple(_entry_from(f) for f in _require_type(data["files"], list, "files")),
        root=_require_type(data["root"], str, "root"),
        signature=signature,
        lineage=tuple(
            _require_type(r, dict, "lineage record")
            for r in _require_type(data.get("lineage", []), list, "lineage")
        ),
    )


def manifest_from_json(text: bytes | str, origin: str = "manifest") -> Manifest:
    """Parse a manifest's JSON; raises InputError naming ``origin`` when it is not a Bastion manifest."""
    try:
        return manifest_from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else readers.one_line_reason(exc)
        raise InputError(f"{origin}: not a valid Bastion data manifest ({reason})") from None


def load_manifest(path: Path) -> Manifest:
    """Read and parse a manifest file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    return manifest_from_json(data, str(path))
