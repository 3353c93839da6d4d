"""The symbolic values and records of the pickle machine, and how they read as Python-like source.

Every import the machine meets becomes a :class:`Global`, every call a :class:`Call`, and every object
whose type it cannot know an :class:`Unknown`; :class:`PickleAnalysis` collects them with their opcodes
and byte offsets. Nothing here imports or calls anything named by a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_MAX_ITEMS = 256  # container items kept for evidence; the rest are counted only

JOBLIB_WRAPPERS = frozenset(
    {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
    }
)
_RECONSTRUCTOR = frozenset({("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")})
_NUMPY_DTYPE = frozenset({("numpy", "dtype")})


class PickleError(Exception):
    """The stream stops following the pickle format at the current offset."""


class LimitHit(PickleError):
    """A hostile-input bound (opcodes, memo, stack) was reached."""


# --- symbolic values --------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Global:
    """An import: ``module.name``, or an unresolved one whose operands were not literal strings."""

    module: object
    name: object
    opcode: str
    offset: int
    resolved: bool = True

    @property
    def dotted(self) -> str:
        """``module.name`` for display."""
        if self.resolved:
            return f"{_clip(str(self.module))}.{_clip(str(self.name))}"
        return f"<computed {describe(self.module)}>.<computed {describe(self.name)}>"


@dataclass(slots=True, eq=False)
class Call:
    """A call the loader makes (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, or BUILD's ``__setstate__``).

    The same object is the call's record and its symbolic result on the stack.
    """

    func: object
    args: object
    kind: str
    offset: int
    kwargs: object = None

    @property
    def text(self) -> str:
        """The call as Python-like source, truncated for evidence."""
        return describe_call(self)


CallRecord = Call  # the name callers use for entries of PickleAnalysis.calls


@dataclass(slots=True, eq=False)
class Build:
    """``obj`` after BUILD applied ``state`` (``obj.__setstate__(state)`` or a ``__dict__`` update)."""

    obj: object
    state: object
    offset: int


@dataclass(slots=True, eq=False)
class PersistentId:
    """What ``persistent_load(value)`` returns; PyTorch storages are referenced this way."""

    value: object
    offset: int


@dataclass(slots=True, eq=False)
class Ext:
    """An object fetched from copyreg's extension registry by integer code."""

    code: int
    offset: int


@dataclass(slots=True, eq=False)
class BytesRef:
    """A bytes or bytearray constant: where it is in the stream, and its content when small."""

    offset: int
    length: int
    data: bytes | None
    mutable: bool = False


@dataclass(slots=True, eq=False)
class Unknown:
    """A value the machine cannot model (an out-of-band buffer, a huge string)."""

    reason: str


@dataclass(slots=True, eq=False)
class Container:
    """A list, dict, set or frozenset; items beyond a cap are counted, not kept."""

    kind: str  # "list" | "dict" | "set" | "frozenset"
    items: list[object] = field(default_factory=list)  # dict items are (key, value) tuples
    dropped: int = 0

    def add(self, item: object) -> None:
        """Keep ``item`` as evidence unless the cap is reached."""
        if len(self.items) < _MAX_ITEMS:
            self.items.append(item)
        else:
            self.dropped += 1

    def extend(self, items: list[object]) -> None:
        """Keep ``items`` as evidence up to the cap; count the rest."""
        room = _MAX_ITEMS - len(self.items)
        if len(items) <= room:
            self.items.extend(items)
        else:
            keep = max(room, 0)
            self.items.extend(items[:keep])
            self.dropped += len(items) - keep

    def get(self, key: str) -> object:
        """The value of dict key ``key`` (the last one set), or an Unknown."""
        for item in reversed(self.items):
            if isinstance(item, tuple) and len(item) == 2 and item[0] == key:
                return item[1]
        return Unknown(f"no key {key!r}")


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- records ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportRecord:
    """One import opcode: GLOBAL, INST, STACK_GLOBAL or EXT1/2/4."""

    module: str
    name: str
    opcode: str
    offset: int
    resolved: bool
    value: Global | Ext


@dataclass(slots=True)
class JoblibArray:
    """Raw array bytes that joblib writes inside the pickle stream after a NumpyArrayWrapper BUILD."""

    offset: int
    length: int
    dtype: str
    shape: tuple[int, ...]
    nested: PickleAnalysis | None = None  # object arrays are a nested pickle instead of raw bytes


@dataclass(slots=True)
class PickleAnalysis:
    """Everything seen in one pickle: imports, calls, persistent ids, and how it ended."""

    start: int
    end_offset: int = 0
    protocol: int = 0
    opcodes: int = 0
    imports: list[ImportRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    persistent_ids: list[PersistentId] = field(default_factory=list)
    ext_codes: list[Ext] = field(default_factory=list)
    joblib_arrays: list[JoblibArray] = field(default_factory=list)
    result: object = None
    stopped: bool = False  # reached STOP
    error: str | None = None
    error_offset: int | None = None
    limit_hit: bool = False
    pending: list[object] = field(default_factory=list)  # values on the stack when an error struck

    @property
    def call_pending(self) -> bool:
        """True when the stream broke after a call ran or with a callable import still on the stack."""
        return self.error is not None and (
            bool(self.calls) or any(isinstance(v, Global) for v in self.pending)
        )

    def nested(self) -> list[PickleAnalysis]:
        """Analyses of pickles nested in joblib object arrays."""
        return [a.nested for a in self.joblib_arrays if a.nested is not None]


# --- describing values ----------------------------------------------------------------------------

_DESCRIBE_DEPTH = 4
_DESCRIBE_ITEMS = 6
_DESCRIBE_STR = 60
EVIDENCE_CHARS = 200


def describe(value: object, depth: int = 0) -> str:
    """Render a symbolic value as short Python-like source; bounded in depth and width (cycles end)."""
    if depth > _DESCRIBE_DEPTH:
        return "..."
    if isinstance(value, str):
        text = value if len(value) <= _DESCRIBE_STR else value[:_DESCRIBE_STR] + "..."
        return repr(text)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<{value.bit_length()}-bit integer>"  # repr of huge ints is slow or refused
    if value is None or isinstance(value, bool | int | float | complex):
        return repr(value)
    if isinstance(value, tuple):
        inner = _describe_seq(value, depth)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, Call):
        return _describe_call(value.func, value.args, value.kind, value.kwargs, depth)
    if isinstance(value, Build):
        return f"{describe(value.obj, depth + 1)}.__setstate__({describe(value.state, depth + 1)})"
    if isinstance(value, PersistentId):
        return f"persistent_load({describe(value.value, depth + 1)})"
    if isinstance(value, Ext):
        return f"copyreg._extension_registry[{value.code}]"
    if isinstance(value, BytesRef):
        shown = repr(value.data[:24]) if value.data is not None else "b'...'"
        more = "..." if value.length > 24 else ""
        return f"{'bytearray' if value.mutable else 'bytes'}({shown}{more}, {value.length} bytes)"
    if isinstance(value, Container):
        return _describe_container(value, depth)
    if isinstance(value, Unknown):
        return f"<{value.reason}>"
    return f"<{type(value).__name__}>"


def _describe_seq(items: tuple[object, ...] | list[object], depth: int) -> str:
    shown = [describe(v, depth + 1) for v in items[:_DESCRIBE_ITEMS]]
    if len(items) > _DESCRIBE_ITEMS:
        shown.append("...")
    return ", ".join(shown)


def _describe_container(value: Container, depth: int) -> str:
    more = ", ..." if value.dropped else ""
    if value.kind == "dict":
        pairs = []
        for item in value.items[:_DESCRIBE_ITEMS]:
            k, v = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
            pairs.append(f"{describe(k, depth + 1)}: {describe(v, depth + 1)}")
        if len(value.items) > _DESCRIBE_ITEMS:
            pairs.append("...")
        return "{" + ", ".join(pairs) + more + "}"
    inner = _describe_seq(value.items, depth) + more
    if value.kind == "list":
        return f"[{inner}]"
    return f"{value.kind}([{inner}])"


def _describe_call(func: object, args: object, kind: str, kwargs: object, depth: int) -> str:
    target = describe(func, depth + 1)
    if kind in ("NEWOBJ", "NEWOBJ_EX"):
        target = f"{target}.__new__"
    parts = _describe_seq(args, depth) if isinstance(args, tuple) else f"*{describe(args, depth + 1)}"
    if isinstance(kwargs, Container) and kwargs.items:
        kw = ", ".join(
            f"{k}={describe(v, depth + 1)}" if isinstance(k, str) else f"**{{{describe(k, depth + 1)}: ...}}"
            for k, v in (i for i in kwargs.items[:_DESCRIBE_ITEMS] if isinstance(i, tuple) and len(i) == 2)
        )
        parts = f"{parts}, {kw}" if parts else kw
    return f"{target}({parts})"


def describe_call(call: CallRecord) -> str:
    """A call record as source, e.g. ``os.system('echo x')``, truncated to :data:`EVIDENCE_CHARS`."""
    if call.kind == "BUILD":
        text = f"{describe(call.func)}.__setstate__({describe(call.args)})"
    else:
        text = _describe_call(call.func, call.args, call.kind, call.kwargs, 0)
    return text if len(text) <= EVIDENCE_CHARS else text[: EVIDENCE_CHARS - 3] + "..."


# --- containers and joblib layouts ----------------------------------------------------------------


def filled(kind: str, items: list[object]) -> Container:
    """A new container holding ``items`` (up to the evidence cap)."""
    c = Container(kind)
    c.extend(items)
    return c


def add_item(target: object, item: object) -> None:
    """Add ``item`` to ``target`` when it is a container."""
    # Appending to a non-container calls its append/extend/__setitem__; the class import is rated already.
    if isinstance(target, Container):
        target.add(item)


def add_items(target: object, items: list[object]) -> None:
    """Add ``items`` to ``target`` when it is a container."""
    if isinstance(target, Container):
        target.extend(items)


def pairs(items: list[object]) -> list[object]:
    """``[k1, v1, k2, v2]`` as ``[(k1, v1), (k2, v2)]``; a lone last key is dropped, as pickle does."""
    return list(zip(items[::2], items[1::2], strict=False))


def is_global(value: object, names: frozenset[tuple[str, str]]) -> bool:
    """True when ``value`` is a resolved import of one of ``names`` (``(module, name)`` pairs)."""
    return isinstance(value, Global) and value.resolved and (value.module, value.name) in names


def is_joblib_wrapper(obj: object) -> bool:
    """True for joblib's NumpyArrayWrapper, called directly or through copyreg._reconstructor."""
    if not isinstance(obj, Call):
        return False
    if is_global(obj.func, JOBLIB_WRAPPERS):
        return True
    args = obj.args
    return (
        is_global(obj.func, _RECONSTRUCTOR)
        and isinstance(args, tuple)
        and bool(args)
        and is_global(args[0], JOBLIB_WRAPPERS)
    )


@dataclass(slots=True)
class JoblibLayout:
    """Where a NumpyArrayWrapper's bytes are: dtype, shape, item size, and how they are stored."""

    descr: str
    shape: tuple[int, ...]
    itemsize: int
    has_object: bool  # the bytes are a nested pickle rather than raw items
    aligned: bool  # a padding-length byte and padding precede the raw items

    @property
    def nbytes(self) -> int:
        """Size of the raw items."""
        count = 1
        for n in self.shape:
            count *= n
        return count * self.itemsize


def joblib_layout(state: object) -> JoblibLayout:
    """Read a NumpyArrayWrapper's BUILD state, or PickleError when its bytes cannot be located."""
    if not isinstance(state, Container) or state.kind != "dict":
        raise PickleError("joblib array bytes could not be located: wrapper state is not a dict")
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise PickleError("joblib array bytes could not be located: shape is not a tuple of sizes")
    descr, itemsize, has_object = _dtype_info(state.get("dtype"))
    aligned = state.get("numpy_array_alignment_bytes")
    return JoblibLayout(
        descr, shape, itemsize, has_object, not isinstance(aligned, Unknown) and aligned is not None
    )


def _dtype_info(dtype: object) -> tuple[str, int, bool]:
    """(descr, itemsize, has_object) from a symbolic ``numpy.dtype(descr, False, True)`` plus its state."""
    state: object = None
    if isinstance(dtype, Build):
        state = dtype.state
        dtype = dtype.obj
    if not (isinstance(dtype, Call) and is_global(dtype.func, _NUMPY_DTYPE)):
        raise PickleError("joblib array bytes could not be located: dtype is not numpy.dtype(...)")
    args = dtype.args
    if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
        raise PickleError("joblib array bytes could not be located: dtype has no literal descriptor")
    descr = args[0]
    flags = state[7] if isinstance(state, tuple) and len(state) >= 8 and isinstance(state[7], int) else 0
    has_object = descr.startswith("O") or bool(flags & 0x01)
    elsize = state[5] if isinstance(state, tuple) and len(state) >= 6 and isinstance(state[5], int) else -1
    if elsize > 0:
        return descr, elsize, has_object
    digits = descr.lstrip("<>|=").lstrip("bBiufcmMOSUVa?")
    if has_object:
        return descr, 8, True
    if not digits.isdigit():
        raise PickleError(f"joblib array bytes could not be located: unsupported dtype {descr!r}")
    size = int(digits)
    if descr.lstrip("<>|=").startswith("U"):
        size *= 4
    return descr, size, False
