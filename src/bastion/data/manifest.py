"""Dataset integrity manifests: per-file and per-row hashes, Merkle roots, schema, canonical JSON."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import stat
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import rfc8785

from bastion import __version__
from bastion.data import readers
from bastion.data.merkle import merkle_root, merkle_root_hex
from bastion.data.readers import printable, strict_json_loads
from bastion.errors import InputError, UsageError

MANIFEST_FORMAT = "bastion.data.manifest"
SCHEMA_VERSION = 1
CHUNK = 1 << 20
# The kind of a symlink's entry: its size and sha256 describe the link's target text, not file bytes.
SYMLINK = "symlink"
SYMLINK_LEAF = b"\x00symlink"


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


@dataclass(frozen=True, slots=True)
class Unverified:
    """A path in the data that cannot be fingerprinted: a symlink leaving the dataset, a FIFO, a bad name."""

    path: str  # printable (control characters and undecodable bytes escaped)
    kind: str  # "symlink", "special" or "name"
    reason: str


@dataclass(slots=True)
class Survey:
    """What :func:`build_manifest` could not fingerprint, collected instead of raised (verify's mode)."""

    unverified: list[Unverified] = field(default_factory=list)
    # Entry path -> why its rows could not be read; the entry is still recorded with its size and SHA-256.
    unreadable: dict[str, str] = field(default_factory=dict)


def fingerprint_file(path: Path, name: str) -> FileEntry:
    """Hash one file and, for row formats, each of its rows."""
    return _fingerprint(path, name, None)


def _fingerprint(path: Path, name: str, survey: Survey | None) -> FileEntry:
    kind = readers.detect_kind(path)
    size = path.stat().st_size
    sha = file_sha256(path)
    try:
        if kind == "image":
            return FileEntry(name, size, sha, kind, schema=readers.image_schema(path))
        stream = readers.open_rows(path, kind)
        if stream is None:
            return FileEntry(name, size, sha, kind)
        hashes = tuple(hashlib.sha256(row).hexdigest() for row in stream.rows)
    except InputError as exc:
        if survey is None:
            raise
        # Verify compares the file's hash first: bytes that no longer parse are a change to report, not
        # bad input, so the entry keeps its hash and the reason its rows are missing.
        survey.unreadable[name] = str(exc).removeprefix(f"{path}: ")
        return FileEntry(name, size, sha, kind)
    root = merkle_root_hex(hashes)
    return FileEntry(name, size, sha, kind, stream.schema, len(hashes), root, hashes)


def dataset_root(files: Collection[FileEntry]) -> str:
    """Merkle root over ``path NUL sha256`` leaves in path order, so a rename changes the root too.

    A symlink's leaf ends in ``NUL symlink``: its sha256 is over the link's target text, which a regular
    file could hold as its bytes, and the two must not share a root.
    """
    leaves = [
        f.path.encode("utf-8")
        + b"\x00"
        + bytes.fromhex(f.sha256)
        + (SYMLINK_LEAF if f.kind == SYMLINK else b"")
        for f in files
    ]
    return merkle_root(leaves).hex()


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"))
    return next((text for test, text in kinds if test(mode)), "a block device or other special file")


def check_input(path: Path) -> None:
    """Raise InputError unless ``path`` is a regular file or a directory (following symlinks)."""
    shown = printable(str(path), escape_backslash=False)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{shown}: a symbolic link loop") from None
        if os.path.islink(path):
            raise InputError(f"{shown}: a broken symbolic link (to {printable(os.readlink(path))})") from None
        if exc.errno == errno.ENOENT:
            raise InputError(f"{shown}: no such file or directory") from None
        raise InputError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise InputError(f"{shown}: not a regular file or directory ({_special_kind(mode)})")


def _utf8(name: str) -> bool:
    # Names arrive from the OS with undecodable bytes as lone surrogates (PEP 383); JSON cannot carry them.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Walk:
    """One directory tree's regular files and symlinks, in the order the Merkle root has always used."""

    def __init__(self, root: Path, exclude: frozenset[Path], survey: Survey | None) -> None:
        self.root = root
        self.real = Path(os.path.realpath(root))
        self.exclude = exclude
        self.survey = survey
        self.files: list[tuple[tuple[str, ...], Path]] = []
        self.links: list[tuple[tuple[str, ...], FileEntry]] = []

    def problem(self, parts: tuple[str, ...], kind: str, reason: str) -> None:
        shown = "/".join(parts)
        if self.survey is None:
            where = printable(str(self.root.joinpath(*parts)), escape_backslash=False)
            raise InputError(f"{where}: {reason}")
        self.survey.unverified.append(Unverified(printable(shown), kind, reason))

    def run(self) -> None:
        # os.scandir, not Path.rglob: rglob silently skips a directory it cannot read, which would leave
        # files out of the manifest (and out of verify) without a word.
        pending: list[tuple[str, ...]] = [()]
        while pending:
            parts = pending.pop()
            directory = self.root.joinpath(*parts)
            try:
                with os.scandir(directory) as listing:
                    entries = [(entry.name, self.kind_of(entry)) for entry in listing]
            except OSError as exc:
                shown = printable(str(directory), escape_backslash=False)
                raise InputError(f"{shown}: cannot read the directory ({exc.strerror or exc})") from None
            for name, kind in entries:
                child = (*parts, name)
                if self.real.joinpath(*child) in self.exclude:
                    continue
                if not _utf8(name):
                    self.problem(child, "name", "the name is not valid UTF-8 (manifests record UTF-8 names)")
                elif kind == "dir":
                    pending.append(child)
                elif kind == "file":
                    self.files.append((child, self.root.joinpath(*child)))
                elif kind == SYMLINK:
                    self.link(child)
                else:
                    self.problem(child, "special", f"not a regular file or directory ({kind})")

    @staticmethod
    def kind_of(entry: os.DirEntry[str]) -> str:
        if entry.is_symlink():
            return SYMLINK
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
        return _special_kind(entry.stat(follow_symlinks=False).st_mode)

    def link(self, parts: tuple[str, ...]) -> None:
        # A symlink is recorded as a link (its target text), never followed: following could read and
        # publish hashes of files outside the dataset, loop forever, or vouch for data that changes behind
        # the manifest's back. A link that stays inside the dataset is safe to record this way because what
        # it points at is itself fingerprinted; one that leaves it (or dangles, or loops) is refused, since
        # the manifest could not cover what a training job would read through it.
        path = self.root.joinpath(*parts)
        target = os.readlink(path)
        shown = printable(target)
        try:
            real = Path(os.path.realpath(path, strict=True))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.problem(parts, SYMLINK, f"a symbolic link loop (-> {shown})")
            else:
                self.problem(parts, SYMLINK, f"a broken symbolic link (-> {shown})")
            return
        if real != self.real and self.real not in real.parents:
            self.problem(
                parts, SYMLINK, f"a symbolic link to {shown}, outside the dataset (copy the data in instead)"
            )
            return
        data = os.fsencode(target)
        name = "/".join(parts)
        self.links.append((parts, FileEntry(name, len(data), hashlib.sha256(data).hexdigest(), SYMLINK)))

    def ordered(self) -> list[tuple[tuple[str, ...], Path | FileEntry]]:
        """Files and links sorted by path components, as ``sorted(root.rglob("*"))`` ordered them."""
        items: list[tuple[tuple[str, ...], Path | FileEntry]] = [*self.files, *self.links]
        return sorted(items, key=lambda item: item[0])


def build_manifest(
    path: Path | str, source: str = "", *, exclude: Collection[Path] = (), survey: Survey | None = None
) -> Manifest:
    """Fingerprint a file or a directory tree (``exclude``: files to leave out, e.g. the manifest itself).

    Without ``survey`` anything that cannot be fingerprinted raises InputError; with one, symlinks leaving
    the dataset, special files and undecodable names are listed there, and files whose rows no longer
    parse are recorded by their hash alone (what verify needs to report them as differences).
    """
    target = Path(path)
    check_input(target)
    # Both the name a path has and what it resolves to: an excluded symlink is left out where it stands.
    skip = frozenset(
        p for e in exclude for p in (Path(os.path.realpath(e)), Path(os.path.realpath(e.parent)) / e.name)
    )
    items: list[tuple[tuple[str, ...], Path | FileEntry]] = []
    if target.is_dir():
        walk = _Walk(target, skip, survey)
        walk.run()
        items = walk.ordered()
    elif _utf8(target.name):
        items = [((target.name,), target)]
    elif survey is None:
        shown = printable(str(target), escape_backslash=False)
        raise InputError(f"{shown}: the name is not valid UTF-8 (manifests record UTF-8 names)")
    else:
        survey.unverified.append(Unverified(printable(target.name), "name", "the name is not valid UTF-8"))
    files: list[FileEntry] = []
    for parts, item in items:
        if isinstance(item, FileEntry):
            files.append(item)
            continue
        try:
            files.append(_fingerprint(item, "/".join(parts), survey))
        except OSError as exc:
            where = printable(str(exc.filename or item), escape_backslash=False)
            raise InputError(f"{where}: cannot read ({exc.strerror or exc})") from None
        except InputError as exc:
            # Reader messages name the file as the OS gave it; a newline in a name must not split the line.
            raise InputError(printable(str(exc), escape_backslash=False)) from None
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Manifest(source, created, __version__, tuple(files), dataset_root(files))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_manifest(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        load_manifest(path)
    except InputError:
        return False
    return True


def check_output(output: Path, data: Path, *, keys: Collection[Path] = ()) -> None:
    """Refuse (UsageError) a manifest path that would replace the input, a file of the dataset, or a key.

    A new file inside the dataset directory is allowed (it is left out of the manifest), and so is an
    existing Bastion manifest there, so that re-fingerprinting can refresh it; any other existing file in
    the dataset is data and is never replaced.
    """
    shown = printable(str(output), escape_backslash=False)
    parent = output.parent
    if not parent.is_dir():
        raise UsageError(f"--output {shown}: the directory {printable(str(parent))} does not exist")
    if output.is_dir():
        raise UsageError(f"--output {shown}: is a directory")
    # The rename replaces the directory entry ``where``; a symlink there would also have named ``final``.
    where = Path(os.path.realpath(parent)) / output.name
    final = Path(os.path.realpath(output))
    spots = {where, final}
    protected = [(key, "the signing key") for key in keys]
    if not data.is_dir():
        protected.append((data, "the input"))
    for other, role in protected:
        other_spots = {Path(os.path.realpath(other)), Path(os.path.realpath(other.parent)) / other.name}
        if spots & other_spots or _same(output, other):
            raise UsageError(f"--output {shown}: would overwrite {role} {printable(str(other))}")
    real = Path(os.path.realpath(data))
    if data.is_dir() and real in where.parents and os.path.lexists(where) and not _is_manifest(where):
        raise UsageError(
            f"--output {shown}: is a file of the dataset {printable(str(data))}; "
            "write the manifest to a new file or outside the dataset"
        )


def manifest_problem(manifest: Manifest) -> str | None:
    """Why a manifest contradicts itself (row counts, row roots or root that its own hashes do not give)."""
    # A signature covers all of this, but an unsigned manifest can be edited; a row hash changed without
    # its file's sha256 would otherwise pass unnoticed.
    seen: set[str] = set()
    for entry in manifest.files:
        shown = printable(entry.path)
        if entry.path in seen:
            return f"{shown} is listed twice"
        seen.add(entry.path)
        if entry.row_hashes is None:
            if entry.row_count is not None or entry.row_root is not None:
                return f"{shown} has a row count or row root but no row hashes"
            continue
        if entry.row_count != len(entry.row_hashes):
            return f"{shown} records {entry.row_count} rows but lists {len(entry.row_hashes)} row hashes"
        if entry.row_root != merkle_root_hex(entry.row_hashes):
            return f"{shown}'s row_root is not the Merkle root of its row hashes"
    if manifest.root != dataset_root(manifest.files):
        return "the root is not the Merkle root of the files' hashes"
    return None


TOP_FIELDS = frozenset(
    {"format", "schema_version", "source", "created", "tool_version", "files", "root", "signature", "lineage"}
)
ENTRY_FIELDS = frozenset({"path", "size", "sha256", "kind", "schema", "row_count", "row_root", "row_hashes"})
SIGNATURE_FIELDS = frozenset({"algorithm", "public_key", "value"})
_HEX = re.compile(r"[0-9a-f]*")


def _require_type(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int to isinstance, but ``true`` where a number belongs is not what was signed.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{what} has the wrong type")
    return value


def _only(data: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    # A field this version does not know would be dropped when re-serialised for the signature check, so
    # a signed manifest could carry unsigned content; it is refused instead.
    unknown = sorted(data.keys() - allowed)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} in {what}")
    nulls = sorted(k for k, v in data.items() if v is None)
    if nulls:
        raise ValueError(f"{nulls[0]} is null in {what} (leave the field out instead)")


def _text(value: Any, what: str) -> str:
    _require_type(value, str, what)
    if not _utf8(value):
        raise ValueError(f"{what} is not valid Unicode text")
    return str(value)


def _count(value: Any, what: str) -> int:
    _require_type(value, int, what)
    if not 0 <= value <= readers.MAX_SAFE_INTEGER:
        raise ValueError(f"{what} {value} is out of range")
    return int(value)


def _digest(value: Any, what: str) -> str:
    text = _text(value, what)
    if len(text) != 64 or not _HEX.fullmatch(text):
        raise ValueError(f"{what} is not a lowercase hex SHA-256 digest")
    return text


def _hashes(value: Any) -> tuple[str, ...]:
    hashes = tuple(_require_type(h, str, "a row hash") for h in _require_type(value, list, "row_hashes"))
    # One regular expression over the joined text: manifests can list millions of row hashes.
    if any(len(h) != 64 for h in hashes) or not _HEX.fullmatch("".join(hashes)):
        raise ValueError("a row hash is not a lowercase hex SHA-256 digest")
    return hashes


def _json_object(value: Any, what: str) -> dict[str, Any]:
    _require_type(value, dict, what)
    try:
        rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"{what} has no canonical JSON form ({readers.one_line_reason(exc)})") from None
    return dict(value)


def _entry_from(data: Any) -> FileEntry:
    _require_type(data, dict, "a file entry")
    _only(data, ENTRY_FIELDS, "a file entry")
    hashes = data.get("row_hashes")
    schema = data.get("schema")
    row_count = data.get("row_count")
    row_root = data.get("row_root")
    return FileEntry(
        path=_text(data["path"], "path"),
        size=_count(data["size"], "size"),
        sha256=_digest(data["sha256"], "sha256"),
        kind=_text(data["kind"], "kind"),
        schema=None if schema is None else _json_object(schema, "schema"),
        row_count=None if row_count is None else _count(row_count, "row_count"),
        row_root=None if row_root is None else _digest(row_root, "row_root"),
        row_hashes=None if hashes is None else _hashes(hashes),
    )


def manifest_from_dict(data: Any) -> Manifest:
    """Rebuild a manifest from parsed JSON; raises ValueError/KeyError when a field is missing or wrong."""
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a Bastion data manifest")
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {version!r}")
    _only(data, TOP_FIELDS, "the manifest")
    sig = data.get("signature")
    signature = None
    if sig is not None:
        _require_type(sig, dict, "signature")
        _only(sig, SIGNATURE_FIELDS, "the signature")
        signature = Signature(*(_text(sig[k], k) for k in ("algorithm", "public_key", "value")))
    lineage = _require_type(data.get("lineage", []), list, "lineage")
    if "lineage" in data and not lineage:
        raise ValueError("lineage is empty (leave the field out instead)")
    return Manifest(
        source=_text(data["source"], "source"),
        created=_text(data["created"], "created"),
        tool_version=_text(data["tool_version"], "tool_version"),
        files=tuple(_entry_from(f) for f in _require_type(data["files"], list, "files")),
        root=_digest(data["root"], "root"),
        signature=signature,
        lineage=tuple(_json_object(r, "a lineage record") for r in lineage),
    )


def manifest_from_json(text: bytes | str, origin: str = "manifest") -> Manifest:
    """Parse a manifest's JSON; raises InputError naming ``origin`` when it is not a Bastion manifest."""
    try:
        data = strict_json_loads(text)
        return manifest_from_dict(data)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else readers.one_line_reason(exc)
        raise InputError(f"{origin}: not a valid Bastion data manifest ({printable(reason)})") from None


def load_manifest(path: Path) -> Manifest:
    """Read and parse a manifest file."""
    shown = printable(str(path), escape_backslash=False)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{shown}: cannot read the manifest ({exc.strerror or exc})") from None
    return manifest_from_json(data, shown)
