"""The pickle scanner against hand-assembled bypasses and real benign files; nothing here is ever loaded."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Finding, Location, Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.context import ScanContext, Source
from bastion.scan.engine import dispatch, scan_file
from bastion.scan.pickle_scan import scan_pickle_stream

CMD = "echo bastion-test"


# --- hand-assembled opcodes ------------------------------------------------------------------------


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode (protocol 0 text form)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def su(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def stack_global(module: str, name: str) -> bytes:
    """Protocol 4 STACK_GLOBAL with literal strings."""
    return su(module) + su(name) + b"\x93"


def call(module: str, name: str, *args: str) -> bytes:
    """A protocol 4 pickle that calls module.name(*args)."""
    return b"\x80\x04" + stack_global(module, name) + b"(" + b"".join(su(a) for a in args) + b"tR."


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (CMD,))


def _scan(tmp_path: Path, data: bytes, name: str = "model.pkl") -> tuple[list[Finding], Verdict]:
    path = tmp_path / name
    path.write_bytes(data)
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return report.findings, report.targets[0].verdict


def _rules(findings: list[Finding]) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for f in findings:
        out[f.rule_id] = max(out.get(f.rule_id, f.severity), f.severity)
    return out


def _assert_clean(findings: list[Finding]) -> None:
    bad = [(f.rule_id, f.severity.label, f.message) for f in findings if f.severity >= Severity.MEDIUM]
    assert bad == []


# --- malicious samples -----------------------------------------------------------------------------


def test_os_system_via_global_protocol0(tmp_path: Path) -> None:
    data = glob("os", "system") + b"(S'" + CMD.encode() + b"'\ntR."
    findings, verdict = _scan(tmp_path, data)
    assert verdict is Verdict.MALICIOUS
    (f,) = [f for f in findings if f.rule_id == "BST-PKL-001"]
    assert f.severity is Severity.CRITICAL
    assert f.evidence_map["call"] == f"os.system({CMD!r})"
    assert f.evidence_map["opcode"] == "GLOBAL"
    assert f.location.offset == 0


def test_posix_system_via_inst_protocol1(tmp_path: Path) -> None:
    data = b"(X" + struct.pack("<I", len(CMD)) + CMD.encode() + b"iposix\nsystem\n."
    findings, _ = _scan(tmp_path, data)
    (f,) = [f for f in findings if f.rule_id == "BST-PKL-001"]
    assert f.evidence_map["opcode"] == "INST"
    assert f.evidence_map["call"] == f"posix.system({CMD!r})"


def test_real_reduce_payload_every_protocol(tmp_path: Path) -> None:
    for proto in range(6):
        findings, verdict = _scan(tmp_path, pickle.dumps(_Evil(), protocol=proto))
        assert verdict is Verdict.MALICIOUS
        assert _rules(findings)["BST-PKL-001"] is Severity.CRITICAL


def test_stack_global_with_memo_sourced_strings(tmp_path: Path) -> None:
    # Strings memoised, popped, then fetched back with BINGET / LONG_BINGET for STACK_GLOBAL.
    data = (
        b"\x80\x04"
        + su("os")
        + b"\x94"
        + b"0"
        + su("system")
        + b"r\x05\x00\x00\x00"
        + b"0"
        + b"h\x00"
        + b"j\x05\x00\x00\x00"
        + b"\x93"
        + su(CMD)
        + b"\x85R."
    )
    findings, _ = _scan(tmp_path, data)
    (f,) = [f for f in findings if f.rule_id == "BST-PKL-001"]
    assert f.evidence_map["global"] == "os.system"
    assert f.evidence_map["opcode"] == "STACK_GLOBAL"


def test_stack_global_with_binunicode8_and_binunicode(tmp_path: Path) -> None:
    mod = b"\x8d" + struct.pack("<Q", 10) + b"subprocess"
    name = b"X" + struct.pack("<I", 12) + b"check_output"
    data = b"\x80\x04" + mod + name + b"\x93" + su("echo") + b"\x85R."
    findings, _ = _scan(tmp_path, data)
    assert any(
        f.rule_id == "BST-PKL-001" and f.evidence_map["global"] == "subprocess.check_output" for f in findings
    )


def test_string_built_on_stack_is_unresolved(tmp_path: Path) -> None:
    # Only allowlisted imports (builtins.str) are used, but the module name is computed: str(b'os', 'ascii').
    computed = stack_global("builtins", "str") + b"C\x02os" + su("ascii") + b"\x86R"
    data = b"\x80\x04" + computed + su("system") + b"\x93" + su(CMD) + b"\x85R."
    findings, verdict = _scan(tmp_path, data)
    assert verdict is Verdict.MALICIOUS
    rules = _rules(findings)
    assert rules["BST-PKL-003"] is Severity.HIGH
    assert "BST-PKL-001" not in rules


def test_str_join_chain_is_flagged(tmp_path: Path) -> None:
    join = stack_global("builtins", "str.join") + su("") + b"]" + b"(" + su("o") + su("s") + b"e\x86R"
    data = b"\x80\x04" + join + su("system") + b"\x93" + su(CMD) + b"\x85R."
    rules = _rules(_scan(tmp_path, data)[0])
    assert rules["BST-PKL-006"] is Severity.CRITICAL  # builtins.str.join is attribute traversal
    assert rules["BST-PKL-003"] is Severity.HIGH


def test_getattr_import_chain(tmp_path: Path) -> None:
    imp = stack_global("builtins", "__import__") + su("os") + b"\x85R"
    get = stack_global("builtins", "getattr") + imp + su("system") + b"\x86R"
    data = b"\x80\x04" + get + su(CMD) + b"\x85R."
    findings, _ = _scan(tmp_path, data)
    got = {f.evidence_map["global"] for f in findings if f.rule_id == "BST-PKL-001"}
    assert got == {"builtins.getattr", "builtins.__import__"}
    calls = {f.evidence_map.get("call") for f in findings}
    assert "builtins.getattr(builtins.__import__('os'), 'system')" in calls


DENIED = [
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("__builtin__", "eval"),
    ("pip", "main"),  # CVE-2025-1716
    ("runpy", "_run_code"),
    ("importlib", "import_module"),
    ("asyncio.unix_events", "_UnixSubprocessTransport"),  # CVE-2025-10157
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("_operator", "itemgetter"),
    ("cProfile", "run"),
    ("profile", "run"),
    ("timeit", "timeit"),
    ("pdb", "run"),
    ("bdb", "Bdb"),
    ("trace", "Trace"),
    ("doctest", "debug_script"),
    ("pydoc", "locate"),
    ("ctypes", "CDLL"),
    ("uuid", "_get_command_stdout"),
    ("imaplib", "IMAP4_stream"),
    ("_pyrepl.pager", "pipe_pager"),
    ("_osx_support", "_read_output"),
    ("_aix_support", "_read_cmd_output"),
    ("idlelib.pyshell", "ModifiedInterpreter"),
    ("lib2to3.pgen2.driver", "load_grammar"),
    ("pkgutil", "resolve_name"),
    ("logging", "FileHandler"),
    ("_io", "FileIO"),
    ("io", "open"),
    ("ensurepip", "_run_pip"),
    ("venv", "create"),
    ("torch.serialization", "load"),
    ("torch", "load"),
    ("torch.utils.collect_env", "run"),
    ("torch._inductor.codecache", "compile_file"),
    ("torch.jit", "load"),
    ("torch.hub", "load"),
    ("numpy.f2py", "compile"),
    ("numpy.testing._private.utils", "runstring"),
    ("multiprocessing.util", "spawnv_passfds"),
    ("mlflow.projects.backend.local", "_run_entry_point"),
    ("pandas.io.parsers.readers", "read_csv"),
    ("mailcap", "findmatch"),
    ("functools", "partial"),
    ("types", "CodeType"),
    ("marshal", "loads"),
    ("socket", "create_connection"),
    ("webbrowser", "open"),
    ("shutil", "rmtree"),
    ("pty", "spawn"),
    ("subprocess", "Popen"),
    ("sys", "exit"),
    ("nt", "system"),
    ("code", "InteractiveInterpreter"),
    ("urllib.request", "urlopen"),
    ("ssl", "get_server_certificate"),
    ("dill", "loads"),
    ("commands", "getoutput"),  # Python 2 name, mapped to subprocess by pickle
]


@pytest.mark.parametrize(("module", "name"), DENIED)
def test_denied_callables_are_critical(tmp_path: Path, module: str, name: str) -> None:
    findings, verdict = _scan(tmp_path, call(module, name, CMD))
    assert verdict is Verdict.MALICIOUS
    (f,) = [f for f in findings if f.rule_id == "BST-PKL-001"]
    assert f.severity is Severity.CRITICAL
    assert f.evidence_map["call"] == f"{module}.{name}({CMD!r})"


def test_pydoc_locate_ctypes_chain(tmp_path: Path) -> None:
    locate = stack_global("pydoc", "locate") + su("ctypes.CDLL") + b"\x85R"
    data = b"\x80\x04" + locate + su("libc.so.6") + b"\x85R."
    findings, _ = _scan(tmp_path, data)
    assert any(
        f.rule_id == "BST-PKL-001" and "pydoc.locate('ctypes.CDLL')" in f.evidence_map["call"]
        for f in findings
    )


@pytest.mark.parametrize(("module", "name"), [("numpy", "__builtins__"), ("argparse", "_os.system")])
def test_attribute_traversal_is_critical(tmp_path: Path, module: str, name: str) -> None:
    findings, verdict = _scan(tmp_path, call(module, name, CMD))
    assert verdict is Verdict.MALICIOUS
    assert _rules(findings)["BST-PKL-006"] is Severity.CRITICAL


def test_numpy_builtins_build_chain(tmp_path: Path) -> None:
    # modelscan #330: reach numpy.__builtins__ and BUILD state onto an imported object.
    data = (
        b"\x80\x04"
        + stack_global("numpy", "size")
        + b"}"
        + su("x")
        + stack_global("numpy", "__builtins__")
        + b"sb."
    )
    rules = _rules(_scan(tmp_path, data)[0])
    assert rules["BST-PKL-006"] is Severity.CRITICAL
    assert rules["BST-PKL-009"] is Severity.HIGH
    assert rules["BST-PKL-002"] is Severity.MEDIUM  # numpy.size is not on the safe list


def test_nested_pickle_via_pickle_loads(tmp_path: Path) -> None:
    inner = pickle.dumps(_Evil(), protocol=2)
    data = glob("pickle", "loads") + b"(C" + bytes([len(inner)]) + inner + b"tR."
    findings, verdict = _scan(tmp_path, b"\x80\x03" + data)
    assert verdict is Verdict.MALICIOUS
    rules = _rules(findings)
    assert rules["BST-PKL-007"] is Severity.HIGH
    nested = [
        f for f in findings if f.rule_id == "BST-PKL-001" and f.evidence_map["global"] == "posix.system"
    ]
    assert nested
    assert nested[0].location.members
    assert nested[0].location.members[0].startswith("<pickle.loads@")


def test_nested_large_pickle_is_reread(tmp_path: Path) -> None:
    inner = pickle.dumps([b"x" * 5000, _Evil()], protocol=4)
    data = (
        b"\x80\x04"
        + stack_global("_pickle", "loads")
        + b"B"
        + struct.pack("<I", len(inner))
        + inner
        + b"\x85R."
    )
    findings, _ = _scan(tmp_path, data)
    assert any(f.evidence_map.get("global") == "posix.system" and f.location.members for f in findings)


def test_build_appended_after_payload(tmp_path: Path) -> None:
    # fickling GHSA-mhc9-48gj-9gp3: a BUILD after the REDUCE must not hide the call.
    data = glob("os", "system") + b"(S'" + CMD.encode() + b"'\ntR}b."
    rules = _rules(_scan(tmp_path, data)[0])
    assert rules["BST-PKL-001"] is Severity.CRITICAL


def test_call_result_popped(tmp_path: Path) -> None:
    data = glob("os", "system") + b"(S'" + CMD.encode() + b"'\ntR0N."
    findings, _ = _scan(tmp_path, data)
    (f,) = [f for f in findings if f.rule_id == "BST-PKL-001"]
    assert f.evidence_map["call"] == f"os.system({CMD!r})"


def test_cyclic_list_terminates(tmp_path: Path) -> None:
    cyclic = b"]q\x00h\x00a"  # L = []; L.append(L)
    findings, verdict = _scan(tmp_path, b"\x80\x02" + cyclic + b".")
    assert verdict is Verdict.CLEAN
    assert findings == []
    data = b"\x80\x04" + stack_global("mypkg", "f") + cyclic + b"\x85R."
    (f,) = _scan(tmp_path, data)[0]
    assert f.rule_id == "BST-PKL-002"
    assert len(f.evidence_map["call"]) <= 200


def test_truncated_right_after_reduce(tmp_path: Path) -> None:
    # nullifAI: the stream breaks right after the payload.
    data = glob("os", "system") + b"(S'" + CMD.encode() + b"'\ntR"
    findings, verdict = _scan(tmp_path, data)
    assert verdict is Verdict.MALICIOUS
    rules = _rules(findings)
    assert rules["BST-PKL-001"] is Severity.CRITICAL
    assert rules["BST-PKL-005"] is Severity.HIGH
    assert rules["BST-SCAN-001"] is Severity.HIGH


def test_invalid_opcode_after_payload(tmp_path: Path) -> None:
    # GHSA-9gvj-pp9x-gcfr: an invalid opcode after the payload must not lose the globals.
    data = b"\x80\x04" + stack_global("os", "system") + su(CMD) + b"\x85R\xff."
    findings, _ = _scan(tmp_path, data)
    rules = _rules(findings)
    assert rules["BST-PKL-001"] is Severity.CRITICAL
    assert rules["BST-PKL-005"] is Severity.HIGH
    incomplete = [f for f in findings if f.rule_id == "BST-SCAN-001"]
    assert incomplete[0].location.offset == len(data) - 2


def test_callable_pushed_then_broken(tmp_path: Path) -> None:
    data = b"\x80\x04" + stack_global("os", "system") + su(CMD)  # no REDUCE, no STOP
    rules = _rules(_scan(tmp_path, data)[0])
    assert rules["BST-PKL-005"] is Severity.HIGH


@pytest.mark.parametrize("ext", [b"\x82\x01", b"\x83\x01\x02", b"\x84\x01\x00\x00\x00"])
def test_extension_registry_opcodes(tmp_path: Path, ext: bytes) -> None:
    findings, verdict = _scan(tmp_path, b"\x80\x02" + ext + b")R.")
    assert verdict is Verdict.MALICIOUS
    assert _rules(findings)["BST-PKL-004"] is Severity.HIGH


def test_unknown_third_party_global_is_medium(tmp_path: Path) -> None:
    findings, verdict = _scan(tmp_path, call("mypkg.helpers", "Thing", "x"))
    assert verdict is Verdict.SUSPICIOUS
    (f,) = findings
    assert f.rule_id == "BST-PKL-002"
    assert f.severity is Severity.MEDIUM
    assert "not on the curated safe list" in f.message


def test_stacked_pickles_second_one_scanned(tmp_path: Path) -> None:
    data = pickle.dumps({"a": 1}, protocol=2) + pickle.dumps(_Evil(), protocol=2)
    findings, _ = _scan(tmp_path, data)
    assert _rules(findings)["BST-PKL-001"] is Severity.CRITICAL


def test_trailing_data_is_low(tmp_path: Path) -> None:
    findings, verdict = _scan(tmp_path, pickle.dumps([1, 2], protocol=2) + b"\xff\xfe junk")
    assert verdict is Verdict.CLEAN
    assert [(f.rule_id, f.severity) for f in findings] == [("BST-PKL-008", Severity.LOW)]


def test_joblib_object_array_with_nested_payload(tmp_path: Path) -> None:
    path = tmp_path / "evil.joblib"
    joblib.dump({"o": np.array([1, _Evil()], dtype=object)}, path, compress=0)
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    assert report.targets[0].verdict is Verdict.MALICIOUS
    assert any(
        f.rule_id == "BST-PKL-001" and f.evidence_map["global"] == "posix.system" for f in report.findings
    )


# --- benign samples --------------------------------------------------------------------------------


def _data_pkl(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        return zf.read(name)


def _scan_bytes(data: bytes) -> list[Finding]:
    ctx = ScanContext(dispatch=dispatch)
    analyses = scan_pickle_stream(Source.from_bytes(data, "data.pkl"), Location("data.pkl"), ctx)
    assert analyses
    return ctx.findings


def test_torch_state_dict_and_optimizer_are_clean() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(4, 4)).sum().backward()
    opt.step()
    ckpt = {
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "epoch": 3,
        "half": torch.ones(2, dtype=torch.float16),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "size": torch.Size([2, 3]),
        "dev": torch.device("cpu"),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    data = _data_pkl(ckpt)
    findings = _scan_bytes(data)
    _assert_clean(findings)
    ctx = ScanContext(dispatch=dispatch)
    (analysis,) = scan_pickle_stream(Source.from_bytes(data, "data.pkl"), Location("x"), ctx)
    keys = {p.value[2] for p in analysis.persistent_ids if isinstance(p.value, tuple)}
    assert keys  # storage keys are exposed to the zip/torch scanner


def test_whole_module_is_unknown_not_clean() -> None:
    import torch

    findings = _scan_bytes(_data_pkl(torch.nn.Linear(2, 2)))
    rules = _rules(findings)
    assert rules["BST-PKL-002"] is Severity.MEDIUM


def test_plain_pickle_of_numpy_dict_protocol2_is_clean(tmp_path: Path) -> None:
    arrays = {"w": np.ones((3, 3), dtype=np.float32), "b": np.zeros(3), "i": np.arange(4, dtype=np.int64)}
    findings, verdict = _scan(tmp_path, pickle.dumps(arrays, protocol=2), "weights.pt")
    assert verdict is Verdict.CLEAN
    _assert_clean(findings)


@pytest.mark.parametrize("proto", [2, 3, 4, 5])
def test_numpy_arrays_and_scalars_every_protocol(tmp_path: Path, proto: int) -> None:
    obj = {
        "f": np.arange(6.0).reshape(2, 3),
        "fortran": np.asfortranarray(np.ones((2, 2))),
        "s": np.float32(1.5),
        "u": np.array(["a", "bc"]),
        "dt": np.dtype([("a", "<i4"), ("b", "<f8")]),
        "t": np.array(["2020-01-01"], dtype="M8[s]"),
        "rng": np.random.RandomState(0),
        "gen": np.random.default_rng(0),
        "ba": bytearray(b"in-band"),
    }
    findings, verdict = _scan(tmp_path, pickle.dumps(obj, protocol=proto))
    _assert_clean(findings)
    assert verdict is Verdict.CLEAN


@pytest.mark.parametrize("proto", range(6))
def test_plain_containers_every_protocol(tmp_path: Path, proto: int) -> None:
    obj = {
        "l": [1, 2.5, "x", b"y", None, True, 10**30],
        "s": {1, 2},
        "fs": frozenset({3}),
        "od": collections.OrderedDict(a=1),
        "dd": collections.defaultdict(list, {"k": [1]}),
        "c": complex(1, 2),
        "sl": slice(1, 5, 2),
        "t": (1, (2, (3,))),
        "big": "z" * 70000,
    }
    findings, verdict = _scan(tmp_path, pickle.dumps(obj, protocol=proto))
    assert findings == []
    assert verdict is Verdict.CLEAN


def _sklearn_models() -> list[object]:
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(0)
    x = rng.rand(40, 4)
    y = (x[:, 0] > 0.5).astype(int)
    cats = np.array([["a"], ["b"]] * 20, dtype=object)
    return [
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
        GradientBoostingClassifier(n_estimators=3).fit(x, y),
        DecisionTreeClassifier().fit(x, y),
        SVC().fit(x, y),
        KMeans(n_clusters=2, n_init=2, random_state=0).fit(x),
        PCA(2).fit(x),
        OneHotEncoder().fit(cats),
        MinMaxScaler().fit(x),
        LinearRegression().fit(x, x[:, 1]),
        Ridge().fit(x, x[:, 1]),
        KNeighborsClassifier().fit(x, y),
        ColumnTransformer([("n", StandardScaler(), [0, 1]), ("i", SimpleImputer(), [2, 3])]).fit(x),
        HistGradientBoostingClassifier(max_iter=3).fit(x, y),
        TfidfVectorizer().fit(["alpha beta", "beta gamma", "gamma delta"]),
    ]


def test_sklearn_joblib_uncompressed_is_clean(tmp_path: Path) -> None:
    for i, model in enumerate(_sklearn_models()):
        path = tmp_path / f"m{i}.joblib"
        joblib.dump(model, path, compress=0)
        joblib.dump(model, tmp_path / f"p{i}.joblib", compress=0, protocol=2)
        (tmp_path / f"k{i}.pkl").write_bytes(pickle.dumps(model, protocol=5))
    report = scan_paths([str(tmp_path)], ScanOptions(jobs=1))
    _assert_clean(report.findings)
    assert {t.verdict for t in report.targets} == {Verdict.CLEAN}


def test_joblib_arrays_of_several_dtypes_are_clean(tmp_path: Path) -> None:
    arrays = {
        "i2": np.arange(10, dtype="i2"),
        "f4f": np.ones((3, 4), "f4", order="F"),
        "u": np.array(["x", "yy"]),
        "c": np.array([1 + 2j]),
        "be": np.zeros(3, ">f8"),
        "t": np.array(["2020-01-01"], "M8[s]"),
        "b": np.array([True, False]),
        "empty": np.zeros((0, 3)),
        "scalar": np.array(3.0),
        "rec": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        "obj": np.array([1, "two", None], dtype=object),
    }
    path = tmp_path / "arrays.joblib"
    joblib.dump(arrays, path, compress=0)
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    assert report.findings == []


def test_joblib_raw_bytes_missing_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "a.joblib"
    joblib.dump({"a": np.arange(1000.0)}, path, compress=0)
    data = path.read_bytes()
    cut = data[: len(data) // 2]
    findings, verdict = _scan(tmp_path, cut, "cut.joblib")
    assert verdict is Verdict.ERROR
    assert _rules(findings) == {"BST-SCAN-001": Severity.HIGH}


# --- fuzz ------------------------------------------------------------------------------------------

_BENIGN = pickle.dumps({"w": np.arange(4.0), "s": {1, 2}, "n": "name"}, protocol=4)
_MALICIOUS = pickle.dumps(_Evil(), protocol=2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from([_BENIGN, _MALICIOUS]),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=4),
)
def test_fuzz_mutations_never_raise(
    tmp_path: Path, base: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(base[: max(1, len(base) - cut % len(base))])
    for pos, value in flips:
        data[pos % len(data)] = value
    path = tmp_path / "fuzz.pkl"
    path.write_bytes(bytes(data))
    result = scan_file(path, "fuzz.pkl", ScanOptions(jobs=1))
    assert all(
        not f.message.startswith("Could not be fully analysed: scanner error") for f in result.findings
    )


def test_payload_disguised_as_joblib_array_bytes(tmp_path: Path) -> None:
    # joblib.load skips the raw bytes after a NumpyArrayWrapper BUILD; pickle.load runs them as opcodes.
    payload = b"cos\nsystem\n(S'" + CMD.encode() + b"'\ntR."
    state = (
        b"}(" + su("shape") + b"K" + bytes([len(payload)]) + b"\x85"
        + su("dtype") + stack_global("numpy", "dtype") + su("u1") + b"\x89\x88\x87R"
        + su("order") + su("C") + b"u"
    )  # fmt: skip
    data = (
        b"\x80\x04"
        + stack_global("joblib.numpy_pickle", "NumpyArrayWrapper")
        + b")\x81"
        + state
        + b"b"
        + payload
    )
    findings, verdict = _scan(tmp_path, data + b".", "model.pkl")
    assert verdict is Verdict.MALICIOUS
    (f,) = [f for f in findings if f.rule_id == "BST-PKL-001"]
    assert f.evidence_map["view"] == "pickle.load"
    assert f.evidence_map["call"] == f"os.system({CMD!r})"


def test_nested_pickle_via_torch_load_of_bytesio(tmp_path: Path) -> None:
    inner = pickle.dumps(_Evil(), protocol=2)
    bytesio = stack_global("io", "BytesIO") + b"C" + bytes([len(inner)]) + inner + b"\x85R"
    data = b"\x80\x04" + stack_global("torch", "load") + bytesio + b"\x85R."
    findings, _ = _scan(tmp_path, data)
    rules = _rules(findings)
    assert rules["BST-PKL-007"] is Severity.HIGH
    assert any(f.evidence_map.get("global") == "posix.system" and f.location.members for f in findings)
