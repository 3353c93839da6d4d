"""Scale benchmark of the streaming audit: 1,000,000 rows x 50 columns, all four channels by default.

Generates a CSV under benchmarks/.work/ (45 numeric and 4 categorical feature columns plus a label, 5% of
the rows with a flipped label and 1% injected outliers at mean + 5 sd * N(0, 1); with ``--backdoor RATE``
also a dirty-label trigger: three noise columns set to their 99th percentile on RATE of the rows, taken
from classes 1-3 and labelled class_0), then runs ``stream_audit`` with two workers and reports wall time,
the peak resident memory of the process tree and the precision and recall of the injected poison.

    .venv/bin/python benchmarks/audit_scale.py [--rows 1000000] [--workers 2] [--chunk-rows 100000]
        [--channels label,outlier,integrity] [--backdoor 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

WORK = Path(__file__).resolve().parent / ".work" / "audit_scale"
NUMERIC = 45
CATEGORICAL = 4
CLASSES = 4
FLIP_RATE = 0.05
OUTLIER_RATE = 0.01
BLOCK = 100_000
# The trigger's columns are noise columns (no class signal) and its value their 99th percentile: N(0, 1).
TRIGGER_COLUMNS = (20, 21, 22)
TRIGGER_VALUE = 2.32635


def generate(path: Path, rows: int, seed: int = 0, backdoor: float = 0.0) -> dict[str, Any]:
    """Write the poisoned CSV block by block; return the poisoned row numbers."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    # Class centres differ in 10 informative columns; the other columns are noise, as in real tables.
    centres = np.zeros((CLASSES, NUMERIC))
    centres[:, :10] = rng.normal(0.0, 1.2, (CLASSES, 10))
    levels = [[f"v{j}" for j in range(4 + 3 * k)] for k in range(CATEGORICAL)]
    flips: list[np.ndarray[Any, Any]] = []
    outliers: list[np.ndarray[Any, Any]] = []
    stamped: list[np.ndarray[Any, Any]] = []
    writer: Any = None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for start in range(0, rows, BLOCK):
            n = min(BLOCK, rows - start)
            y = rng.integers(0, CLASSES, n)
            x = centres[y] + rng.normal(0.0, 1.0, (n, NUMERIC))
            draw = rng.random(n)
            flip = draw < FLIP_RATE
            outlier = (draw >= FLIP_RATE) & (draw < FLIP_RATE + OUTLIER_RATE)
            x[outlier] = x.mean(axis=0) + 5.0 * x.std(axis=0) * rng.normal(
                0.0, 1.0, (int(outlier.sum()), NUMERIC)
            )
            given = y.copy()
            given[flip] = (y[flip] + rng.integers(1, CLASSES, int(flip.sum()))) % CLASSES
            given[outlier] = rng.integers(0, CLASSES, int(outlier.sum()))  # injected points, random labels
            low = FLIP_RATE + OUTLIER_RATE
            # Drawn on every row and kept on the other classes' rows, so the trigger holds about 3/4 of RATE.
            trigger = (draw >= low) & (draw < low + backdoor / 0.75) & (y != 0)
            x[np.ix_(trigger, TRIGGER_COLUMNS)] = TRIGGER_VALUE
            given[trigger] = 0
            columns: dict[str, Any] = {f"x{j}": np.round(x[:, j], 5) for j in range(NUMERIC)}
            for k, values in enumerate(levels):
                # The first categorical column depends on the class; the others are noise.
                codes = (
                    (y + rng.integers(0, 2, n)) % len(values) if k == 0 else rng.integers(0, len(values), n)
                )
                columns[f"c{k}"] = np.asarray(values, dtype=object)[codes]
            columns["label"] = np.asarray([f"class_{c}" for c in range(CLASSES)], dtype=object)[given]
            table = pa.table(columns)
            if writer is None:
                writer = pacsv.CSVWriter(path, table.schema)
            writer.write_table(table)
            flips.append(start + np.flatnonzero(flip))
            outliers.append(start + np.flatnonzero(outlier))
            stamped.append(start + np.flatnonzero(trigger))
    finally:
        if writer is not None:
            writer.close()
    return {
        "flips": np.concatenate(flips),
        "outliers": np.concatenate(outliers),
        "backdoor": np.concatenate(stamped),
    }


