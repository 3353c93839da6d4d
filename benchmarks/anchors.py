"""The anchor scanners Bastion is compared with: install each in its own venv, run it, map its verdict.

Each anchor lives in ``benchmarks/.venvs/<tool>`` (gitignored) and is installed only when benchmarking,
with a plain ``pip install`` from PyPI, the way a user would. Every run has a timeout, sends no
telemetry, and is mapped to one of four verdicts:

- ``flagged``: the tool's default gate fails on the file (what a user's CI would block);
- ``clean``: the tool's default gate passes the file;
- ``error``: the tool ended with a scan error (fails closed in a gate that checks the exit code);
- ``skipped``: the tool said it had nothing to scan (modelscan exit 3), which a gate passes: a miss.

Run ``python benchmarks/anchors.py install`` to install them all (minutes, network to PyPI only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENVS = BENCH_DIR / ".venvs"
PYTHON = shutil.which("python3.11") or sys.executable

# What each anchor needs: the tool plus the optional libraries its docs name for more formats.
PACKAGES: dict[str, tuple[str, ...]] = {
    "modelscan": ("modelscan", "h5py"),
    "picklescan": ("picklescan", "numpy"),
    # fickling 0.1.12 declares typing_extensions only in dev extras; without it every run crashes.
    "fickling": ("fickling", "typing_extensions"),
    "modelaudit": ("modelaudit", "h5py", "jinja2", "gguf", "onnx"),
}
ANCHORS: tuple[str, ...] = tuple(PACKAGES)

# No anchor may phone home during a benchmark; every variable any of them is known to honour.
NO_TELEMETRY = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "MODELAUDIT_DISABLE_TELEMETRY": "1",
    "MODELAUDIT_TELEMETRY": "0",
    "DO_NOT_TRACK": "1",
    "POSTHOG_DISABLED": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PYTHONWARNINGS": "ignore",
}


@dataclass(frozen=True, slots=True)
class AnchorResult:
    """One anchor run on one path."""

    tool: str
    verdict: str  # flagged | clean | error | skipped | timeout | unavailable
    exit_code: int | None
    seconds: float
    detail: str = ""
    max_severity: str = ""  # the worst severity in the tool's JSON report, where it has one


def venv_bin(tool: str) -> Path:
    """The bin directory of ``tool``'s venv."""
    return VENVS / tool / "bin"


def is_installed(tool: str) -> bool:
    """Whether ``tool``'s venv exists and has its CLI."""
    return (venv_bin(tool) / tool).exists() and (VENVS / tool / ".installed").exists()


def install(tool: str, *, quiet: bool = True) -> None:
    """Create ``benchmarks/.venvs/<tool>`` and pip-install the tool and its extras (idempotent)."""
    if is_installed(tool):
        return
    venv = VENVS / tool
    subprocess.run([PYTHON, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run([*pip, *PACKAGES[tool]], check=True, env={**os.environ, **NO_TELEMETRY})
    (venv / ".installed").write_text(" ".join(PACKAGES[tool]) + "\n")


def version(tool: str) -> str:
    """The installed version of ``tool`` (from pip metadata), or ``"not installed"``."""
    if not is_installed(tool):
        return "not installed"
    code = f"import importlib.metadata as m; print(m.version({tool!r}))"
    out = subprocess.run(
        [str(venv_bin(tool) / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


def child_env() -> dict[str, str]:
    """The environment every anchor and timed child runs with: no telemetry, no venv leakage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(NO_TELEMETRY)
    return env


def command(tool: str, path: Path, json_out: Path) -> list[str]:
    """The command line a user would run to scan ``path`` with ``tool`` (default gate)."""
    exe = str(venv_bin(tool) / tool)
    if tool == "modelscan":
        return [exe, "-p", str(path), "-r", "json", "-o", str(json_out)]
    if tool == "picklescan":
        return [exe, "-p", str(path)]
    if tool == "fickling":
        return [exe, "--check-safety", str(path), "--json-output", str(json_out)]
    if tool == "modelaudit":
        return [exe, "scan", str(path), "--format", "json", "--output", str(json_out)]
    raise ValueError(f"unknown anchor {tool!r}")


def _map_exit(tool: str, code: int) -> str:
    if tool == "modelscan":
        return {0: "clean", 1: "flagged", 2: "error", 3: "skipped"}.get(code, "error")
    # picklescan, fickling and modelaudit follow ClamAV: 0 clean, 1 found, 2 error.
    return {0: "clean", 1: "flagged"}.get(code, "error")


def run(tool: str, path: Path, *, timeout: float = 120.0) -> AnchorResult:
    """Scan ``path`` with ``tool``'s CLI in its default mode and map the exit code to a verdict."""
    if not is_installed(tool):
        return AnchorResult(tool, "unavailable", None, 0.0, "not installed")
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as tmp:
        json_out = Path(tmp) / "out.json"
        cmd = command(tool, path.resolve(), json_out)
        started = time.perf_counter()
        try:
            # cwd is the temp dir: fickling appends safety_results.json to the working directory.
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=tmp, check=False
            )
        except subprocess.TimeoutExpired:
            return AnchorResult(tool, "timeout", None, time.perf_counter() - started, "timed out")
        seconds = time.perf_counter() - started
        verdict = _map_exit(tool, proc.returncode)
        detail = _detail(tool, json_out, proc)
        worst = _max_severity(json_out)
        if tool == "fickling" and proc.returncode == 1 and "Traceback" in proc.stderr:
            # A crash exits 1 too, which a gate reads as "unsafe"; keep it apart in the table.
            verdict = "error"
        return AnchorResult(tool, verdict, proc.returncode, seconds, detail, worst)


_SEVERITY_ORDER = ("", "debug", "info", "low", "warning", "medium", "high", "critical")


def _max_severity(json_out: Path) -> str:
    """The worst ``severity`` among the report's issues (modelaudit, modelscan), lower-cased."""
    try:
        data = json.loads(json_out.read_text())
    except (OSError, ValueError):
        return ""
    issues = data.get("issues", []) if isinstance(data, dict) else []
    found = {str(i.get("severity", "")).lower() for i in issues if isinstance(i, dict)}
    ranked = [s for s in _SEVERITY_ORDER if s in found]
    return ranked[-1] if ranked else ""


def _detail(tool: str, json_out: Path, proc: subprocess.CompletedProcess[str]) -> str:
    """A short reason from the tool's own output, for the notes column."""
    if json_out.exists():
        try:
            data = json.loads(json_out.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            for key in ("summary", "severity", "issues"):
                if key in data:
                    return json.dumps(data[key])[:200]
    tail = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or [""])[-1]
    return tail[:200]


def main(argv: Sequence[str] | None = None) -> int:
    """``install [TOOL...]`` or ``run TOOL PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_install = sub.add_parser("install", help="create the anchor venvs")
    p_install.add_argument("tools", nargs="*", default=list(ANCHORS))
    p_run = sub.add_parser("run", help="scan one path with one anchor")
    p_run.add_argument("tool", choices=ANCHORS)
    p_run.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "install":
        for tool in args.tools:
            print(f"installing {tool} ...", file=sys.stderr)
            install(tool, quiet=False)
            print(f"{tool} {version(tool)}", file=sys.stderr)
        return 0
    result = run(args.tool, args.path)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
