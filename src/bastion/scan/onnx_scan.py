"""ONNX scanner: external data paths that escape the model directory, custom op domains, local functions.

The ModelProto is read with :mod:`bastion.scan.protobuf_wire` (no onnx package); tensor bytes are skipped,
never read. Every tensor is visited: graph initializers, sparse initializers, tensors in node attributes,
sub-graphs (``If``/``Loop``/``Scan`` bodies), model-local functions and training graphs.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from bastion.findings import Location, Severity
from bastion.rules import SUPPLY_CHAIN_REFS, Reference, Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.protobuf_wire import LEN, Budget, Message, source_buffer
from bastion.scan.registry import scanner

_PATH_CVES = tuple(
    Reference(c)
    for c in (
        "CVE-2022-25882",
        "CVE-2024-27318",
        "CVE-2024-5187",
        "CVE-2026-27489",
        "CVE-2026-34446",
        "CVE-2026-34447",
    )
)
_CWE_22 = Reference("CWE-22: Path Traversal", "https://cwe.mitre.org/data/definitions/22.html")

register(
    Rule(
        code="BST-ONNX-001",
        name="onnx-external-data-escape",
        severity=Severity.CRITICAL,
        summary="An ONNX tensor's external data location points outside the model's directory.",
        what_it_does=(
            "Reports `external_data` locations that are absolute, that climb out of the model directory "
            "with `..` (after normalisation) or that resolve outside it on disk."
        ),
        why_bad=(
            "ONNX loaders read (and some tools write) the named file. An attacker-chosen location reads "
            "secrets such as `/etc/passwd` or SSH keys into tensors that the model then returns, or "
            "overwrites files when the model is saved again. onnx fixed successive bypasses of its own "
            "check until 1.21."
        ),
        example="`external_data {key: 'location' value: '../../etc/passwd'}`.",
        use_instead=(
            "Keep external data files next to the model and name them with plain relative file names."
        ),
        references=(*SUPPLY_CHAIN_REFS, _CWE_22, *_PATH_CVES),
    )
)
register(
    Rule(
        code="BST-ONNX-002",
        name="onnx-external-data-link",
        severity=Severity.HIGH,
        summary="An ONNX external data file is reached through a symbolic link or is a hard link.",
        what_it_does=(
            "When the model is on disk, checks every component of each external data path for symbolic "
            "links and the final file for a link count above one."
        ),
        why_bad=(
            "A link inside the model directory makes a harmless-looking relative path read any file on "
            "the host (CVE-2026-34446, CVE-2026-34447): path checks that only look at the string are "
            "bypassed."
        ),
        example="`weights.bin -> /home/user/.ssh/id_rsa` next to `model.onnx`.",
        use_instead="Ship external data as regular files; copy them instead of linking.",
        false_positives=(
            "Deduplicating file systems or caches (such as the Hugging Face cache) that link blobs."
        ),
        references=(*SUPPLY_CHAIN_REFS, _CWE_22, *_PATH_CVES),
    )
)
register(
    Rule(
        code="BST-ONNX-003",
        name="onnx-custom-domain",
        severity=Severity.MEDIUM,
        summary="The ONNX graph uses operators from a custom domain.",
        what_it_does=(
            "Lists operator domains other than the standard ONNX and ONNX Runtime ones, with their op types."
        ),
        why_bad=(
            "Custom operators are implemented by native libraries that the runtime must register and "
            "load; a model that needs one asks its user to load unreviewed native code."
        ),
        example="A node with `domain: 'evil.ops'` and `op_type: 'Run'`.",
        use_instead="Use standard operators, or review and pin the custom-op library the model needs.",
        false_positives="Models built for onnxruntime-extensions or vendor runtimes that document their ops.",
    )
)
register(
    Rule(
        code="BST-ONNX-004",
        name="onnx-local-functions",
        severity=Severity.INFO,
        summary="The ONNX model defines model-local functions.",
        what_it_does=(
            "Lists the functions defined in the model; their bodies are scanned like the main graph."
        ),
        why_bad=(
            "Nothing by itself: functions are plain ONNX graphs, listed so that a reviewer knows they exist."
        ),
        example="A function `custom.Gelu` made of standard operators.",
        use_instead="Nothing to change.",
        false_positives="Most findings: it is an inventory.",
    )
)
register(
    Rule(
        code="BST-ONNX-005",
        name="onnx-external-data-missing",
        severity=Severity.LOW,
        summary="An ONNX external data file named by the model does not exist next to it.",
        what_it_does=(
            "When the model is on disk, checks that each external data location names an existing file."
        ),
        why_bad=(
            "The model cannot load as shipped; the file may be fetched or planted later, out of the "
            "scan's sight."
        ),
        example="`location: 'weights.bin'` with no such file beside the model.",
        use_instead="Scan the model together with all of its external data files.",
        false_positives="Scanning a model file on its own, without its data files.",
    )
)

STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft"}
)
_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:|[\\/]{2})")
_MAX_REPORTS = 200

# Field numbers in onnx.proto.
_MODEL_GRAPH, _MODEL_OPSET, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 8, 20, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_OP, _NODE_ATTR, _NODE_DOMAIN = 4, 5, 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL = 8, 13
_FUNC_NAME, _FUNC_NODE, _FUNC_DOMAIN = 1, 7, 10


@dataclass(slots=True)
class _Inventory:
    domains: dict[str, set[str]] = field(default_factory=dict)  # custom domain -> op types
    functions: set[tuple[str, str]] = field(default_factory=set)  # (domain, name)
    external: list[tuple[str, str, int]] = field(default_factory=list)  # (tensor, location, offset)


def _walk_tensor(tensor: Message, inv: _Inventory) -> None:
    for f in tensor:
        if f.number == _TENSOR_EXTERNAL and f.wire_type == LEN:
            entry = tensor.sub(f)
            if entry.string(1) == "location":
                inv.external.append((tensor.string(_TENSOR_NAME), entry.string(2), f.offset))


def _walk(root: Message, inv: _Inventory) -> None:
    """Visit every graph, node and tensor iteratively, so hostile nesting cannot exhaust the stack."""
    stack: list[tuple[str, Message]] = [("model", root)]
    while stack:
        kind, msg = stack.pop()
        if kind == "tensor":
            _walk_tensor(msg, inv)
            continue
        for f in msg:
            if f.wire_type != LEN:
                continue
            child = _child_kind(kind, f.number)
            if child == "node" and kind in ("graph", "function"):
                node = msg.sub(f)
                _note_domain(node, inv)
                stack.append(("node", node))
            elif child:
                stack.append((child, msg.sub(f)))
        if kind == "function":
            inv.functions.add((msg.string(_FUNC_DOMAIN), msg.string(_FUNC_NAME)))


_CHILDREN: dict[str, dict[int, str]] = {
    "model": {_MODEL_GRAPH: "graph", _MODEL_FUNCTIONS: "function", _MODEL_TRAINING: "training"},
    "training": {1: "graph", 2: "graph"},
    "graph": {_GRAPH_NODE: "node", _GRAPH_INIT: "tensor", _GRAPH_SPARSE_INIT: "sparse"},
    "function": {_FUNC_NODE: "node"},
    "node": {_NODE_ATTR: "attr"},
    "attr": {
        _ATTR_T: "tensor",
        _ATTR_TENSORS: "tensor",
        _ATTR_G: "graph",
        _ATTR_GRAPHS: "graph",
        _ATTR_SPARSE: "sparse",
        _ATTR_SPARSES: "sparse",
    },
    "sparse": {1: "tensor", 2: "tensor"},
}


def _child_kind(kind: str, number: int) -> str:
    return _CHILDREN.get(kind, {}).get(number, "")


def _note_domain(node: Message, inv: _Inventory) -> None:
    domain = node.string(_NODE_DOMAIN)
    if domain not in STANDARD_DOMAINS:
        inv.domains.setdefault(domain, set()).add(node.string(_NODE_OP))


def _string_escape(location: str) -> str:
    """Why the location string alone escapes the model directory, or ''."""
    if location.startswith(("/", "\\")) or _WINDOWS_ABSOLUTE.match(location):
        return "absolute path"
    normal = posixpath.normpath(location.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        return "climbs out of the model directory"
    if ".." in location.replace("\\", "/").split("/"):
        return "contains '..'"
    return ""


def _disk_problem(base: Path, location: str) -> tuple[str, str]:
    """(rule, reason) for the on-disk file behind ``location``; rule '' when all is well."""
    parts = [p for p in location.replace("\\", "/").split("/") if p not in ("", ".")]
    current = base
    for part in parts:
        current = current / part
        if current.is_symlink():
            return "BST-ONNX-002", f"path component {part!r} is a symbolic link"
    target = base.joinpath(*parts) if parts else base
    try:
        real_base, real_target = os.path.realpath(base), os.path.realpath(target)
        if os.path.commonpath([real_base, real_target]) != real_base:
            return "BST-ONNX-001", "resolves outside the model directory"
        st = os.lstat(target)
    except (OSError, ValueError):
        return "BST-ONNX-005", "file does not exist"
    if not stat.S_ISREG(st.st_mode):
        return "BST-ONNX-002", "is not a regular file"
    if st.st_nlink > 1:
        return "BST-ONNX-002", f"is a hard link ({st.st_nlink} links)"
    return "", ""


def _report_external(inv: _Inventory, source: Source, location: Location, ctx: ScanContext) -> None:
    base = source.fs_path.parent if source.fs_path is not None else None
    seen: set[str] = set()
    for tensor, where, offset in inv.external[:_MAX_REPORTS]:
        evidence = {"tensor": tensor, "location": where, "offset": offset}
        reason = _string_escape(where)
        if reason:
            severity = Severity.CRITICAL if reason != "contains '..'" else Severity.MEDIUM
            ctx.report(
                "BST-ONNX-001",
                location.at(offset),
                f"External data of tensor {tensor!r} {reason} ({where!r}); do not load this model.",
                {**evidence, "reason": reason},
                severity=severity,
            )
            if severity == Severity.CRITICAL:
                continue
        if base is None or where in seen:
            continue
        seen.add(where)
        rule, problem = _disk_problem(base, where)
        if rule:
            ctx.report(
                rule,
                location.at(offset),
                f"External data file {where!r} {problem}; replace it with a regular file inside the model "
                "directory.",
                {**evidence, "reason": problem},
            )


def _report_inventory(inv: _Inventory, root: Message, location: Location, ctx: ScanContext) -> None:
    local = {d for d, _ in inv.functions}
    calls = {(d, op) for d, ops in inv.domains.items() for op in ops}
    for domain, ops in sorted(inv.domains.items()):
        custom = sorted(op for op in ops if (domain, op) not in inv.functions)
        if not custom:
            continue
        ctx.report(
            "BST-ONNX-003",
            location,
            f"Operators {', '.join(custom[:10])} come from custom domain {domain!r}, which needs native "
            "code; review the library that provides them.",
            {"domain": domain, "ops": ", ".join(custom[:40])},
        )
    for opset in root.messages(_MODEL_OPSET):
        domain = opset.string(1)
        if domain not in STANDARD_DOMAINS and domain not in local and domain not in inv.domains:
            ctx.report(
                "BST-ONNX-003",
                location,
                f"The model imports custom operator domain {domain!r}; review the library that provides it.",
                {"domain": domain},
            )
    if inv.functions:
        names = sorted(f"{d}.{n}" if d else n for d, n in inv.functions)
        ctx.report(
            "BST-ONNX-004",
            location,
            f"The model defines {len(names)} local functions; they were scanned with the graph.",
            {"functions": ", ".join(names[:40]), "called": str(sum(1 for c in calls if c in inv.functions))},
        )


@scanner(Format.ONNX)
def scan_onnx(source: Source, location: Location, ctx: ScanContext) -> None:
    """Examine an ONNX model's external data paths, operator domains and local functions."""
    with source_buffer(source, ctx.limits.max_member_bytes * 2) as buf:
        root = Message(buf, Budget())
        inv = _Inventory()
        _walk(root, inv)
        _report_external(inv, source, location, ctx)
        _report_inventory(inv, root, location, ctx)
