"""The streaming audit finds injected flips, outliers and cross-chunk duplicates, on every backend."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.data.audit import stream
from bastion.data.audit.base import BACKDOOR, INTEGRITY, LABEL, OUTLIER, AuditOptions
from bastion.data.audit.run import AuditResult
from bastion.data.audit.stream import iter_chunks, stream_audit
from bastion.errors import InputError, UsageError

ROWS = 20_000
CHUNK = 2_000
OPTIONS = AuditOptions(channels=(LABEL, OUTLIER, INTEGRITY))


def _poisoned(
    rows: int = ROWS, seed: int = 0
) -> tuple[pd.DataFrame, set[int], set[int], list[tuple[int, int]]]:
    """Three well-separated classes; 3% flipped labels, 0.5% outliers, copies across chunk boundaries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (3, 8))
    y = rng.integers(0, 3, rows)
    x = centres[y] + rng.normal(0.0, 1.0, (rows, 8))
    frame = pd.DataFrame(np.round(x, 6), columns=[f"x{i}" for i in range(8)])
    frame["colour"] = np.where(y == 0, "red", rng.choice(["green", "blue"], rows))
    names = np.array(["cat", "dog", "eel"], dtype=object)
    labels = names[y]
    order = rng.permutation(rows)
    flips = np.sort(order[: rows * 3 // 100])
    outliers = np.sort(order[rows * 3 // 100 : rows * 3 // 100 + rows // 200])
    labels[flips] = names[(y[flips] + rng.integers(1, 3, flips.size)) % 3]
    frame.iloc[outliers, :8] = np.round(
        x.mean(0) + 5.0 * x.std(0) * rng.normal(0.0, 1.0, (outliers.size, 8)), 6
    )
    frame["label"] = labels
    # Exact copies of an earlier row, placed in another chunk; chosen among rows that are not poisoned.
    clean = np.setdiff1d(np.arange(rows), np.concatenate([flips, outliers]))
    copies = [
        (int(clean[clean < CHUNK][-1]), int(clean[clean >= CHUNK][0])),  # the two sides of one boundary
        (int(clean[10]), int(clean[clean >= rows // 3][0])),
        (int(clean[20]), int(clean[clean >= rows - CHUNK // 2][0])),
    ]
    for source, target in copies:
        frame.iloc[target] = frame.iloc[source]
    return frame, set(flips.tolist()), set(outliers.tolist()), copies


@pytest.fixture(scope="module")
def poisoned_csv(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, set[int], set[int], list[tuple[int, int]]]:
    frame, flips, outliers, copies = _poisoned()
    path = tmp_path_factory.mktemp("stream") / "poisoned.csv"
    frame.to_csv(path, index=False)
    return path, flips, outliers, copies


@pytest.fixture(scope="module")
def serial(poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]]) -> AuditResult:
    return stream_audit(poisoned_csv[0], "label", options=OPTIONS, chunk_rows=CHUNK, workers=1)


def _signature(result: AuditResult) -> list[tuple[int, tuple[str, ...], float]]:
    return [(r.row, tuple(r.channels), round(r.score, 9)) for r in result.rows]


def test_flips_found_with_global_rows(
    poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]], serial: AuditResult
) -> None:
    _, flips, _, _ = poisoned_csv
    flagged = {f.row for f in serial.channels[LABEL].flags if f.check != "conflicting-duplicate"}
    hit = len(flagged & flips)
    assert hit / len(flips) >= 0.9
    assert hit / len(flagged) >= 0.9
    # Rows past the first chunk are numbered globally: flips in the last chunk are found at their rows.
    late = {r for r in flips if r >= ROWS - CHUNK}
    assert late
    assert len(late & flagged) / len(late) >= 0.8
    flag = next(f for f in serial.channels[LABEL].flags if f.row in flips)
    assert flag.suggested_label in ("cat", "dog", "eel")
    assert "label" in flag.reason


def test_outliers_found(
    poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]], serial: AuditResult
) -> None:
    _, _, outliers, _ = poisoned_csv
    flagged = {f.row for f in serial.channels[OUTLIER].flags}
    assert len(flagged & outliers) / len(outliers) >= 0.95
    assert len(flagged - outliers) <= 0.01 * ROWS


def test_duplicates_across_chunk_boundaries(
    poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]], serial: AuditResult
) -> None:
    _, _, _, copies = poisoned_csv
    assert copies
    exact = {f.row: f for f in serial.channels[INTEGRITY].flags if f.check == "exact-duplicate"}
    for source, target in copies:
        assert target in exact
        assert str(source) in exact[target].reason
        assert source // CHUNK != target // CHUNK


def test_process_pool_matches_serial(
    poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]], serial: AuditResult
) -> None:
    pooled = stream_audit(poisoned_csv[0], "label", options=OPTIONS, chunk_rows=CHUNK, workers=2)
    assert _signature(pooled) == _signature(serial)
    assert pooled.n_rows == ROWS


