"""Signing speed: Bastion's hash/sign/verify of a model directory against model-signing itself and sha256sum.

Builds (once, reused when present) a model directory of ``--size-gb`` GB under ``--dir``: four random
``.safetensors`` shards with valid headers plus small JSON configs, like a Hugging Face checkpoint. Then,
in one run and on the same files, times

- ``bastion.registry.artifacts.hash_artifact`` (the registry's identity of the artifact),
- ``bastion.registry.signing.sign_model`` and ``verify_model`` (key mode, offline),
- model-signing's own API sign and verify with the same hashing settings (files, SHA-256, 1 MiB chunks),
- the ``model_signing`` CLI sign and verify (``key`` mode; interpreter start-up included),
- ``sha256sum`` over all files, sequentially and one process per file (the disk/CPU floor), and
  ``openssl dgst -sha256`` (which, like Python's hashlib, uses the CPU's SHA instructions),

each with a warm page cache and, with ``--cache cold`` or ``both`` (the default), after evicting the
model's files from the page cache (``posix_fadvise(DONTNEED)`` on our files only; nothing system-wide).
Prints a Markdown table; ``--json PATH`` also writes the measurements as JSON.

    .venv/bin/python benchmarks/model_signing_speed.py [--size-gb 2] [--dir build/bench/signing] \
        [--cache both] [--repeat 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL_SIGNING = Path(sys.executable).parent / "model_signing"
SHARDS = 4
CHUNK = 16 << 20


@dataclass(frozen=True, slots=True)
class Result:
    """One timed operation."""

    name: str
    cache: str  # warm | cold
    seconds: float
    cpu_seconds: float  # user + system of this process (all threads) and its children
    mb_per_s: float
    command: str


def build_model(root: Path, size_gb: float) -> Path:
    """Write the model directory once; reuse it when the stamp says it has the requested size."""
    model = root / "model"
    stamp = root / "model.json"  # outside the model, so it is never hashed
    want = {"size_gb": size_gb, "shards": SHARDS, "layout": 1}
    if stamp.exists() and model.is_dir() and json.loads(stamp.read_text()) == want:
        return model
    if model.exists():
        for path in sorted(model.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    model.mkdir(parents=True, exist_ok=True)
    import numpy as np

    total = int(size_gb * 1e9)
    per_shard = total // SHARDS
    started = time.perf_counter()
    index: dict[str, str] = {}
    for i in range(SHARDS):
        name = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        header = json.dumps(
            {
                "__metadata__": {"format": "pt"},
                f"layers.{i}.weight": {"dtype": "U8", "shape": [per_shard], "data_offsets": [0, per_shard]},
            }
        ).encode()
        header += b" " * (-len(header) % 8)
        rng = np.random.default_rng(i)
        with (model / name).open("wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            left = per_shard
            while left:
                n = min(CHUNK, left)
                fh.write(rng.bytes(n))
                left -= n
            fh.flush()
            os.fsync(fh.fileno())  # clean pages, so the cold runs can evict them
        index[f"layers.{i}.weight"] = name
    (model / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": per_shard * SHARDS}, "weight_map": index})
    )
    (model / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096})
    )
    (model / "generation_config.json").write_text('{"do_sample": true, "temperature": 0.6}')
    (model / "tokenizer.json").write_text(
        json.dumps({"model": {"vocab": {f"t{i}": i for i in range(20000)}}})
    )
    (model / "README.md").write_text("# bench model\n\nRandom weights for the signing benchmark.\n")
    stamp.write_text(json.dumps(want))
    print(f"built {model} ({total / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return model


def model_files(model: Path) -> list[Path]:
    """Every file of the model, sorted."""
    return sorted(p for p in model.rglob("*") if p.is_file())


def evict(files: Sequence[Path]) -> None:
    """Drop these files' pages from the page cache (they are clean, so the kernel honours it)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load(files: Sequence[Path]) -> None:
    """Read the files once, so they sit in the page cache."""
    for path in files:
        with path.open("rb") as fh:
            while fh.read(CHUNK):
                pass


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def show(cmd: Sequence[str | Path]) -> str:
    """A command line a reader can paste, with paths relative to the repo."""
    out = []
    for part in map(str, cmd):
        out.append(os.path.relpath(part, ROOT) if part.startswith(str(ROOT)) else part)
    return " ".join(shlex.quote(p) for p in out)


