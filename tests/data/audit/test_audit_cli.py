"""``bastion data audit`` and ``sanitize`` end to end on a poisoned digits CSV, and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from bastion.cli.main import main
from bastion.data.manifest import load_manifest

PATCH = [0, 1, 8, 9]


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, list[int]]]:
    """Digits as CSV: 8% label flips from feed 'c', a 2x2-patch backdoor to class 0 on 4%; and a holdout."""
    digits = load_digits()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(digits.target))
    train_idx, hold_idx = order[:1400], order[1400:]
    x, y = digits.data[train_idx].copy(), digits.target[train_idx].copy()
    sources = rng.choice(["a", "b", "c"], size=len(y))
    from_c = rng.permutation(np.flatnonzero(sources == "c"))
    flips, backdoor = np.sort(from_c[:112]), np.sort(from_c[112:168])
    y[flips] = (y[flips] + rng.integers(1, 10, len(flips))) % 10
    x[np.ix_(backdoor, PATCH)] = 16
    y[backdoor] = 0
    root = tmp_path_factory.mktemp("poisoned")
    columns = [f"p{i}" for i in range(64)]
    frame = pd.DataFrame(x.astype(int), columns=columns).assign(label=y, source=sources)
    frame.to_csv(root / "train.csv", index=False)
    holdout = pd.DataFrame(digits.data[hold_idx].astype(int), columns=columns).assign(
        label=digits.target[hold_idx]
    )
    holdout.to_csv(root / "holdout.csv", index=False)
    return root / "train.csv", root / "holdout.csv", {"flips": flips.tolist(), "backdoor": backdoor.tolist()}


def test_audit_json_lists_flagged_rows_and_fails_on_backdoor(
    poisoned: tuple[Path, Path, dict[str, list[int]]], tmp_path: Path
) -> None:
    train, _, truth = poisoned
    report_path = tmp_path / "audit.json"
    argv = ["data", "audit", str(train), "--label", "label", "--source-column", "source"]
    code = main([*argv, "--format", "json", "--output", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 1  # a confirmed backdoor is critical, above the default --fail-on high
    rows = {r["row"]: r for r in report["rows"]}
    assert all({"row", "channels", "score", "reason"} <= set(r) for r in report["rows"])
    poison = set(truth["flips"]) | set(truth["backdoor"])
    quarantined = {r for r, v in rows.items() if v["quarantine"]}
    assert len(quarantined & set(truth["backdoor"])) >= 0.95 * len(truth["backdoor"])
    assert len(quarantined & set(truth["flips"])) >= 0.8 * len(truth["flips"])
    assert len(quarantined - poison) <= 0.05 * 1400
    assert any("backdoor" in rows[r]["channels"] for r in truth["backdoor"])
    assert {f["rule_id"] for f in report["findings"]} >= {"BST-DATA-001", "BST-DATA-003", "BST-DATA-006"}
    by_source = {s["source"]: s for s in report["sources"]}
    assert by_source["c"]["flagged_share"] > 5 * by_source["a"]["flagged_share"]
    assert report["lineage"]["consumed"]["data"].startswith("manifest-sha256:")


def test_sanitize_validate_writes_clean_data_quarantine_and_signed_manifest(
    poisoned: tuple[Path, Path, dict[str, list[int]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, holdout, truth = poisoned
    key = tmp_path / "k.pem"
    assert main(["data", "keygen", str(key)]) == 0
    out = tmp_path / "clean.csv"
    argv = ["data", "sanitize", str(train), "--label", "label", "--source-column", "source", "-o", str(out)]
    argv += ["--quarantine", str(tmp_path / "q.csv"), "--manifest", str(tmp_path / "m.json")]
    argv += ["--validate", "--holdout", str(holdout), "--sign-key", str(key), "--format", "json"]
    capsys.readouterr()
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    validation = summary["validation"]
    assert validation["accepted"]
    assert validation["accuracy_after"] >= validation["accuracy_before"] - 1.0
    (before,) = validation["attack_success_before"].values()
    (after,) = validation["attack_success_after"].values()
    assert before > 50 > 5 > after
    clean, quarantine = pd.read_csv(out), pd.read_csv(tmp_path / "q.csv")
    assert len(clean) + len(quarantine) == 1400
    assert set(truth["backdoor"]) <= set(quarantine["bastion_row"])
    manifest = json.loads((tmp_path / "m.json").read_text())
    (record,) = manifest["lineage"]
    assert record["step"] == "sanitize"
    assert record["consumed"]["data"].startswith("manifest-sha256:")
    assert record["consumed"]["audit_report"].startswith("sha256:")
    assert set(record["produced"]) == {"clean", "quarantine"}
    assert record["parameters"]["validation"]["accepted"]
    assert "signature" in manifest
    digest = load_manifest(tmp_path / "m.json").digest()
    assert summary["clean_manifest_digest"] == f"manifest-sha256:{digest}"
    verify = ["data", "verify", str(out), "--manifest", str(tmp_path / "m.json")]
    assert main([*verify, "--public-key", str(tmp_path / "k.pub.pem")]) == 0


def _no_outputs_besides(directory: Path, *names: str) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


@pytest.mark.parametrize(
    ("content", "label", "message"),
    [
        ("x,y\n1,a\n2,b\n", "missing", "no label column 'missing'"),
        ("x,y\n1,a\n2,a\n", "y", "single class"),
        ("", "y", "the file is empty"),
        ("x,y\n", "y", "no rows"),
        ("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)) + "oops,1\n", "y", "mixes numbers and text"),
    ],
)
@pytest.mark.parametrize("command", ["audit", "sanitize"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, label: str, message: str, command: str
) -> None:
    data = tmp_path / "d.csv"
    data.write_text(content)
    capsys.readouterr()
    assert main(["data", command, str(data), "--label", label]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    _no_outputs_besides(tmp_path, "d.csv")


def test_ten_gigabyte_file_is_streamed_or_refused_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A sparse file: 10 GiB on paper, almost nothing on disk. It cannot be loaded whole, so the audit
    # streams it, and the NUL bytes after the header make the first chunk fail with a one-line error.
    data = tmp_path / "huge.csv"
    with data.open("wb") as fh:
        fh.write(b"x,y\n1,0\n2,1\n")
        fh.truncate(10 << 30)
    capsys.readouterr()
    code = main(["data", "audit", str(data), "--label", "y", "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "huge.csv" in err.strip().splitlines()[-1]
    _no_outputs_besides(tmp_path, "huge.csv")


def test_markdown_and_table_formats(
    poisoned: tuple[Path, Path, dict[str, list[int]]], capsys: pytest.CaptureFixture[str]
) -> None:
    train, _, _ = poisoned
    argv = ["data", "audit", str(train), "--label", "label", "--channels", "label,outlier"]
    capsys.readouterr()
    assert main([*argv, "--format", "markdown"]) == 0  # label noise is medium, below --fail-on high
    out = capsys.readouterr().out
    assert out.startswith("# Data audit:")
    assert "| Row | Score | Channels | Suggested | Reason |" in out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "BST-DATA-001" in out
    assert "ROW SCORE CHANNELS SUGGEST REASON" in " ".join(out.split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "missing-dir/r.json"], "cannot write the report"),
        (["--stream", "--text-column", "x"], "--text-column: text is embedded in memory"),
        (["--channels", "label,nope"], "unknown channel 'nope'"),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    extra = [str(tmp_path / e) if e.startswith("missing-dir") else e for e in extra]
    capsys.readouterr()
    assert main(["data", "audit", str(data), "--label", "y", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    _no_outputs_besides(tmp_path, "d.csv")
