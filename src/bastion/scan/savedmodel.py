"""TensorFlow SavedModel and frozen GraphDef scanner: file and Python ops in graphs and function libraries.

The protobuf is read with :mod:`bastion.scan.protobuf_wire`; TensorFlow is never imported. Every
top-level node and every node of every library function is examined, because ops hidden in a function
(a ``While`` body, a signature wrapper, a ``DatasetFromGraph`` graph) run just the same.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bastion.errors import MalformedInput
from bastion.findings import Location, Severity
from bastion.rules import SUPPLY_CHAIN_REFS, Reference, Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.keras_config import check_keras_config
from bastion.scan.protobuf_wire import LEN, Budget, Message, source_buffer
from bastion.scan.registry import scanner

_TFLOW = Reference("JFrog TFLOW-MALOPS: malicious TensorFlow operators in SavedModel graphs")

register(
    Rule(
        code="BST-TF-001",
        name="tf-python-callback-op",
        severity=Severity.CRITICAL,
        summary="A TensorFlow graph calls back into Python (PyFunc, EagerPyFunc).",
        what_it_does=(
            "Reports `PyFunc`, `PyFuncStateless` and `EagerPyFunc` nodes in the graph or any library "
            "function."
        ),
        why_bad=(
            "These ops run a Python callable when the graph executes. The callable is not stored in the "
            "model, but a graph that needs one is either broken or relies on code injected elsewhere, and "
            "it is the classic way to smuggle arbitrary Python into a TensorFlow pipeline."
        ),
        example="A SavedModel whose serving function contains an `EagerPyFunc` node.",
        use_instead=(
            "Express the computation with TensorFlow ops, or ship the Python code separately for review."
        ),
        false_positives=(
            "Models exported from code that used `tf.py_function`; they cannot be served portably anyway."
        ),
        references=(*SUPPLY_CHAIN_REFS, _TFLOW),
    )
)
register(
    Rule(
        code="BST-TF-002",
        name="tf-file-system-op",
        severity=Severity.CRITICAL,
        summary="A TensorFlow graph reads or writes files on the host that runs it.",
        what_it_does=(
            "Reports `ReadFile`, `WriteFile`, `MatchingFiles`, `ImmutableConst`, TFRecord writers and "
            "`PrintV2` to a file, in the graph and in every library function."
        ),
        why_bad=(
            "A graph that writes files can overwrite `~/.ssh/authorized_keys` or a start-up script; one "
            "that reads files can return secrets in its output. Both run as soon as the model is called, "
            "with the server's permissions."
        ),
        example=(
            "`WriteFile(filename='/root/.bashrc', contents=...)` inside a function called by "
            "`serving_default`."
        ),
        use_instead="Keep file input and output in the serving code; a model graph should only compute.",
        false_positives="Input pipelines exported inside a model that read their own data files.",
        references=(*SUPPLY_CHAIN_REFS, _TFLOW),
    )
)
register(
    Rule(
        code="BST-TF-003",
        name="tf-checkpoint-op-outside-saver",
        severity=Severity.HIGH,
        summary="A Save/Restore checkpoint op appears outside the standard saver subgraph.",
        what_it_does=(
            "Allows `SaveV2`, `RestoreV2`, `MergeV2Checkpoints` and their TF1 forms inside the saver that "
            "TensorFlow generates (the `save/` scope, functions reached from the `saver_def`, "
            "`__inference__traced_save_*` and `__inference__traced_restore_*`) and reports them anywhere "
            "else."
        ),
        why_bad=(
            "Checkpoint ops read and write arbitrary paths. Outside the saver, for example in a serving "
            "signature, they let a model write attacker-chosen files whenever it is called."
        ),
        example="A `SaveV2` node in the function behind `serving_default` writing to `/tmp/x`.",
        use_instead="Re-export the model with `tf.saved_model.save` from reviewed code.",
        false_positives="Hand-written savers with non-standard names.",
        references=(*SUPPLY_CHAIN_REFS, _TFLOW),
    )
)
register(
    Rule(
        code="BST-TF-004",
        name="tf-uncommon-ops",
        severity=Severity.INFO,
        summary="The graph uses ops outside the common math and neural-network set.",
        what_it_does=(
            "Lists the op types that are not in Bastion's list of common math, NN, control-flow and "
            "variable ops."
        ),
        why_bad=(
            "TensorFlow has over a thousand ops and some touch the host (file systems, networks, queues). "
            "The list helps a reviewer spot the few that matter; it is not a problem in itself."
        ),
        example="`LookupTableImportV2`, `StaticRegexReplace`.",
        use_instead="Nothing to change if the ops are expected for this model.",
        false_positives="Most findings: it is an inventory.",
    )
)

register(
    Rule(
        code="BST-TF-005",
        name="tf-asset-path-escape",
        severity=Severity.HIGH,
        summary="A SavedModel asset path points outside the model's assets directory.",
        what_it_does="Reports `asset_file_def` file names that are absolute or climb out with `..`.",
        why_bad=(
            "TensorFlow joins the asset name to the `assets/` directory when the model loads, so an "
            "absolute or `..` name makes the model read any file on the host, for example into a lookup "
            "table."
        ),
        example="`asset_file_def { filename: '../../../etc/passwd' }`.",
        use_instead="Ship assets inside `assets/` and name them with plain relative file names.",
        references=(*SUPPLY_CHAIN_REFS, _TFLOW, Reference("CWE-22: Path Traversal")),
    )
)

_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# Op -> severity of BST-TF-002.
_FILE_OPS: dict[str, Severity] = {
    "ReadFile": Severity.CRITICAL,
    "WriteFile": Severity.CRITICAL,
    "DatasetToTFRecord": Severity.CRITICAL,
    "ExperimentalDatasetToTFRecord": Severity.CRITICAL,
    "DeleteFile": Severity.CRITICAL,
    "MatchingFiles": Severity.HIGH,
    "ImmutableConst": Severity.HIGH,
    "WholeFileReader": Severity.HIGH,
    "WholeFileReaderV2": Severity.HIGH,
    "CreateSummaryFileWriter": Severity.HIGH,
    "SaveDataset": Severity.HIGH,
    "SaveDatasetV2": Severity.HIGH,
    "LoadDataset": Severity.HIGH,
}
_CHECKPOINT_OPS = frozenset(
    {"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints"}
)
_SAVER_FUNCTION = re.compile(r"_traced_(save|restore)(_\d+)?$")
_SAVER_SCOPE = re.compile(r"^save(_\d+)?/")
_MAX_NESTED_GRAPHS = 3
_MAX_OP_LIST = 40


def _words(text: str) -> tuple[str, ...]:
    """The whitespace-separated words of a word list written as a block of text."""
    return tuple(text.split())


_COMMON_OPS = frozenset(
    _words(
        """
        Abs Add AddN AddV2 All Any ArgMax ArgMin Assert Assign AssignAddVariableOp AssignSubVariableOp
        AssignVariableOp AvgPool AvgPool3D BatchMatMul BatchMatMulV2 BatchMatMulV3 BiasAdd BroadcastArgs
        BroadcastTo Cast Ceil CheckNumerics ConcatV2 Const Conv2D Conv2DBackpropInput Conv3D Cos Cumsum
        DepthwiseConv2dNative DisableCopyOnRead Div DivNoNan Einsum Elu Enter Equal Erf Exit Exp
        ExpandDims Fill Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV3 Gather GatherNd GatherV2
        Greater GreaterEqual Identity IdentityN If L2Loss LeakyRelu Less LessEqual Log Log1p LogSoftmax
        LogicalAnd LogicalNot LogicalOr LoopCond MatMul Max MaxPool MaxPool3D Maximum Mean Merge Min
        Minimum MirrorPad Mod Mul Neg NextIteration NoOp NotEqual OneHot OnesLike Pack Pad PadV2
        PartitionedCall Placeholder PlaceholderWithDefault Pow Prod Range Rank ReadVariableOp RealDiv
        Reciprocal Relu Relu6 Reshape ResizeBilinear ResizeNearestNeighbor ResourceGather Round Rsqrt
        Select SelectV2 Selu Shape ShapeN ShardedFilename Sigmoid Sign Sin Size Slice Softmax Softplus
        Softsign Split SplitV Sqrt Square SquaredDifference Squeeze StatefulPartitionedCall StatelessIf
        StatelessWhile StaticRegexFullMatch StopGradient StridedSlice StringJoin Sub Sum Switch Tanh
        TensorListFromTensor TensorListGetItem TensorListReserve TensorListSetItem TensorListStack Tile
        TopKV2 Transpose Unpack VarHandleOp VarIsInitializedOp VariableV2 Where While ZerosLike
        """
    )
)


@dataclass(slots=True)
class _Node:
    name: str
    op: str
    offset: int
    calls: list[str] = field(default_factory=list)  # functions named in attributes
    output_stream: str = ""  # PrintV2 destination
    strings: list[bytes] = field(default_factory=list)  # string constants (may hold a serialized GraphDef)


@dataclass(slots=True)
class _Graph:
    nodes: list[_Node] = field(default_factory=list)
    functions: dict[str, list[_Node]] = field(default_factory=dict)


def _func_names(attr_value: Message) -> Iterable[str]:
    for f in attr_value:
        if f.number == 10 and f.wire_type == LEN:  # func: NameAttrList
            yield attr_value.sub(f).string(1)
        elif f.number == 1 and f.wire_type == LEN:  # list: ListValue, func = 9
            for g in attr_value.sub(f).messages(9):
                yield g.string(1)


def _read_node(msg: Message) -> _Node:
    node = _Node(msg.string(1), msg.string(2), msg.offset)
    for entry in msg.messages(5):  # attr: map<string, AttrValue>
        key = entry.string(1)
        for value in entry.merged(2):
            node.calls.extend(n for n in _func_names(value) if n)
            if key == "output_stream":
                node.output_stream = value.string(2, node.output_stream)
            elif key == "value" and node.op == "Const":
                for tensor in value.merged(8):
                    # Only a blob that starts like a GraphDef (field 1, length-delimited) is kept.
                    node.strings.extend(
                        bytes(f.data) for f in tensor.fields(8) if bytes(f.data[:1]) == b"\x0a"
                    )
    return node


def _read_graph(parts: Iterable[Message]) -> _Graph:
    """One graph from every occurrence of a GraphDef field (protobuf concatenates their nodes)."""
    graph = _Graph()
    for graph_def in parts:
        for f in graph_def:
            if f.number == 1 and f.wire_type == LEN:
                graph.nodes.append(_read_node(graph_def.sub(f)))
            elif f.number == 2 and f.wire_type == LEN:
                for fn in graph_def.sub(f).messages(1):
                    name = ""
                    for signature in fn.merged(1):
                        name = signature.string(1, name)
                    nodes = [_read_node(n) for n in fn.messages(3)]
                    graph.functions.setdefault(name, []).extend(nodes)
    return graph


def _saver_functions(graph: _Graph, saver_roots: set[str]) -> set[str]:
    """Functions reachable from the saver's nodes whose names say they save or restore."""
    todo = [c for n in graph.nodes if n.name in saver_roots for c in n.calls]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in graph.functions:
            continue
        seen.add(name)
        todo.extend(c for n in graph.functions[name] for c in n.calls)
    allowed = {f for f in seen if "save" in f.lower() or "restore" in f.lower()}
    return allowed | {f for f in graph.functions if _SAVER_FUNCTION.search(f)}