def test_ray_matches_serial(
    poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]], serial: AuditResult
) -> None:
    ray = pytest.importorskip("ray")
    with warnings.catch_warnings():
        # Ray's start-up warns about its own environment (e.g. /dev/shm size, deprecated options); none of
        # it concerns the audit.
        warnings.simplefilter("ignore")
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            result = stream_audit(
                poisoned_csv[0], "label", options=OPTIONS, chunk_rows=CHUNK * 5, backend="ray", workers=1
            )
        finally:
            ray.shutdown()
    # Another chunk size, another backend: every row is scored alike, so the result is the same.
    assert _signature(result) == _signature(serial)


def test_chunks_have_fixed_size(poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]]) -> None:
    chunks = list(iter_chunks(poisoned_csv[0], 7_000))
    assert [c.num_rows for c in chunks] == [7_000, 7_000, 6_000]


def test_drift_against_reference(tmp_path: Path) -> None:
    frame, _, _, _ = _poisoned(6_000, seed=1)
    reference = tmp_path / "reference.csv"
    frame.to_csv(reference, index=False)
    shifted = frame.copy()
    shifted["x0"] = shifted["x0"] + 3.0
    current = tmp_path / "current.parquet"
    shifted.to_parquet(current)
    result = stream_audit(current, "label", reference=reference, options=OPTIONS, chunk_rows=1_000, workers=1)
    drift = result.channels[INTEGRITY].summary["drift"]
    assert drift["drifted"] == ["x0"]
    assert any(f.rule_id == "BST-DATA-007" and "x0" in f.message for f in result.findings)


def test_sources_summarised(tmp_path: Path) -> None:
    frame, flips, _, _ = _poisoned(6_000, seed=2)
    frame["feed"] = "a"
    frame.loc[list(flips), "feed"] = "b"
    frame.loc[frame.index[:300], "feed"] = "b"
    path = tmp_path / "fed.csv"
    frame.to_csv(path, index=False)
    result = stream_audit(path, "label", source_column="feed", options=OPTIONS, chunk_rows=1_000, workers=1)
    by_source = {s["source"]: s for s in result.sources}
    assert by_source["b"]["skewed"]
    assert not by_source["a"]["skewed"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty"),
        ("header.csv", "a,b,label\n", "no rows"),
        ("nolabel.csv", "a,b\n1,2\n3,4\n", "no label column 'label'"),
        ("single.csv", "a,b,label\n1,2,x\n3,4,x\n5,6,x\n", "single class"),
        ("blank.csv", "a,b,label\n1,2,x\n3,4,\n5,6,y\n", "label column 'label' is empty on 1 rows .*row 1"),
    ],
)
def test_bad_input(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        stream_audit(_write(tmp_path / name, content), "label", options=OPTIONS, workers=1)


def test_unreadable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"a,label\n" + b"\xff\xfe\x00\x01,\x80\x81\n" * 50)
    with pytest.raises(InputError) as caught:
        stream_audit(path, "label", options=OPTIONS, workers=1)
    assert "\n" not in str(caught.value)


def test_mixed_types_named(tmp_path: Path) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 7},{'x' if i % 2 else 'y'}" for i in range(3_000)]
    rows[2_500] = "oops,3,x"
    path = _write(tmp_path / "mixed.csv", "\n".join(rows) + "\n")
    with pytest.raises(InputError, match="'a'"):
        stream_audit(path, "label", options=OPTIONS, chunk_rows=500, workers=1)


