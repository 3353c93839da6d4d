"""Tuning harness of the outlier channel's image choices, on TUNING data only.

    python benchmarks/tune_outlier.py [--line | --feature]

Images: MNIST rows 0..2499 (the 70% training split of ``tune_backdoor.load("mnist_tune")``) and the same
split reduced to 8x8 by averaging 4x4 blocks (the size of scikit-learn's digits), clean and with injected
noise images at 5% and 10% (``poison_attacks.outliers`` clipped to the pixel range, three seeds). Per run:
the forest's robust z on clean and injected rows, then the rows found / other rows flagged with the table
settings (forest cut 6, no residual) and with the image settings (forest cut 4.5, off-manifold residual).

Tables: the residual score fitted on tuning tables (clean, and with injected points at 5% and 10%) as if
they were images, and what it would add to the table settings. Then the forest's absolute line
(``outlier.ANOMALY_LINE``): rows past the robust-z cut with and without it, on more tuning tables and two
seeds (``--line`` runs this part alone). Last, the per-feature score's absolute line
(``outlier.FEATURE_LINE``): rows the whole channel flags with and without it, and at other lines, on the
same tables and seeds (``--feature`` runs this part alone).

The evaluation sets of ``poisoning.py`` are never loaded.
"""

from __future__ import annotations

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
import tune_backdoor as tb  # noqa: E402

TABLES = ("default", "wa_churn", "creditcard", "attrition", "taxi")


def _reduced(x: Any) -> Any:
    """28x28 images padded to 32x32 and averaged over 4x4 blocks: 8x8, as digits are made."""
    images = np.pad(np.asarray(x).reshape(len(x), 28, 28), ((0, 0), (2, 2), (2, 2)))
    return images.reshape(len(x), 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(x), 64)


def _found(flagged: Any, poison: Any) -> str:
    return f"{int((flagged & poison).sum())} / {int((flagged & ~poison).sum())}"


def images() -> None:
    """Forest scores and rows flagged with the table and the image settings, per image set and attack."""
    from bastion.data.audit import outlier

    ds = tb.load("mnist_tune", 0)
    print("| images | attack | seed | forest z clean max | forest z injected min-median |", end="")
    print(" table settings: found / other | image settings: found / other |")
    print("|---|---|---|---|---|---|---|")
    for name, x in (("28x28", ds.x_train), ("8x8", _reduced(ds.x_train))):
        for rate in (0.0, 0.05, 0.10):
            for seed in (0, 1, 2) if rate else (0,):
                rng = np.random.default_rng([seed, 13, int(rate * 100)])
                poisoned = pa.outliers(x, ds.y_train, rate, ds.n_classes, rng, clip=(0.0, 1.0))
                features, poison = poisoned.features, poisoned.poison
                table = outlier.fit_outlier_model(features, 0)
                image = outlier.fit_outlier_model(features, 0, image=True)
                forest_z, _ = table.parts(features)
                injected = (
                    f"{forest_z[poison].min():.1f}-{np.median(forest_z[poison]):.1f}" if poison.any() else "-"
                )
                print(
                    f"| {name} | outlier@{rate:.2f} | {seed} | {forest_z[~poison].max():.1f} | {injected} "
                    f"| {_found(table.score(features) >= table.cut, poison)} "
                    f"| {_found(image.score(features) >= image.cut, poison)} |",
                    flush=True,
                )


def tables() -> None:
    """The residual score on tuning tables as if they were images: what it would add to the table settings."""
    from bastion.data.audit import outlier

    print("\n| table | attack | columns | table settings: found / other | with the residual: found / other |")
    print("|---|---|---|---|---|")
    for name in TABLES:
        ds = tb.load(name, 0)
        for rate in (0.0, 0.05, 0.10):
            rng = np.random.default_rng([0, 13, int(rate * 100)])
            poisoned = pa.outliers(ds.x_train, ds.y_train, rate, ds.n_classes, rng)
            data = tb.audit_data(ds, poisoned.features, poisoned.labels)
            features = np.asarray(data.features, dtype=np.float64)
            indicators = data.encoder.indicator_columns() if data.encoder is not None else []
            model = outlier.fit_outlier_model(features, 0, indicators)
            flagged = model.score(features) >= model.cut
            residual = outlier.fit_residual_model(features, 0)
            added = flagged | (residual.z(features) >= outlier.RESIDUAL_CUT)
            print(
                f"| {name} | outlier@{rate:.2f} | {features.shape[1]} | {_found(flagged, poisoned.poison)} "
                f"| {_found(added, poisoned.poison)} |",
                flush=True,
            )


