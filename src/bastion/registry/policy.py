"""Gate policies: YAML files of rules whose conditions are CEL expressions over a version's facts.

A policy file::

    version: 1                          # required; the only version so far
    name: production-readiness          # required; shown in every report
    description: what a model needs before it serves production
    rules:                              # required, not empty; every entry must hold (all-of)
      - id: no-critical-findings        # required, unique in the file: letters, digits, . _ -
        description: the artifact scan found nothing critical
        require: scan.present && scan.counts.critical == 0     # required CEL, must give a bool
        when: model.format != "gguf"    # optional CEL; false makes the rule "skipped"
        severity: critical              # info, low, medium, high (default) or critical
        message: "{scan.counts.critical} critical finding(s)"  # optional; {CEL} is filled in on failure
        controls: [owasp-llm:LLM03, atlas:AML.T0010.003]       # optional tags (SARIF tags, reports)
      - any-of:                         # or all-of: compositions nest
          id: signed-or-approved        # optional for compositions, but keeps report ids stable
          description: ...              # when, severity, message and controls as for a rule
          rules:
            - {id: signed, require: signature.verified}
            - {id: two-approvers, require: size(approvers) >= 2}
      - all-of: [ ...rules... ]         # a bare list when the composition needs nothing else

The facts are described in :mod:`bastion.registry.facts`. Quote an expression that starts with ``!``, ``{``,
``[``, ``*``, ``&`` or ``"`` (YAML gives those characters meaning), e.g. ``require: "!model.aliases.exists(a,
a == 'production')"``.

Everything that can be checked is checked when the policy loads, with the file and line in the message: YAML
syntax, unknown keys, a missing id or require, duplicate ids, empty rule lists, CEL syntax, names that are
not facts (``scan.count.critical``), and type errors found by evaluating each expression once against a
complete sample of facts (``model.size + "MB"``, or a ``require`` that gives a number). An expression that
fails on the real facts (a missing key in free metadata, a null where a number was expected) makes that
rule's outcome ``error`` and the whole decision an error (exit 2), never a pass; so does a policy in which no
rule applied at all.

Speed: the gate copies into CEL only the facts the policy's expressions name; ``scan.findings`` only when
some expression mentions ``findings``, and then only the fields (rule, severity, message, location) some
expression names. ``scan.counts``, ``scan.rules`` and ``scan.rules_by_severity`` are cheap; a rule over
``scan.findings`` costs about 10 us per finding.

Outcomes: a rule passes when ``require`` is true. ``all-of`` fails when a member fails, ``any-of`` passes
when a member passes; a composition is skipped when all its members are, and in error when a member is in
error (an error anywhere makes the gate an error). Failed members of an any-of that passed are reported but
do not block.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from bastion.errors import ConfigError
from bastion.findings import Severity
from bastion.registry.facts import FACT_ROOTS
from bastion.registry.gate import ALL_OF, ANY_OF, ERROR, FAIL, PASS, RULE, SKIPPED, GateResult, Outcome

MAX_POLICY_BYTES = 1 << 20
POLICY_KEYS = ("version", "name", "description", "rules")
RULE_KEYS = ("id", "description", "require", "when", "severity", "message", "controls")
GROUP_KEYS = ("id", "description", "when", "severity", "message", "controls", "rules")
FINDING_FIELDS = ("rule", "severity", "message", "location")
# Type names CEL knows (``type(x) == bool``); the binding lists them among an expression's variables.
CEL_TYPE_NAMES = frozenset(
    {"bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type"}
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# CEL string literals (raw, bytes, triple-quoted): removed before looking for field names in the source.
_STRING = re.compile(
    r"""[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
)
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_CHAIN = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
# Fact dicts whose keys are the user's own (free metadata): any field may be asked for.
_FREE = frozenset({("model", "metadata"), ("metrics",), ("fairness",), ("privacy",)})


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL expression and where it came from."""

    source: str
    line: int
    program: Any = field(compare=False, repr=False)

    def run(self, context: Any) -> Any:
        """Evaluate against a ``cel.Context``; raises whatever the evaluator raises."""
        return self.program.execute(context)


@dataclass(frozen=True, slots=True)
class Message:
    """A failure message with ``{CEL}`` placeholders, split into text and compiled parts."""

    parts: tuple[str | Expression, ...]

    def render(self, context: Any) -> str:
        """The message with each placeholder evaluated; one that fails shows as ``<n/a>``."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                out.append(_show(part.run(context)))
            except Exception:  # a message must not turn a failure into a crash
                out.append("<n/a>")
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Rule:
    """A leaf rule: ``require`` must hold whenever ``when`` does."""

    id: str
    line: int
    require: Expression
    when: Expression | None = None
    severity: Severity = Severity.HIGH
    description: str = ""
    message: Message | None = None
    controls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    """An ``any-of`` or ``all-of`` composition of rules and groups."""

    kind: str
    id: str
    line: int
    rules: tuple[Rule | Group, ...]
    when: Expression | None = None
    severity: Severity = Severity.HIGH
    description: str = ""
    message: Message | None = None
    controls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded policy: every expression compiled and checked, ready to evaluate many times."""

    name: str
    source: str
    rules: tuple[Rule | Group, ...]
    description: str = ""
    version: int = 1
    roots: frozenset[str] = frozenset()  # the fact names some expression reads
    needs_findings: bool = False  # converting thousands of findings for CEL is slow: only when read
    finding_fields: frozenset[str] = frozenset()  # and then only the fields some expression names

    def walk(self) -> Iterable[Rule | Group]:
        """Every rule and group, depth first in file order."""

        def visit(nodes: tuple[Rule | Group, ...]) -> Iterable[Rule | Group]:
            for node in nodes:
                yield node
                if isinstance(node, Group):
                    yield from visit(node.rules)

        return visit(self.rules)


# --- loading -------------------------------------------------------------------------------------------


class _Map(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int
    key_lines: dict[str, int]


def _loader() -> type[Any]:
    import yaml

    class Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
        """SafeLoader whose mappings carry line numbers and refuse duplicate keys."""

    def construct_mapping(loader: Any, node: Any) -> _Map:
        loader.flatten_mapping(node)
        out = _Map()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"keys must be text, found {key!r}", key_node.start_mark
                )
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            out[key] = loader.construct_object(value_node, deep=True)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return Loader


def _yaml(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor for the tag" in problem:
            problem += " (quote an expression that starts with '!')"
        raise ConfigError(f"{source}:{line}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None


class _Builder:
    """Turns the YAML tree into a Policy, compiling and checking as it goes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: dict[str, int] = {}
        self.roots: set[str] = set()
        self.needs_findings = False
        self.finding_fields: set[str] = set()

    def fail(self, line: int, problem: str, rule: str | None = None) -> NoReturn:
        """Raise the one-line error for ``problem`` at ``line``."""
        where = f"rule {rule}: " if rule else ""
        raise ConfigError(f"{self.source}:{line}: {where}{problem}")

    def policy(self, doc: Any) -> Policy:
        """Build the whole policy from the YAML document."""
        if doc is None:
            self.fail(
                1, "the policy is empty: it needs version, name and rules (an empty policy never passes)"
            )
        if not isinstance(doc, _Map):
            self.fail(1, "a policy is a mapping with version, name and rules")
        self.keys(doc, POLICY_KEYS, None)
        if "version" not in doc:
            self.fail(doc.line, "missing 'version: 1'")
        if doc["version"] != 1 or isinstance(doc["version"], bool):
            self.fail(doc.key_lines["version"], f"unsupported policy version {doc['version']!r} (expected 1)")
        name = self.text(doc, "name", None, required=True)
        rules = self.rule_list(doc, None)
        return Policy(
            name=name,
            source=self.source,
            rules=rules,
            description=self.text(doc, "description", None),
            roots=frozenset(self.roots),
            needs_findings=self.needs_findings,
            finding_fields=frozenset(self.finding_fields),
        )

    def keys(self, node: _Map, allowed: tuple[str, ...], rule: str | None) -> None:
        """Refuse keys the format does not know (a typo must not silently disable a check)."""
        for key in node:
            if key not in allowed:
                known = ", ".join(allowed)
                if key.replace("_", "-").lower() in (ANY_OF, ALL_OF):
                    known = f"did you mean {key.replace('_', '-').lower()!r}?"
                self.fail(node.key_lines[key], f"unknown key {key!r} (known: {known})", rule)

    def text(self, node: _Map, key: str, rule: str | None, *, required: bool = False) -> str:
        """A string value, or '' when absent and not required."""
        if key not in node:
            if required:
                self.fail(node.line, f"missing {key!r}", rule)
            return ""
        value = node[key]
        if not isinstance(value, str) or (required and not value.strip()):
            self.fail(node.key_lines[key], f"{key} must be non-empty text", rule)
        return value

    def rule_list(self, node: _Map, rule: str | None) -> tuple[Rule | Group, ...]:
        """The ``rules`` list of the policy or of a composition: present and not empty."""
        if "rules" not in node:
            self.fail(node.line, "missing 'rules'", rule)
        items = node["rules"]
        line = node.key_lines["rules"]
        if items is None or (isinstance(items, list) and not items):
            owner = f"composition {rule}" if rule else "the policy"
            self.fail(line, f"{owner} has no rules (an empty policy is an error, never a pass)")
        if not isinstance(items, list):
            self.fail(line, "rules must be a list", rule)
        return tuple(self.node(item, line, rule) for item in items)

    def node(self, item: Any, parent_line: int, parent: str | None) -> Rule | Group:
        """One entry of a rules list: a rule or a composition."""
        if not isinstance(item, _Map):
            self.fail(parent_line, f"each rule is a mapping, found {item!r}", parent)
        kinds = [k for k in (ANY_OF, ALL_OF) if k in item]
        if kinds:
            if len(item) != 1:
                extra = next(k for k in item if k not in kinds)
                self.fail(item.key_lines[extra], f"{kinds[0]} takes its settings inside it, not beside it")
            return self.group(kinds[0], item[kinds[0]], item.line)
        return self.rule(item)

    def identify(self, node: _Map, auto: str | None) -> str:
        """The id of a rule (required) or composition (``auto`` when absent), checked and unique."""
        if "id" not in node:
            if auto is None:
                self.fail(node.line, "missing 'id'")
            return auto
        rule_id = node["id"]
        line = node.key_lines["id"]
        if not isinstance(rule_id, str) or not _ID.match(rule_id):
            self.fail(line, f"id {rule_id!r} must be letters, digits, '.', '_' or '-'")
        if rule_id in self.ids:
            self.fail(line, f"duplicate id {rule_id!r} (first used on line {self.ids[rule_id]})")
        self.ids[rule_id] = line
        return rule_id

    def common(self, node: _Map, rule_id: str) -> dict[str, Any]:
        """The settings rules and compositions share."""
        severity = Severity.HIGH
        if "severity" in node:
            try:
                severity = Severity.parse(str(node["severity"]))
            except ValueError as exc:
                self.fail(node.key_lines["severity"], str(exc), rule_id)
        controls = node.get("controls", [])
        if not isinstance(controls, list) or not all(isinstance(c, str) and c for c in controls):
            self.fail(node.key_lines.get("controls", node.line), "controls must be a list of text", rule_id)
        message = None
        if "message" in node:
            text = node["message"]
            if not isinstance(text, str):
                hint = (
                    " (quote it: YAML reads a value starting with '{' as a mapping)"
                    if isinstance(text, dict)
                    else ""
                )
                self.fail(node.key_lines["message"], f"message must be text{hint}", rule_id)
            message = self.message(text, node.key_lines["message"], rule_id)
        return {
            "when": self.expression(node, "when", rule_id, boolean=True) if "when" in node else None,
            "severity": severity,
            "description": self.text(node, "description", rule_id),
            "message": message,
            "controls": tuple(controls),
        }

    def rule(self, node: _Map) -> Rule:
        """A leaf rule."""
        named = node.get("id")
        self.keys(node, RULE_KEYS, named if isinstance(named, str) else None)
        rule_id = self.identify(node, None)
        if "require" not in node:
            self.fail(node.line, "missing 'require' (a CEL expression that must be true)", rule_id)
        require = self.expression(node, "require", rule_id, boolean=True)
        return Rule(id=rule_id, line=node.line, require=require, **self.common(node, rule_id))

    def group(self, kind: str, body: Any, line: int) -> Group:
        """A composition, written either as a list of rules or as a mapping with ``rules``."""
        auto = f"{kind}@{line}"  # '@' cannot appear in a user id, so this never collides
        if isinstance(body, list):
            body_map = _Map({"rules": body})
            body_map.line = line
            body_map.key_lines = {"rules": line}
            body = body_map
        if not isinstance(body, _Map):
            self.fail(line, f"{kind} takes a list of rules or a mapping with 'rules'")
        group_id = self.identify(body, auto)
        self.keys(body, GROUP_KEYS, group_id)
        rules = self.rule_list(body, group_id)
        return Group(kind=kind, id=group_id, line=line, rules=rules, **self.common(body, group_id))

    def expression(self, node: _Map, key: str, rule_id: str, *, boolean: bool) -> Expression:
        """Compile and check the CEL expression under ``key``."""
        line = node.key_lines[key]
        text = node[key]
        if not isinstance(text, str) or not text.strip():
            self.fail(
                line, f"{key} must be a CEL expression in text (quote it if YAML read it as a value)", rule_id
            )
        return self.compile(text, line, rule_id, key, boolean=boolean)

    def compile(self, text: str, line: int, rule_id: str, key: str, *, boolean: bool) -> Expression:
        """Compile ``text``; check its names against the facts and its types against a sample."""
        import cel

        try:
            program = cel.compile(text)
        except Exception as exc:  # the binding raises ValueError, but any failure is the policy's
            self.fail(line, f"{key}: CEL {_syntax_message(str(exc))}", rule_id)
        expr = Expression(source=text, line=line, program=program)
        problem = _static_problem(text, program)
        if problem is None:
            problem = _sample_problem(expr, boolean=boolean)
        if problem is not None:
            self.fail(line, f"{key}: {problem} in {text!r}", rule_id)
        bound = set(_MACRO_VAR.findall(_STRING.sub('""', text)))
        self.roots.update(v for v in program.variables() if v in FACT_ROOTS and v not in bound)
        if "findings" in text:
            self.needs_findings = True
        self.finding_fields.update(f for f in FINDING_FIELDS if re.search(rf"\b{f}\b", text))
        return expr

    def message(self, text: str, line: int, rule_id: str) -> Message:
        """Split a message into text and ``{CEL}`` placeholders (``{{`` and ``}}`` are literal braces)."""
        parts: list[str | Expression] = []
        buf: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch in "{}" and text[i : i + 2] == ch * 2:
                buf.append(ch)
                i += 2
                continue
            if ch == "}":
                self.fail(line, "message: unmatched '}' (write '}}' for a literal brace)", rule_id)
            if ch == "{":
                end = text.find("}", i + 1)
                if end < 0:
                    self.fail(line, "message: unclosed '{' (write '{{' for a literal brace)", rule_id)
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(self.compile(text[i + 1 : end], line, rule_id, "message", boolean=False))
                i = end + 1
                continue
            buf.append(ch)
            i += 1
        if buf:
            parts.append("".join(buf))
        return Message(parts=tuple(parts))