def test_nans_imputed(tmp_path: Path) -> None:
    frame, flips, _, _ = _poisoned(4_000, seed=3)
    frame.loc[frame.index[::7], "x1"] = np.nan
    frame.loc[frame.index[::11], "colour"] = None
    path = tmp_path / "nans.csv"
    frame.to_csv(path, index=False)
    result = stream_audit(path, "label", options=OPTIONS, chunk_rows=1_000, workers=1)
    flagged = {f.row for f in result.channels[LABEL].flags}
    assert len(flagged & flips) / len(flips) >= 0.8


def test_bad_backend(poisoned_csv: tuple[Path, set[int], set[int], list[tuple[int, int]]]) -> None:
    with pytest.raises(UsageError, match="backend"):
        stream_audit(poisoned_csv[0], "label", options=OPTIONS, backend="spark")


def test_half_flip_keeps_the_relabelled_class_rows(tmp_path: Path) -> None:
    # Half of ant relabelled bee, ant and bee overlapping: as in memory, the pair is read from the class
    # that keeps its own region, and the genuine ant rows are not flagged.
    rng = np.random.default_rng(0)
    sizes = (600, 1200, 900, 900)
    centres = [
        np.zeros(8),
        np.r_[2.0, np.zeros(7)],
        np.r_[0.0, 8.0, np.zeros(6)],
        np.r_[0.0, -8.0, np.zeros(6)],
    ]
    x = np.vstack([rng.normal(c, 1.0, (n, 8)) for c, n in zip(centres, sizes, strict=True)])
    y = np.repeat(np.arange(4), sizes)
    noisy = y.copy()
    noisy[rng.choice(np.flatnonzero(y == 0), 300, replace=False)] = 1
    frame = pd.DataFrame(np.round(x, 6), columns=[f"x{i}" for i in range(8)])
    frame["label"] = np.array(["ant", "bee", "cat", "dog"])[noisy]
    path = tmp_path / "half.csv"
    frame.to_csv(path, index=False)
    result = stream_audit(path, "label", options=AuditOptions(channels=(LABEL,)), chunk_rows=1000, workers=1)
    channel = result.channels[LABEL]
    flagged = {f.row for f in channel.flags}
    flipped = set(np.flatnonzero(noisy != y).tolist())
    assert channel.summary["dominant_pair"] == {"given": "bee", "suggested": "ant"}
    # Eight columns: narrow, so only boosting is fitted.
    assert channel.summary["model"] == "hist-gradient-boosting"
    assert channel.summary["model_log_loss"] is None
    assert len(flagged & flipped) >= 0.6 * len(flagged)
    assert sum(noisy[row] == 0 for row in flagged) <= 0.1 * len(flagged)


