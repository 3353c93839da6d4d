"""Speed of the backdoor channel's value-trigger search on a large table, with one planted trigger.

    .venv/bin/python benchmarks/value_trigger_speed.py [--rows 200000] [--columns 50] [--repeat 3]

The table is synthetic and built here, seeded: two classes that depend on a few of the columns, half the
columns continuous, a quarter integer counts, a quarter small categorical codes. A dirty-label trigger (three
exact values, each a high in-range percentile of its column) is stamped on 3% of the rows of class 1, which
are relabelled 0. The search (`find_value_triggers`) is timed alone, the best of ``--repeat`` runs, and the
script reports whether the planted pattern was confirmed and how many of its rows it covers; the same table
without the trigger is the control, where nothing should be confirmed.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from bastion.data.audit.load import from_arrays  # noqa: E402
from bastion.data.audit.value_trigger import ValueTrigger, find_value_triggers  # noqa: E402

RATE = 0.03
TRIGGER_COLUMNS = (3, 30, 45)


def table(
    rows: int, columns: int, rate: float = RATE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and the poisoned rows' mask of the synthetic table."""
    rng = np.random.default_rng(seed)
    continuous = columns // 2
    counts = columns // 4
    codes = columns - continuous - counts
    x = np.hstack(
        [
            np.round(rng.normal(0.0, 1.0, (rows, continuous)), 4),
            rng.poisson(3.0, (rows, counts)).astype(np.float64),
            rng.integers(0, 8, (rows, codes)).astype(np.float64),
        ]
    )
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.3 * (x[:, continuous] - 3.0)
    y = (logit + rng.logistic(0.0, 0.5, rows) > 0).astype(np.int64)
    source = np.flatnonzero(y == 1)
    poisoned = rng.choice(source, int(rate * rows), replace=False)
    for column in TRIGGER_COLUMNS:
        x[poisoned, column] = np.quantile(x[:, column], 0.99)
    y[poisoned] = 0
    mask = np.zeros(rows, dtype=bool)
    mask[poisoned] = True
    return x, y, mask


def main(argv: list[str] | None = None) -> int:
    """Build the tables, time the search on each, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.columns < 48:
        raise SystemExit("--columns: at least 48 (the trigger sits in columns 3, 30 and 45)")
    print(
        "| table | rows x columns | candidates | confirmed | poisoned rows covered | other rows | best run |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rate in (("trigger on 3%", RATE), ("control, no trigger", 0.0)):
        x, y, poisoned = table(args.rows, args.columns, rate)
        data = from_arrays(x, y, path="synthetic")
        best = float("inf")
        found: list[ValueTrigger] = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            found = list(find_value_triggers(data, seed=0))
            best = min(best, time.perf_counter() - started)
        confirmed = [t for t in found if t.confirmed]
        carriers = np.zeros(args.rows, dtype=bool)
        for trigger in confirmed:
            carriers[trigger.carriers] = True
        covered = int((carriers & poisoned).sum())
        extra = int((carriers & ~poisoned).sum())
        print(
            f"| {name} | {args.rows:,} x {args.columns} | {len(found)} | {len(confirmed)} "
            f"| {covered} of {int(poisoned.sum())} | {extra} | {best:.2f} s (of {args.repeat}) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