def _syntax_message(raw: str) -> str:
    """The CEL binding's multi-line parse error as one line: position and problem."""
    found = re.search(r"<input>:(\d+):(\d+): (.*)", raw)
    if found is None:
        return "syntax error: " + (raw.splitlines()[0] if raw else "invalid expression")
    line, column, problem = found.groups()
    where = f"column {column}" if line == "1" else f"line {line} column {column} of the expression"
    return f"{problem[:1].lower()}{problem[1:]} (at {where})"


@functools.cache
def _sample() -> dict[str, Any]:
    """Facts of a complete, healthy version: every optional part present, so types can be checked."""
    from bastion.registry.facts import version_facts
    from bastion.registry.record import (
        APPROVED,
        Approval,
        ArtifactFile,
        DatasetRef,
        ScanSummary,
        SignatureInfo,
        VersionRecord,
    )

    at = datetime(2025, 1, 1, tzinfo=UTC)
    finding = {"rule": "BST-PKL-001", "severity": "low", "message": "sample", "location": "model.pkl"}
    record = VersionRecord(
        name="sample",
        version=2,
        created_at=at,
        created_by="sample",
        location="model",
        digest="sha256:" + "0" * 64,
        format="safetensors",
        framework="transformers",
        size=1,
        files=(ArtifactFile("model.safetensors", "0" * 64, 1),),
        datasets=(
            DatasetRef(
                digest="manifest-sha256:" + "0" * 64,
                source="sample",
                rows=10,
                files=1,
                signed=True,
                signer="sample",
                audit={"verdict": "clean", "flagged": 0, "flagged_share": 0.0, "high": 0, "audited_at": at},
            ),
        ),
        parent="base@1",
        scan=ScanSummary("clean", {"low": 1}, (finding,), "0.1.0", at, "sha256:" + "0" * 64),
        signature=SignatureInfo("key", "sha256:" + "0" * 64, "model.sig", at, "sha256:" + "0" * 64, True, at),
        state=APPROVED,
        approvals=(Approval(APPROVED, "sample", "sample", at),),
        aliases=("staging",),
        metadata={"license": "apache-2.0"},
    )
    return version_facts(record, now=at, verification={"ok": True, "detail": "ok", "changed": ["x"]})