def _backdoored(rows: int, poison: int, seed: int = 0) -> tuple[pd.DataFrame, set[int]]:
    """Two classes from a noisy rule; ``poison`` minority rows get the 99th percentile of x2 and x5 and the
    majority label (a dirty-label trigger), spread over the whole file."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    score = 1.6 * x[:, 0] - 1.2 * x[:, 1] + 0.8 * x[:, 3] + rng.normal(scale=0.5, size=rows)
    y = (score > np.quantile(score, 0.8)).astype(np.int64)
    stamped = np.sort(rng.choice(np.flatnonzero(y == 1), poison, replace=False))
    for column in (2, 5):
        x[stamped, column] = np.quantile(x[:, column], 0.99)
    y[stamped] = 0
    frame = pd.DataFrame(np.round(x, 4), columns=[f"x{i}" for i in range(8)])
    frame["label"] = np.array(["stay", "churn"])[y]
    return frame, set(stamped.tolist())


def test_backdoor_found_on_the_sample_flags_every_carrier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backdoor channel sees a 4,000-row sample of 12,000 rows; the trigger it confirms there is then
    # recognised on every row of the file, most of which the channel never saw.
    monkeypatch.setattr(stream, "BACKDOOR_SAMPLE_ROWS", 4_000)
    frame, stamped = _backdoored(12_000, 480)
    path = tmp_path / "backdoored.csv"
    frame.to_csv(path, index=False)
    result = stream_audit(
        path,
        "label",
        options=AuditOptions(channels=(LABEL, BACKDOOR)),
        chunk_rows=2_000,
        workers=1,
    )
    channel = result.channels[BACKDOOR]
    flagged = {f.row for f in channel.flags}
    assert flagged == stamped
    assert channel.summary["streamed"]["sample_rows"] == 4_000
    assert channel.summary["sample_flagged_rows"] < len(stamped)
    [finding] = channel.findings
    assert finding.severity.name == "CRITICAL"
    assert f"holds {len(stamped)} rows carrying" in finding.message
    assert "sample of 4000 rows" in finding.message
    flag = channel.flags[0]
    for text in ("label 'stay'", "x2=", "x5=", "measured on a sample"):
        assert text in flag.reason
    # With the trigger removed, the label model (fitted without the carriers) puts them back in their class.
    suggested = [f.suggested_label for f in channel.flags]
    assert suggested.count("churn") >= 0.8 * len(stamped)
    # The carriers are known poison to the label channel, as in memory: its model does not learn from
    # them, so the genuine churners they resemble are not read as a 'stay' -> 'churn' targeted flip.
    labelled = result.channels[LABEL]
    assert labelled.summary["dominant_pair"] is None
    assert not {f.row for f in labelled.flags} & stamped
    assert len(labelled.flags) < 0.02 * 12_000


def test_clean_stream_confirms_no_backdoor(tmp_path: Path) -> None:
    frame, _ = _backdoored(12_000, 0, seed=1)
    path = tmp_path / "clean.csv"
    frame.to_csv(path, index=False)
    result = stream_audit(
        path,
        "label",
        options=AuditOptions(channels=(BACKDOOR,)),
        chunk_rows=2_000,
        workers=1,
        sample_rows=4_000,
    )
    assert result.channels[BACKDOOR].flags == []
    assert result.channels[BACKDOOR].findings == []


def test_backdoor_on_ray_and_the_process_pool_matches_serial(tmp_path: Path) -> None:
    # The sample's backdoor channel is submitted like any other fit, and its rules travel to the workers
    # inside the chunk state: every backend flags the same carriers.
    ray = pytest.importorskip("ray")
    frame, stamped = _backdoored(6_000, 240, seed=2)
    path = tmp_path / "backdoored.csv"
    frame.to_csv(path, index=False)
    options = AuditOptions(channels=(BACKDOOR,))
    serial = stream_audit(path, "label", options=options, chunk_rows=1_500, workers=1)
    flagged = {f.row for f in serial.channels[BACKDOOR].flags}
    assert stamped <= flagged
    assert len(flagged - stamped) <= 3  # a row may hold both values within the tolerance by chance
    pooled = stream_audit(path, "label", options=options, chunk_rows=1_500, workers=2)
    assert _signature(pooled) == _signature(serial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's start-up warnings concern its environment, not the audit
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            remote = stream_audit(path, "label", options=options, chunk_rows=3_000, backend="ray", workers=1)
        finally:
            ray.shutdown()
    assert _signature(remote) == _signature(serial)


def _logistic_two_class(offset: float) -> tuple[pd.DataFrame, np.ndarray, np.random.Generator]:
    """6,000 rows, labels 'churn'/'stay' drawn from a logistic posterior; a larger offset, a rarer 'churn'."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 4))
    p_one = 1.0 / (1.0 + np.exp(-(4.0 * x[:, 0] + 2.0 * x[:, 1] - offset)))
    y = (rng.random(x.shape[0]) < p_one).astype(np.int64)
    frame = pd.DataFrame(np.round(x, 6), columns=[f"x{i}" for i in range(4)])
    frame["label"] = np.where(y == 1, "churn", "stay")
    return frame, y, rng


def test_streamed_noise_gate_quiets_a_clean_ambiguous_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two classes drawn from a logistic posterior, no flips: as in memory, the sample's cleanest rows show
    # almost no other label, so the rows the model finds improbable are the table's own ambiguity.
    from bastion.data.audit import label

    frame, _, _ = _logistic_two_class(offset=3.0)
    path = tmp_path / "ambiguous.csv"
    frame.to_csv(path, index=False)

    def flagged() -> tuple[int, dict[str, float]]:
        result = stream_audit(
            path, "label", options=AuditOptions(channels=(LABEL,)), chunk_rows=1500, workers=1
        )
        channel = result.channels[LABEL]
        return len(channel.flags), channel.summary["noise_rates"]

    gated, rates = flagged()
    monkeypatch.setattr(label, "FLIP_POSTERIOR_MIN", 0.0)
    ungated, _ = flagged()
    assert set(rates) == {"churn -> stay", "stay -> churn"}
    assert max(rates.values()) < 4.0
    assert gated <= 0.5 * ungated


