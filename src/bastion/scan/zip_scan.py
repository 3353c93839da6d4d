"""Zip archives: PyTorch and TorchScript checkpoints, .npz, .keras and plain zips, read like loaders read.

Members are scanned by content, whatever their names. In a PyTorch archive the storages that
``data.pkl`` references are raw tensor bytes torch never unpickles, so they are never read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from bastion.errors import LimitExceeded, MalformedInput
from bastion.findings import Location
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format, identify
from bastion.scan.registry import scanner
from bastion.scan.torch_legacy import legacy_extent
from bastion.scan.zip_reader import ZipEntry, ZipView
from bastion.scan.zip_rules import (
    TORCH_MISSING_STORAGE,
    ZIP_CRC,
    ZIP_DUPLICATE,
    ZIP_FLAGS,
    ZIP_MISMATCH,
    ZIP_OVERLAP,
    ZIP_POLYGLOT,
    ZIP_PREFIX,
    ZIP_TRAILING,
)

# -- scanning ---------------------------------------------------------------------------------------

log = logging.getLogger(__name__)

_PEEK = 512
_EOCD_MAGIC = b"PK\x05\x06"
_TAIL = 22 + 0xFFFF + 76
_ANOMALY_RULES = {
    "name-mismatch": ZIP_MISMATCH.code,
    "header-mismatch": ZIP_MISMATCH.code,
    "crc": ZIP_CRC.code,
    "flags": ZIP_FLAGS.code,
    "duplicate": ZIP_DUPLICATE.code,
    "trailing": ZIP_TRAILING.code,
    "overlap": ZIP_OVERLAP.code,
}
_REMEDY = "re-create the archive from a trusted copy"
_TORCH_KINDS = ("pytorch", "torchscript")
# Members torch reads as plain text, never unpickles; short text such as "little" can parse as opcodes.
_TORCH_TEXT = frozenset(
    {
        "byteorder",
        "version",
        ".format_version",
        ".storage_alignment",
        ".data/version",
        ".data/serialization_id",
    }
)
# Names TorchScript's own unpickler resolves (to classes compiled from the archive's code/, or to list
# builders); they are not Python imports, so inside a TorchScript archive they are not findings.
_TORCHSCRIPT_GLOBALS = frozenset(
    {
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensor_from_id",
        "torch.jit._pickle.restore_type_tag",
    }
)

PickleStreamFn = Callable[[Source, Location, ScanContext], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Layout:
    """What kind of archive this is and where its pickles and storages live."""

    kind: str  # pytorch, torchscript, npz, keras or zip
    prefix: str = ""  # the PyTorch archive's top-level directory, with its trailing slash
    roots: tuple[str, ...] = ()  # members torch unpickles, scanned first


def classify(names: Sequence[str]) -> Layout:
    """Tell PyTorch, TorchScript, .npz and Keras archives from a plain zip by their member names."""
    files = [n for n in names if not n.endswith("/")]
    data_pkl = [n for n in files if n == "data.pkl" or n.endswith("/data.pkl")]
    if data_pkl:
        root = min(data_pkl, key=lambda n: n.count("/"))
        prefix = root[: -len("data.pkl")]
        constants = prefix + "constants.pkl"
        if constants in files and any(n.startswith(prefix + "code/") for n in files):
            return Layout("torchscript", prefix, (root, constants))
        return Layout("pytorch", prefix, (root,))
    if files and all(n.endswith(".npy") for n in files):
        return Layout("npz")
    if "config.json" in files and "metadata.json" in files:
        return Layout("keras")
    return Layout("zip")


@scanner(Format.ZIP)
def scan_zip(source: Source, location: Location, ctx: ScanContext) -> None:
    """Scan a zip archive (PyTorch, TorchScript, .npz, .keras or plain) member by member."""
    view = ZipView.open(source, ctx.limits)
    _scan_view(view, location, ctx, behind_other=False)


@scanner(Format.PICKLE)
@scanner(Format.PYTORCH_LEGACY)
@scanner(Format.DATA)
def scan_appended_zip(source: Source, location: Location, ctx: ScanContext) -> None:
    """Find a zip archive that starts after other content (a polyglot) and scan it as well."""
    start = max(0, source.size - _TAIL)
    if _EOCD_MAGIC not in source.read_at(start, source.size - start):
        return
    try:
        view = ZipView.open(source, ctx.limits)
    except MalformedInput:
        return  # the signature bytes were inside other data, not the end of an archive
    if view.prefix_length == 0 or not view.entries:
        return
    # A pickle that embeds a zip as a bytes value goes on after it. In a polyglot the archive is the
    # end of the file, or it starts right where the pickles stop (trailing bytes then are padding).
    if view.end_offset != source.size and view.prefix_length not in legacy_extent(
        source, 8, limit=view.prefix_length, strict=False
    ):
        return
    _scan_view(view, location, ctx, behind_other=True)


def _scan_view(view: ZipView, location: Location, ctx: ScanContext, *, behind_other: bool) -> None:
    """Scan an archive's members; ``behind_other`` when the file was identified by its prefix."""
    layout = classify([e.name for e in view.entries])
    if not behind_other:
        _refine_format(ctx, location, layout.kind)
    if view.prefix_length:
        # Behind another format the prefix is the file's primary content, already analysed as such.
        _report_prefix(view, location, ctx, scan_prefix=not behind_other)
    if view.members_capped:
        ctx.incomplete(location, f"more than {ctx.limits.max_members} members in one archive")
    keys = _scan_roots(view, layout, location, ctx)
    for entry in view.entries:
        if entry.is_dir or entry.name in layout.roots or _torch_skips(entry.name, layout, keys):
            continue
        where = location.child(entry.name)
        if layout.kind == "torchscript" and entry.name.endswith(".debug_pkl"):
            _scan_pickle_member(view, entry, where, ctx, torchscript=True)
        else:
            _scan_member(view, entry, where, ctx)
    _report_anomalies(view, location, ctx)