LINE_TABLES = (*TABLES, "lending_club", "mlc_churn", "caravan", "stackoverflow")


def _line_runs() -> Iterator[tuple[str, int, float, Any, Any, Any]]:
    """Per LINE_TABLES table, seed 0 and 1, and injected share: the features, the poison mask and the fit."""
    from bastion.data.audit import outlier

    for name in LINE_TABLES:
        for seed in (0, 1):
            ds = tb.load(name, seed)
            for rate in (0.0, 0.05, 0.10):
                rng = np.random.default_rng([seed, 13, int(rate * 100)])
                poisoned = pa.outliers(ds.x_train, ds.y_train, rate, ds.n_classes, rng)
                data = tb.audit_data(ds, poisoned.features, poisoned.labels)
                features = np.asarray(data.features, dtype=np.float64)
                indicators = data.encoder.indicator_columns() if data.encoder is not None else []
                model = outlier.fit_outlier_model(features, seed, indicators)
                yield name, seed, rate, features, poisoned.poison, model


def forest_line() -> None:
    """Injected points found / other rows past the forest's robust-z cut, alone and with the absolute line."""
    from bastion.data.audit import outlier

    print("\n| table | attack | seed | forest robust scale ", end="")
    print("| robust z alone: found / other | with the line: found / other |")
    print("|---|---|---|---|---|---|")
    totals: dict[float, list[int]] = {}
    for name, seed, rate, features, poison, model in _line_runs():
        raw = -np.asarray(model.forest.score_samples(features), dtype=np.float64)
        alone = (raw - model.forest_median) / model.forest_scale >= model.forest_cut
        lined = alone & (raw > outlier.ANOMALY_LINE)
        for column, flagged in enumerate((alone, lined)):
            sums = totals.setdefault(rate, [0, 0, 0, 0])
            sums[2 * column] += int((flagged & poison).sum())
            sums[2 * column + 1] += int((flagged & ~poison).sum())
        cells = f"{model.forest_scale:.4f} | {_found(alone, poison)} | {_found(lined, poison)}"
        print(f"| {name} | outlier@{rate:.2f} | {seed} | {cells} |", flush=True)
    for rate, (a_found, a_other, l_found, l_other) in sorted(totals.items()):
        print(f"| all | outlier@{rate:.2f} | 0, 1 | - | {a_found} / {a_other} | {l_found} / {l_other} |")


FEATURE_LINES = (0.0, 3.0, 4.0, 5.0, 6.0)


def feature_line() -> None:
    """Injected points found / other rows the channel flags, per line of the per-feature score (0: none)."""
    from bastion.data.audit import outlier

    chosen = outlier.FEATURE_LINE
    lines = ", ".join(f"line {line:g}" for line in FEATURE_LINES)
    print(f"\n| table | attack | seed | found / other rows flagged at {lines} |")
    print("|---|---|---|---|")
    totals: dict[tuple[float, float], list[int]] = {}
    try:
        for name, seed, rate, features, poison, model in _line_runs():
            cells = []
            for line in FEATURE_LINES:
                outlier.FEATURE_LINE = line
                flagged = model.score(features) >= model.cut
                sums = totals.setdefault((rate, line), [0, 0])
                sums[0] += int((flagged & poison).sum())
                sums[1] += int((flagged & ~poison).sum())
                cells.append(_found(flagged, poison))
            print(f"| {name} | outlier@{rate:.2f} | {seed} | {' ; '.join(cells)} |", flush=True)
    finally:
        outlier.FEATURE_LINE = chosen
    for rate in (0.0, 0.05, 0.10):
        cells = [f"{totals[(rate, line)][0]} / {totals[(rate, line)][1]}" for line in FEATURE_LINES]
        print(f"| all | outlier@{rate:.2f} | 0, 1 | {' ; '.join(cells)} |")


def main() -> int:
    """Run every part, or ``--line`` or ``--feature`` alone."""
    if sys.argv[1:] == ["--line"]:
        forest_line()
        return 0
    if sys.argv[1:] == ["--feature"]:
        feature_line()
        return 0
    images()
    tables()
    forest_line()
    feature_line()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