def test_streamed_audit_finds_a_half_relabelled_minority_by_its_flip_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in memory: half of a 10% minority relabelled as the majority. The sample's surest minority rows
    # carry the majority label about 64% of the time, which makes the flipped rows likely flips.
    from bastion.data.audit import label

    frame, y, rng = _logistic_two_class(offset=6.0)
    minority = np.flatnonzero(y == 1)
    flipped = set(rng.choice(minority, minority.size // 2, replace=False).tolist())
    frame.loc[sorted(flipped), "label"] = "stay"
    path = tmp_path / "half.csv"
    frame.to_csv(path, index=False)

    def found() -> tuple[int, dict[str, float], list[str]]:
        result = stream_audit(
            path, "label", options=AuditOptions(channels=(LABEL,)), chunk_rows=1500, workers=1
        )
        channel = result.channels[LABEL]
        rows = {f.row for f in channel.flags}
        return len(rows & flipped), channel.summary["noise_rates"], [f.reason for f in channel.flags]

    with_rule, rates, reasons = found()
    monkeypatch.setattr(label, "FLIP_LIKELY", 2.0)
    without_rule, _, _ = found()
    assert rates["churn -> stay"] > 40.0
    assert with_rule >= 0.6 * len(flipped)
    assert without_rule <= 0.35 * len(flipped)
    assert all("chance this label was flipped in is" in reason for reason in reasons)


def test_wide_stream_chooses_the_model_family_as_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 70 columns mixing a 40-dimensional latent: the label is an oblique cut through it, which a kernel on
    # principal components follows and trees approximate poorly. 200 of 4,000 labels flipped.
    from bastion.data.audit import label
    from bastion.data.audit.load import from_frame

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(4000, 40))
    x = latent @ rng.normal(size=(40, 70)) + 0.3 * rng.normal(size=(4000, 70))
    y = (latent @ rng.normal(size=40) > 0).astype(np.int64)
    flipped = rng.choice(4000, 200, replace=False)
    y[flipped] = 1 - y[flipped]
    frame = pd.DataFrame(np.round(x, 5), columns=[f"x{i}" for i in range(70)])
    frame["label"] = np.array(["inner", "outer"])[y]
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)

    def audit() -> tuple[dict[str, object], set[int]]:
        result = stream_audit(
            path, "label", options=AuditOptions(channels=(LABEL,)), chunk_rows=1000, workers=1
        )
        return result.channels[LABEL].summary, {f.row for f in result.channels[LABEL].flags}

    summary, flagged = audit()
    losses = summary["model_log_loss"]
    assert isinstance(losses, dict)
    assert summary["model"] == label.KERNEL
    assert losses[label.KERNEL] < losses[label.BOOSTING]
    assert label.label_evidence(from_frame(frame, "label"), AuditOptions()).model == label.KERNEL
    hits = flagged & set(flipped.tolist())
    assert len(hits) >= 100
    assert len(hits) >= 0.9 * len(flagged)
    monkeypatch.setattr(label, "families_for_width", lambda *shape: (label.BOOSTING,))
    _, boosted = audit()
    assert len(boosted & set(flipped.tolist())) < len(hits)


def test_streamed_audit_names_labels_the_features_cannot_predict(tmp_path: Path) -> None:
    # As in memory: labels independent of the features get the unpredictable-labels finding; a table
    # whose labels follow the features does not.
    from bastion.data.audit import rules

    frame, _, rng = _logistic_two_class(offset=0.0)
    predictable = tmp_path / "predictable.csv"
    frame.to_csv(predictable, index=False)
    frame["label"] = rng.permutation(frame["label"].to_numpy())
    shuffled = tmp_path / "shuffled.csv"
    frame.to_csv(shuffled, index=False)

    def rule_ids(path: Path) -> list[str]:
        result = stream_audit(path, "label", options=AuditOptions(channels=(LABEL,)), chunk_rows=1500)
        return [f.rule_id for f in result.channels[LABEL].findings]

    assert rules.UNPREDICTABLE_LABELS in rule_ids(shuffled)
    assert rules.UNPREDICTABLE_LABELS not in rule_ids(predictable)
