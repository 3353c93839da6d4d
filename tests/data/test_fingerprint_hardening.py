"""Regression tests for defects found in ``bastion data fingerprint/verify/keygen`` by a tester.

Each test names the defect it pins down. New library names are imported inside the tests that use them,
so that against the code before the fixes every test fails on its own assertion.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.cli.main import main
from bastion.data.manifest import build_manifest, manifest_from_json
from bastion.data.verify import RowDiff, diff_manifests, diff_rows
from bastion.errors import InputError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("bastion: error: ")
    assert "internal error" not in err
    return err


def small_dataset(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.csv").write_text("a\n1\n", encoding="utf-8")
    (root / "b.csv").write_text("a\n2\n", encoding="utf-8")
    return root


# 1. fingerprint -o must never replace the data it fingerprints, nor the signing key.


def test_output_over_a_file_of_the_dataset_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_dataset(tmp_path / "ow")
    target = data / "sub" / "data.csv"
    assert main(["data", "fingerprint", str(data), "-o", str(target)]) == 2
    assert "is a file of the dataset" in one_line_error(capsys)
    assert target.read_text(encoding="utf-8") == "a\n1\n"


def test_output_over_the_input_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    single = tmp_path / "single.csv"
    single.write_text("a\n1\n", encoding="utf-8")
    assert main(["data", "fingerprint", str(single), "-o", str(single)]) == 2
    assert "would overwrite the input" in one_line_error(capsys)
    assert single.read_text(encoding="utf-8") == "a\n1\n"


def test_output_over_the_signing_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_dataset(tmp_path / "ow")
    key = tmp_path / "k.pem"
    assert main(["data", "keygen", str(key)]) == 0
    before = key.read_bytes()
    capsys.readouterr()
    assert main(["data", "fingerprint", str(data), "-o", str(key), "--sign-key", str(key)]) == 2
    assert "would overwrite the signing key" in one_line_error(capsys)
    assert key.read_bytes() == before


def test_a_manifest_inside_the_dataset_can_be_refreshed(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "ow")
    manifest = data / "MANIFEST.json"
    assert main(["data", "fingerprint", str(data), "-o", str(manifest)]) == 0
    assert main(["data", "fingerprint", str(data), "-o", str(manifest)]) == 0
    assert [f["path"] for f in json.loads(manifest.read_bytes())["files"]] == ["b.csv", "sub/data.csv"]
    assert main(["data", "verify", str(data), "-m", str(manifest)]) == 0


# 2. Symlinks inside a dataset were silently skipped, so a symlinked poisoned file verified clean.


def test_fingerprint_refuses_a_symlink_leaving_the_dataset(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "d")
    (tmp_path / "evil.csv").write_text("a\nEVIL\n", encoding="utf-8")
    (data / "poison.csv").symlink_to(tmp_path / "evil.csv")
    with pytest.raises(InputError, match=r"poison\.csv: a symbolic link to .*outside the dataset"):
        build_manifest(data)


def test_verify_reports_a_symlink_added_later(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_dataset(tmp_path / "d")
    manifest = tmp_path / "m.json"
    assert main(["data", "fingerprint", str(data), "-o", str(manifest)]) == 0
    (tmp_path / "evil.csv").write_text("a\nEVIL\n", encoding="utf-8")
    (data / "poison.csv").symlink_to(tmp_path / "evil.csv")
    (data / "sub" / "alias.csv").symlink_to("data.csv")  # stays inside: recorded, so reported as added
    capsys.readouterr()
    assert main(["data", "verify", str(data), "-m", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "no differences" not in out
    assert "symlink    poison.csv: a symbolic link to" in out
    assert "added      sub/alias.csv" in out
    assert main(["data", "verify", str(data), "-m", str(manifest), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == ["sub/alias.csv"]
    assert [(u["path"], u["kind"]) for u in report["unverified"]] == [("poison.csv", "symlink")]


def test_a_symlink_inside_the_dataset_is_recorded_as_a_link(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "d")
    (data / "alias.csv").symlink_to("b.csv")
    (data / "subdir-link").symlink_to("sub", target_is_directory=True)
    before = build_manifest(data)
    links = {f.path: f for f in before.files if f.kind == "symlink"}
    assert set(links) == {"alias.csv", "subdir-link"}
    assert links["alias.csv"].sha256 == sha(b"b.csv")
    assert links["alias.csv"].row_hashes is None
    # Retargeting a link to another file of the dataset is a change.
    (data / "alias.csv").unlink()
    (data / "alias.csv").symlink_to("sub/data.csv")
    (change,) = diff_manifests(before, build_manifest(data)).changed
    assert change.path == "alias.csv"
    # So is a regular file holding the link's target text: same size and sha256, but not the same thing.
    (data / "alias.csv").unlink()
    (data / "alias.csv").write_bytes(b"b.csv")
    after = build_manifest(data)
    (change,) = diff_manifests(before, after).changed
    assert change.path == "alias.csv"
    assert after.root != before.root


def test_symlink_loops_are_never_followed(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "d")
    (data / "sub" / "up").symlink_to("..", target_is_directory=True)  # a cycle back to the root
    m = build_manifest(data)
    assert [f.path for f in m.files] == ["b.csv", "sub/data.csv", "sub/up"]
    (data / "loop1").symlink_to("loop2")
    (data / "loop2").symlink_to("loop1")
    with pytest.raises(InputError, match="symbolic link loop"):
        build_manifest(data)


# 3. A subdirectory that cannot be read was left out without a word (Path.rglob swallows the error).


def test_an_unreadable_subdirectory_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_dataset(tmp_path / "d")
    locked = data / "sub"
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        # chmod 000 does not stop root, so the refusal the kernel would give is simulated here.
        if Path(os.fsdecode(path)).resolve() == locked.resolve():
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError, match=r"sub: cannot read the directory \(Permission denied\)"):
        build_manifest(data)
    assert main(["data", "fingerprint", str(data), "-o", str(tmp_path / "m.json")]) == 2
    assert "sub: cannot read the directory" in one_line_error(capsys)
    assert not (tmp_path / "m.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 directory anyway")
def test_a_chmod_000_subdirectory_is_an_error(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "d")
    (data / "sub").chmod(0)
    try:
        with pytest.raises(InputError, match="cannot read the directory"):
            build_manifest(data)
    finally:
        (data / "sub").chmod(0o755)


# 4. Verify did not check an unsigned manifest's own hashes against each other.


def _tamper_row_hash(d: dict[str, Any]) -> None:
    d["files"][0]["row_hashes"][0] = "0" * 64


def _tamper_row_count(d: dict[str, Any]) -> None:
    d["files"][0]["row_count"] = 7


def _tamper_row_root(d: dict[str, Any]) -> None:
    d["files"][0]["row_root"] = "1" * 64


def _tamper_root(d: dict[str, Any]) -> None:
    d["root"] = "2" * 64


def _tamper_duplicate(d: dict[str, Any]) -> None:
    d["files"].append(dict(d["files"][0], sha256="3" * 64))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_tamper_row_hash, "row_root is not the Merkle root of its row hashes"),
        (_tamper_row_count, "records 7 rows but lists 2 row hashes"),
        (_tamper_row_root, "row_root is not the Merkle root"),
        (_tamper_root, "the root is not the Merkle root of the files' hashes"),
        (_tamper_duplicate, "a.csv is listed twice"),
    ],
)
def test_verify_reports_an_inconsistent_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Any, reason: str
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("a\n1\n2\n", encoding="utf-8")
    manifest = tmp_path / "m.json"
    assert main(["data", "fingerprint", str(tmp_path / "d"), "-o", str(manifest)]) == 0
    data = json.loads(manifest.read_bytes())
    tamper(data)
    manifest.write_text(json.dumps(data), encoding="utf-8")
    capsys.readouterr()
    assert main(["data", "verify", str(tmp_path / "d"), "-m", str(manifest), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert reason in report["manifest_error"]
    assert report["ok"] is False
    assert main(["data", "verify", str(tmp_path / "d"), "-m", str(manifest)]) == 1
    assert "manifest: inconsistent" in capsys.readouterr().out


# 5. Integers beyond 2**53 (int64 ids, uint64) were refused as malformed.


def test_big_integers_in_jsonl_are_hashed_by_their_digits(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 9223372036854775807, "u": 18446744073709551615}\n{"id": 7}\n', encoding="utf-8")
    entry = build_manifest(path).files[0]
    assert entry.row_hashes == (
        sha(b'{"id":9223372036854775807,"u":18446744073709551615}'),
        sha(rfc8785.dumps({"id": 7})),  # ordinary rows keep their RFC 8785 bytes
    )
    path.write_text('{"id": ' + "9" * 30 + "}\n", encoding="utf-8")
    with pytest.raises(InputError, match="outside the 64-bit range"):
        build_manifest(path)


def test_big_integers_in_parquet_are_hashed(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    table = pa.table({"u": pa.array([2**64 - 1, 5], pa.uint64()), "i": pa.array([-(2**63), 1], pa.int64())})
    pq.write_table(table, path)
    entry = build_manifest(path).files[0]
    assert entry.row_hashes == (
        sha(b'{"i":-9223372036854775808,"u":18446744073709551615}'),
        sha(b'{"i":1,"u":5}'),
    )


def test_parquet_times_differing_by_nanoseconds_hash_apart(tmp_path: Path) -> None:
    path = tmp_path / "times.parquet"
    nanos = [3_723_000_000_001, 3_723_000_000_002, 3_723_000_001_000, 3_723_000_000_000]
    pq.write_table(pa.table({"t": pa.array(nanos, pa.time64("ns"))}), path)
    entry = build_manifest(path).files[0]
    # Whole microseconds keep the datetime.time form earlier manifests hold; the rest get nine digits.
    assert entry.row_hashes == (
        sha(b'{"t":"01:02:03.000000001"}'),
        sha(b'{"t":"01:02:03.000000002"}'),
        sha(b'{"t":"01:02:03.000001"}'),
        sha(b'{"t":"01:02:03"}'),
    )


# 6. A quote inside an unquoted CSV field merged rows or refused the file.


def test_a_stray_quote_in_an_unquoted_csv_field(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b'h,w\n1,5" tall\n2,3\n3,6" wide\n4,5\n')
    entry = build_manifest(path).files[0]
    assert entry.row_count == 4
    assert entry.row_hashes == tuple(sha(r) for r in (b'1,5" tall', b"2,3", b'3,6" wide', b"4,5"))
    path.write_bytes(b'h,w\n1,5" tall\n')  # one stray quote used to be an unterminated quoted field
    assert build_manifest(path).files[0].row_count == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet='a,"\n', max_size=24))
def test_csv_records_split_as_the_csv_module_does(tmp_path: Path, text: str) -> None:
    from bastion.data.readers import csv_records

    path = tmp_path / "r.csv"
    path.write_bytes(text.encode("utf-8"))
    refused = ""
    try:
        records = [raw for _, raw in csv_records(path)]
    except InputError as exc:
        refused, records = str(exc), []
    if refused:
        # csv.reader accepts a quoted field left open at the end of the data; a manifest refuses it.
        assert "unterminated quoted CSV field" in refused
    else:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert [next(csv.reader([r.decode("utf-8")]), []) for r in records] == rows


# 7. The row diff was quadratic (or worse) on files of repeated rows.


def _line_events(old: list[str], new: list[str]) -> tuple[RowDiff, int]:
    # Work measured as Python line events rather than time, so the test is exact and machine-independent.
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = diff_rows(old, new)
    finally:
        sys.settrace(previous)
    return result, count


def test_row_diff_on_repeated_rows_is_linear() -> None:
    def case(n: int) -> tuple[list[str], list[str]]:
        old = ["r" * 64] * n
        new = list(old)
        new[10] = "x" * 64
        new[n - 10] = "y" * 64
        return old, new

    small_result, small = _line_events(*case(600))
    large_result, large = _line_events(*case(1200))
    assert small_result == RowDiff(changed=(10, 590))
    assert large_result == RowDiff(changed=(10, 1190))
    assert large < 2.6 * small  # twice the rows, about twice the work (quadratic would be four times)


def test_row_diff_keeps_exact_reports_for_common_edits() -> None:
    rows = [f"{i:064x}" for i in range(50)]
    assert diff_rows(rows, [*rows[:20], "n" * 64, *rows[20:]]) == RowDiff(added=(20,))
    assert diff_rows(rows, [*rows[:20], *rows[21:]]) == RowDiff(removed=(20,))
    assert diff_rows(rows, [*rows[:20], "c" * 64, *rows[21:]]) == RowDiff(changed=(20,))
    assert diff_rows(rows, [*rows[:21], rows[20], *rows[21:]]) == RowDiff(added=(21,))
    moved = [*rows[:10], *rows[11:40], rows[10], *rows[40:]]
    assert diff_rows(rows, moved) == RowDiff(added=(39,), removed=(10,))
    ten_k = ["r"] * 10_000
    assert diff_rows(ten_k, [*ten_k[:100], "x", *ten_k[101:9900], "y", *ten_k[9901:]]) == RowDiff(
        changed=(100, 9900)
    )


def test_row_diff_falls_back_to_a_multiset_match_past_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.data import verify

    monkeypatch.setattr(verify, "MAX_EDITS", 3)
    rows = [f"{i:064x}" for i in range(100)]
    new = list(rows)
    for i in (5, 30, 60, 90):
        new[i] = f"edited {i}"
    new.append("appended")
    assert diff_rows(rows, new) == RowDiff(added=(100,), changed=(5, 30, 60, 90))


def _fingerprint_then_rewrite(tmp_path: Path, before: bytes, after: bytes) -> Path:
    """A folder ``d`` whose a.csv held ``before`` when fingerprinted and holds ``after`` now; the manifest."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_bytes(before)
    manifest = tmp_path / "m.json"
    assert main(["data", "fingerprint", str(tmp_path / "d"), "-o", str(manifest)]) == 0
    (tmp_path / "d" / "a.csv").write_bytes(after)
    return manifest