def run(cmd: Sequence[str | Path]) -> None:
    """Run a command; a failure aborts the benchmark with its stderr."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{show(cmd)} failed ({done.returncode}): {done.stderr.strip()}")


def sha256sum_parallel(files: Sequence[Path]) -> None:
    """One sha256sum process per file, as many at once as there are cores."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda f: run(["sha256sum", f]), files))


def measure(
    name: str, fn: Callable[[], object], files: Sequence[Path], cache: str, repeat: int, command: str
) -> Result:
    """Median wall time of ``repeat`` runs of ``fn`` (evicting the files first for a cold run)."""
    size = sum(p.stat().st_size for p in files)
    walls, cpus = [], []
    for _ in range(repeat):
        if cache == "cold":
            evict(files)
        cpu = _cpu()
        started = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu() - cpu)
    wall = statistics.median(walls)
    result = Result(
        name, cache, round(wall, 3), round(statistics.median(cpus), 2), round(size / 1e6 / wall), command
    )
    print(f"{cache:4}  {name:42} {wall:7.2f} s  {result.mb_per_s:6} MB/s", file=sys.stderr)
    return result


def operations(model: Path, work: Path) -> list[tuple[str, Callable[[], object], str]]:
    """(name, callable, command to reproduce) for every measured operation."""
    import model_signing

    from bastion.registry.artifacts import hash_artifact
    from bastion.registry.signing import generate_key, sign_model, verify_model

    keys = work / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    private, public = keys / "bench.pem", keys / "bench.pub.pem"
    if not private.exists():
        generate_key(private)
    sigs = work / "sigs"
    sigs.mkdir(exist_ok=True)
    ours, api, cli = sigs / "bastion.sig", sigs / "api.sig", sigs / "cli.sig"
    files = model_files(model)

    def hashing() -> Any:
        return model_signing.hashing.Config().use_file_serialization(
            hashing_algorithm="sha256", chunk_size=1 << 20
        )

    def api_sign() -> None:
        config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private)
        config.set_hashing_config(hashing()).sign(model, api)

    def api_verify() -> None:
        config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public)
        config.set_hashing_config(hashing()).verify(model, api)

    def ours_verify() -> None:
        result = verify_model(model, ours, public_key=public)
        if not result.ok:
            raise SystemExit(f"verify_model failed: {result.detail}")

    cli_sign: list[str | Path] = [
        MODEL_SIGNING,
        "sign",
        "key",
        model,
        "--private_key",
        private,
        "--signature",
        cli,
    ]
    cli_verify: list[str | Path] = [
        MODEL_SIGNING,
        "verify",
        "key",
        model,
        "--signature",
        cli,
        "--public_key",
        public,
    ]
    bastion = Path(sys.executable).with_name("bastion")
    db = work / "registry.db"
    db.unlink(missing_ok=True)
    add: list[str | Path] = [bastion, "registry", "add", "bench", model, "--db", db]
    registry_sign: list[str | Path] = [
        *(bastion, "registry", "sign", "bench", "--key", private, "--signature", sigs / "registry.sig"),
        *("--db", db),
    ]
    verify: list[str | Path] = [bastion, "verify", "bench", "--db", db]
    floors: list[tuple[str, Callable[[], object], str]] = [
        ("sha256sum, all files, one process", lambda: run(["sha256sum", *files]), "sha256sum MODEL/*"),
        (
            "sha256sum, one process per file (parallel)",
            lambda: sha256sum_parallel(files),
            f"ls MODEL/* | xargs -P {os.cpu_count()} -n 1 sha256sum",
        ),
    ]
    if shutil.which("openssl"):
        # coreutils' sha256sum may not use the CPU's SHA instructions; OpenSSL does, as hashlib does.
        floors.append(
            (
                "openssl dgst -sha256, one process",
                lambda: run(["openssl", "dgst", "-sha256", *files]),
                "openssl dgst -sha256 MODEL/*",
            )
        )
    return [
        *floors,
        ("bastion hash_artifact", lambda: hash_artifact(model), "hash_artifact(MODEL)"),
        ("bastion sign_model (key)", lambda: sign_model(model, key=private, signature=ours), "sign_model"),
        ("bastion verify_model (key)", ours_verify, "verify_model"),
        ("model_signing API sign (key)", api_sign, "signing.Config().use_elliptic_key_signer(...).sign"),
        ("model_signing API verify (key)", api_verify, "verifying.Config().use_elliptic_key_verifier(...)"),
        ("model_signing CLI sign key", lambda: run(cli_sign), show(cli_sign)),
        ("model_signing CLI verify key", lambda: run(cli_verify), show(cli_verify)),
        # The commands users run: each registration hashes and scans the artifact and records a version
        # and its events; sign and verify work on the newest version, so they run in this order.
        ("bastion registry add (CLI: hash, scan, record)", lambda: run(add), show(add)),
        ("bastion registry sign (CLI)", lambda: run(registry_sign), show(registry_sign)),
        ("bastion verify (CLI: re-hash, signature, event)", lambda: run(verify), show(verify)),
    ]


