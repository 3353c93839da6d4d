"""Pool seeds of the poisoning benchmark: how much of each row is the seed, and the targets on the means.

    python benchmarks/poisoning.py --seed 1 --json benchmarks/.work/seed1.json     (one run per seed)
    python benchmarks/poisoning_seeds.py benchmarks/.work/seed0.json benchmarks/.work/seed1.json ...

A seed changes everything that is drawn at random in a run: the train/test split, which rows are poisoned,
the victim's initialisation and every detector's own seed. One run's F1 on a row can move by a few hundredths
from seed to seed, so a margin of 0.01 between two detectors on one seed says little. This prints, per row,
each detector's F1 (mean over datasets) as the mean and the spread over the seeds, how often Bastion was
behind the best anchor, and the issue's targets read on the means over seeds.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from poisoning import ANCHORS, DETECTORS, _mean

OUTCOME_KEYS = {"dataset", "attack", "rate", "detector", "f1", "asr"}


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v == v]


def load_runs(paths: Sequence[Path]) -> list[list[dict[str, Any]]]:
    """Each file's outcomes (the list ``poisoning.py --json`` writes)."""
    runs: list[list[dict[str, Any]]] = []
    for path in paths:
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: not a poisoning.py --json output ({exc})") from None
        if not isinstance(run, list) or not all(
            isinstance(o, dict) and o.keys() >= OUTCOME_KEYS for o in run
        ):
            raise SystemExit(f"{path}: not a poisoning.py --json output (expected a list of outcomes)")
        runs.append(run)
    return runs


def dataset_means(run: list[dict[str, Any]]) -> dict[tuple[str, float, str], float]:
    """(attack, rate, detector) -> F1 averaged over the run's datasets."""
    pooled: dict[tuple[str, float, str], list[float]] = defaultdict(list)
    for o in run:
        pooled[(o["attack"], float(o["rate"]), o["detector"])].append(float(o["f1"]))
    return {key: _mean(values) for key, values in pooled.items()}


def render(runs: list[list[dict[str, Any]]]) -> str:
    """The pooled tables and the targets on the means over seeds, as Markdown."""
    means = [dataset_means(run) for run in runs]
    scenarios = sorted({(a, r) for m in means for (a, r, _) in m if a != "clean"})
    out = [
        f"#### F1 (mean over datasets): mean over {len(runs)} seeds, min-max in brackets\n",
        "| attack@rate | " + " | ".join(DETECTORS) + " | seeds with an anchor ahead |",
        "|---|" + "---|" * (len(DETECTORS) + 1),
    ]
    behind_on_means: list[str] = []
    for attack, rate in scenarios:
        cells = []
        per_seed = {d: [m.get((attack, rate, d), float("nan")) for m in means] for d in DETECTORS}
        for det in DETECTORS:
            vals = _finite(per_seed[det])
            cells.append(f"{_mean(vals):.3f} ({min(vals):.2f}-{max(vals):.2f})" if vals else "n/a")
        ahead = 0
        for i in range(len(runs)):
            best = max(_finite([per_seed[a][i] for a in ANCHORS]), default=float("nan"))
            ahead += int(best > per_seed["bastion"][i] + 1e-9)
        out.append(f"| {attack}@{rate:.2f} | " + " | ".join(cells) + f" | {ahead} of {len(runs)} |")
        ours = _mean(per_seed["bastion"])
        for anchor in ANCHORS:
            theirs = _mean(per_seed[anchor])
            if theirs == theirs and theirs > ours + 1e-9:
                behind_on_means.append(f"{anchor} {theirs:.3f} > bastion {ours:.3f} on {attack}@{rate:.2f}")
    out += ["", *targets(runs), ""]
    out.append(
        f"{'PASS' if not behind_on_means else 'FAIL'}: no anchor ahead of Bastion on any row (mean F1 over "
        "datasets and seeds)" + ("" if not behind_on_means else ": " + "; ".join(behind_on_means))
    )
    return "\n".join(out) + "\n"


def _pick(run: list[dict[str, Any]], name: str, attack: str, rate: float, det: str) -> dict[str, Any] | None:
    for o in run:
        if (o["dataset"], o["attack"], float(o["rate"]), o["detector"]) == (name, attack, rate, det):
            return o
    return None


def _line(name: str, row: str, values: list[float], digits: int) -> str:
    cells = " | ".join(f"{v:.{digits}f}" for v in values)
    return f"| {name} | {row} | {cells} | {_mean(values):.{digits}f} |"


def targets(runs: list[list[dict[str, Any]]]) -> list[str]:
    """Random flips at 10% per dataset, and the backdoor rows with the oracle's ASR beside Bastion's."""
    seeds = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [
        "#### Per dataset, each run in turn\n",
        f"| dataset | row | {seeds} | mean |",
        "|---|---|" + "---|" * (len(runs) + 1),
    ]
    nan = float("nan")
    for name in sorted({o["dataset"] for run in runs for o in run}):
        f1s = [o["f1"] if (o := _pick(run, name, "random", 0.10, "bastion")) else nan for run in runs]
        lines.append(_line(name, "F1 random flips 10%", f1s, 2))
        for rate in (0.03, 0.10):
            for det, label in (("oracle", "oracle ASR %"), ("bastion", "Bastion ASR %")):
                asrs = [
                    100 * o["asr"] if (o := _pick(run, name, "backdoor", rate, det)) else nan for run in runs
                ]
                lines.append(_line(name, f"backdoor {rate:.2f}, {label}", asrs, 1))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Read the JSON files named on the command line and print the pooled tables."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(
            "usage: poisoning_seeds.py RUN.json RUN.json [...] (two or more poisoning.py --json outputs)",
            file=sys.stderr,
        )
        return 2
    print(render(load_runs([Path(a) for a in args])), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
