"""Compressed tables (NAME.csv.gz, .jsonl.gz; .bz2 and .zst too) across ``bastion data``.

Every command reads a compressed table as the table inside it: the same row hashes, the same audit, the
same sanitized rows (written compressed the same way), and a corrupt stream is a one-line exit 2.
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bastion.cli.main import main
from bastion.data import readers
from bastion.data.audit import load, stream
from bastion.data.audit.load import read_table, should_stream
from bastion.errors import InputError

CHANNELS = "label,outlier,integrity"


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return bytes(sink.getvalue())


def _unzstd(data: bytes) -> bytes:
    return bytes(pa.CompressedInputStream(pa.BufferReader(data), "zstd").read())


COMPRESS: dict[str, Callable[[bytes], bytes]] = {".gz": gzip.compress, ".bz2": bz2.compress, ".zst": _zstd}
DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".zst": _unzstd,
}


def _poisoned(rows: int = 2_000, seed: int = 0) -> tuple[pd.DataFrame, set[int], list[tuple[int, int]]]:
    """Three separated classes with 3% flipped labels, 0.5% outliers and exact copies far apart.

    The construction of ``tests/data/audit/test_audit_stream.py``'s table, at a size audited in seconds.
    """
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
    outliers = order[rows * 3 // 100 : rows * 3 // 100 + rows // 200]
    labels[flips] = names[(y[flips] + rng.integers(1, 3, flips.size)) % 3]
    frame.iloc[outliers, :8] = np.round(
        x.mean(0) + 5.0 * x.std(0) * rng.normal(0.0, 1.0, (outliers.size, 8)), 6
    )
    frame["label"] = labels
    clean = np.setdiff1d(np.arange(rows), np.concatenate([flips, outliers]))
    copies = [(int(clean[10]), int(clean[-10])), (int(clean[20]), int(clean[rows // 2]))]
    for source, target in copies:
        frame.iloc[target] = frame.iloc[source]
    return frame, set(flips.tolist()), copies


def _table_bytes(frame: pd.DataFrame, kind: str) -> bytes:
    if kind == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    return frame.to_json(orient="records", lines=True).encode("utf-8")


def _pair(directory: Path, frame: pd.DataFrame, kind: str, compression: str = ".gz") -> tuple[Path, Path]:
    """The same table as NAME.KIND and, compressed, as NAME.KIND.COMPRESSION in a folder of its own."""
    raw = _table_bytes(frame, kind)
    plain_dir, packed_dir = directory / "plain", directory / "packed"
    plain_dir.mkdir(exist_ok=True)
    packed_dir.mkdir(exist_ok=True)
    plain, packed = plain_dir / f"t.{kind}", packed_dir / f"t.{kind}{compression}"
    plain.write_bytes(raw)
    packed.write_bytes(COMPRESS[compression](raw))
    return plain, packed


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _audit_json(path: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    argv = ["data", "audit", str(path), "--label", "label", "--channels", CHANNELS, "--format", "json"]
    code, _, err = _run([*argv, "-o", str(out), *extra], capsys)
    assert code in (0, 1), err
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def _rows(report: dict[str, Any]) -> list[tuple[int, tuple[str, ...], float, bool]]:
    return [(r["row"], tuple(r["channels"]), round(r["score"], 9), r["quarantine"]) for r in report["rows"]]


def _duplicates(report: dict[str, Any]) -> list[int]:
    return sorted(r["row"] for r in report["rows"] if "integrity/exact-duplicate" in r["checks"])


@pytest.fixture(scope="module")
def poisoned() -> tuple[pd.DataFrame, set[int], list[tuple[int, int]]]:
    return _poisoned()


# ---------------------------------------------------------------------------------------------------------
# Names and row hashes


@pytest.mark.parametrize(
    ("name", "kind", "compression", "suffix"),
    [
        ("t.csv.gz", "csv", "gzip", ".csv.gz"),
        ("T.CSV.GZ", "csv", "gzip", ".CSV.GZ"),
        ("t.v2.jsonl.bz2", "jsonl", "bz2", ".jsonl.bz2"),
        ("t.jsonl.zst", "jsonl", "zstd", ".jsonl.zst"),
        ("t.tsv.gz", "other", "gzip", ".tsv.gz"),  # TSV has no row reader, compressed or not
        ("t.csv", "csv", None, ".csv"),
        ("t.gz", "other", None, ".gz"),
        ("t.parquet.gz", "other", None, ".gz"),  # Parquet compresses inside itself
        ("model.tar.gz", "other", None, ".gz"),
    ],
)
def test_names(name: str, kind: str, compression: str | None, suffix: str) -> None:
    path = Path(name)
    assert readers.detect_kind(path) == kind
    assert readers.compression_of(path) == compression
    assert readers.full_suffix(path) == suffix


@pytest.mark.parametrize("compression", [".gz", ".bz2", ".zst"])
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_fingerprint_rows_hash_alike_plain_and_compressed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, compression: str
) -> None:
    if kind == "csv":
        # A quoted line break, CRLF endings, a blank line and no final newline: the row splitting holds.
        raw = b'id,text\r\n1,"two\r\nlines"\r\n\r\n2,plain\r\n3,last'
    else:
        raw = b'{"b": 1, "a": [1, 2]}\n\n{"a": "x",  "b": 2.50}\n{"a": null}'
    plain, packed = tmp_path / f"t.{kind}", tmp_path / f"t.{kind}{compression}"
    plain.write_bytes(raw)
    packed.write_bytes(COMPRESS[compression](raw))
    entries = []
    for path in (plain, packed):
        out = tmp_path / f"{path.name}.manifest.json"
        code, _, err = _run(["data", "fingerprint", str(path), "-o", str(out)], capsys)
        assert code == 0, err
        (entry,) = json.loads(out.read_text(encoding="utf-8"))["files"]
        entries.append(entry)
    before, after = entries
    assert after["kind"] == before["kind"] == kind
    assert after["row_count"] == before["row_count"] == 3
    assert after["row_hashes"] == before["row_hashes"]
    assert after["row_root"] == before["row_root"]
    assert after["schema"] == before["schema"]
    # The file's own hash stays over its bytes as stored.
    assert after["sha256"] != before["sha256"]
    assert after["size"] == packed.stat().st_size


def test_verify_reports_a_changed_row_inside_a_gzipped_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.DataFrame({"x": range(50), "y": ["a", "b"] * 25})
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(_table_bytes(frame, "csv")))
    manifest = tmp_path / "m.json"
    assert _run(["data", "fingerprint", str(path), "-o", str(manifest)], capsys)[0] == 0
    edited = frame.copy()
    edited.loc[17, "y"] = "c"
    edited = pd.concat([edited, pd.DataFrame({"x": [99], "y": ["z"]})], ignore_index=True)
    path.write_bytes(gzip.compress(_table_bytes(edited, "csv")))
    code, out, _ = _run(["data", "verify", str(path), "-m", str(manifest), "--format", "json"], capsys)
    assert code == 1
    (change,) = json.loads(out)["changed"]
    assert change["path"] == "t.csv.gz"
    assert change["rows"] == {"added": [50], "removed": [], "changed": [17]}
    code, out, _ = _run(["data", "verify", str(path), "-m", str(manifest)], capsys)
    assert code == 1
    assert "changed    t.csv.gz" in out


# ---------------------------------------------------------------------------------------------------------
# The audit: in memory, streamed, with a compressed reference and holdout


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_audit_of_a_gzipped_table_flags_what_the_plain_one_does(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]],
    kind: str,
) -> None:
    frame, flips, copies = poisoned
    plain, packed = _pair(tmp_path, frame, kind)
    assert not should_stream(packed)
    before = _audit_json(plain, tmp_path / "plain.json", capsys)
    after = _audit_json(packed, tmp_path / "packed.json", capsys)
    assert _rows(after) == _rows(before)
    assert [f["rule_id"] for f in after["findings"]] == [f["rule_id"] for f in before["findings"]]
    assert after["dataset"]["rows"] == len(frame)
    # And the audit works: the flips and the copies are found in the compressed table.
    label_flagged = {r["row"] for r in after["rows"] if "label" in r["channels"]}
    assert len(label_flagged & flips) >= 0.8 * len(flips)
    assert _duplicates(after) == sorted(target for _, target in copies)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_streamed_audit_of_a_gzipped_table_matches(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]],
    kind: str,
) -> None:
    frame, flips, copies = poisoned
    plain, packed = _pair(tmp_path, frame, kind)
    in_memory = _audit_json(packed, tmp_path / "memory.json", capsys)
    # Above the limit by its decompressed size (its compressed size is far below it).
    limit = packed.stat().st_size + 1
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", str(limit))
    assert should_stream(packed)
    argv = ["data", "audit", str(packed), "--label", "label", "--channels", CHANNELS, "--format", "json"]
    argv += ["--chunk-rows", "500", "--workers", "1"]
    code, _, err = _run([*argv, "-o", str(tmp_path / "packed.json")], capsys)
    assert code in (0, 1), err
    assert "streaming in chunks of 500 rows" in err
    streamed = json.loads((tmp_path / "packed.json").read_text(encoding="utf-8"))
    options = ("--stream", "--chunk-rows", "500", "--workers", "1")
    streamed_plain = _audit_json(plain, tmp_path / "plain.json", capsys, *options)
    # The compressed file streams exactly as the plain one does...
    assert _rows(streamed) == _rows(streamed_plain)
    # ...and agrees with the in-memory audit where both are exact: rows, classes and duplicates.
    assert streamed["dataset"]["rows"] == in_memory["dataset"]["rows"] == len(frame)
    assert streamed["dataset"]["classes"] == in_memory["dataset"]["classes"] == ["cat", "dog", "eel"]
    assert _duplicates(streamed) == _duplicates(in_memory) == sorted(target for _, target in copies)
    label_flagged = {r["row"] for r in streamed["rows"] if "label" in r["channels"]}
    assert len(label_flagged & flips) >= 0.8 * len(flips)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_compressed_reference_measures_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    frame, _, _ = _poisoned(1_500, seed=1)
    reference = tmp_path / "reference.csv.bz2"
    reference.write_bytes(bz2.compress(_table_bytes(frame, "csv")))
    shifted = frame.copy()
    shifted["x0"] = shifted["x0"] + 3.0
    current = tmp_path / "current.jsonl.gz"
    current.write_bytes(gzip.compress(_table_bytes(shifted, "jsonl")))
    if streaming:
        monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", "0")
    argv = ["--reference", str(reference), "--channels", "integrity"]
    argv = ["data", "audit", str(current), "--label", "label", *argv, "--format", "json"]
    code, _, err = _run([*argv, "-o", str(tmp_path / "r.json")], capsys)
    assert code in (0, 1), err
    assert ("streaming in chunks" in err) == streaming
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["channels"]["integrity"]["drift"]["drifted"] == ["x0"]
    assert any(f["rule_id"] == "BST-DATA-007" and "x0" in f["message"] for f in report["findings"])
    assert report["lineage"]["consumed"]["reference"].startswith("manifest-sha256:")


def test_sanitize_validates_against_a_compressed_holdout(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]],
) -> None:
    frame, _, _ = poisoned
    _, train = _pair(tmp_path, frame, "csv")
    held, _, _ = _poisoned(600, seed=5)
    holdout = tmp_path / "holdout.csv.zst"
    holdout.write_bytes(_zstd(_table_bytes(held, "csv")))
    argv = ["data", "sanitize", str(train), "--label", "label", "--channels", CHANNELS, "--validate"]
    argv += ["--recipe", "logreg", "--holdout", str(holdout), "--format", "json"]
    code, out, err = _run(argv, capsys)
    validation = json.loads(out)["validation"]
    assert validation["holdout"] == str(holdout)
    assert validation["holdout_rows"] == 600
    assert code == (0 if validation["accepted"] else 1), err


def test_should_stream_counts_every_gzip_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # gzip's trailer gives only the last member's size: a small last member must not hide the rest.
    raw = _table_bytes(_poisoned(2_000)[0], "csv")
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(raw) + gzip.compress(b"\n"))
    assert load.gzip_size_hint(path) == 1
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", str(len(raw) - 1))
    assert should_stream(path)
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", str(len(raw) + 1))
    assert not should_stream(path)
    assert read_table(path).shape == (2_000, 10)


def test_a_table_read_whole_stops_at_its_decompressed_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reference or holdout is read whole: a small file that expands past the limit is refused, not held.
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 250_000))  # 1 MB of rows in a few KB
    monkeypatch.setattr(load, "DEFAULT_IN_MEMORY_BYTES", 100_000)
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", "1000")
    with pytest.raises(InputError, match=r"bomb\.csv\.gz: holds more than 0 MB once decompressed"):
        read_table(path)
    monkeypatch.setattr(load, "DEFAULT_IN_MEMORY_BYTES", 2_000_000)
    assert read_table(path).shape == (250_000, 2)


def test_an_endless_line_is_refused_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "endless.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1," + b"x" * (1 << 21)))  # a 2 MB row without a line end, in 2 KB
    monkeypatch.setattr(readers, "MAX_ROW_BYTES", 1 << 16)
    with pytest.raises(InputError, match=r"endless\.csv\.gz: line 2: longer than 65536 bytes"):
        list(readers.csv_rows(path).rows)
    monkeypatch.setattr(stream, "CSV_BLOCK_BYTES", 4096)
    monkeypatch.setattr(stream, "MAX_CSV_BLOCK_BYTES", 1 << 16)
    with pytest.raises(InputError, match=r"endless\.csv\.gz: a row is longer than .*is it a table\?"):
        stream.stream_audit(path, "a", chunk_rows=100, workers=1)


# ---------------------------------------------------------------------------------------------------------
# Sanitize: outputs compressed like the input


@pytest.fixture(scope="module")
def plain_sanitized(
    tmp_path_factory: pytest.TempPathFactory, poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]]
) -> Path:
    """The poisoned table as a plain CSV, sanitized with default output names (once for every compression)."""
    plain, _ = _pair(tmp_path_factory.mktemp("sanitized"), poisoned[0], "csv")
    assert main(["data", "sanitize", str(plain), "--label", "label", "--channels", CHANNELS]) == 0
    return plain


@pytest.mark.parametrize("compression", [".gz", ".bz2", ".zst"])
def test_sanitize_writes_outputs_compressed_like_the_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]],
    plain_sanitized: Path,
    compression: str,
) -> None:
    kind, plain = "csv", plain_sanitized
    _, packed = _pair(tmp_path, poisoned[0], kind, compression)
    code, _, err = _run(["data", "sanitize", str(packed), "--label", "label", "--channels", CHANNELS], capsys)
    assert code == 0, err
    suffix = f".{kind}{compression}"
    folder = packed.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [packed.name, f"t.clean{suffix}", f"t.quarantine{suffix}", "t.clean.manifest.json"]
    )
    unpack = DECOMPRESS[compression]
    for role in ("clean", "quarantine"):
        expected = (plain.parent / f"t.{role}.{kind}").read_bytes()
        assert unpack((folder / f"t.{role}{suffix}").read_bytes()) == expected
    manifests = [json.loads((p.parent / "t.clean.manifest.json").read_text()) for p in (plain, packed)]
    (before,), (after,) = (m["files"] for m in manifests)
    assert after["path"] == f"t.clean{suffix}"
    assert after["kind"] == kind
    assert after["row_root"] == before["row_root"]
    clean = folder / f"t.clean{suffix}"
    verify = ["data", "verify", str(clean), "--manifest", str(folder / "t.clean.manifest.json")]
    code, out, err = _run(verify, capsys)
    assert code == 0, out + err


def test_sanitize_a_gzipped_jsonl_with_named_outputs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]],
) -> None:
    frame, _, _ = poisoned
    _, packed = _pair(tmp_path, frame, "jsonl")
    out = tmp_path / "kept.jsonl.gz"
    argv = ["data", "sanitize", str(packed), "--label", "label", "--channels", CHANNELS, "-o", str(out)]
    argv += ["--quarantine", str(tmp_path / "removed.JSONL.GZ"), "--manifest", str(tmp_path / "m.json")]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    original = _table_bytes(frame, "jsonl").splitlines(keepends=True)
    quarantined = [
        json.loads(line)
        for line in gzip.decompress((tmp_path / "removed.JSONL.GZ").read_bytes()).splitlines()
    ]
    rows = {q["bastion_row"] for q in quarantined}
    assert rows
    # The kept lines are the input's own bytes, less the quarantined rows, which keep their numbers.
    assert gzip.decompress(out.read_bytes()) == b"".join(x for i, x in enumerate(original) if i not in rows)
    assert all(q["record"] == json.loads(original[q["bastion_row"]]) for q in quarantined)
    assert _run(["data", "verify", str(out), "--manifest", str(tmp_path / "m.json")], capsys)[0] == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("option", "target", "message"),
    [
        ("-o", "clean.csv", "must end in .csv.gz like the input (it is written as gzip-compressed csv)"),
        ("--quarantine", "q.gz", "must end in .csv.gz like the input"),
        ("--quarantine", "q.csv.bz2", "must end in .csv.gz like the input"),
    ],
)
def test_sanitize_outputs_must_carry_the_full_suffix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, target: str, message: str
) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"x,label\n1,a\n2,b\n"))
    argv = ["data", "sanitize", str(path), "--label", "label", option, str(tmp_path / target)]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv.gz"]


def test_a_compressed_format_that_is_not_read_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.parquet.gz"
    path.write_bytes(gzip.compress(b"PAR1"))
    code, _, err = _run(["data", "audit", str(path), "--label", "y"], capsys)
    assert code == 2
    assert "not a table" in err
    assert ".csv, .tsv and .jsonl may be compressed" in err
    code, _, err = _run(["data", "sanitize", str(path), "--label", "y"], capsys)
    assert code == 2
    assert "sanitize writes .csv, .jsonl, .parquet, .npz files" in err
    assert err.rstrip().endswith("not .gz")


# ---------------------------------------------------------------------------------------------------------
# Corrupt streams: one line, exit 2, nothing written


def _truncated(raw: bytes) -> bytes:
    packed = gzip.compress(raw)
    return packed[: len(packed) // 2]


def _garbage(raw: bytes) -> bytes:
    # A valid gzip header (magic, deflate, no flags) followed by bytes that are no deflate stream.
    rng = np.random.default_rng(0)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("damage", [_truncated, _garbage], ids=["truncated", "garbage"])
@pytest.mark.parametrize(
    "command",
    [
        ["fingerprint", "{path}", "-o", "{dir}/m.json"],
        ["audit", "{path}", "--label", "label", "-o", "{dir}/r.json"],
        ["audit", "{path}", "--label", "label", "--stream", "-o", "{dir}/r.json"],
        ["sanitize", "{path}", "--label", "label"],
        # Read whole by pandas, through the same decompressing reader.
        ["audit", "{good}", "--label", "label", "--reference", "{path}", "-o", "{dir}/r.json"],
        ["sanitize", "{good}", "--label", "label", "--validate", "--holdout", "{path}", "--recipe", "logreg"],
    ],
    ids=["fingerprint", "audit", "audit-stream", "sanitize", "reference", "holdout"],
)
def test_a_corrupt_gzip_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    poisoned: tuple[pd.DataFrame, set[int], list[tuple[int, int]]],
    damage: Callable[[bytes], bytes],
    command: list[str],
) -> None:
    path, good = tmp_path / "t.csv.gz", tmp_path / "good.csv"
    raw = _table_bytes(poisoned[0], "csv")
    path.write_bytes(damage(raw))
    good.write_bytes(raw)
    argv = ["data", *(a.format(path=path, dir=tmp_path, good=good) for a in command)]
    code, _, err = _run(argv, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("bastion: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"bastion: error: {path}: not readable as gzip-compressed data (")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "t.csv.gz"]


def test_a_corrupt_gzip_in_a_folder_is_reported_by_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    path = folder / "t.csv.gz"
    raw = b"x,y\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(2_000))
    path.write_bytes(gzip.compress(raw))
    manifest = tmp_path / "m.json"
    assert _run(["data", "fingerprint", str(folder), "-o", str(manifest)], capsys)[0] == 0
    path.write_bytes(_truncated(raw))
    code, out, _ = _run(["data", "verify", str(folder), "-m", str(manifest), "--format", "json"], capsys)
    assert code == 1
    (change,) = json.loads(out)["changed"]
    assert change["path"] == "t.csv.gz"
    assert "not readable as gzip-compressed data" in change["rows_error"]
