"""Keras model configs (``.keras`` config.json, legacy JSON, H5 ``model_config``): code hidden in layers.

Keras rebuilds a model by importing every ``module`` the config names and calling what it finds, and
Lambda layers carry marshalled Python bytecode. The whole document is walked iteratively, with a node
budget, so hostile nesting cannot exhaust the stack. Nothing is imported, unmarshalled or evaluated.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import LimitExceeded
from bastion.findings import Location, Severity
from bastion.rules import SUPPLY_CHAIN_REFS, Reference, Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.registry import scanner

_KERAS_DOCS = Reference(
    "Keras: safe_mode and Lambda layers",
    "https://keras.io/api/models/model_saving_apis/model_saving_and_loading/",
)

register(
    Rule(
        code="BST-KER-001",
        name="keras-lambda-layer",
        severity=Severity.CRITICAL,
        summary="A Keras model contains a Lambda layer, which stores Python bytecode that runs on load.",
        what_it_does=(
            "Walks the whole model config and reports every `Lambda` layer and every serialized "
            "`__lambda__` function, with the names found in the marshalled bytecode as evidence (never "
            "unmarshalled)."
        ),
        why_bad=(
            "Keras rebuilds a Lambda by unmarshalling and calling its bytecode, which can do anything the "
            "Python process can (CVE-2024-3660). `safe_mode` blocks this only for `.keras` files and only "
            "when it is not switched off; it is ignored for `.h5` (CVE-2025-9905)."
        ),
        example=(
            '`{"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__", '
            '"config": {"code": "4wAAAA..."}}}}`'
        ),
        use_instead=(
            "Replace the Lambda with a registered custom layer whose code you review and ship separately."
        ),
        false_positives=(
            "Models that genuinely use Lambda layers; they still run stored bytecode and need review."
        ),
        references=(*SUPPLY_CHAIN_REFS, Reference("CVE-2024-3660"), Reference("CVE-2025-9905"), _KERAS_DOCS),
    )
)
register(
    Rule(
        code="BST-KER-002",
        name="keras-custom-object-module",
        severity=Severity.HIGH,
        summary="A Keras config names a class from a module outside Keras, which is imported on load.",
        what_it_does=(
            "Reports each `module` outside `keras`, `keras_hub`, `keras_nlp`, `keras_cv`, `tf_keras` and "
            "`tensorflow.keras`, and each `registered_name` whose package is outside that list."
        ),
        why_bad=(
            "Keras imports the named module and instantiates the class even with `safe_mode=True` "
            "(CVE-2025-1550): any importable callable with a config-shaped signature becomes a gadget."
        ),
        example='`{"module": "mypkg.layers", "class_name": "Backdoor", "config": {}}`',
        use_instead="Use built-in layers, or review and pin the package that provides the custom objects.",
        false_positives="Models with legitimate custom layers from a package you trust.",
        references=(*SUPPLY_CHAIN_REFS, Reference("CVE-2025-1550")),
    )
)
register(
    Rule(
        code="BST-KER-003",
        name="keras-function-reference",
        severity=Severity.HIGH,
        summary="A Keras config references a Python function that Keras will import and call.",
        what_it_does=(
            "Reports function-typed objects (`class_name` `function`, `module` plus `function_name`) "
            "whose module is outside Keras, and dangerous Keras helpers such as `keras.utils.get_file`. "
            "Critical when the function is known to run commands, evaluate code or touch files."
        ),
        why_bad="The function is looked up by name and called while the model is rebuilt, before any review.",
        example='`{"module": "os", "class_name": "function", "config": "system"}`',
        use_instead="Use Keras built-in activations, losses and initializers.",
        false_positives="Custom activation functions from a package you trust.",
        references=(*SUPPLY_CHAIN_REFS, Reference("CVE-2025-1550"), Reference("CVE-2025-8747")),
    )
)
register(
    Rule(
        code="BST-KER-004",
        name="keras-unsafe-deserialization",
        severity=Severity.CRITICAL,
        summary="A Keras config switches safe mode off, so the Lambda layers and functions in it run.",
        what_it_does=(
            "Reports references to `keras.config.enable_unsafe_deserialization` anywhere in the config "
            "and `safe_mode: false` entries (critical when the model also holds a Lambda, high otherwise)."
        ),
        why_bad=(
            "A config can call `enable_unsafe_deserialization` while it is being loaded, which turns off "
            "the protection for the Lambda layers that follow (CVE-2025-9906)."
        ),
        example=(
            '`{"module": "keras.config", "class_name": "function", '
            '"config": "enable_unsafe_deserialization"}`'
        ),
        use_instead="Never ship configs that change loader settings; re-export the model from reviewed code.",
        references=(*SUPPLY_CHAIN_REFS, Reference("CVE-2025-9906")),
    )
)
register(
    Rule(
        code="BST-KER-005",
        name="keras-tfsmlayer",
        severity=Severity.CRITICAL,
        summary="A Keras model contains a TFSMLayer, which loads an external TensorFlow SavedModel.",
        what_it_does="Reports `TFSMLayer` objects and the `filepath` they load.",
        why_bad=(
            "TFSMLayer loads the SavedModel at `filepath` despite `safe_mode` (CVE-2026-1462); that graph "
            "can read and write files or call back into Python, and it is not part of the file you "
            "scanned."
        ),
        example='`{"class_name": "TFSMLayer", "config": {"filepath": "/tmp/evil_savedmodel"}}`',
        use_instead="Convert the wrapped SavedModel into native Keras layers.",
        false_positives="Transitional models that wrap a SavedModel you also ship and scan.",
        references=(*SUPPLY_CHAIN_REFS, Reference("CVE-2026-1462")),
    )
)
register(
    Rule(
        code="BST-KER-006",
        name="keras-path-in-config",
        severity=Severity.MEDIUM,
        summary="A Keras config value is an absolute path, a parent-directory path or a URL.",
        what_it_does="Reports string values that look like absolute paths, contain `..`, or are URLs.",
        why_bad=(
            "Layers that read files or fetch URLs at load time (vocabularies, wrapped models, `get_file`) "
            "pull in content the scan never saw, or read files from the host."
        ),
        example='`{"class_name": "TextVectorization", "config": {"vocabulary": "/etc/passwd"}}`',
        use_instead="Embed the data in the model file instead of pointing at external paths.",
        false_positives="Configs that record where training data lived on the author's machine.",
    )
)

_ALLOWED_PACKAGES = ("keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras", "tensorflow.keras")
_LEGACY_MODELS = frozenset({"Sequential", "Functional", "Model"})
_FUNCTION_CLASSES = frozenset({"function", "__lambda__"})
_UNSAFE_TOGGLE = "enable_unsafe_deserialization"
# Keras helpers that fetch, load or run things by themselves (gadgets even inside the allowed package).
_KERAS_GADGETS = frozenset({"get_file", "load_model", "load_weights", "TFSMLayer", _UNSAFE_TOGGLE})
_PATHLIKE = re.compile(
    r"^(/[^/]|~/|[A-Za-z]:[\\/]|\\\\|[a-z][a-z0-9+.-]*://)|(^|[\\/])\.\.([\\/]|$)", re.IGNORECASE
)
# marshal type codes of strings: short ASCII (1-byte length), then str/bytes/ASCII (4-byte length).
_MARSHAL_SHORT = frozenset(b"zZ")
_MARSHAL_LONG = frozenset(b"utaAs")
_SKIP_PATH_KEYS = frozenset({"code", "function", "name"})
_MAX_NODES = 2_000_000
_MAX_PATH_REPORTS = 20
_MAX_CODE_BYTES = 1 << 20


def _words(text: str) -> tuple[str, ...]:
    """The whitespace-separated words of a word list written as a block of text."""
    return tuple(text.split())


_DANGEROUS_MODULES = frozenset(
    _words(
        """
        os posix nt subprocess builtins __builtin__ sys shutil socket pty ctypes importlib marshal
        pickle runpy code codeop webbrowser urllib requests pydoc
        """
    )
)


def _allowed(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in _ALLOWED_PACKAGES)


def is_keras_config(obj: object) -> bool:
    """True if ``obj`` is shaped like a serialized Keras object (model or layer)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("class_name"), str) or "config" not in obj:
        return False
    if "module" in obj or "registered_name" in obj or obj["class_name"] in _LEGACY_MODELS:
        return True
    config = obj["config"]
    return isinstance(config, dict) and isinstance(config.get("layers"), list)