class PeakRss:
    """Samples the resident memory of this process and its children every 100 ms (needs psutil)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def precision_recall(flagged: set[int], truth: set[int]) -> tuple[float, float]:
    """Precision and recall of a set of flagged rows against the injected rows."""
    hit = len(flagged & truth)
    return hit / max(len(flagged), 1), hit / max(len(truth), 1)


def main() -> None:
    """Generate (once) and audit; print a JSON record of the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--backend", default="local", choices=("local", "ray"))
    parser.add_argument("--channels", default="label,backdoor,outlier,integrity")
    parser.add_argument("--backdoor", type=float, default=0.0, help="share of rows carrying a trigger")
    args = parser.parse_args()

    from bastion.data.audit.base import BACKDOOR, LABEL, OUTLIER, AuditOptions
    from bastion.data.audit.stream import stream_audit

    suffix = f"_backdoor{args.backdoor:g}" if args.backdoor else ""
    path = WORK / f"poisoned_{args.rows}{suffix}.csv"
    truth_path = path.with_suffix(".truth.npz")
    if not path.exists() or not truth_path.exists():
        started = time.perf_counter()
        truth = generate(path, args.rows, backdoor=args.backdoor)
        np.savez(truth_path, **truth)
        print(
            f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s"
        )
    with np.load(truth_path) as saved:
        flips, outliers = set(saved["flips"].tolist()), set(saved["outliers"].tolist())
        stamped = set(saved["backdoor"].tolist()) if "backdoor" in saved else set()
    options = AuditOptions(channels=tuple(c.strip() for c in args.channels.split(",") if c.strip()))
    started = time.perf_counter()
    cpu_before = _cpu_seconds()
    with PeakRss() as rss:
        result = stream_audit(
            path,
            "label",
            options=options,
            chunk_rows=args.chunk_rows,
            backend=args.backend,
            workers=args.workers,
        )
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before

    def flagged(channel: str) -> set[int]:
        return {f.row for f in result.channels[channel].flags} if channel in result.channels else set()

    label_rows, outlier_rows, backdoor_rows = flagged(LABEL), flagged(OUTLIER), flagged(BACKDOOR)
    removed = set(result.removed_rows)
    poison = flips | outliers | stamped
    record = {
        "file": str(path),
        "file_mb": round(path.stat().st_size / 1e6),
        "rows": result.n_rows,
        "columns": NUMERIC + CATEGORICAL + 1,
        "workers": args.workers,
        "backend": args.backend,
        "chunk_rows": args.chunk_rows,
        "channels": list(options.channels),
        "wall_s": round(wall, 1),
        # On a shared machine the wall time includes waiting for the cores; CPU seconds of the whole
        # process tree divided by the cores used is the wall time on an otherwise idle machine.
        "cpu_s_tree": round(cpu, 1),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "peak_rss_tree_mb": round(rss.peak / 2**20),
        "maxrss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "maxrss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "label_flips_pr": [round(v, 3) for v in precision_recall(label_rows, flips)],
        # Outliers carry random labels, so the label channel rightly flags most of them too.
        "label_vs_all_poison_pr": [round(v, 3) for v in precision_recall(label_rows, flips | outliers)],
        "outliers_pr": [round(v, 3) for v in precision_recall(outlier_rows, outliers)],
        "backdoor_rows": len(stamped),
        "backdoor_pr": [round(v, 3) for v in precision_recall(backdoor_rows, stamped)],
        "all_poison_pr": [round(v, 3) for v in precision_recall(removed, poison)],
        "flagged_rows": len(result.rows),
    }
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
