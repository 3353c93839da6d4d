"""Constant folding of Jinja2 string expressions, and a short printer of expressions for evidence.

The template analyser needs to know what name an expression such as ``'_'*2 ~ 'class' ~ '_'*2`` or
``['_', '_', 'class']|join`` builds, without rendering anything. :class:`Folder` evaluates the small,
side-effect-free subset of Jinja that such tricks use (literals, ``~``, ``+``, ``*``, slicing, string
filters and methods, ``{% set %}`` variables, ``dict(...)`` keys); everything else folds to ``None``.
Every step is bounded in depth and size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from jinja2 import nodes

Value = str | int | list["Value"] | None

MAX_DEPTH = 48  # expression nesting folded; deeper counts as "builds a string" (fail closed)
MAX_STR = 4096  # longest folded string
MAX_LIST = 256  # longest folded list
MAX_INT = 1 << 20

# Filters whose result is (or is made of) a string derived from their input.
STRING_FILTERS = frozenset(
    {
        "join", "format", "replace", "reverse", "string", "lower", "upper", "first", "last", "list", "trim",
        "title", "capitalize", "center", "truncate", "wordwrap", "striptags", "urlencode", "indent", "safe",
        "e", "escape", "forceescape", "batch", "slice", "xmlattr", "pprint", "unique", "sort", "map",
    }
)  # fmt: skip
STRING_METHODS = frozenset(
    {
        "format", "format_map", "join", "replace", "upper", "lower", "strip", "lstrip", "rstrip",
        "capitalize", "title", "swapcase", "center", "ljust", "rjust", "zfill", "translate", "casefold",
        "removeprefix", "removesuffix", "expandtabs",
    }
)  # fmt: skip
_SIMPLE_METHODS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "strip": str.strip,
    "lstrip": str.lstrip,
    "rstrip": str.rstrip,
    "capitalize": str.capitalize,
    "title": str.title,
    "swapcase": str.swapcase,
    "casefold": str.casefold,
    "trim": str.strip,
    "string": str,
}
_PERCENT = re.compile(r"%(.)")
_BRACES = re.compile(r"\{(\d*)\}")


def _bounded(value: Value) -> Value:
    if isinstance(value, str) and len(value) > MAX_STR:
        return None
    if isinstance(value, list) and len(value) > MAX_LIST:
        return None
    if isinstance(value, int) and abs(value) > MAX_INT:
        return None
    return value


def _text(value: Value) -> str | None:
    return str(value) if isinstance(value, (str, int)) else None


@dataclass(slots=True)
class Folder:
    """Folds expressions of one template; ``{% set %}`` assignments are looked up flow-insensitively."""

    assignments: dict[str, list[nodes.Node]] = field(default_factory=dict)
    _fold_cache: dict[int, Value] = field(default_factory=dict)
    _build_cache: dict[int, bool] = field(default_factory=dict)
    _resolving: set[str] = field(default_factory=set)
    _blocks: set[int] = field(default_factory=set)  # ids of Concats standing for {% set %} block text

    @classmethod
    def from_tree(cls, tree: nodes.Node) -> Folder:
        """Collect the template's ``{% set %}`` assignments (plain and namespace targets)."""
        folder = cls()
        for node in iter_nodes(tree):
            if not isinstance(node, (nodes.Assign, nodes.AssignBlock)):
                continue
            target = node.target
            if isinstance(target, nodes.Name):
                name = target.name
            elif isinstance(target, nodes.NSRef):
                name = f"{target.name}.{target.attr}"
            else:
                continue
            value = node.node if isinstance(node, nodes.Assign) else _block_value(node, folder._blocks)
            folder.assignments.setdefault(name, []).append(value)
        return folder

    # ---- folding -------------------------------------------------------------------------------

    def fold(self, node: nodes.Node | None, depth: int = 0) -> Value:
        """The constant value ``node`` evaluates to, or None when it depends on data or is unsupported."""
        if node is None or depth > MAX_DEPTH:
            return None
        key = id(node)
        if key not in self._fold_cache:
            self._fold_cache[key] = None  # guards cycles through {% set %} variables
            self._fold_cache[key] = _bounded(self._fold(node, depth + 1))
        return self._fold_cache[key]

    def _fold(self, node: nodes.Node, depth: int) -> Value:
        if isinstance(node, nodes.Const):
            v = node.value
            return v if isinstance(v, (str, int)) and not isinstance(v, bool) else None
        if isinstance(node, nodes.TemplateData):
            return node.data
        if isinstance(node, (nodes.List, nodes.Tuple)):
            items = [self.fold(i, depth) for i in node.items[: MAX_LIST + 1]]
            return None if any(i is None for i in items) else items
        if isinstance(node, (nodes.Concat, nodes.Output)):
            parts = [_text(self.fold(n, depth)) for n in node.nodes[:MAX_LIST]]
            return None if any(p is None for p in parts) else "".join(p for p in parts if p is not None)
        if isinstance(node, nodes.BinExpr):
            return self._binary(node, self.fold(node.left, depth), self.fold(node.right, depth))
        if isinstance(node, nodes.Neg):
            v = self.fold(node.node, depth)
            return -v if isinstance(v, int) else None
        if isinstance(node, nodes.Filter):
            return self._filter(node, depth)
        if isinstance(node, nodes.Getitem):
            return self._getitem(node, depth)
        if isinstance(node, nodes.Call):
            return self._call(node, depth)
        if isinstance(node, nodes.CondExpr):
            return _prefer_underscore(self.fold(node.expr1, depth), self.fold(node.expr2, depth))
        variable = _variable_name(node)
        if variable is not None:
            return self._variable(variable, depth)
        return None

    def _variable(self, name: str, depth: int) -> Value:
        best: Value = None
        for expr in self.assignments.get(name, ())[:16]:
            best = _prefer_underscore(best, self.fold(expr, depth))
        return best

    @staticmethod
    def _binary(node: nodes.BinExpr, left: Value, right: Value) -> Value:
        if isinstance(node, nodes.Add) and type(left) is type(right) and left is not None:
            return left + right  # type: ignore[operator]  # same type: str, int or list
        if isinstance(node, nodes.Mul):
            if isinstance(left, int) and isinstance(right, int):
                return left * right
            text, times = (left, right) if isinstance(right, int) else (right, left)
            if (
                isinstance(text, str)
                and isinstance(times, int)
                and times >= 0
                and len(text) * times <= MAX_STR
            ):
                return text * times
        if isinstance(node, nodes.Sub) and isinstance(left, int) and isinstance(right, int):
            return left - right
        return None

    def _filter(self, node: nodes.Filter, depth: int) -> Value:
        value = self.fold(node.node, depth)
        args = [self.fold(a, depth) for a in node.args[:16]]
        name = node.name
        if name in ("default", "d"):
            return value if value is not None else (args[0] if args else None)
        if value is None:
            return None
        if name in _SIMPLE_METHODS and isinstance(value, (str, int)):
            return _SIMPLE_METHODS[name](str(value)) if name != "string" else str(value)
        if name == "join" and isinstance(value, list):
            return _join(value, args[0] if args else "")
        if name == "reverse" and isinstance(value, (str, list)):
            return value[::-1]
        if name == "list" and isinstance(value, (str, list)):
            return list(value)
        if name in ("first", "last") and isinstance(value, (str, list)) and value:
            return value[0] if name == "first" else value[-1]
        if name == "replace" and isinstance(value, str) and len(args) >= 2:
            return _replace(value, args[0], args[1])
        if name == "format" and isinstance(value, str):
            return _percent_format(value, args)
        return None

    def _getitem(self, node: nodes.Getitem, depth: int) -> Value:
        value = self.fold(node.node, depth)
        if not isinstance(value, (str, list)):
            return None
        if isinstance(node.arg, nodes.Slice):
            bounds = [
                self.fold(b, depth) if b is not None else None
                for b in (node.arg.start, node.arg.stop, node.arg.step)
            ]
            given = [
                b
                for b, n in zip(bounds, (node.arg.start, node.arg.stop, node.arg.step), strict=True)
                if n is not None
            ]
            if any(not isinstance(b, int) for b in given) or bounds[2] == 0:
                return None
            start, stop, step = (b if isinstance(b, int) else None for b in bounds)
            return value[start:stop:step]
        index = self.fold(node.arg, depth)
        if isinstance(index, int) and -len(value) <= index < len(value):
            return value[index]
        return None

    def _call(self, node: nodes.Call, depth: int) -> Value:
        func = node.node
        if isinstance(func, nodes.Name) and func.name == "dict" and not node.args:
            return [kw.key for kw in node.kwargs]  # a dict iterates (and joins) as its keys
        if not isinstance(func, nodes.Getattr):
            return None
        base = self.fold(func.node, depth)
        args = [self.fold(a, depth) for a in node.args[:16]]
        method = func.attr
        if isinstance(base, str):
            if method in _SIMPLE_METHODS and not args:
                return _SIMPLE_METHODS[method](base)
            if method == "join" and args and isinstance(args[0], list):
                return _join(args[0], base)
            if method == "replace" and len(args) >= 2:
                return _replace(base, args[0], args[1])
            if method == "format":
                return _brace_format(base, args)
        return None

    # ---- "does this expression build a string at render time?" ---------------------------------

    def builds_string(self, node: nodes.Node | None, depth: int = 0) -> bool:
        """True if ``node`` computes a string from pieces (the shape of every obfuscated name)."""
        if node is None:
            return False
        if depth > MAX_DEPTH:
            return True  # too deep to tell; no real template nests this far
        key = id(node)
        if key not in self._build_cache:
            self._build_cache[key] = False
            self._build_cache[key] = self._builds(node, depth + 1)
        return self._build_cache[key]

    def _builds(self, node: nodes.Node, depth: int) -> bool:
        if isinstance(node, nodes.Concat) and id(node) not in self._blocks:
            return True
        if isinstance(node, (nodes.Add, nodes.Mul)) and any(
            isinstance(side, nodes.Const) and isinstance(side.value, str) for side in (node.left, node.right)
        ):
            return True
        if isinstance(node, nodes.Filter) and node.name in STRING_FILTERS:
            return True
        if isinstance(node, nodes.Call):
            func = node.node
            if isinstance(func, nodes.Getattr) and func.attr in STRING_METHODS:
                return True
            if isinstance(func, nodes.Name) and func.name == "dict" and node.kwargs:
                return True
        if isinstance(node, nodes.Getitem) and (
            isinstance(node.arg, nodes.Slice) or isinstance(self.fold(node.node, depth), str)
        ):
            return True
        variable = _variable_name(node)
        if variable is not None:
            return self._variable_builds(variable, depth)
        return any(self.builds_string(child, depth) for child in node.iter_child_nodes())

    def _variable_builds(self, name: str, depth: int) -> bool:
        if name in self._resolving:
            return False
        self._resolving.add(name)
        try:
            return any(self.builds_string(expr, depth) for expr in self.assignments.get(name, ())[:16])
        finally:
            self._resolving.discard(name)