def _dangerous_function(module: str, name: str) -> str:
    """Why calling ``module.name`` is dangerous, or '' when it is not known to be."""
    try:
        # The shared import policy (pickle scanner's) when present; a small fallback list otherwise.
        policy: Any = importlib.import_module("bastion.scan.globals_policy")
        rating = policy.rate_import(module, name)
        dangerous = str(getattr(rating.verdict, "name", rating.verdict)).upper() == "DANGEROUS"
        return str(rating.reason) if dangerous else ""
    except (ImportError, AttributeError):
        if module.split(".", 1)[0] in _DANGEROUS_MODULES or name in {"eval", "exec", "compile", "__import__"}:
            return "runs commands, evaluates code or touches files"
        return ""


def _marshal_strings(raw: bytes) -> list[str]:
    """Printable strings stored in marshal data (names, constants), found by their type codes."""
    found: list[str] = []
    i, end = 0, min(len(raw), _MAX_CODE_BYTES)
    while i < end and len(found) < 64:
        kind = raw[i] & 0x7F  # the top bit only asks marshal to remember the object
        if kind in _MARSHAL_SHORT and i + 1 < end:
            length, start = raw[i + 1], i + 2
        elif kind in _MARSHAL_LONG and i + 5 <= end:
            length, start = int.from_bytes(raw[i + 1 : i + 5], "little"), i + 5
        else:
            i += 1
            continue
        text = raw[start : start + length]
        if 2 <= length <= 200 and len(text) == length and text.isascii() and text.decode().isprintable():
            found.append(text.decode())
            i = start + length
        else:
            i += 1
    return list(dict.fromkeys(found))