def subject_digest(signature: Path) -> str:
    """The in-toto subject digest a bundle signs."""
    import base64

    bundle = json.loads(signature.read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return "sha256:" + str(payload["subject"][0]["digest"]["sha256"])


def main(argv: Sequence[str] | None = None) -> int:
    """Build the model (once), time every operation, print Markdown and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=ROOT / "build" / "bench" / "signing")
    parser.add_argument("--cache", choices=("warm", "cold", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per operation (the median is kept)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)

    from bastion.registry.artifacts import hash_artifact

    work = args.dir.resolve()
    model = build_model(work, args.size_gb)
    files = model_files(model)
    size = sum(p.stat().st_size for p in files)
    ops = operations(model, work)
    caches = ("warm", "cold") if args.cache == "both" else (args.cache,)
    results: list[Result] = []
    for cache in caches:
        if cache == "warm":
            load(files)  # read everything once so the first warm run is warm too
        for name, fn, command in ops:
            results.append(measure(name, fn, files, cache, args.repeat, command))

    digests = {
        "hash_artifact": hash_artifact(model).digest,
        "bastion bundle": subject_digest(work / "sigs" / "bastion.sig"),
        "model_signing API bundle": subject_digest(work / "sigs" / "api.sig"),
        "model_signing CLI bundle": subject_digest(work / "sigs" / "cli.sig"),
    }
    same = len(set(digests.values())) == 1
    import model_signing

    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "model_signing": model_signing.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    lines = [
        f"Model: {len(files)} files, {size / 1e9:.2f} GB ({SHARDS} random safetensors shards + configs); "
        f"{machine['cores']} cores, Python {machine['python']}, model-signing {machine['model_signing']}, "
        f"load average {machine['load_average_1m']}.",
        "",
        "| operation | cache | seconds | MB/s | CPU s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.cache} | {r.seconds:.2f} | {r.mb_per_s} | {r.cpu_seconds:.1f} |")
    lines += [
        "",
        f"Subject digests equal across hash_artifact, Bastion, model-signing API and CLI bundles: "
        f"{'yes' if same else 'NO'} ({digests['hash_artifact'][:23]}...).",
        "",
        "Reproduce:",
        "",
        "```",
        show([".venv/bin/python", "benchmarks/model_signing_speed.py", *(argv or sys.argv[1:])]),
        "```",
    ]
    print("\n".join(lines))
    if args.json:
        record = {
            "size_bytes": size,
            "files": len(files),
            "machine": machine,
            "digests": digests,
            "digests_equal": same,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