def _refine_format(ctx: ScanContext, location: Location, kind: str) -> None:
    """Name the archive by what it holds (pytorch, npz ...) in the target list."""
    if kind == "zip":
        return
    for i, target in enumerate(ctx.targets):
        if target.location == location:
            ctx.targets[i] = replace(target, format=kind)


def _report_prefix(view: ZipView, location: Location, ctx: ScanContext, *, scan_prefix: bool) -> None:
    head = view.source.read_at(0, min(view.prefix_length, _PEEK))
    fmt = identify(head, view.prefix_length, "")
    evidence = {"prefix_length": view.prefix_length, "prefix_format": fmt.value, "members": len(view.entries)}
    if fmt not in (Format.PICKLE, Format.PYTORCH_LEGACY):
        ctx.report(
            ZIP_PREFIX.code,
            location.at(0),
            f"{view.prefix_length} unexplained bytes precede the first member of this archive; {_REMEDY}.",
            evidence,
        )
        return
    ctx.report(
        ZIP_POLYGLOT.code,
        location.at(0),
        "A pickle is prefixed to a zip archive, so torch.load unpickles the prefix while zip readers see "
        f"the archive; {_REMEDY}.",
        evidence,
    )
    if not scan_prefix:
        return
    if view.prefix_length > ctx.limits.max_member_bytes:
        ctx.incomplete(location, "the pickle in front of the archive is too large to analyse")
        return
    ctx.scan_nested(view.source.read_at(0, view.prefix_length), location.child("<prefix>"), "prefix.pkl")


def _scan_roots(view: ZipView, layout: Layout, location: Location, ctx: ScanContext) -> set[str] | None:
    """Scan the pickles torch unpickles and return the storage keys they reference (None if unknown)."""
    keys: set[str] | None = set()
    for entry in view.entries:
        if entry.name not in layout.roots:
            continue
        found = _scan_pickle_member(
            view, entry, location.child(entry.name), ctx, torchscript=layout.kind == "torchscript"
        )
        keys = None if found is None or keys is None else keys | found
    if keys and layout.kind in _TORCH_KINDS:
        names = {e.name for e in view.entries}
        missing = sorted(k for k in keys if not _storage_names(layout, k) & names)
        if missing:
            ctx.report(
                TORCH_MISSING_STORAGE.code,
                location.child(layout.roots[0]),
                "The checkpoint's pickle refers to tensor storage missing from the archive; re-save it from "
                "a trusted copy.",
                {"missing": ",".join(missing[:10]), "count": len(missing)},
            )
    return keys


def _storage_names(layout: Layout, key: str) -> set[str]:
    return {f"{layout.prefix}data/{key}", f"{layout.prefix}constants/{key}"}


def _torch_skips(name: str, layout: Layout, keys: set[str] | None) -> bool:
    """Members torch reads as raw bytes or text: storages and the format's small text records."""
    if (
        layout.kind in _TORCH_KINDS
        and name.startswith(layout.prefix)
        and name[len(layout.prefix) :] in _TORCH_TEXT
    ):
        return True
    return is_storage(name, layout, keys)


def is_storage(name: str, layout: Layout, keys: set[str] | None) -> bool:
    """True for raw tensor bytes that torch reads without unpickling (never read by the scanner)."""
    if layout.kind not in _TORCH_KINDS:
        return False
    for folder in ("data/", "constants/"):
        base = layout.prefix + folder
        if name.startswith(base) and "/" not in name[len(base) :]:
            # Without the pickle's persistent ids every storage-shaped member counts as a storage:
            # torch never unpickles anything in these folders.
            return keys is None or name[len(base) :] in keys
    return False