def _bytecode_names(code: object) -> str:
    """Names and strings in a base64 marshal blob, read without unmarshalling it."""
    if not isinstance(code, str):
        return ""
    try:
        raw = base64.b64decode(code[: _MAX_CODE_BYTES * 2], validate=False)
    except (binascii.Error, ValueError):
        return ""
    return ", ".join(_marshal_strings(raw)[:16])


def _lambda_evidence(layer: dict[str, Any]) -> dict[str, object]:
    config = layer.get("config")
    config = config if isinstance(config, dict) else {}
    evidence: dict[str, object] = {"layer": str(config.get("name", ""))[:100], "class": "Lambda"}
    function = config.get("function", layer if layer.get("class_name") == "__lambda__" else None)
    code: object = None
    if isinstance(function, list) and function:  # tf.keras 2: [base64 marshal, defaults, closure]
        code = function[0]
    elif isinstance(function, dict):
        inner = function.get("config")
        code = inner.get("code") if isinstance(inner, dict) else None
        if isinstance(function.get("module"), str):
            evidence["function_module"] = function["module"]
        if isinstance(inner, str):
            evidence["function_name"] = inner
    elif isinstance(function, str) and config.get("function_type", "lambda") == "lambda":
        code = function
    elif isinstance(function, str):  # tf.keras 2 "function" type: a name looked up in `module`
        evidence["function_name"] = function[:200]
    if isinstance(config.get("module"), str):
        evidence["module"] = config["module"]
    names = _bytecode_names(code)
    if names:
        evidence["bytecode_names"] = names
    if isinstance(code, str):
        evidence["bytecode_base64_chars"] = len(code)
    return evidence


