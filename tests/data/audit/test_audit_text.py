"""Text audits: rows embedded offline with the packaged all-MiniLM-L6-v2, then the usual channels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.cli.main import main

SPORT = ["the striker scored a late goal", "the team won the championship final", "a record crowd cheered"]
SPORT += [
    "the coach praised the defence",
    "the tennis match went to five sets",
    "the runner broke the record",
]
MONEY = ["the central bank raised interest rates", "shares fell after the earnings report"]
MONEY += ["the company issued new bonds", "inflation slowed this quarter", "the stock market rallied"]
MONEY += ["investors bought government debt"]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lea"]
PLACES = ["in London", "on Sunday", "this season", "after a long week", "in Tokyo", "yesterday", "again"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(240):
        topic = "sport" if i % 2 == 0 else "finance"
        pool = SPORT if topic == "sport" else MONEY
        who = rng.choice(NAMES)
        rows.append({"text": f"{who} said {rng.choice(pool)} {rng.choice(PLACES)}", "topic": topic})
    flipped = sorted(int(i) for i in rng.choice(240, 12, replace=False))
    for i in flipped:
        rows[i]["topic"] = "finance" if rows[i]["topic"] == "sport" else "sport"
    path = tmp_path_factory.mktemp("text") / "news.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, flipped


def test_text_label_flips_are_found_through_embeddings(
    texts: tuple[Path, list[int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, flipped = texts
    out = tmp_path / "r.json"
    argv = ["data", "audit", str(path), "--label", "topic", "--text-column", "text", "--format", "json"]
    # Exit code aside: a flipped row that repeats another row's text is also a conflicting duplicate (high).
    main([*argv, "--output", str(out), "--channels", "label,integrity"])
    report = json.loads(out.read_text())
    assert report["dataset"]["kind"] == "text"
    label_rows = {r["row"] for r in report["rows"] if "label" in r["channels"] and r["quarantine"]}
    assert len(label_rows & set(flipped)) >= 8
    assert len(label_rows - set(flipped)) <= 2
    suggested = {r["row"]: r["suggested_label"] for r in report["rows"]}
    frame = pd.read_json(path, lines=True)
    true_topic = {i: ("finance" if frame.topic[i] == "sport" else "sport") for i in flipped}
    assert sum(suggested.get(i) == true_topic[i] for i in flipped) >= 8
    # 240 rows drawn from 36 sentences: the integrity channel lists near duplicates for review only.
    near = [r for r in report["rows"] if "integrity/near-duplicate" in r["checks"]]
    assert near
    assert not any(r["quarantine"] for r in near if r["channels"] == ["integrity"])
