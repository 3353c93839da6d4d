"""Speed benchmarks: big checkpoints, a 1000-file directory, and --digest hashing throughput.

    python benchmarks/speed.py [--max-gb 3] [--files 1000] [--output speed.md] [--skip big,dir,digest]

(a) flat time on PyTorch zip checkpoints of ~0.25, 1 and 3 GB: ``bastion scan FILE`` as a fresh CLI
    process (start-up included) and in-process, against ``picklescan -p FILE``; peak RSS of the bastion
    process. Targets: within 1.5x of picklescan, RSS under 200 MB, flat across sizes.
(b) a directory of mixed small model files (benign and malicious, from the corpus generators with
    variations) scanned by one ``bastion scan DIR`` process (all cores) against each anchor's directory
    mode; files/s, the ratio to modelaudit (target >= 10x) and CPU utilisation.
(c) ``--digest`` SHA-256 throughput on the biggest checkpoint against ``sha256sum``.

Checkpoints are written to benchmarks/.work (gitignored) and deleted afterwards. The page cache is warm
(each file was just written), so these are CPU-bound figures, not disk figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compileall

import anchors
from speed_data import make_checkpoint, make_mixed_dir

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
BASTION = Path(sys.executable).parent / "bastion"
TIME_V = Path("/usr/bin/time")


@dataclass(frozen=True, slots=True)
class Run:
    """One timed child process."""

    cmd: list[str]
    wall: float
    cpu: float  # user + sys of the child and its children
    max_rss_mb: float
    exit_code: int | None


def timed(cmd: Sequence[str], *, timeout: float = 1800.0) -> Run:
    """Run ``cmd`` once, measuring wall time, child CPU time and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    use_time = TIME_V.exists()
    full = [str(TIME_V), "-v", *cmd] if use_time else list(cmd)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=anchors.child_env(),
            check=False,
            cwd=WORK,
        )
    except subprocess.TimeoutExpired:
        return Run(list(cmd), timeout, float("nan"), float("nan"), None)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss_kb = float(after.ru_maxrss)  # a high-water mark over all children: only right for the first run
    if use_time:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        rss_kb = float(match.group(1)) if match else float("nan")
    return Run(list(cmd), wall, cpu, rss_kb / 1024, proc.returncode)


