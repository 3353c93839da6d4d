"""Static analysis of Jinja2 chat templates: find sandbox-escape primitives without rendering anything.

Model servers render the chat template shipped inside a model (GGUF ``tokenizer.chat_template``,
``tokenizer_config.json``'s ``chat_template``), sometimes in an unsandboxed ``jinja2.Environment``
(CVE-2024-34359, CVE-2026-5760). A template escapes through Python attribute access: dunder names
(``__class__``, ``__globals__``), the ``attr`` filter, subscripts (Jinja's ``x["a"]`` falls back to an
attribute) and the helper globals whose functions expose ``__globals__``. We parse the template into
Jinja's AST (parsing never executes) and walk it, folding string expressions that build names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension
from jinja2.parser import Parser

from bastion.findings import Confidence, Location, Severity
from bastion.rules import OWASP_LLM03, Reference, RuleFamily
from bastion.scan.context import ScanContext
from bastion.scan.jinja_fold import Folder, unparse

# Real chat templates are a few KB to ~100 KB; parsing megabytes is a denial-of-service attempt.
MAX_TEMPLATE_CHARS = 2 << 20

_TPL_REFS = (
    OWASP_LLM03,
    Reference("CVE-2024-34359 (llama-cpp-python GGUF chat-template SSTI)"),
    Reference("CVE-2026-5760 (SGLang chat-template SSTI)"),
    Reference("CWE-1336: Improper Neutralization of Special Elements Used in a Template Engine"),
)
_ESCAPE_WHY = (
    "Several model servers render the chat template that ships inside the model with an unsandboxed Jinja2 "
    "environment. From any object a template can walk Python's attributes (`__class__`, `__mro__`, "
    "`__subclasses__`, `__globals__`) to `os.popen` and run commands on the server the moment a chat request "
    "arrives (CVE-2024-34359, CVE-2026-5760). Ordinary chat templates never touch such attributes."
)
_USE_INSTEAD = (
    "Use the chat template published with the base model, render templates only in "
    "`jinja2.sandbox.ImmutableSandboxedEnvironment`, and never load models whose template was altered."
)


_rule = RuleFamily(
    why_bad=_ESCAPE_WHY,
    use_instead=_USE_INSTEAD,
    false_positives="Ordinary chat templates (ChatML, Llama, Mistral, Gemma, Qwen) never trigger it.",
    references=_TPL_REFS,
)


_rule(
    "BST-TPL-001",
    "template-private-attribute",
    Severity.CRITICAL,
    "A chat template reaches a dunder or private attribute, the first step of a Jinja sandbox escape.",
    "Reports attribute access, subscripts, `|attr(...)` and attribute arguments of filters (`map`, "
    "`selectattr`, `sort` …) whose name starts with an underscore, and string literals naming a dunder.",
    "`{{ ''.__class__.__mro__[1].__subclasses__() }}` or `{{ x|attr('__globals__') }}`.",
)
_rule(
    "BST-TPL-002",
    "template-computed-attribute",
    Severity.CRITICAL,
    "A chat template computes an attribute name at render time, as obfuscated sandbox escapes do.",
    "Folds string expressions (`~`, `+`, `*`, `join`, `format`, `replace`, `reverse`, slicing, `dict(...)` "
    "keys, `{% set %}` variables) and reports any that build a dunder name, any `|attr(...)` or attribute "
    "argument that is not a plain literal, subscripts whose key is built from strings, and `.format` fields "
    "that read attributes.",
    "`{{ x|attr('_'*2 ~ 'class' ~ '_'*2) }}`, `{{ x[('ssalc__'|reverse)] }}` or "
    "`{{ '{0.__class__}'.format(x) }}`.",
)
_rule(
    "BST-TPL-003",
    "template-dangerous-name",
    Severity.CRITICAL,
    "A chat template names an operating-system or code-execution function (`os`, `popen`, `eval` …).",
    "Reports attribute names and variables such as `os`, `popen`, `system`, `subprocess`, `eval`, `exec`, "
    "`import_module`, `builtins`, `globals` and `getattr`.",
    "`{{ cycler.__init__.__globals__.os.popen('id').read() }}`.",
    fp="A template variable that happens to be called `system` or `os` (never seen in real chat templates).",
)
_rule(
    "BST-TPL-004",
    "template-gadget-global",
    Severity.CRITICAL,
    "A chat template reads attributes of a Jinja or Flask helper global (`cycler`, `lipsum`, `self` …).",
    "Reports attribute access and subscripts on the globals `cycler`, `joiner`, `lipsum`, `namespace`, "
    "`range`, `dict`, `self`, `config`, `request`, `url_for` and `get_flashed_messages`; calling them "
    "normally (`namespace(found=false)`, `range(3)`) is fine.",
    "`{{ lipsum.__globals__['os'].popen('id').read() }}` or `{{ self._TemplateReference__context }}`.",
)
_rule(
    "BST-TPL-005",
    "template-unparseable",
    Severity.HIGH,
    "A chat template does not parse as Jinja2, so it cannot be analysed and loaders will disagree about it.",
    "Parses the template with Jinja2 (with the `loopcontrols`, `do` and `generation` extensions that model "
    "servers enable) and reports syntax errors.",
    "`{% for m in messages %}{{ m.content }}` (no `endfor`) or a template using a custom tag.",
    why=(
        "What cannot be parsed cannot be checked, and different template engines (Jinja2, minja in "
        "llama.cpp) accept different syntax, so a template that one rejects may run in another."
    ),
    use_instead="Fix the template or use the one published with the base model.",
    fp="Templates written for a non-Jinja engine.",
)
_rule(
    "BST-TPL-006",
    "template-loads-templates",
    Severity.MEDIUM,
    "A chat template includes, imports or extends other templates.",
    "Reports `{% include %}`, `{% import %}`, `{% from … import %}` and `{% extends %}`.",
    "`{% include '/etc/passwd' %}`.",
    why=(
        "Chat templates are self-contained; loading another template reads files through whatever loader "
        "the server configured, which can disclose local files or pull in unreviewed template code."
    ),
    use_instead="Inline the needed template code, or use the template published with the base model.",
    fp="Servers that deliberately compose templates from a reviewed template directory.",
)

# Attribute names that only appear in code-execution or introspection chains ("system", "sys" and
# "environ" are left out: templates name namespace fields that way, and `os` is caught on the way there).
DANGEROUS_ATTRS = frozenset(
    {
        "os", "popen", "Popen", "subprocess", "eval", "exec", "execfile", "execv", "execve", "spawnl",
        "spawnv", "spawnve", "import_module", "importlib", "builtins", "globals", "locals", "getattr",
        "setattr", "delattr", "check_output", "check_call", "getoutput", "getstatusoutput", "load_module",
        "mro", "func_globals", "f_globals", "f_locals", "f_back", "f_builtins", "gi_frame", "cr_frame",
        "ag_frame", "tb_frame", "co_code", "pty",
    }
)  # fmt: skip
# Variables that no chat template has a reason to reference.
DANGEROUS_NAMES = frozenset(
    {"os", "subprocess", "eval", "exec", "builtins", "importlib", "getattr", "globals", "popen"}
)
GADGET_GLOBALS = frozenset(
    {"cycler", "joiner", "lipsum", "namespace", "range", "dict", "self", "config", "request", "url_for",
     "get_flashed_messages"}
)  # fmt: skip
# Filters that read an attribute named by an argument (positional index, or the ``attribute`` keyword).
_ATTRIBUTE_FILTERS: dict[str, int | None] = {
    "attr": 0,
    "selectattr": 0,
    "rejectattr": 0,
    "groupby": 0,
    "map": None,
    "sort": None,
    "unique": None,
    "min": None,
    "max": None,
    "sum": None,
}
_DUNDER = re.compile(r"__[A-Za-z0-9_]*[A-Za-z0-9]__|_[A-Za-z][A-Za-z0-9]*__[A-Za-z_]")
# A literal that names an attribute path with a dunder in it ("__class__", "a.__globals__"); markers
# such as "<__media__>" are text, not names, and stay out.
_DUNDER_NAME = re.compile(r"[\w.]*(?:__\w*[A-Za-z0-9]__|_[A-Za-z][A-Za-z0-9]*__[A-Za-z_])[\w.]*")
# A string built at render time that starts or ends a dunder ("__class" reversed from "ssalc__").
_PARTIAL_DUNDER = re.compile(r"[\w.]*(?:__[A-Za-z]|[A-Za-z0-9]__)[\w.]*")
_FORMAT_FIELD_ATTR = re.compile(r"\{[^{}]*[.\[][^{}]*\}")


class _GenerationTag(Extension):
    """Accept ``{% generation %}…{% endgeneration %}``, which Hugging Face adds for assistant masks."""

    tags = {"generation"}  # noqa: RUF012 - Jinja reads this class attribute

    def parse(self, parser: Parser) -> nodes.Node:
        """Parse the block body; the tag only marks text, so its body is all that matters."""
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _environment() -> Environment:
    # Parsing only; nothing is compiled or rendered, so a plain Environment is as safe as a sandbox here.
    return Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", _GenerationTag])  # noqa: S701


@dataclass(slots=True)
class _Walker:
    """Walks one template AST and reports escape primitives."""

    ctx: ScanContext
    location: Location
    key: str
    folder: Folder
    seen: set[tuple[str, int]] = field(default_factory=set)
    handled: set[int] = field(default_factory=set)

    def report(self, rule: str, node: nodes.Node, message: str, severity: Severity | None = None) -> None:
        expr = unparse(node)
        line = getattr(node, "lineno", 0) or 0
        # One finding per rule and line: the pre-order walk meets the outermost expression first.
        if (rule, line) in self.seen:
            return
        self.seen.add((rule, line))
        self.ctx.report(
            rule,
            self.location,
            message,
            {"key": self.key, "expression": expr, "line": line},
            severity=severity,
        )

    def walk(self, root: nodes.Node) -> None:
        # Iterative pre-order walk; ``quiet`` stops a string already reported as built from being re-reported.
        stack: list[tuple[nodes.Node, bool]] = [(root, False)]
        while stack:
            node, quiet = stack.pop()
            quiet = self.visit(node, quiet)
            stack.extend((child, quiet) for child in node.iter_child_nodes())

    def visit(self, node: nodes.Node, quiet: bool) -> bool:
        if isinstance(node, nodes.Getattr):
            self.check_name(node, node.attr, literal=True)
            self.check_gadget(node, node.node)
        elif isinstance(node, nodes.Getitem):
            self.check_subscript(node)
        elif isinstance(node, nodes.Filter):
            self.check_filter(node)
        elif isinstance(node, nodes.Call):
            self.check_call(node)
        elif isinstance(node, nodes.Name):
            self.check_variable(node)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and id(node) not in self.handled:
            if _DUNDER_NAME.fullmatch(node.value.strip()):
                self.report(
                    "BST-TPL-001",
                    node,
                    "The template contains a dunder name as a string; it can only serve an escape.",
                )
        elif isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            self.report(
                "BST-TPL-006",
                node,
                "The template loads another template; chat templates should be self-contained.",
            )
        if not quiet and isinstance(node, nodes.Expr) and not isinstance(node, nodes.Const):
            return self.check_built_string(node)
        return quiet

    def check_name(self, node: nodes.Node, name: str, *, literal: bool) -> None:
        """Report an attribute ``name`` reached by ``node``: private, dunder or dangerous."""
        parts = name.split(".")
        if any(p.startswith("_") for p in parts):
            if literal:
                self.report(
                    "BST-TPL-001",
                    node,
                    f"The template reads the private attribute {name[:60]!r}, a sandbox-escape step.",
                )
            else:
                self.report(
                    "BST-TPL-002",
                    node,
                    f"The template builds the attribute name {name[:60]!r} at render time to hide an escape.",
                )
        elif any(p in DANGEROUS_ATTRS for p in parts):
            self.report("BST-TPL-003", node, f"The template reaches {name[:60]!r}, a code-execution name.")

    def check_gadget(self, node: nodes.Node, target: nodes.Node | None) -> None:
        if isinstance(target, nodes.Name) and target.name in GADGET_GLOBALS:
            self.report(
                "BST-TPL-004",
                node,
                f"The template reads attributes of the global {target.name!r}, exposing Python internals.",
            )

    def check_key(self, node: nodes.Node, key: nodes.Node, *, allow_variables: bool) -> None:
        """Check an attribute name given as an expression (a subscript key or a filter argument)."""
        if isinstance(key, nodes.Const):
            self.handled.add(id(key))
            if isinstance(key.value, str):
                self.check_name(node, key.value, literal=True)
            return
        value = self.folder.fold(key)
        if isinstance(value, str):
            self.check_name(node, value, literal=False)
            if _PARTIAL_DUNDER.fullmatch(value):
                self.report(
                    "BST-TPL-002", node, f"The template looks up {value[:60]!r}, part of a dunder name."
                )
            if not self.folder.builds_string(key) or allow_variables:
                return
        if self.folder.builds_string(key):
            self.report(
                "BST-TPL-002",
                node,
                "The template computes an attribute name from string pieces at render time.",
            )
        elif not allow_variables:
            self.report(
                "BST-TPL-002",
                node,
                "The template passes a non-literal attribute name; escapes hide dunders this way.",
            )

    def check_subscript(self, node: nodes.Getitem) -> None:
        self.check_gadget(node, node.node)
        if not isinstance(node.arg, nodes.Slice):
            self.check_key(node, node.arg, allow_variables=True)

    def check_filter(self, node: nodes.Filter) -> None:
        position = _ATTRIBUTE_FILTERS.get(node.name, -1)
        if position == -1:
            return
        if (
            node.name == "map"
            and node.args
            and isinstance(node.args[0], nodes.Const)
            and node.args[0].value == "attr"
        ):
            for arg in node.args[1:2]:
                self.check_key(node, arg, allow_variables=False)
        if position is not None and len(node.args) > position:
            self.check_key(node, node.args[position], allow_variables=False)
        for kw in node.kwargs:
            if kw.key == "attribute":
                self.check_key(node, kw.value, allow_variables=False)
        if node.name == "attr" and node.node is not None:
            self.check_gadget(node, node.node)

    def check_call(self, node: nodes.Call) -> None:
        for kw in node.kwargs:
            if _DUNDER.search(kw.key) or kw.key.startswith("__"):
                self.report(
                    "BST-TPL-002",
                    node,
                    f"The template passes the dunder keyword {kw.key[:40]!r}, a way to build names.",
                )
        func = node.node
        if isinstance(func, nodes.Getattr) and func.attr in ("format", "format_map"):
            fmt = self.folder.fold(func.node)
            if isinstance(fmt, str) and _FORMAT_FIELD_ATTR.search(fmt):
                self.report(
                    "BST-TPL-002",
                    node,
                    "The template's format string reads attributes of its arguments, a sandbox-escape step.",
                )

    def check_variable(self, node: nodes.Name) -> None:
        if node.ctx != "load":
            return
        if node.name.startswith("__"):
            self.report("BST-TPL-001", node, f"The template uses the dunder variable {node.name[:40]!r}.")
        elif node.name in DANGEROUS_NAMES:
            self.report(
                "BST-TPL-003",
                node,
                f"The template uses the variable {node.name!r}, a code-execution name.",
                Severity.HIGH,
            )

    def check_built_string(self, node: nodes.Expr) -> bool:
        if not self.folder.builds_string(node):
            return False
        value = self.folder.fold(node)
        if isinstance(value, str) and _PARTIAL_DUNDER.fullmatch(value):
            self.report(
                "BST-TPL-002",
                node,
                f"The template builds the dunder name {value[:60]!r} from pieces, an obfuscated escape.",
            )
            return True
        if isinstance(value, list) and any(
            isinstance(v, str) and _PARTIAL_DUNDER.fullmatch(v) for v in value
        ):
            self.report(
                "BST-TPL-002",
                node,
                "The template builds a list of dunder names from pieces, an obfuscated escape.",
            )
            return True
        return False


def parse_template(text: str) -> nodes.Template:
    """Parse ``text`` into a Jinja2 AST without compiling or rendering it (raises jinja2 errors)."""
    return _environment().parse(text)


def check_template(text: str, location: Location, ctx: ScanContext, *, key: str) -> None:
    """Report sandbox-escape primitives in the Jinja2 template ``text`` stored under ``key``."""
    if len(text) > MAX_TEMPLATE_CHARS:
        ctx.incomplete(
            location, f"template {key!r} is larger than {MAX_TEMPLATE_CHARS} characters", {"key": key}
        )
        return
    try:
        tree = parse_template(text)
    except RecursionError:
        ctx.incomplete(location, f"template {key!r} is nested too deeply to parse", {"key": key})
        return
    except TemplateError as exc:
        line = getattr(exc, "lineno", 0) or 0
        ctx.report(
            "BST-TPL-005",
            location,
            f"The template {key!r} is not valid Jinja2 ({str(exc.message or exc)[:120]}); fix or replace it.",
            {"key": key, "line": line, "error": str(exc.message or exc)[:200]},
            confidence=Confidence.MEDIUM,
        )
        return
    except Exception as exc:  # a parser bug on hostile text must not pass the template as clean
        ctx.incomplete(location, f"template {key!r} could not be parsed ({type(exc).__name__})", {"key": key})
        return
    try:
        _Walker(ctx, location, key, Folder.from_tree(tree)).walk(tree)
    except RecursionError:
        ctx.incomplete(location, f"template {key!r} is nested too deeply to analyse", {"key": key})