@dataclass(slots=True)
class _Walker:
    ctx: ScanContext
    location: Location
    container: str
    lambdas: int = 0
    toggled: bool = False  # enable_unsafe_deserialization already reported for this document
    safe_mode_off: list[str] = field(default_factory=list)
    path_reports: int = 0
    quiet: set[int] = field(default_factory=set)  # ids of subtrees already explained by a finding

    def run(self, root: object) -> None:
        for node, key, path in self._nodes(root):
            if isinstance(node, dict):
                self._object(node, path)
            elif isinstance(node, str):
                self._string(node, key, path)
            elif node is False and key == "safe_mode":
                self.safe_mode_off.append(path)
        for path in self.safe_mode_off:
            self.ctx.report(
                "BST-KER-004",
                self.location,
                "The config sets safe_mode to false, so Lambda layers and unsafe functions load; do not "
                "load it.",
                {"path": path},
                severity=Severity.CRITICAL if self.lambdas else Severity.HIGH,
            )

    def _nodes(self, root: object) -> Iterator[tuple[object, str, str]]:
        stack: list[tuple[object, str, str, bool]] = [(root, "", "$", False)]
        count = 0
        while stack:
            node, key, path, quiet = stack.pop()
            count += 1
            if count > _MAX_NODES:
                raise LimitExceeded(f"Keras config with more than {_MAX_NODES} values")
            quiet = quiet or id(node) in self.quiet
            if not quiet or not isinstance(node, str):
                yield node, key, path
            # The visit above may have explained this subtree (a Lambda's function): keep it quiet.
            quiet = quiet or id(node) in self.quiet
            short = path if len(path) < 160 else "..." + path[-150:]
            if isinstance(node, dict):
                stack.extend(
                    (v, str(k), f"{short}.{k}", quiet or k in _SKIP_PATH_KEYS) for k, v in node.items()
                )
            elif isinstance(node, list):
                stack.extend((v, key, f"{short}[{i}]", quiet) for i, v in enumerate(node))

    def _report(
        self, rule: str, message: str, evidence: dict[str, object], severity: Severity | None = None
    ) -> None:
        if self.container:
            evidence = {**evidence, "container": self.container}
        self.ctx.report(rule, self.location, message, evidence, severity=severity)

    def _object(self, node: dict[str, Any], path: str) -> None:
        cls = node.get("class_name")
        raw_module = node.get("module")
        module = raw_module if isinstance(raw_module, str) else ""
        if cls == "Lambda" or (cls == "__lambda__" and id(node) not in self.quiet):
            self.lambdas += 1
            config = node.get("config")
            if isinstance(config, dict) and isinstance(config.get("function"), dict | list):
                self.quiet.add(id(config["function"]))
            self._report(
                "BST-KER-001",
                "A Lambda layer stores Python bytecode that runs when the model loads; do not load this "
                "model.",
                {**_lambda_evidence(node), "path": path},
            )
        elif cls == "TFSMLayer":
            config = node.get("config")
            filepath = config.get("filepath", "") if isinstance(config, dict) else ""
            if isinstance(config, dict):
                self.quiet.add(id(config))
            self._report(
                "BST-KER-005",
                "A TFSMLayer loads an external SavedModel that was not scanned; do not load this model.",
                {"filepath": str(filepath)[:300], "path": path},
            )
        if module or "function_name" in node:
            self._module(node, str(cls), module, path)
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered and not module:
            package = registered.split(">", 1)[0]
            if not _allowed(package):
                self._report(
                    "BST-KER-002",
                    f"Custom object {registered!r} comes from outside Keras and is imported on load; "
                    "review its package.",
                    {"registered_name": registered, "path": path},
                )

    def _module(self, node: dict[str, Any], cls: str, module: str, path: str) -> None:
        config = node.get("config")
        is_function = cls in _FUNCTION_CLASSES or "function_name" in node
        fallback = config if isinstance(config, str) else node.get("registered_name") or ""
        # A gadget can also be named as the "class" itself: Keras calls whatever the module attribute is.
        name = str(node.get("function_name") or fallback) if is_function else cls
        evidence: dict[str, object] = {"module": module, "class_name": cls, "path": path, "function": name}
        if name == _UNSAFE_TOGGLE:
            return  # the string itself is reported by _string as BST-KER-004
        if name in _KERAS_GADGETS - {"TFSMLayer"} or (is_function and not _allowed(module)):
            reason = "Keras helper that fetches, loads or runs files" if name in _KERAS_GADGETS else ""
            reason = reason or _dangerous_function(module, name)
            self._report(
                "BST-KER-003",
                f"The config calls {module}.{name} while the model is rebuilt; do not load it before review.",
                {**evidence, "reason": reason or "not known to be safe"},
                severity=Severity.CRITICAL if reason else Severity.HIGH,
            )
        elif not is_function and not _allowed(module):
            del evidence["function"]
            self._report(
                "BST-KER-002",
                f"Class {cls!r} is imported from module {module!r}, outside Keras, when the model loads; "
                "review it.",
                {**evidence, "registered_name": str(node.get("registered_name", ""))},
            )

    def _string(self, value: str, key: str, path: str) -> None:
        if _UNSAFE_TOGGLE in value:
            if self.toggled:
                return
            self.toggled = True
            self._report(
                "BST-KER-004",
                "The config references enable_unsafe_deserialization, which switches safe mode off; do "
                "not load it.",
                {"value": value[:200], "path": path},
            )
        elif self.path_reports < _MAX_PATH_REPORTS and _PATHLIKE.search(value):
            self.path_reports += 1
            self._report(
                "BST-KER-006",
                f"Config value {key!r} points at an external path or URL; embed the data or review the path.",
                {"key": key, "value": value[:300], "path": path},
            )


