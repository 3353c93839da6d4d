"""Bad input to ``bastion data audit``: one-line errors naming the file, the same in memory and streamed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.cli.main import main
from bastion.data.audit.base import AuditOptions
from bastion.data.audit.drift import schema_changes
from bastion.data.audit.load import load_dataset, load_reference
from bastion.data.audit.report import render_markdown
from bastion.data.audit.run import AuditResult, RowReport, run_audit
from bastion.data.audit.stream import stream_audit
from bastion.errors import InputError
from bastion.findings import Finding, Location, Severity

INTEGRITY_ONLY = AuditOptions(channels=("integrity",))


def _base() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    frame = pd.DataFrame(x, columns=list("abc"))
    frame["label"] = (x[:, 0] > 0).astype(int)
    return frame


def _both_fail(path: Path, expected: str, **kwargs: object) -> None:
    """The in-memory loader and the streaming audit reject ``path`` with the same message, naming it."""
    with pytest.raises(InputError) as memory:
        load_dataset(path, "label", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InputError) as streamed:
        stream_audit(path, "label", options=INTEGRITY_ONLY, workers=1, **kwargs)  # type: ignore[arg-type]
    assert str(memory.value) == str(streamed.value) == f"{path}: {expected}"


def test_a_stray_word_in_a_numeric_column_is_an_error_not_an_id(tmp_path: Path) -> None:
    frame = _base()
    frame["a"] = frame["a"].astype(object)
    frame.loc[5, "a"] = "oops"
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    _both_fail(path, "column 'a' mixes numbers and text (row 5: 'oops'); fix the value or cast the column")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_infinite_values_are_rejected(tmp_path: Path, suffix: str) -> None:
    frame = _base()
    frame.loc[4, "a"] = np.inf
    path = tmp_path / f"inf{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    _both_fail(path, "column 'a' holds infinite values (row 4)")


@pytest.mark.parametrize("header", ["a,b,label,label", "a,a,c,label"])
def test_duplicate_column_names_are_rejected(tmp_path: Path, header: str) -> None:
    body = _base().to_csv(index=False, header=False)
    path = tmp_path / "dup.csv"
    path.write_text(header + "\n" + body)
    repeated = "label" if header.endswith("label,label") else "a"
    _both_fail(path, f"duplicate column name {repeated!r}")


def test_no_feature_columns_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "only.csv"
    _base()[["label"]].to_csv(path, index=False)
    _both_fail(path, "no feature columns besides the label")


def test_nested_jsonl_values_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    rows = [{"a": float(i), "b": {"x": 1}, "label": i % 2} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"nested\.jsonl: column 'b' holds nested objects \(row 0\)"):
        load_dataset(path, "label")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 3)), "y": np.zeros((10, 2))}, "label array 'y' must be 1-D"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0)}, "no rows"),
        ({"x": np.array(1.0), "y": np.array([1])}, "feature array 'x' is a single number"),
        ({"x": np.array(1.0), "y": np.array(1)}, "label array 'y' must be 1-D"),
        # float64 kept the real part alone, with only numpy's warning on stderr.
        ({"x": np.ones((10, 3)) + 1j, "y": np.arange(10) % 2}, "feature array 'x' holds complex numbers"),
        # Beyond 2**53 neighbours became one float: every row was a conflicting duplicate of the others.
        (
            {"x": 2**62 + np.arange(30).reshape(10, 3), "y": np.arange(10) % 2},
            "feature array 'x' holds integers beyond 2**53 (first: row 0)",
        ),
        ({"x": np.array([["1.0"]] * 10), "y": np.arange(10) % 2}, "feature array 'x' is not numeric (<U3)"),
    ],
)
def test_malformed_npz_arrays_are_rejected(tmp_path: Path, arrays: dict[str, object], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(InputError) as caught:
        load_dataset(path, "y")
    assert str(caught.value).startswith(f"{path}: {message}")


def test_boolean_npz_features_are_zeros_and_ones(tmp_path: Path) -> None:
    path = tmp_path / "masks.npz"
    masks = np.random.default_rng(0).random((40, 6)) > 0.5
    np.savez(path, x=masks, y=np.arange(40) % 2)
    data = load_dataset(path, "y")
    assert np.array_equal(data.features, masks.astype(np.float64))


def test_source_column_on_npz_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "img.npz"
    np.savez(path, x=np.zeros((10, 2)), y=np.arange(10) % 2)
    with pytest.raises(InputError, match=r"img\.npz: --source-column needs a table"):
        load_dataset(path, "y", source_column="feed")


def _drift_messages(findings: list[Finding]) -> list[str]:
    return sorted(f.message for f in findings if f.rule_id == "BST-DATA-007")


@pytest.mark.parametrize("change", ["missing", "text", "new_label", "source"])
def test_reference_differences_are_drift_alike_in_memory_and_streamed(tmp_path: Path, change: str) -> None:
    data, reference = _base(), _base()
    source = None
    if change == "missing":
        reference = reference.drop(columns=["c"])
    elif change == "text":
        reference["a"] = [f"t{i % 7}" for i in range(len(reference))]
    elif change == "new_label":
        reference.loc[0, "label"] = 5
    else:
        data["feed"] = np.where(np.arange(len(data)) % 2, "x", "y")
        source = "feed"
    data_path, reference_path = tmp_path / "data.csv", tmp_path / "ref.csv"
    data.to_csv(data_path, index=False)
    reference.to_csv(reference_path, index=False)
    loaded = load_dataset(data_path, "label", source_column=source)
    trusted = load_reference(reference_path, loaded, "label", source_column=source)
    memory = run_audit(loaded, INTEGRITY_ONLY, trusted)
    streamed = stream_audit(
        data_path, "label", source_column=source, reference=reference_path, options=INTEGRITY_ONLY, workers=1
    )
    assert _drift_messages(memory.findings) == _drift_messages(streamed.findings)
    expected = {
        "missing": ["the columns differ from the reference (not in the reference: c)"],
        "text": ["the columns differ from the reference (numbers on one side, text on the other: a)"],
    }.get(change, [])
    assert [m for m in _drift_messages(memory.findings) if m.startswith("the columns")] == expected


def test_schema_changes_reports_retyped_columns_only_when_kinds_are_given() -> None:
    assert schema_changes(["a", "b"], ["a", "b"]) == {"missing": [], "added": []}
    changes = schema_changes(["a", "b"], ["a", "b"], {"a", "b"}, {"b"})
    assert changes["retyped"] == ["a"]


def test_non_finite_reference_is_rejected_without_numpy_warnings(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    data, reference = _base(), _base()
    reference.loc[4, "a"] = np.inf
    data_path, reference_path = tmp_path / "data.csv", tmp_path / "ref.csv"
    data.to_csv(data_path, index=False)
    reference.to_csv(reference_path, index=False)
    expected = f"{reference_path}: column 'a' holds infinite values (row 4)"
    with pytest.raises(InputError) as memory:
        load_reference(reference_path, load_dataset(data_path, "label"), "label")
    with pytest.raises(InputError) as streamed:
        stream_audit(data_path, "label", reference=reference_path, options=INTEGRITY_ONLY, workers=1)
    assert str(memory.value) == str(streamed.value) == expected
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


TINY = {
    "a": [1.18, 1.65, -0.85],
    "b": [-0.12, -1.09, -0.56],
    "c": [-0.37, -0.99, 3.25],
    "label": [1, 1, 0],
}


def test_tiny_tables_get_no_label_flags_in_memory_or_streamed(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    pd.DataFrame(TINY).to_csv(path, index=False)
    options = AuditOptions(channels=("label",))
    memory = run_audit(load_dataset(path, "label"), options)
    streamed = stream_audit(path, "label", options=options, workers=1)
    assert memory.rows == []
    assert streamed.rows == []
    assert "too few" in memory.channels["label"].summary["skipped"]
    assert "too few" in streamed.channels["label"].summary["skipped"]
    arrays = tmp_path / "tiny.npz"
    np.savez(arrays, x=pd.DataFrame(TINY)[list("abc")].to_numpy(), y=np.array(TINY["label"]))
    assert run_audit(load_dataset(arrays, "y"), options).rows == []


def test_markdown_cells_escape_pipes_and_newlines() -> None:
    from bastion.data.audit.base import RowFlag

    flag = RowFlag(5, "label", "check", 0.98, "reason with | pipe\nand a line", suggested_label="yes|no")
    finding = Finding.make(
        "BST-DATA-007", Severity.MEDIUM, "a | b", Location("d|x.csv", ("column:a|b",)), {"rows": 1}
    )
    result = AuditResult(
        path="d.csv",
        kind="tabular",
        n_rows=10,
        classes=["no", "yes|no"],
        rows=[RowReport(5, [flag])],
        sources=[{"source": "feed|A", "rows": 10, "flagged": 1, "flagged_share": 0.1}],
        findings=[finding],
    )
    text = render_markdown(result)
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.replace("\\|", "").count("|") in (5, 6), line  # 4 or 5 columns, no more
    assert "| feed\\|A | 10 |" in text
    assert "yes\\|no" in text


def test_cli_rejects_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = _base()
    frame.loc[4, "a"] = np.inf
    path = tmp_path / "inf.csv"
    frame.to_csv(path, index=False)
    assert main(["data", "audit", str(path), "--label", "label"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{path}: column 'a' holds infinite values (row 4)")
    assert "\n" not in err
    assert "internal error" not in err


def test_cli_reference_with_another_column_set_is_drift_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _base()
    data, reference = tmp_path / "data.csv", tmp_path / "ref.csv"
    frame.to_csv(data, index=False)
    frame.drop(columns=["c"]).to_csv(reference, index=False)
    code = main(
        ["data", "audit", str(data), "--label", "label", "--reference", str(reference), "--format", "json"]
    )
    assert code in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["channels"]["integrity"]["drift"]["schema"]["added"] == ["c"]
    assert any("not in the reference: c" in finding["message"] for finding in report["findings"])


def test_cli_writes_no_report_when_the_event_store_fails(tmp_path: Path) -> None:
    frame = _base()
    data, report = tmp_path / "data.csv", tmp_path / "report.json"
    frame.to_csv(data, index=False)
    args = ["data", "audit", str(data), "--label", "label", "--channels", "integrity", "-o", str(report)]
    assert main([*args, "--db", "bogus://x"]) == 2
    assert not report.exists()


def test_a_json_key_given_twice_is_refused_before_the_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pandas kept the last value silently (every row became {"a": 2}); another reader keeps the first. The
    # fingerprint's reader now refuses the row, and in memory it runs before the audit.
    path = tmp_path / "twice.jsonl"
    path.write_text("".join(f'{{"a": 1, "b": {i}, "a": 2, "label": {i % 2}}}\n' for i in range(50)))
    for argv in (["data", "fingerprint", str(path)], ["data", "audit", str(path), "--label", "label"]):
        capsys.readouterr()
        assert main(argv) == 2
        said = "line 1: malformed JSON line (duplicate key 'a')"
        assert capsys.readouterr().err.strip() == f"bastion: error: {path}: {said}"
    with pytest.raises(InputError, match="row 0: key 'a' appears twice in one object"):
        stream_audit(path, "label", options=INTEGRITY_ONLY, workers=1)


def test_a_byte_order_mark_before_json_lines_is_not_part_of_the_first_row(tmp_path: Path) -> None:
    frame = _base()
    plain, marked = tmp_path / "plain.jsonl", tmp_path / "marked.jsonl"
    frame.to_json(plain, orient="records", lines=True)
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # pandas refused it: "Expected object or value"
    loaded = load_dataset(marked, "label")
    assert np.array_equal(loaded.features, load_dataset(plain, "label").features)
    assert loaded.n_rows == len(frame)