def _tensor_node(name: str) -> str:
    return name.lstrip("^").split(":", 1)[0]


class _Checker:
    def __init__(self, ctx: ScanContext, location: Location) -> None:
        self.ctx = ctx
        self.location = location
        self.uncommon: set[str] = set()
        self.nested = 0
        self.at: int | None = None  # offset of the constant holding a nested graph, while it is examined

    def graph(self, parts: list[Message], saver_roots: set[str], where: str) -> None:
        graph = _read_graph(parts)
        allowed = _saver_functions(graph, saver_roots)
        for node in graph.nodes:
            in_saver = node.name in saver_roots or bool(_SAVER_SCOPE.match(node.name))
            self.node(node, where, in_saver)
        for fname, nodes in graph.functions.items():
            for node in nodes:
                self.node(node, f"function {fname}", fname in allowed)
        every = [*graph.nodes, *(n for ns in graph.functions.values() for n in ns)]
        if any(n.op == "DatasetFromGraph" for n in every):
            self.nested_graphs(every)

    def nested_graphs(self, nodes: list[_Node]) -> None:
        # DatasetFromGraph executes a GraphDef serialized into a string constant: examine those too.
        for node in nodes:
            for blob in node.strings:
                if self.nested >= _MAX_NESTED_GRAPHS:
                    continue
                self.nested += 1
                # Offsets inside the blob mean nothing in the file: point at the constant instead.
                outer, self.at = self.at, node.offset if self.at is None else self.at
                try:
                    self.graph([Message(blob, Budget())], set(), f"graph serialized in constant {node.name}")
                except MalformedInput:
                    continue  # not a GraphDef after all: a string that happens to start with 0x0a
                finally:
                    self.at = outer

    def node(self, node: _Node, where: str, in_saver: bool) -> None:
        offset = node.offset if self.at is None else self.at
        op, loc = node.op, self.location.at(offset)
        evidence = {"op": op, "node": node.name, "in": where, "offset": offset}
        if op in _PYTHON_OPS:
            self.ctx.report(
                "BST-TF-001", loc, f"Op {op} in {where} calls Python code; do not load this model.", evidence
            )
        elif op in _FILE_OPS:
            self.ctx.report(
                "BST-TF-002",
                loc,
                f"Op {op} in {where} touches the host file system; do not serve this model until it is "
                "reviewed.",
                evidence,
                severity=_FILE_OPS[op],
            )
        elif op == "PrintV2" and node.output_stream.startswith("file://"):
            self.ctx.report(
                "BST-TF-002",
                loc,
                f"PrintV2 in {where} writes to a file; do not serve this model until it is reviewed.",
                {**evidence, "output_stream": node.output_stream},
            )
        elif op in _CHECKPOINT_OPS and not in_saver:
            self.ctx.report(
                "BST-TF-003",
                loc,
                f"Checkpoint op {op} in {where} is outside the standard saver and can write files; review "
                "the graph.",
                evidence,
            )
        elif op not in _COMMON_OPS and op not in _CHECKPOINT_OPS:
            self.uncommon.add(op)

    def finish(self) -> None:
        if self.uncommon:
            ops = sorted(self.uncommon)
            self.ctx.report(
                "BST-TF-004",
                self.location,
                f"The graph uses {len(ops)} uncommon op types; review them if the model's purpose does "
                "not explain them.",
                {"ops": ", ".join(ops[:_MAX_OP_LIST]) + (" ..." if len(ops) > _MAX_OP_LIST else "")},
            )


