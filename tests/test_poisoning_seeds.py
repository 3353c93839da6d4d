"""Pooling the poisoning benchmark over seeds: means, spreads and the anchor check read on the means."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import poisoning_seeds as ps


def _outcome(
    dataset: str, attack: str, rate: float, detector: str, f1: float, asr: float = float("nan")
) -> dict[str, Any]:
    return {"dataset": dataset, "attack": attack, "rate": rate, "detector": detector, "f1": f1, "asr": asr}


def _run(bastion: float, iforest: float) -> list[dict[str, Any]]:
    rows = [_outcome(d, "outlier", 0.10, "bastion", bastion) for d in ("a", "b")]
    rows += [_outcome(d, "outlier", 0.10, "iforest", iforest) for d in ("a", "b")]
    rows += [
        _outcome(d, "outlier", 0.10, a, 0.1) for d in ("a", "b") for a in ("cleanlab", "art_ss", "art_ac")
    ]
    rows += [
        _outcome("a", "backdoor", 0.03, "oracle", 0.0, asr=0.02),
        _outcome("a", "backdoor", 0.03, "bastion", 0.9, asr=0.5),
    ]
    return rows


def test_an_anchor_ahead_on_one_seed_but_not_on_the_mean_passes() -> None:
    text = ps.render([_run(0.90, 0.92), _run(0.95, 0.90)])
    assert "| outlier@0.10 |" in text
    assert "1 of 2 |" in text
    assert "0.925 (0.90-0.95)" in text
    assert "PASS: no anchor ahead" in text
    assert "| a | backdoor 0.03, Bastion ASR % | 50.0 | 50.0 | 50.0 |" in text


def test_an_anchor_ahead_on_the_mean_fails_and_is_named() -> None:
    text = ps.render([_run(0.90, 0.92), _run(0.91, 0.92)])
    assert "FAIL: no anchor ahead" in text
    assert "iforest 0.920 > bastion 0.905 on outlier@0.10" in text


def test_a_file_that_is_not_benchmark_output_is_named_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match=r"run\.json: not a poisoning\.py --json output"):
        ps.load_runs([bad])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"dataset": "a"}))
    with pytest.raises(SystemExit, match=r"other\.json: not a poisoning\.py --json output \(expected a list"):
        ps.load_runs([other])
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_run(0.9, 0.8)))
    assert ps.main([str(good)]) == 2
