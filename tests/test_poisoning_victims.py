"""The poisoning benchmark scores backdoor and clean scenarios on several victims and reports their means."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytest.importorskip("torch")

import poison_attacks as pa
import poisoning as pb


@pytest.fixture
def dataset() -> pb.Dataset:
    """160 training and 80 test rows of 4x4 'images': class 1 is bright on the left half, class 0 is not."""
    rng = np.random.default_rng(3)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        x = rng.uniform(0.0, 0.4, size=(n, 16))
        x[:, [0, 1, 4, 5, 8, 9]] += 0.5 * y[:, None]
        return x, y.astype(np.int64)

    x_train, y_train = rows(160)
    x_test, y_test = rows(80)
    names = [f"px{i}" for i in range(16)]
    return pb.Dataset("tiny", "image", x_train, y_train, x_test, y_test, names, 2, (1, 0), (4, 4))


def _scenario(ds: pb.Dataset, attack: str) -> pb.Scenario:
    rng = np.random.default_rng(0)
    if attack == "backdoor":
        poisoned = pa.backdoor(ds.x_train, ds.y_train, 0.10, pa.image_patch_trigger((4, 4)), 0, rng)
    else:
        poisoned = pa.random_flips(ds.x_train, ds.y_train, 0.10, 2, rng)
    return pb.Scenario(ds, attack, 0.10, poisoned)


def test_a_backdoor_is_scored_on_every_victim_and_reports_their_means(dataset: pb.Dataset) -> None:
    sc = _scenario(dataset, "backdoor")
    cache = pb.VictimCache(seed=0, victims=3)
    outcome = pb.score(sc, "none", pb.Detection(np.zeros(len(sc.poisoned.labels), dtype=bool), 0.0), cache)
    successes = outcome.extra["asr_victims"]
    accuracies = outcome.extra["acc_victims"]
    assert len(successes) == 3
    assert len(accuracies) == 3
    assert outcome.asr == pytest.approx(float(np.mean(successes)))
    assert outcome.acc == pytest.approx(float(np.mean(accuracies)))
    # The victims differ only in their seed: the first is the run's own, so a single-victim run matches it.
    keep = np.ones(len(sc.poisoned.labels), dtype=bool)
    first, second = cache.fit(sc, keep, 0), cache.fit(sc, keep, 1)
    assert first is cache.fit_all(sc, keep)[0]
    weights = [first.weights(), second.weights()]
    assert any(not np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_other_attacks_train_one_victim(dataset: pb.Dataset) -> None:
    sc = _scenario(dataset, "random")
    cache = pb.VictimCache(seed=0, victims=3)
    outcome = pb.score(sc, "oracle", pb.Detection(sc.poisoned.poison.copy(), 0.0), cache)
    assert "acc_victims" not in outcome.extra
    assert "asr_victims" not in outcome.extra
    assert outcome.asr != outcome.asr  # no trigger, so no attack success (NaN)
    assert len(cache.fit_all(sc, ~sc.poisoned.poison)) == 1


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_a_victim_count_below_one_is_a_one_line_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        pb.main(["--victims", value])
    assert exited.value.code == 2
    assert "--victims" in capsys.readouterr().err.splitlines()[-1]