def _scan_member(view: ZipView, entry: ZipEntry, location: Location, ctx: ScanContext) -> None:
    """Peek at a member and scan it by content unless it is plain data a loader only reads."""
    if entry.data_offset is None:
        return  # reported with the archive's anomalies as a corrupt entry
    head = view.peek_member(entry, _PEEK)
    if identify(head, entry.uncompressed_size, entry.name) is Format.DATA:
        return
    try:
        member = view.member_source(entry, entry.name.rsplit("/", 1)[-1])
    except (LimitExceeded, MalformedInput) as exc:
        ctx.incomplete(location, exc.diagnostics())
        return
    ctx.scan_nested(member, location, member.name)


def _scan_pickle_member(
    view: ZipView, entry: ZipEntry, location: Location, ctx: ScanContext, *, torchscript: bool = False
) -> set[str] | None:
    """Scan one pickle torch will load; return the storage keys it references, or None if unknown."""
    if entry.data_offset is None:
        return None  # reported with the archive's anomalies as a corrupt entry
    analyse = _pickle_stream_fn()
    head = view.peek_member(entry, _PEEK)
    # torch unpickles this member whatever it holds, so it is analysed as a pickle unless it is
    # recognisably another container (which the generic route scans).
    fmt = identify(head, entry.uncompressed_size, entry.name)
    if analyse is None or fmt not in (Format.PICKLE, Format.DATA, Format.JSON, Format.PYTHON):
        _scan_member(view, entry, location, ctx)
        return None
    try:
        data = view.read_member(entry)
    except (LimitExceeded, MalformedInput) as exc:
        ctx.incomplete(location, exc.diagnostics())
        return None
    if ctx.depth >= ctx.limits.max_depth:
        ctx.incomplete(location, f"archive nesting deeper than {ctx.limits.max_depth} levels")
        return None
    ctx.total_bytes += len(data)
    ctx.add_target(location, Format.PICKLE.value, len(data))
    sink = _child_context(ctx) if torchscript else ctx
    sink.depth += 1
    try:
        analyses = analyse(Source.from_bytes(data, entry.name), location, sink)
    except (LimitExceeded, MalformedInput) as exc:
        ctx.incomplete(location, exc.diagnostics())
        return None
    except Exception as exc:  # a bug in the pickle analyser must fail closed, as in the engine
        log.debug("pickle analysis failed on %s", location.display, exc_info=True)
        ctx.incomplete(location, f"scanner error ({type(exc).__name__}: {exc})")
        return None
    finally:
        sink.depth -= 1
        if sink is not ctx:
            _merge_torchscript(sink, ctx)
    return storage_keys(analyses)


def _child_context(ctx: ScanContext) -> ScanContext:
    """A context that collects findings separately, to filter them before they reach ``ctx``."""
    return ScanContext(
        limits=ctx.limits,
        digest=ctx.digest,
        depth=ctx.depth,
        total_bytes=ctx.total_bytes,
        dispatch=ctx.dispatch,
    )


def _merge_torchscript(child: ScanContext, ctx: ScanContext) -> None:
    """Copy the child's records into ``ctx``, minus imports TorchScript resolves without Python."""
    for finding in child.findings:
        name = finding.evidence_map.get("global", "")
        if name.startswith("__torch__.") or name in _TORCHSCRIPT_GLOBALS:
            continue
        ctx.findings.append(finding)
    ctx.targets.extend(child.targets)
    ctx.skipped.extend(child.skipped)
    ctx.total_bytes = child.total_bytes


def storage_keys(analyses: Sequence[Any]) -> set[str]:
    """Storage keys named by torch persistent ids ``('storage', type, key, location, numel)``."""
    keys: set[str] = set()
    for analysis in analyses:
        for item in getattr(analysis, "persistent_ids", None) or ():
            pid = getattr(item, "value", item)
            if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
                keys.add(str(pid[2]))
    return keys


def _pickle_stream_fn() -> PickleStreamFn | None:
    """The pickle analyser's stream entry point, if that module provides it."""
    from bastion.scan import pickle_scan  # imported late: the two modules are written independently

    fn = getattr(pickle_scan, "scan_pickle_stream", None)
    return cast(PickleStreamFn, fn) if callable(fn) else None


def _report_anomalies(view: ZipView, location: Location, ctx: ScanContext) -> None:
    for anomaly in view.anomalies:
        where = location.child(anomaly.member) if anomaly.member else location
        where = where.at(anomaly.offset)
        if anomaly.kind == "corrupt":
            ctx.incomplete(where, anomaly.message, anomaly.evidence_map)
            continue
        rule = _ANOMALY_RULES.get(anomaly.kind)
        if rule is not None:
            ctx.report(rule, where, f"In this archive {anomaly.message}; {_REMEDY}.", anomaly.evidence_map)