def _is_graph_def(root: Message) -> bool:
    # SavedModel field 1 is a varint (schema version); GraphDef field 1 is a repeated NodeDef.
    return any(f.number == 1 and f.wire_type == LEN for f in root)


def _saver_roots(meta_graph: Message) -> set[str]:
    names = {1: "", 2: "", 3: ""}  # filename, save and restore tensors; a later occurrence overrides
    for saver in meta_graph.merged(3):
        for n in names:
            names[n] = saver.string(n, names[n])
    return {_tensor_node(v) for v in names.values() if v}


def _keras_metadata(blobs: Iterable[tuple[str, int]], location: Location, ctx: ScanContext) -> None:
    """Check the Keras layer configs a Keras-made SavedModel stores as JSON, reporting each problem once."""
    scratch = ScanContext(limits=ctx.limits)
    for text, offset in blobs:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("class_name"), str):
            check_keras_config(
                obj, location.at(offset), scratch, assume_keras=True, container="SavedModel metadata"
            )
    seen: set[tuple[object, ...]] = set()
    for f in scratch.findings:
        # A layer appears in its model's config and again as its own object: keep one finding per problem.
        key = (f.rule_id, f.message, tuple(kv for kv in f.evidence if kv[0] != "path"))
        if key not in seen:
            seen.add(key)
            ctx.findings.append(f)