def best_of(cmd: Sequence[str], repeat: int, *, timeout: float = 1800.0) -> Run:
    """The median-wall run of ``repeat`` runs (peak RSS is the max over them)."""
    runs = [timed(cmd, timeout=timeout) for _ in range(repeat)]
    runs.sort(key=lambda r: r.wall)
    mid = runs[len(runs) // 2]
    return Run(mid.cmd, mid.wall, mid.cpu, max(r.max_rss_mb for r in runs), mid.exit_code)


def in_process(path: Path, repeat: int, *, digest: bool = False) -> float:
    """Median seconds of ``scan_paths([path])`` in this process (no interpreter start-up)."""
    from bastion.scan import ScanOptions, scan_paths

    scan_paths([str(path)], ScanOptions(jobs=1, digest=digest))  # warm imports
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        scan_paths([str(path)], ScanOptions(jobs=1, digest=digest))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def show(cmd: Sequence[str]) -> str:
    """A command line a reader can paste, with paths relative to the repo."""
    return " ".join(shlex.quote(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c) for c in cmd)


def bench_big(sizes: Sequence[float], repeat: int) -> str:
    """(a) bastion vs picklescan on big torch zip checkpoints."""
    lines = [
        "### Big PyTorch checkpoints (flat time)",
        "",
        "| size | bastion CLI s | bastion in-process s | picklescan s | CLI / picklescan "
        "| bastion peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    cmds: list[str] = []
    for gb in sizes:
        path = WORK / f"ckpt_{gb:g}gb.pt"
        actual = make_checkpoint(path, gb)
        try:
            ours = best_of([str(BASTION), "scan", str(path)], repeat)
            inproc = in_process(path, repeat)
            theirs = best_of([str(anchors.venv_bin("picklescan") / "picklescan"), "-p", str(path)], repeat)
            ratio = ours.wall / theirs.wall if theirs.wall else float("nan")
            lines.append(
                f"| {actual / 2**30:.2f} GiB | {ours.wall:.2f} | {inproc:.3f} | {theirs.wall:.2f} "
                f"| {ratio:.2f}x "
                f"| {ours.max_rss_mb:.0f} |"
            )
            if not cmds:
                cmds = [show(ours.cmd), show(theirs.cmd)]
        finally:
            if gb != max(sizes):
                path.unlink(missing_ok=True)
    lines += ["", f"Median of {repeat} runs each. Reproduce:", "", "```", *cmds, "```", ""]
    return "\n".join(lines)


def bench_digest(repeat: int) -> str:
    """(c) --digest hashing throughput vs sha256sum on the biggest checkpoint."""
    path = max(WORK.glob("ckpt_*gb.pt"), key=lambda p: p.stat().st_size, default=None)
    if path is None:
        return "### --digest throughput\n\nskipped: no checkpoint (run the big-checkpoint benchmark first)\n"
    size = path.stat().st_size
    try:
        ours = best_of([str(BASTION), "scan", "--digest", str(path)], repeat)
        cli_ok = ours.exit_code in (0, 1)
        digest_s = in_process(path, repeat, digest=True)
        plain_s = in_process(path, repeat)
        sha = best_of(["sha256sum", str(path)], repeat)
    finally:
        path.unlink(missing_ok=True)
    gb = size / 1e9
    lines = [
        "### --digest hashing throughput",
        "",
        "| tool | seconds | GB/s |",
        "|---|---|---|",
        f"| bastion in-process, scan + digest | {digest_s:.2f} | {gb / digest_s:.2f} |",
        f"| bastion in-process, scan only | {plain_s:.3f} | - |",
    ]
    if cli_ok:
        lines.append(f"| `bastion scan --digest` (CLI) | {ours.wall:.2f} | {gb / ours.wall:.2f} |")
    lines += [
        f"| sha256sum | {sha.wall:.2f} | {gb / sha.wall:.2f} |",
        "",
        f"On a {size / 2**30:.2f} GiB checkpoint, median of {repeat}. Reproduce:",
        "",
        "```",
        show(ours.cmd),
        show(sha.cmd),
        "```",
        "",
    ]
    if not cli_ok:
        lines.insert(-6, f"(the CLI did not accept --digest: exit {ours.exit_code}; in-process figures only)")
    return "\n".join(lines)


def bench_dir(files: int, timeout: float) -> str:
    """(b) one process over a directory of mixed small files, every tool's directory mode."""
    target = WORK / "mixed"
    count = make_mixed_dir(target, files)
    cores = os.cpu_count() or 1
    tools: list[tuple[str, list[str]]] = [("bastion", [str(BASTION), "scan", str(target)])]
    for tool in ("modelaudit", "modelscan", "picklescan"):
        if anchors.is_installed(tool):
            json_out = WORK / f"{tool}-dir.json"
            cmd = anchors.command(tool, target, json_out)
            tools.append((tool, cmd))
    results = {name: timed(cmd, timeout=timeout) for name, cmd in tools}
    base = results.get("modelaudit")
    lines = [
        f"### Directory of {count} mixed model files (one process)",
        "",
        "| tool | seconds | files/s | speed vs modelaudit | CPU utilisation (of all cores) | exit |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in results.items():
        rate = count / run.wall if run.wall else float("nan")
        ratio = f"{base.wall / run.wall:.1f}x" if base and run.wall else "-"
        util = run.cpu / run.wall / cores if run.wall else float("nan")
        lines.append(f"| {name} | {run.wall:.1f} | {rate:.0f} | {ratio} | {util:.0%} | {run.exit_code} |")
    lines += [
        "| fickling | - | - | - | - | no directory mode |",
        "",
        f"{cores} cores. CPU utilisation is (user + sys) / wall / cores of the child process tree. "
        "picklescan's directory mode only opens files with pickle/zip/pytorch extensions, and modelscan "
        "routes by extension, so both examine fewer of the files than bastion and modelaudit. Reproduce:",
        "",
        "```",
        f"python benchmarks/speed_data.py {os.path.relpath(target, ROOT)} --files {files}",
        *(show(cmd) for _, cmd in tools),
        "```",
        "",
    ]
    shutil.rmtree(target, ignore_errors=True)
    return "\n".join(lines)


def machine() -> str:
    """A one-paragraph description of the machine and versions."""
    versions = ", ".join(f"{t} {anchors.version(t)}" for t in anchors.ANCHORS)
    return (
        f"Machine: {os.cpu_count()} cores (`nproc`), Python {platform.python_version()}, "
        f"{platform.platform()}. "
        f"Anchors: {versions}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the speed benchmarks and print (or write) Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gb", type=float, default=3.0, help="largest checkpoint size to generate")
    parser.add_argument("--files", type=int, default=1000, help="files in the mixed directory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per directory scan")
    parser.add_argument("--skip", default="", help="comma-separated: big,dir,digest")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    WORK.mkdir(parents=True, exist_ok=True)
    # pip compiled the anchors' modules to bytecode when it installed them; an editable checkout has
    # none when PYTHONDONTWRITEBYTECODE is set, so compile ours too and time like against like.
    compileall.compile_dir(ROOT / "src" / "bastion", quiet=1)
    sizes = [gb for gb in (0.25, 1.0, 3.0) if gb <= args.max_gb] or [args.max_gb]
    parts = [machine(), ""]
    if "big" not in skip:
        parts.append(bench_big(sizes, args.repeat))
        print(parts[-1], file=sys.stderr)
    if "digest" not in skip:
        if "big" in skip:
            make_checkpoint(WORK / f"ckpt_{max(sizes):g}gb.pt", max(sizes))
        parts.append(bench_digest(args.repeat))
        print(parts[-1], file=sys.stderr)
    for leftover in WORK.glob("ckpt_*gb.pt"):
        leftover.unlink()
    if "dir" not in skip:
        parts.append(bench_dir(args.files, args.timeout))
        print(parts[-1], file=sys.stderr)
    text = "\n".join(parts)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
