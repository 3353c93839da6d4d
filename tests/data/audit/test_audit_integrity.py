"""The integrity channel: exact and conflicting duplicates, near-duplicate texts, drift findings, sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bastion.data.audit import rules
from bastion.data.audit.base import INTEGRITY, LABEL, AuditData, AuditOptions
from bastion.data.audit.integrity import (
    array_row_hashes,
    duplicate_groups,
    frame_row_hashes,
    near_duplicates,
    run_integrity_channel,
    source_summary,
    wilson_bounds,
)
from bastion.data.audit.load import from_frame


def _table(seed: int = 0, n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(100, 15, n).round(6),
            "kind": rng.choice(["card", "cash", "wire"], n),
            "count": rng.integers(0, 1000, n),
            "y": rng.choice(["ok", "fraud"], n),
        }
    )


def _data(frame: pd.DataFrame, source: str | None = None) -> AuditData:
    return from_frame(frame, "y", source_column=source, path="t.csv")


def test_exact_duplicates_flag_the_copies_not_the_first() -> None:
    frame = _table()
    copies = frame.iloc[[3, 3, 10]].copy()  # row 3 twice, row 10 once, same labels
    copies.loc[:, "kind"] = copies["kind"] + "  "  # trailing spaces: normalised away
    frame = pd.concat([frame, copies], ignore_index=True)
    result = run_integrity_channel(_data(frame), AuditOptions(), None)
    exact = [f for f in result.flags if f.check == "exact-duplicate"]
    assert sorted(f.row for f in exact) == [200, 201, 202]
    assert all(not f.remove and f.channel == INTEGRITY for f in exact)  # review only, never quarantined
    by_row = {f.row: f for f in exact}
    assert by_row[200].reason == "same features and label as row 3"
    assert by_row[202].reason == "same features and label as row 10"
    assert [f.rule_id for f in result.findings] == [rules.DUPLICATES]
    assert result.summary["exact_duplicate_rows"] == 3
    assert result.summary["exact_duplicate_groups"] == 2


def test_clean_table_has_no_flags() -> None:
    result = run_integrity_channel(_data(_table()), AuditOptions(), None)
    assert result.flags == []
    assert result.findings == []


def test_conflicting_duplicates_are_label_flags_with_the_majority_suggested() -> None:
    frame = _table()
    label_of_5 = frame.loc[5, "y"]
    other = "fraud" if label_of_5 == "ok" else "ok"
    twins = frame.iloc[[5, 5, 7]].copy()
    twins.iloc[0, twins.columns.get_loc("y")] = other  # row 200: row 5 with the other label
    # rows 201 (= row 5, same label) and 202 (= row 7 with the other label)
    twins.iloc[2, twins.columns.get_loc("y")] = "fraud" if frame.loc[7, "y"] == "ok" else "ok"
    frame = pd.concat([frame, twins], ignore_index=True)
    result = run_integrity_channel(_data(frame), AuditOptions(), None)
    conflicting = {f.row: f for f in result.flags if f.check == "conflicting-duplicate"}
    assert set(conflicting) == {5, 200, 201, 7, 202}
    assert all(f.channel == LABEL and f.remove for f in conflicting.values())
    # Group {5, 200, 201}: two say label_of_5, so row 200 is told to take it; the majority rows are not.
    assert conflicting[200].suggested_label == label_of_5
    assert conflicting[200].score > conflicting[5].score
    assert conflicting[5].suggested_label is None
    assert "same features as rows 200" in conflicting[5].reason
    # Group {7, 202}: one each, no majority, no suggestion.
    assert conflicting[7].suggested_label is None
    assert "no label has a majority" in conflicting[7].reason
    assert not [f for f in result.flags if f.check == "exact-duplicate"]
    assert [f.rule_id for f in result.findings] == [rules.CONFLICTING_DUPLICATES]
    assert result.summary["conflicting_duplicate_groups"] == 2


def test_row_hashes_normalise_zero_and_whitespace() -> None:
    a = pd.DataFrame({"x": [0.0, -0.0, 1.5], "t": ["a b", " a   b ", "a b"]})
    hashes = frame_row_hashes(a)
    assert hashes[0] == hashes[1] != hashes[2]
    assert [g.tolist() for g in duplicate_groups(hashes)] == [[0, 1]]


def test_image_rows_hash_their_features() -> None:
    rng = np.random.default_rng(1)
    images = rng.random((20, 8, 8))
    images[15] = images[4]
    groups = duplicate_groups(array_row_hashes(images))
    assert [g.tolist() for g in groups] == [[4, 15]]
    labels = np.zeros(20, dtype=np.int64)
    data = AuditData("imgs.npz", "image", images.reshape(20, -1), labels, ["0"], [f"p{i}" for i in range(64)])
    result = run_integrity_channel(data, AuditOptions(), None)
    assert [(f.row, f.check) for f in result.flags] == [(15, "exact-duplicate")]


REVIEWS = [
    "the battery lasts two full days and the screen is bright enough to read outside in summer",
    "shipping took three weeks and the box arrived crushed with the charger missing entirely",
    "great value for the price although the speaker crackles at high volume during calls",
    "the camera struggles in low light but daytime photos look sharp and the colours are natural",
    "customer support answered within an hour and replaced the faulty unit without any questions",
    "the strap broke after a week of light use and the clasp feels cheap and flimsy overall",
]


def _text_data(texts: list[str], labels: list[int]) -> AuditData:
    frame = pd.DataFrame({"text": texts})
    features = np.zeros((len(texts), 4))
    return AuditData(
        "reviews.jsonl", "text", features, np.asarray(labels, dtype=np.int64), ["neg", "pos"],
        [f"e{i}" for i in range(4)], frame=frame, texts=texts,
    )  # fmt: skip


def test_near_duplicate_texts_are_flagged_for_review() -> None:
    texts = [*REVIEWS]
    texts.append(REVIEWS[0].replace("bright", "bright,") + " really")  # row 6: near copy of 0, same label
    texts.append(REVIEWS[2].replace("great", "Great") + " overall")  # row 7: near copy of 2, other label
    texts.append(REVIEWS[3])  # row 8: exact copy of 3, same label: an exact duplicate, not a near one
    labels = [1, 0, 1, 0, 1, 0, 1, 0, 0]
    result = run_integrity_channel(_text_data(texts, labels), AuditOptions(), None)
    near = {f.row: f for f in result.flags if f.check == "near-duplicate"}
    assert set(near) == {6, 7}
    assert all(not f.remove and f.channel == INTEGRITY for f in near.values())
    assert near[6].reason.startswith("near copy of row 0")
    assert "labelled 'pos' (this row: 'neg')" in near[7].reason
    assert near[7].score > near[6].score
    assert [(f.row, f.check) for f in result.flags if f.check != "near-duplicate"] == [(8, "exact-duplicate")]
    assert result.summary["near_duplicate_rows"] == 2


def test_near_duplicates_ignore_merely_similar_texts() -> None:
    base = "one two three four five six seven eight nine ten eleven twelve"
    half = "one two three four five six alpha beta gamma delta epsilon zeta"
    assert near_duplicates([base, half], [0, 1]) == []
    assert near_duplicates([base, base + " thirteen"], [0, 1])[0][:2] == (1, 0)


def test_drift_findings_name_the_drifted_column() -> None:
    reference = _table(seed=1, n=2000)
    current = _table(seed=2, n=2000)
    current["amount"] = current["amount"] + 15.0  # one reference sd
    current = current.drop(columns=["count"])
    result = run_integrity_channel(_data(current), AuditOptions(), _data(reference))
    drift = [f for f in result.findings if f.rule_id == rules.DRIFT]
    members = sorted(f.location.members for f in drift)
    assert members == [(), ("column:amount",)]  # the drifted column, and the schema change
    assert result.summary["drift"]["drifted"] == ["amount"]
    assert result.summary["drift"]["schema"] == {"missing": ["count"], "added": [], "retyped": []}


def _sourced(flag_rates: dict[str, tuple[int, float]], seed: int = 0) -> tuple[AuditData, list[int]]:
    rng = np.random.default_rng(seed)
    sources: list[str] = []
    removed: list[int] = []
    for name, (n, rate) in flag_rates.items():
        start = len(sources)
        sources.extend([name] * n)
        removed.extend(start + int(i) for i in np.flatnonzero(rng.random(n) < rate))
    n = len(sources)
    data = AuditData(
        "s.csv", "tabular", np.zeros((n, 1)), np.zeros(n, dtype=np.int64), ["a"], ["x"],
        sources=np.asarray(sources),
    )  # fmt: skip
    return data, removed


def test_a_poisoned_source_stands_out() -> None:
    data, removed = _sourced({"vendor-a": (800, 0.02), "vendor-b": (700, 0.02), "new-feed": (200, 0.3)})
    summary, findings = source_summary(data, removed)
    assert [s["source"] for s in summary] == ["new-feed", "vendor-a", "vendor-b"]
    assert [s["skewed"] for s in summary] == [True, False, False]
    assert summary[0]["rows"] == 200
    assert summary[0]["flagged"] == sum(1 for r in removed if r >= 1500)
    assert [f.rule_id for f in findings] == [rules.SOURCE_SKEW]
    assert findings[0].location.members == ("source:new-feed",)


@pytest.mark.parametrize("seed", range(5))
def test_noise_in_a_small_source_does_not_alert(seed: int) -> None:
    # Three rows, one or two flagged by chance, and a small source at twice the base rate: no alert.
    data, removed = _sourced({"main": (2000, 0.05), "tiny": (3, 0.5), "small": (40, 0.1)}, seed=seed)
    summary, findings = source_summary(data, removed)
    assert findings == []
    assert not any(s["skewed"] for s in summary)


def test_no_sources_no_summary() -> None:
    assert source_summary(_data(_table()), [1, 2]) == ([], [])


def test_wilson_bounds_contain_the_share() -> None:
    low, high = wilson_bounds(30, 100)
    assert 0.0 < low < 0.3 < high < 1.0
    assert wilson_bounds(0, 0) == (0.0, 1.0)


def test_near_duplicates_find_planted_copies_among_many_texts() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(vocab, 30)) for _ in range(2000)]
    for i in range(20):  # rows 1980..1999 copy rows 0..19 with one word changed (similarity >= 0.8)
        words = texts[i].split()
        words[15] = "changed"
        texts[1999 - i] = " ".join(words)
    found = near_duplicates(texts, list(range(2000)))
    assert sorted((row, other) for row, other, _ in found) == [(1999 - i, i) for i in reversed(range(20))]
