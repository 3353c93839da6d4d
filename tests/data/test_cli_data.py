"""``bastion data`` end to end: exit codes 0/1/2, outputs, one-line errors, no partial files."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

import bastion.cli.main as cli_main
from bastion.cli import data as data_cli
from bastion.cli.common import Parser
from bastion.errors import BastionError


def run(argv: list[str]) -> int:
    """Through ``bastion.cli.main.main`` once ``data`` is registered there; until then, an equivalent."""
    if getattr(cli_main, "data", None) is data_cli:
        return cli_main.main(argv)
    parser = Parser(prog="bastion")
    data_cli.add_parser(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except BastionError as exc:
        print(f"bastion: error: {exc.diagnostics()}", file=sys.stderr)
        return 2


def fingerprint(dataset: Path, manifest: Path, *extra: str) -> None:
    assert run(["data", "fingerprint", str(dataset), "--output", str(manifest), *extra]) == 0


def test_fingerprint_then_verify_identical(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.json"
    fingerprint(dataset, manifest, "--source", "s3://bucket/ds")
    assert json.loads(manifest.read_text(encoding="utf-8"))["source"] == "s3://bucket/ds"
    capsys.readouterr()
    assert run(["data", "verify", str(dataset), "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "no differences" in out
    assert "signature: absent" in out


def test_manifest_inside_dataset_is_ignored(dataset: Path) -> None:
    manifest = dataset / "MANIFEST.json"
    fingerprint(dataset, manifest)
    assert "MANIFEST.json" not in manifest.read_text(encoding="utf-8")
    assert run(["data", "verify", str(dataset), "-m", str(manifest)]) == 0


def test_fingerprint_to_stdout(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "fingerprint", str(dataset / "table.csv")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["files"][0]["path"] == "table.csv"
    assert "fingerprinted 1 file(s), 4 row(s)" in captured.err


def test_verify_reports_changes_as_json(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.json"
    fingerprint(dataset, manifest)
    csv = dataset / "table.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace("2,bob", "9,zed,0\n2,bob"), encoding="utf-8")
    (dataset / "extra.txt").write_text("x", encoding="utf-8")
    capsys.readouterr()
    assert run(["data", "verify", str(dataset), "-m", str(manifest), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["schema_version"] == 1
    assert report["added"] == ["extra.txt"]
    assert report["removed"] == []
    (change,) = report["changed"]
    assert change["path"] == "table.csv"
    assert change["rows"] == {"added": [1], "removed": [], "changed": []}


def test_verify_table_lists_rows(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.json"
    fingerprint(dataset, manifest)
    csv = dataset / "table.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace("3,carol,0.9\n", ""), encoding="utf-8")
    capsys.readouterr()
    assert run(["data", "verify", str(dataset), "-m", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "changed    table.csv" in out
    assert "rows removed: 2" in out


def test_signed_flow(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key.pem"
    assert run(["data", "keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = tmp_path / "key.pub.pem"
    assert capsys.readouterr().out == pub.read_text(encoding="utf-8")
    manifest = tmp_path / "m.json"
    fingerprint(dataset, manifest, "--sign-key", str(key))
    assert run(["data", "verify", str(dataset), "-m", str(manifest), "--public-key", str(pub)]) == 0
    assert "signature: valid" in capsys.readouterr().out

    other = tmp_path / "other.pem"
    assert run(["data", "keygen", str(other)]) == 0
    other_pub = tmp_path / "other.pub.pem"
    assert run(["data", "verify", str(dataset), "-m", str(manifest), "--public-key", str(other_pub)]) == 1

    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["files"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data), encoding="utf-8")
    capsys.readouterr()
    assert run(["data", "verify", str(dataset), "-m", str(manifest)]) == 1
    assert "signature: invalid" in capsys.readouterr().out


def test_malformed_jsonl_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bad.jsonl").write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    out = tmp_path / "m.json"
    assert run(["data", "fingerprint", str(tmp_path / "d"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bad.jsonl: line 2: malformed JSON line" in err
    assert not out.exists()
    assert list(tmp_path.glob(".m.json.*")) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "fingerprint", "{tmp}/missing"],
        ["data", "verify", "{tmp}/missing", "-m", "{tmp}/m.json"],
        ["data", "verify", "{tmp}", "-m", "{tmp}/not-a-manifest.json"],
        ["data", "fingerprint", "{tmp}", "--sign-key", "{tmp}/not-a-manifest.json"],
        ["data", "verify", "{tmp}", "-m", "{tmp}/m.json", "--public-key", "{tmp}/not-a-manifest.json"],
        ["data", "keygen", "{tmp}/not-a-manifest.json"],
        ["data", "verify", "{tmp}"],
    ],
)
def test_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    (tmp_path / "not-a-manifest.json").write_text('{"x": 1}', encoding="utf-8")
    assert (
        run(["data", "fingerprint", str(tmp_path / "not-a-manifest.json"), "-o", str(tmp_path / "m.json")])
        == 0
    )
    capsys.readouterr()
    assert run([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("bastion: error: ")