def _schema_problem(root: str, fields: list[str]) -> str | None:
    """Why ``root.fields...`` cannot name a fact, or None when it can (or the dict is the user's own)."""
    value: Any = _sample()
    path: list[str] = []
    for name in [root, *fields]:
        if tuple(path) in _FREE:
            return None
        if not isinstance(value, dict):
            return f"{'.'.join(path)} has no field {name!r}"
        if name not in value:
            where = ".".join(path) or "the facts"
            return f"unknown fact {'.'.join([*path, name])!r} ({where} has: {', '.join(sorted(value))})"
        value = value[name]
        path.append(name)
    return None


def _static_problem(text: str, program: Any) -> str | None:
    """Names that are not facts: an unknown root or a misspelt field of a known one."""
    code = _STRING.sub('""', text)
    bound = set(_MACRO_VAR.findall(code))
    for name in program.variables():
        if name not in FACT_ROOTS and name not in bound and name not in CEL_TYPE_NAMES:
            return f"unknown name {name!r} (facts are: {', '.join(sorted(FACT_ROOTS))})"
    for root, chain, call in _CHAIN.findall(code):
        if root not in FACT_ROOTS or root in bound:
            continue
        fields = [f.strip() for f in chain.split(".")[1:]]
        if call:
            fields = fields[:-1]  # the last name is a method: `model.name.startsWith(...)`
        problem = _schema_problem(root, fields)
        if problem is not None:
            return problem
    return None


