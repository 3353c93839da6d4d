"""Scale benchmark of the registry: list 100,000 versions from a SQLite store (target: under a second).

Fills a store under benchmarks/.work/registry_scale/ once, with 1,000 models x 100 versions written by
bulk inserts into the same tables `bastion registry add` writes (registering 100,000 real artifacts would
measure hashing, which benchmarks/model_signing_speed.py measures), plus one real `add` to prove the
schema is the live one. Then it times, best of five:

- ``Registry.list_versions()`` consumed to the end (the library call behind the command);
- ``bastion registry list --db ...`` as a subprocess writing to /dev/null (the command, start-up included);
- ``bastion registry list --format json``.

    .venv/bin/python benchmarks/registry_scale.py [--models 1000] [--versions 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work" / "registry_scale"


def fill(db: Path, models: int, versions: int) -> None:
    """Bulk-insert models x versions rows, with two files each, in one transaction."""
    from sqlalchemy import insert

    from bastion.store.database import open_store
    from bastion.store.events import now_text
    from bastion.store.schema import artifact_files, model_versions
    from bastion.store.schema import models as models_table

    store = open_store(str(db))
    now = now_text()
    scan = json.dumps(
        {"verdict": "clean", "counts": {"critical": 0, "high": 0, "medium": 0, "low": 0, "info": 0}}
    )
    with store.write() as conn:
        conn.execute(
            insert(models_table),
            [{"name": f"model-{m:04d}", "created_at": now, "created_by": "bench"} for m in range(models)],
        )
        rows = []
        for m in range(models):
            for v in range(1, versions + 1):
                rows.append(
                    {
                        "name": f"model-{m:04d}",
                        "version": v,
                        "created_at": now,
                        "created_by": "bench",
                        "location": f"/models/model-{m:04d}/{v}",
                        "digest": "sha256:" + f"{m:08x}{v:08x}" * 4,
                        "format": "safetensors",
                        "framework": "transformers",
                        "size": 1_000_000 + v,
                        "file_count": 2,
                        "scan": scan,
                        "scan_verdict": "clean",
                        "metadata": "{}",
                        "state": "registered",
                    }
                )
        conn.execute(insert(model_versions), rows)
        files = [
            {"version_id": i, "path": name, "sha256": f"{i:064x}", "size": 500_000}
            for i in range(1, len(rows) + 1)
            for name in ("config.json", "model.safetensors")
        ]
        conn.execute(insert(artifact_files), files)
    store.close()


def best_of(runs: int, work: object) -> float:
    """The fastest of ``runs`` timings of ``work()`` in seconds."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    """Fill (once) and time the listings; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=100)
    args = parser.parse_args()
    total = args.models * args.versions
    WORK.mkdir(parents=True, exist_ok=True)
    db = WORK / f"registry_{total}.db"
    if not db.exists():
        started = time.perf_counter()
        fill(db, args.models, args.versions)
        print(f"filled {total} versions in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    from bastion.registry.versions import Registry
    from bastion.store.database import open_store

    registry = Registry(open_store(str(db)))
    count = sum(1 for _ in registry.list_versions())
    assert count == total, count
    library = best_of(5, lambda: sum(1 for _ in registry.list_versions()))
    bastion = str(Path(sys.executable).with_name("bastion"))

    def command(*extra: str) -> None:
        subprocess.run(
            [bastion, "registry", "list", "--db", str(db), *extra], stdout=subprocess.DEVNULL, check=True
        )

    cli = best_of(5, command)
    cli_json = best_of(3, lambda: command("--format", "json"))
    print(f"| Registry listing ({total:,} versions, SQLite) | seconds (best of 5) |")
    print("|---|---|")
    print(f"| `Registry.list_versions()` consumed | {library:.3f} |")
    print(f"| `bastion registry list` to /dev/null (process start included) | {cli:.3f} |")
    print(f"| `bastion registry list --format json` to /dev/null | {cli_json:.3f} |")


if __name__ == "__main__":
    main()
