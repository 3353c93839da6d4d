"""Building manifests: kinds, rows, schema, canonical JSON, bad inputs and a hypothesis parser test."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.data.manifest import (
    MANIFEST_FORMAT,
    build_manifest,
    load_manifest,
    manifest_from_json,
)
from bastion.data.merkle import merkle_root_hex
from bastion.errors import InputError


def test_directory_manifest_covers_every_kind(dataset: Path) -> None:
    m = build_manifest(dataset, "unit test")
    kinds = {f.path: f.kind for f in m.files}
    assert kinds == {
        "README.txt": "other",
        "arr.npy": "npy",
        "images/a.png": "image",
        "rows.jsonl": "jsonl",
        "t.parquet": "parquet",
        "table.csv": "csv",
    }
    assert [f.path for f in m.files] == sorted(kinds)
    assert m.source == "unit test"
    counts = {f.path: f.row_count for f in m.files}
    assert counts == {
        "README.txt": None,
        "arr.npy": 4,
        "images/a.png": None,
        "rows.jsonl": 5,
        "t.parquet": 3,
        "table.csv": 4,
    }


def test_file_hash_and_row_hashes(dataset: Path) -> None:
    m = build_manifest(dataset / "table.csv")
    (entry,) = m.files
    assert entry.path == "table.csv"
    assert entry.sha256 == hashlib.sha256((dataset / "table.csv").read_bytes()).hexdigest()
    assert entry.row_hashes is not None
    assert entry.row_hashes[0] == hashlib.sha256(b"1,alice,0.5").hexdigest()
    assert entry.row_root == merkle_root_hex(entry.row_hashes)
    assert entry.schema == {"columns": ["id", "name", "score"]}


def test_csv_line_endings_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"h\r\n1\r\n2\r\n")
    (tmp_path / "b.csv").write_bytes(b"h\n1\n2")
    a, b = build_manifest(tmp_path / "a.csv").files[0], build_manifest(tmp_path / "b.csv").files[0]
    assert a.row_hashes == b.row_hashes
    assert a.sha256 != b.sha256


def test_csv_quoted_newline_is_one_row(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_bytes(b'a,b\n1,"two\nlines"\n3,x\n')
    entry = build_manifest(tmp_path / "q.csv").files[0]
    assert entry.row_count == 2
    assert entry.row_hashes is not None
    assert entry.row_hashes[0] == hashlib.sha256(b'1,"two\nlines"').hexdigest()


def test_jsonl_rows_are_canonical(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"b": 1, "a": 2}\n\n{"c": [1.0]}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"a":2,"b":1}\n{"c":[1]}\n', encoding="utf-8")
    a, b = build_manifest(tmp_path / "a.jsonl").files[0], build_manifest(tmp_path / "b.jsonl").files[0]
    assert a.row_hashes == b.row_hashes
    assert a.row_hashes is not None
    assert a.row_hashes[0] == hashlib.sha256(b'{"a":2,"b":1}').hexdigest()
    assert a.schema == {"keys": ["a", "b", "c"]}


def test_schemas(dataset: Path) -> None:
    m = build_manifest(dataset)
    by_path = {f.path: f.schema for f in m.files}
    assert by_path["arr.npy"] == {"dtype": "<i4", "shape": [4, 3]}
    assert by_path["images/a.png"] == {"format": "PNG", "size": [4, 3], "mode": "RGB"}
    assert by_path["t.parquet"] == {
        "fields": [{"name": "x", "type": "int64"}, {"name": "y", "type": "string"}]
    }


def test_npz_rows(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "a.npz", x=np.zeros((2, 2)), y=np.ones(3))
    entry = build_manifest(tmp_path / "a.npz").files[0]
    assert entry.kind == "npz"
    assert entry.row_count == 5
    assert entry.schema == {
        "arrays": {"x": {"dtype": "<f8", "shape": [2, 2]}, "y": {"dtype": "<f8", "shape": [3]}}
    }


def test_canonical_json_is_byte_stable(dataset: Path) -> None:
    m = build_manifest(dataset, "s")
    data = m.to_json()
    assert data == rfc8785.dumps(json.loads(data))
    again = manifest_from_json(data)
    assert again == m
    assert again.to_json() == data
    assert json.loads(data)["format"] == MANIFEST_FORMAT
    # The digest ignores the creation time only through equality of content: same content, same digest.
    assert replace(m).digest() == m.digest()


def test_load_manifest_rejects_other_json(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(InputError, match=r"m\.json: not a valid Bastion data manifest"):
        load_manifest(bad)
    bad.write_text("not json", encoding="utf-8")
    with pytest.raises(InputError, match="not a valid Bastion data manifest"):
        load_manifest(bad)
    with pytest.raises(InputError, match="cannot read the manifest"):
        load_manifest(tmp_path / "missing.json")


def test_truncated_manifest_field(dataset: Path) -> None:
    data = json.loads(build_manifest(dataset).to_json())
    del data["files"][0]["sha256"]
    with pytest.raises(InputError, match="missing field 'sha256'"):
        manifest_from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", b'{"a": 1}\n{"a": \n', "line 2: malformed JSON line"),
        ("nan.jsonl", b"NaN\n", "line 1: malformed JSON line"),
        ("big.jsonl", b"1" * 400 + b"\n", "line 1: malformed JSON line"),
        ("deep.jsonl", b"[" * 100_000 + b"\n", "line 1: malformed JSON line"),
        ("bad.csv", b"a,b\n\xff\xfe,1\n", "line 2: not UTF-8"),
        ("open.csv", b'a,b\n1,"unterminated\n', "unterminated quoted CSV field"),
        ("bad.npy", b"\x93NUMPY garbage", "not a readable .npy array"),
        ("zip.npz", b"PK\x03\x04garbage", "not a readable .npz archive"),
        ("bad.parquet", b"PAR1 nope", "not a readable Parquet file"),
        ("bad.png", b"\x89PNG nope", "not a readable image"),
    ],
)
def test_bad_inputs_raise_input_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        build_manifest(tmp_path / name)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_object_npy_is_refused(tmp_path: Path) -> None:
    import numpy as np

    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        build_manifest(tmp_path / "o.npy")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        build_manifest(tmp_path / "nope")


def test_excluded_files_are_skipped_and_symlinks_out_of_the_dataset_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a", encoding="utf-8")
    (tmp_path / "d" / "manifest.json").write_text("{}", encoding="utf-8")
    m = build_manifest(tmp_path / "d", exclude=[tmp_path / "d" / "manifest.json"])
    assert [f.path for f in m.files] == ["a.txt"]
    # A link out of the dataset is neither followed (its target's hashes would be published and could
    # change behind the manifest) nor skipped in silence (a poisoned file could hide behind it).
    (tmp_path / "outside.txt").write_text("secret", encoding="utf-8")
    (tmp_path / "d" / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(InputError, match=r"link\.txt: a symbolic link to .*outside the dataset"):
        build_manifest(tmp_path / "d", exclude=[tmp_path / "d" / "manifest.json"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_any_bytes_fingerprint_or_raise_input_error(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    message = ""
    try:
        m = build_manifest(path)
    except InputError as exc:
        message = str(exc)
    else:
        assert m.files[0].sha256 == hashlib.sha256(content).hexdigest()
    assert "\n" not in message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(alphabet='{}[]":,0123456789.eE+-abtrufnl \\', max_size=30), max_size=6))
def test_json_like_lines_fingerprint_or_raise_input_error(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with contextlib.suppress(InputError):
        build_manifest(path)


def test_truncated_npz_is_input_error(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "t.npz", x=np.arange(10))
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[:-60])
    with pytest.raises(InputError, match=r"t\.npz"):
        build_manifest(tmp_path / "t.npz")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.binary(max_size=120),
    suffix=st.sampled_from([".npy", ".npz", ".parquet", ".png"]),
    magic=st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"PAR1", b"\x89PNG\r\n\x1a\n"]),
)
def test_binary_formats_fingerprint_or_raise_input_error(
    tmp_path: Path, content: bytes, suffix: str, magic: bytes
) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(magic + content + (b"PAR1" if suffix == ".parquet" else b""))
    with contextlib.suppress(InputError):
        build_manifest(path)


def test_oversized_rows_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.data import readers

    monkeypatch.setattr(readers, "MAX_ROW_BYTES", 16)
    (tmp_path / "long.jsonl").write_bytes(b'"' + b"x" * 40 + b'"\n')
    with pytest.raises(InputError, match="line 1: longer than"):
        build_manifest(tmp_path / "long.jsonl")
    (tmp_path / "q.csv").write_bytes(b'h\n"' + b"abcdefgh\n" * 4 + b'"\n')
    with pytest.raises(InputError, match="line 2: CSV record longer than"):
        build_manifest(tmp_path / "q.csv")


def test_csv_byte_order_mark_is_not_in_the_header(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbfid,name\n1,a\n")
    assert build_manifest(tmp_path / "b.csv").files[0].schema == {"columns": ["id", "name"]}