def _sample_problem(expr: Expression, *, boolean: bool) -> str | None:
    """A type error or a non-boolean result on the sample facts; other failures depend on real data."""
    import cel

    try:
        value = expr.run(cel.Context(_sample()))
    except TypeError as exc:
        if str(exc).startswith("No such overload"):
            return "type error: no such overload (CEL does not convert between types; e.g. int(x), double(x))"
        return None
    except Exception:  # missing keys of free metadata and the like are decided at run time
        return None
    if boolean and type(value) is not bool:
        return f"gives {type(value).__name__} {_show(value)!s}, not true or false"
    return None


def parse_policy(text: str, source: str) -> Policy:
    """Load a policy from YAML ``text``; ``source`` names it in errors and reports."""
    try:
        return _Builder(source).policy(_yaml(text, source))
    except RecursionError:
        # PyYAML and the composition walk recurse once per level; no real policy nests hundreds deep.
        raise ConfigError(f"{source}: the policy nests too deeply") from None


def load_policy(path: Path) -> Policy:
    """Read and check the policy file at ``path`` (every expression compiled now, not at gate time)."""
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise ConfigError(f"{path}: policy file is {size} bytes; the limit is {MAX_POLICY_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a policy file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: policy file is not UTF-8 text") from None
    return parse_policy(text, str(path))