def check_keras_config(
    obj: object, location: Location, ctx: ScanContext, *, assume_keras: bool = False, container: str = ""
) -> bool:
    """Walk a parsed Keras config and report dangerous content; True if ``obj`` was a Keras config."""
    if not assume_keras and not is_keras_config(obj):
        return False
    _Walker(ctx, location, container).run(obj)
    return True


class NotJson(Exception):
    """The document is not JSON the scanners can read."""


def load_json_document(source: Source, max_bytes: int, markers: tuple[bytes, ...] = ()) -> object:
    """Parse ``source`` as JSON; raise :class:`NotJson` if it is too large, invalid, or lacks every marker."""
    if source.size > max_bytes:
        raise NotJson(f"larger than {max_bytes} bytes")
    raw = source.read_at(0, source.size)
    if markers and not any(m in raw for m in markers):
        # A byte search is far cheaper than parsing a large tokenizer or data file for nothing.
        raise NotJson("none of the keys this scanner looks for")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotJson(f"invalid JSON ({exc})") from None
    except RecursionError:
        raise NotJson("JSON nested too deeply to parse") from None


@scanner(Format.JSON)
def scan_keras_json(source: Source, location: Location, ctx: ScanContext) -> None:
    """Examine a JSON document that is a Keras model config (config.json in a .keras archive, legacy JSON)."""
    try:
        obj = load_json_document(source, ctx.limits.max_json_bytes, (b'"class_name"',))
    except NotJson as exc:
        head = source.head(1 << 16)
        if b'"class_name"' in head and b'"config"' in head:  # looks like Keras, so failing to read it matters
            ctx.incomplete(location, f"Keras config could not be parsed: {exc}")
        return
    check_keras_config(obj, location, ctx)