def _user_object_metadata(meta_graph: Message) -> Iterator[tuple[str, int]]:
    for graph in meta_graph.merged(7):  # object_graph_def: SavedObjectGraph
        for saved_object in graph.messages(1):
            for user in saved_object.merged(4):  # user_object: SavedUserObject(metadata = 3)
                yield from ((f.text, f.offset) for f in user.fields(3))


def _check_assets(meta_graph: Message, location: Location, ctx: ScanContext) -> None:
    for asset in meta_graph.messages(6):  # asset_file_def: AssetFileDef(filename = 2)
        name = asset.string(2)
        normal = posixpath.normpath(name.replace("\\", "/"))
        if name.startswith(("/", "\\")) or normal == ".." or normal.startswith("../") or name[1:3] == ":\\":
            ctx.report(
                "BST-TF-005",
                location.at(asset.offset),
                f"Asset {name!r} points outside the SavedModel's assets directory; do not load this model.",
                {"asset": name, "offset": asset.offset},
            )


_TEXT_START = re.compile(rb"^\s*(saved_model_schema_version|meta_graphs|node|library|versions)\s*[:{]")
_TEXT_TOKEN = re.compile(rb'\b(op|name):\s*"((?:[^"\\]|\\.){0,300})"|\bsignature\s*\{')