def test_a_file_whose_rows_are_all_still_there_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _fingerprint_then_rewrite(tmp_path, b"h\n1\n2\n", b"h\r\n1\r\n2\r\n")
    capsys.readouterr()
    assert main(["data", "verify", str(tmp_path / "d"), "-m", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "changed    a.csv\n" in out
    assert "rows: none differ (order, line endings or formatting changed)" in out


# 8. Internal errors instead of one-line errors naming the input.


def test_an_npz_member_that_is_not_an_array(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "nonnpy.npz", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(InputError, match=r"nonnpy\.npz: member 'readme\.txt' is not a \.npy array"):
        build_manifest(tmp_path / "nonnpy.npz")


def test_a_file_name_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_dataset(tmp_path / "fn")
    manifest = tmp_path / "m.json"
    assert main(["data", "fingerprint", str(data), "-o", str(manifest)]) == 0
    (data / os.fsdecode(b"\xff.csv")).write_text("a\n1\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["data", "fingerprint", str(data)]) == 2
    assert "\\xff.csv: the name is not valid UTF-8" in one_line_error(capsys)
    assert main(["data", "verify", str(data), "-m", str(manifest), "--format", "json"]) == 1
    (problem,) = json.loads(capsys.readouterr().out)["unverified"]
    assert (problem["path"], problem["kind"]) == ("\\xff.csv", "name")


@pytest.mark.parametrize("option", ["--source", "--actor"])
def test_a_non_utf8_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    data = small_dataset(tmp_path / "d")
    out = tmp_path / "m.json"
    assert main(["data", "fingerprint", str(data), option, os.fsdecode(b"\xff"), "-o", str(out)]) == 2
    assert f"{option}: not valid UTF-8 text" in one_line_error(capsys)
    assert not out.exists()


def test_a_signed_manifest_with_an_integer_too_big_for_rfc8785(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_dataset(tmp_path / "d")
    key, manifest = tmp_path / "k.pem", tmp_path / "m.json"
    assert main(["data", "keygen", str(key)]) == 0
    assert main(["data", "fingerprint", str(data), "-o", str(manifest), "--sign-key", str(key)]) == 0
    text = manifest.read_text(encoding="utf-8").replace('"size":4', '"size":99999999999999999999')
    manifest.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["data", "verify", str(data), "-m", str(manifest)]) == 2
    assert "m.json: not a valid Bastion data manifest (size 99999999999999999999" in one_line_error(capsys)


# 9. A tampered file that no longer parses is a difference (exit 1), not bad input (exit 2).


def test_a_tampered_file_that_no_longer_parses_is_reported_as_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _fingerprint_then_rewrite(tmp_path, b"a\n1\n2\n", b"a\n\xff\n2\n")
    capsys.readouterr()
    assert main(["data", "verify", str(tmp_path / "d"), "-m", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "changed    a.csv\n" in out  # no "(schema changed)": the schema could not be read either
    assert "rows unreadable: line 2: not UTF-8 text" in out
    assert main(["data", "verify", str(tmp_path / "d"), "-m", str(manifest), "--format", "json"]) == 1
    (change,) = json.loads(capsys.readouterr().out)["changed"]
    assert change["rows"] is None
    assert change["rows_error"].startswith("line 2: not UTF-8 text")


# 10. keygen wrote the private key, then failed on the public key's temporary name.


def test_keygen_writes_both_keys_or_neither(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / ("k" * 249 + ".pem")  # fits; its .pub.pem (253 + 8 bytes) does not
    assert main(["data", "keygen", str(key)]) == 2
    err = one_line_error(capsys)
    assert f"{key}: cannot write its public key" in err
    assert "nothing was written" in err
    assert ".tmp" not in err
    assert list(tmp_path.iterdir()) == []
    assert main(["data", "keygen", str(tmp_path / "ok.pem")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.pem", "ok.pub.pem"]


def test_keygen_refuses_an_existing_public_key_without_writing(tmp_path: Path) -> None:
    (tmp_path / "k.pub.pem").write_text("mine", encoding="utf-8")
    assert main(["data", "keygen", str(tmp_path / "k.pem")]) == 2
    assert not (tmp_path / "k.pem").exists()
    assert (tmp_path / "k.pub.pem").read_text(encoding="utf-8") == "mine"


# 11. A bad --db failed only after the manifest had been written.


def test_a_bad_db_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_dataset(tmp_path / "d")
    out = tmp_path / "m.json"
    db = f"sqlite:///{tmp_path}/missing/folder/events.db"
    assert main(["data", "fingerprint", str(data), "-o", str(out), "--db", db]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert not out.exists()


# 12. Unknown fields and duplicate keys passed as "signature: valid".


@pytest.fixture
def signed_manifest(tmp_path: Path) -> Path:
    data = small_dataset(tmp_path / "d")
    key, manifest = tmp_path / "k.pem", tmp_path / "m.json"
    assert main(["data", "keygen", str(key)]) == 0
    assert main(["data", "fingerprint", str(data), "-o", str(manifest), "--sign-key", str(key)]) == 0
    return manifest


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: t.replace('{"created"', '{"source":"evil","created"', 1), "duplicate key 'source'"),
        (lambda t: t.replace('{"created"', '{"extra":1,"created"', 1), "unknown field 'extra'"),
        (lambda t: t.replace('"kind":"csv"', '"kind":"csv","note":1', 1), "unknown field 'note'"),
        (lambda t: t.replace('{"created"', '{"lineage":[],"created"', 1), "lineage is empty"),
        (lambda t: t.replace('{"created"', '{"lineage":null,"created"', 1), "lineage is null"),
        (lambda t: t.replace('"schema_version":1', '"schema_version":true', 1), "unsupported schema_version"),
    ],
)
def test_a_manifest_is_read_strictly(
    signed_manifest: Path, capsys: pytest.CaptureFixture[str], edit: Any, reason: str
) -> None:
    text = edit(signed_manifest.read_text(encoding="utf-8"))
    assert text != signed_manifest.read_text(encoding="utf-8")
    signed_manifest.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["data", "verify", str(signed_manifest.parent / "d"), "-m", str(signed_manifest)]) == 2
    err = one_line_error(capsys)
    assert "not a valid Bastion data manifest" in err
    assert reason in err


def test_a_pretty_printed_manifest_still_loads(signed_manifest: Path) -> None:
    original = manifest_from_json(signed_manifest.read_bytes())
    assert manifest_from_json(json.dumps(json.loads(signed_manifest.read_bytes()), indent=2)) == original


# 13. Control characters in names were printed raw, so "\r" could forge an "ok" line.


def test_control_characters_in_names_are_escaped_in_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_dataset(tmp_path / "d")
    manifest = tmp_path / "m.json"
    assert main(["data", "fingerprint", str(data), "-o", str(manifest)]) == 0
    forged = "x\rok         no differences\n\x1b[2K.csv"
    (data / forged).write_text("a\n1\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["data", "verify", str(data), "-m", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "added      x\\x0dok         no differences\\x0a\\x1b[2K.csv\n" in out
    assert "\r" not in out
    assert "\x1b" not in out
    assert main(["data", "verify", str(data), "-m", str(manifest), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["added"] == [forged]  # JSON keeps the exact name


# 14. Misleading messages for odd PATHs and corrupt NumPy files.


def test_odd_paths_get_accurate_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    expected = {
        "fifo": "not a regular file or directory (a FIFO)",
        "loop1": "a symbolic link loop",
        "dangling": "a broken symbolic link",
        "missing": "no such file or directory",
    }
    for name, message in expected.items():
        assert main(["data", "fingerprint", str(tmp_path / name)]) == 2
        assert f"{name}: {message}" in one_line_error(capsys)
    assert main(["data", "fingerprint", ""]) == 2
    assert "an empty path" in one_line_error(capsys)
    assert main(["data", "verify", "", "-m", str(tmp_path / "m.json")]) == 2
    assert "an empty path" in one_line_error(capsys)


def test_a_text_file_named_npz(tmp_path: Path) -> None:
    (tmp_path / "t.npz").write_text("hello\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.npz: not a \.npz archive \(not a zip file\)"):
        build_manifest(tmp_path / "t.npz")


def test_a_corrupt_npy_header(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.arange(6).reshape(2, 3))
    raw = bytearray((tmp_path / "c.npy").read_bytes())
    header_length = int.from_bytes(raw[8:10], "little")
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3\n"
    raw[10 : 10 + header_length] = header.ljust(header_length - 1) + b"\n"
    (tmp_path / "c.npy").write_bytes(bytes(raw))
    with pytest.raises(InputError) as info:
        build_manifest(tmp_path / "c.npy")
    assert str(info.value).endswith(
        "c.npy: not a readable .npy array (its header is not a valid NumPy header dictionary)"
    )


# 15. CSV edge cases: CR-only line endings, a header field over 128 KiB, a blank first line.


def test_csv_with_cr_only_line_endings(tmp_path: Path) -> None:
    (tmp_path / "cr.csv").write_bytes(b'a,b\r1,"x\ry"\r3,4\r')
    (tmp_path / "lf.csv").write_bytes(b'a,b\n1,"x\ny"\n3,4\n')
    cr, lf = build_manifest(tmp_path / "cr.csv").files[0], build_manifest(tmp_path / "lf.csv").files[0]
    assert cr.schema == {"columns": ["a", "b"]}
    assert cr.row_count == 2
    assert cr.row_hashes == lf.row_hashes


def test_csv_header_field_longer_than_the_csv_module_limit(tmp_path: Path) -> None:
    wide = "x" * (csv.field_size_limit() + 10)
    (tmp_path / "w.csv").write_text(f'{wide},"b,""c"""\n1,2\n', encoding="utf-8")
    entry = build_manifest(tmp_path / "w.csv").files[0]
    assert entry.schema == {"columns": [wide, 'b,"c"']}
    assert entry.row_count == 1


def test_csv_blank_lines_before_the_header(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_bytes(b"\n\r\na,b\n1,2\n")
    entry = build_manifest(tmp_path / "b.csv").files[0]
    assert entry.schema == {"columns": ["a", "b"]}
    assert entry.row_hashes == (sha(b"1,2"),)


def test_csv_header_with_a_bare_carriage_return(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_bytes(b"a\rb,c\n1,2\n")
    with pytest.raises(
        InputError, match=r"line 1: unreadable CSV header \(a line break inside an unquoted field\)"
    ):
        build_manifest(tmp_path / "h.csv")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab,"\r\n ', max_size=16).filter(lambda t: t.strip("\r\n")))
def test_split_csv_record_agrees_with_the_csv_module(text: str) -> None:
    from bastion.data.readers import split_csv_record

    try:
        expected: list[str] | None = next(csv.reader([text]), [])
    except csv.Error:
        expected = None
    try:
        got: list[str] | None = split_csv_record(text)
    except csv.Error:
        got = None
    assert got == expected