def iter_nodes(root: nodes.Node) -> Iterator[nodes.Node]:
    """Every node below ``root``, iteratively (Jinja's own ``find_all`` recurses and deep trees overflow)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.iter_child_nodes())


def _block_value(node: nodes.AssignBlock, blocks: set[int]) -> nodes.Node:
    # {% set x | reverse %}...{% endset %}: the filter chain's innermost input is the block's body.
    # The body becomes a Concat (Jinja allows no custom node types), remembered as plain text.
    body = nodes.Concat(node.body)
    blocks.add(id(body))
    if node.filter is None:
        return body
    innermost = node.filter
    while isinstance(innermost.node, nodes.Filter):
        innermost = innermost.node
    if innermost.node is None:
        innermost.node = body
    return node.filter


def _variable_name(node: nodes.Node) -> str | None:
    # `x` and `ns.x` (a namespace field set with {% set ns.x = ... %}) are what assignments name.
    if isinstance(node, nodes.Name):
        return str(node.name)
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return f"{node.node.name}.{node.attr}"
    return None


def _prefer_underscore(a: Value, b: Value) -> Value:
    # Flow-insensitive: when a variable may hold several values, keep the one that looks like a name part.
    if a is None:
        return b
    if b is None:
        return a
    return b if "_" in str(b) and "_" not in str(a) else a


def _join(items: list[Value], sep: Value) -> Value:
    parts = [_text(i) for i in items]
    if any(p is None for p in parts) or not isinstance(sep, str):
        return None
    return sep.join(p for p in parts if p is not None)


def _replace(text: str, old: Value, new: Value) -> Value:
    if not isinstance(old, str) or not isinstance(new, str) or not old:
        return None
    if text.count(old) * max(1, len(new)) > MAX_STR:
        return None
    return text.replace(old, new)


def _percent_format(fmt: str, args: list[Value]) -> Value:
    # Only %s, %c, %d and %% are folded; width and precision (which could allocate) are not.
    values = iter(args)
    out: list[str] = []
    pos = 0
    for m in _PERCENT.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        kind = m.group(1)
        if kind == "%":
            out.append("%")
            continue
        value = next(values, None)
        if kind in "sd" and isinstance(value, (str, int)):
            out.append(str(value))
        elif kind == "c" and isinstance(value, int) and 0 <= value < 0x110000:
            out.append(chr(value))
        elif kind == "c" and isinstance(value, str) and len(value) == 1:
            out.append(value)
        else:
            return None
    out.append(fmt[pos:])
    return "".join(out)


def _brace_format(fmt: str, args: list[Value]) -> Value:
    # Only {} and {N} fields; fields with attributes or format specs are reported elsewhere, not folded.
    if re.search(r"\{[^{}]*[^{}\d][^{}]*\}", fmt):
        return None
    counter = iter(range(len(args) + 1))

    def field_value(m: re.Match[str]) -> str:
        index = int(m.group(1)) if m.group(1) else next(counter)
        value = args[index] if index < len(args) else None
        if not isinstance(value, (str, int)):
            raise ValueError("unfoldable")
        return str(value)

    try:
        return _BRACES.sub(field_value, fmt)
    except (ValueError, IndexError, StopIteration):
        return None


# ---- evidence printing ---------------------------------------------------------------------------

MAX_EXPR_TEXT = 120


def unparse(node: nodes.Node, depth: int = 0) -> str:
    """A short Jinja-like rendering of an expression for evidence (bounded in depth and length)."""
    text = _unparse(node, depth)
    return text if len(text) <= MAX_EXPR_TEXT else text[: MAX_EXPR_TEXT - 1] + "…"


def _args(node: nodes.Call | nodes.Filter | nodes.Test, depth: int) -> str:
    parts = [_unparse(a, depth) for a in node.args[:4]]
    parts += [f"{kw.key}={_unparse(kw.value, depth)}" for kw in node.kwargs[:4]]
    return ", ".join(parts)


def _operand(node: nodes.Node | None, depth: int) -> str:
    # Filters and operators bind looser than `.` and `[]`, so they need parentheses there.
    text = _unparse(node, depth)
    return f"({text})" if isinstance(node, (nodes.Filter, nodes.Test, nodes.Concat, nodes.CondExpr)) else text


def _unparse(node: nodes.Node | None, depth: int) -> str:
    if node is None:
        return ""
    if depth > 8:
        return "…"
    d = depth + 1
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Const):
        return repr(node.value)[:60]
    if isinstance(node, nodes.Getattr):
        return f"{_operand(node.node, d)}.{node.attr}"
    if isinstance(node, nodes.NSRef):
        return f"{node.name}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        return f"{_operand(node.node, d)}[{_unparse(node.arg, d)}]"
    if isinstance(node, nodes.Slice):
        step = f":{_unparse(node.step, d)}" if node.step is not None else ""
        return f"{_unparse(node.start, d)}:{_unparse(node.stop, d)}{step}"
    if isinstance(node, nodes.Call):
        return f"{_unparse(node.node, d)}({_args(node, d)})"
    if isinstance(node, nodes.Filter):
        args = _args(node, d)
        return f"{_unparse(node.node, d)}|{node.name}" + (f"({args})" if args else "")
    if isinstance(node, nodes.Test):
        return f"{_unparse(node.node, d)} is {node.name}"
    if isinstance(node, nodes.Concat):
        return " ~ ".join(_unparse(n, d) for n in node.nodes[:8])
    if isinstance(node, nodes.BinExpr):
        return f"({_unparse(node.left, d)} {node.operator} {_unparse(node.right, d)})"
    if isinstance(node, nodes.UnaryExpr):
        return f"{node.operator}{_unparse(node.node, d)}"
    if isinstance(node, nodes.List):
        return "[" + ", ".join(_unparse(i, d) for i in node.items[:8]) + "]"
    if isinstance(node, nodes.Tuple):
        return "(" + ", ".join(_unparse(i, d) for i in node.items[:8]) + ")"
    if isinstance(node, nodes.CondExpr):
        return f"({_unparse(node.expr1, d)} if {_unparse(node.test, d)} else {_unparse(node.expr2, d)})"
    if isinstance(node, nodes.Keyword):
        return f"{node.key}={_unparse(node.value, d)}"
    if isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        return f"{type(node).__name__.lower()} {_unparse(node.template, d)}"
    return type(node).__name__