# --- evaluation ----------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A CEL value as a person reads it in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}".rstrip("0")
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    return str(value)


def _error_text(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key {exc.args[0]!r}" if exc.args else "no such key"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if first.startswith("No such overload"):
        first = "no such overload (the values have types the operator does not take; is one null?)"
    return first[:300]


@dataclass(slots=True)
class _Node:
    """An evaluated rule or group before blocking is known."""

    kind: str
    rule: Rule | Group
    path: str
    status: str
    message: str
    expression: str
    children: list[_Node] = field(default_factory=list)


def _context(policy: Policy, facts: Mapping[str, Any]) -> Any:
    import cel

    context = cel.Context()
    for root in policy.roots:
        if root not in facts:
            continue  # an expression that reads it fails as an error outcome
        value = facts[root]
        if root == "scan" and isinstance(value, Mapping):
            value = _scan_for(policy, value)
        context.add_variable(root, value)
    return context


def _scan_for(policy: Policy, scan: Mapping[str, Any]) -> Mapping[str, Any]:
    """``scan`` with only what the policy reads of its findings.

    The CEL binding copies every value into its own types at about a microsecond per string, so 5,000
    findings of four fields cost more than the rest of the gate together; most policies read the counts.
    """
    if not policy.needs_findings:
        return {k: v for k, v in scan.items() if k != "findings"}
    findings = scan.get("findings")
    if policy.finding_fields >= set(FINDING_FIELDS) or not isinstance(findings, list):
        return scan
    keep = tuple(policy.finding_fields)
    trimmed = [{k: f[k] for k in keep if k in f} if isinstance(f, Mapping) else f for f in findings]
    return {**scan, "findings": trimmed}


def _check(expr: Expression, context: Any) -> bool | str:
    """True or False, or the one-line reason the expression could not decide."""
    try:
        value = expr.run(context)
    except Exception as exc:  # whatever the evaluator raises is an error outcome
        return _error_text(exc)
    if type(value) is not bool:
        return f"gave {type(value).__name__} {_show(value)}, not true or false"
    return value


def _skipped(node: Rule | Group, prefix: str, why: str) -> _Node:
    path = f"{prefix}{node.id}"
    if isinstance(node, Rule):
        return _Node(RULE, node, path, SKIPPED, why, node.require.source)
    children = [_skipped(child, f"{path}/", why) for child in node.rules]
    return _Node(node.kind, node, path, SKIPPED, why, _group_expression(node), children)


def _group_expression(group: Group) -> str:
    return f"{group.kind}({', '.join(r.id for r in group.rules)})"


def _evaluate(node: Rule | Group, context: Any, prefix: str) -> _Node:
    path = f"{prefix}{node.id}"
    if node.when is not None:
        applies = _check(node.when, context)
        if isinstance(applies, str):
            expression = node.require.source if isinstance(node, Rule) else _group_expression(node)
            kind = RULE if isinstance(node, Rule) else node.kind
            return _Node(
                kind, node, path, ERROR, f"cannot evaluate when {node.when.source}: {applies}", expression
            )
        if not applies:
            return _skipped(node, prefix, f"does not apply: {node.when.source} is false")
    if isinstance(node, Rule):
        return _evaluate_rule(node, context, path)
    children = [_evaluate(child, context, f"{path}/") for child in node.rules]
    status = _combine(node.kind, [c.status for c in children])
    if status == FAIL:
        failed = ", ".join(c.rule.id for c in children if c.status == FAIL)
        default = f"none of {failed} passed" if node.kind == ANY_OF else f"failed: {failed}"
        message = node.message.render(context) if node.message is not None else default
    elif status == ERROR:
        message = "cannot decide: " + ", ".join(c.rule.id for c in children if c.status == ERROR)
    elif status == SKIPPED:
        message = "no member applies"
    else:
        message = node.description or "passed"
    return _Node(node.kind, node, path, status, message, _group_expression(node), children)


def _evaluate_rule(rule: Rule, context: Any, path: str) -> _Node:
    held = _check(rule.require, context)
    if isinstance(held, str):
        return _Node(RULE, rule, path, ERROR, f"cannot evaluate: {held}", rule.require.source)
    if held:
        return _Node(RULE, rule, path, PASS, rule.description or "requirement met", rule.require.source)
    if rule.message is not None:
        message = rule.message.render(context)
    else:
        message = f"requirement not met: {rule.require.source}"
    return _Node(RULE, rule, path, FAIL, message, rule.require.source)


def _combine(kind: str, statuses: list[str]) -> str:
    """A composition's status from its members' (an error is never hidden by a pass)."""
    if ERROR in statuses:
        return ERROR
    if all(s == SKIPPED for s in statuses):
        return SKIPPED
    if kind == ANY_OF:
        return PASS if PASS in statuses else FAIL
    return FAIL if FAIL in statuses else PASS


def _flatten(node: _Node, blocking: bool, out: list[Outcome]) -> None:
    rule = node.rule
    blocks = blocking and node.status == FAIL
    out.append(
        Outcome(
            rule_id=rule.id,
            path=node.path,
            kind=node.kind,
            status=node.status,
            severity=rule.severity,
            message=node.message,
            expression=node.expression,
            controls=rule.controls,
            line=rule.line,
            description=rule.description,
            blocking=blocks,
        )
    )
    for child in node.children:
        _flatten(child, blocks, out)


def evaluate(policy: Policy, facts: Mapping[str, Any]) -> GateResult:
    """Decide whether the version described by ``facts`` passes ``policy``."""
    context = _context(policy, facts)
    nodes = [_evaluate(rule, context, "") for rule in policy.rules]
    outcomes: list[Outcome] = []
    for node in nodes:
        _flatten(node, True, outcomes)
    status = _combine(ALL_OF, [n.status for n in nodes])
    detail = ""
    if status == SKIPPED:
        detail = "no rule of the policy applied to this version, so nothing was checked"
    model = facts.get("model")
    model = model if isinstance(model, Mapping) else {}
    return GateResult(
        policy=policy.name,
        policy_source=policy.source,
        subject=str(model.get("ref", "unknown")),
        digest=model.get("digest") if isinstance(model.get("digest"), str) else None,
        passed=status == PASS,
        error=status in (ERROR, SKIPPED),
        outcomes=tuple(outcomes),
        detail=detail,
    )