def _scan_text_format(data: bytes, location: Location, ctx: ScanContext) -> None:
    """Check a text-format SavedModel or GraphDef (TensorFlow loads saved_model.pbtxt too) op by op."""
    checker = _Checker(ctx, location)
    node_name, function, in_signature = "", "graph", False
    for m in _TEXT_TOKEN.finditer(data):
        if m.group(1) is None:  # `signature {`: the next name is a function's
            in_signature = True
            continue
        value = m.group(2).decode("utf-8", "replace")
        if m.group(1) == b"name" and in_signature:
            function, in_signature = f"function {value}", False
        elif m.group(1) == b"name":
            node_name = value
        else:
            in_saver = bool(_SAVER_SCOPE.match(node_name) or _SAVER_FUNCTION.search(function))
            checker.node(_Node(node_name, value, m.start()), function, in_saver)
    checker.finish()


@scanner(Format.SAVEDMODEL)
def scan_savedmodel(source: Source, location: Location, ctx: ScanContext) -> None:
    """Examine a saved_model.pb or frozen GraphDef for Python, file-system and stray checkpoint ops."""
    name = PurePosixPath(source.name).name
    if name == "fingerprint.pb":
        return  # FingerprintDef holds only hashes and a version; nothing in it is executed
    with source_buffer(source, ctx.limits.max_member_bytes * 2) as buf:
        if name.endswith(".pbtxt") or _TEXT_START.match(bytes(buf[:256])):
            _scan_text_format(bytes(buf), location, ctx)
            return
        root = Message(buf, Budget())
        if name == "keras_metadata.pb":
            # SavedMetadata: repeated SavedObject(metadata = 5), Keras layer configs as JSON.
            _keras_metadata(
                ((f.text, f.offset) for n in root.messages(1) for f in n.fields(5)), location, ctx
            )
            return
        checker = _Checker(ctx, location)
        # The loader decides by name: only saved_model.pb is read as a SavedModel (a mismatched field 1
        # would just be skipped by it), any other .pb as a GraphDef.
        if name != "saved_model.pb" and _is_graph_def(root):
            checker.graph([root], set(), "graph")
        else:
            for meta_graph in root.messages(2):
                checker.graph(meta_graph.merged(2), _saver_roots(meta_graph), "graph")
                _check_assets(meta_graph, location, ctx)
                _keras_metadata(_user_object_metadata(meta_graph), location, ctx)
        checker.finish()
