"""Build the `make demo` data set: scikit-learn's digits as a CSV, poisoned through one of three feeds.

``train.csv`` has 64 pixel columns, a ``label`` and a ``source`` column. The ``vendor-c`` feed carries the
poison: 5% of all rows get a flipped label and 3% carry a 2x2 white corner patch relabelled as 0 (a
dirty-label backdoor). ``holdout.csv`` is a clean, trusted split for ``sanitize --validate``, and
``truth.json`` lists the poisoned rows so that the demo can show what the audit found.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

PATCH = (0, 1, 8, 9)  # pixels of the top-left 2x2 corner of an 8x8 image
FEEDS = ("vendor-a", "vendor-b", "vendor-c")


def build(out: Path, seed: int = 0) -> dict[str, list[int]]:
    """Write train.csv, holdout.csv and truth.json under ``out``; return the poisoned row numbers."""
    digits = load_digits()
    x_train, x_hold, y_train, y_hold = train_test_split(
        digits.data, digits.target, test_size=0.25, stratify=digits.target, random_state=seed
    )
    rng = np.random.default_rng(seed)
    n = len(y_train)
    sources = rng.choice(FEEDS, size=n)
    vendor_c = np.flatnonzero(sources == "vendor-c")
    chosen = rng.permutation(vendor_c)
    flips = np.sort(chosen[: int(0.05 * n)])
    backdoor = np.sort(chosen[int(0.05 * n) : int(0.05 * n) + int(0.03 * n)])
    y_poisoned = y_train.copy()
    y_poisoned[flips] = (y_train[flips] + rng.integers(1, 10, len(flips))) % 10
    x_poisoned = x_train.copy()
    x_poisoned[np.ix_(backdoor, PATCH)] = 16.0
    y_poisoned[backdoor] = 0
    columns = [f"p{i}" for i in range(64)]
    out.mkdir(parents=True, exist_ok=True)
    train = pd.DataFrame(x_poisoned.astype(int), columns=columns)
    train["label"] = y_poisoned
    train["source"] = sources
    train.to_csv(out / "train.csv", index=False)
    holdout = pd.DataFrame(x_hold.astype(int), columns=columns)
    holdout["label"] = y_hold
    holdout.to_csv(out / "holdout.csv", index=False)
    truth = {"label_flips": flips.tolist(), "backdoor": backdoor.tolist()}
    (out / "truth.json").write_text(json.dumps(truth) + "\n", encoding="utf-8")
    return truth


def check(out: Path, report: Path) -> str:
    """One line comparing an audit report's quarantined rows with the rows that were poisoned."""
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    rows = json.loads(report.read_text(encoding="utf-8"))["rows"]
    flagged = {r["row"] for r in rows if r["quarantine"]}
    flips, backdoor = set(truth["label_flips"]), set(truth["backdoor"])
    others = len(flagged - flips - backdoor)
    return (
        f"the audit quarantines {len(flagged & backdoor)}/{len(backdoor)} backdoor rows and "
        f"{len(flagged & flips)}/{len(flips)} flipped labels, plus {others} clean rows"
    )


def main() -> None:
    """Command-line entry: build the demo data set, or compare an audit report with what was injected."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", type=Path, metavar="AUDIT_JSON", help="compare this report with truth")
    args = parser.parse_args()
    if args.check is not None:
        print(check(args.out, args.check))
        return
    truth = build(args.out)
    print(
        f"wrote {args.out}/train.csv: {len(truth['label_flips'])} flipped labels and "
        f"{len(truth['backdoor'])} backdoor rows injected through feed vendor-c"
    )


if __name__ == "__main__":
    main()
