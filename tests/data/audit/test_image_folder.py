"""Image folders (DIR/<class>/<images>): loading, label and backdoor channels by file, bad input, sanitize."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bastion.cli.main import main
from bastion.data.audit.base import AuditOptions
from bastion.data.audit.image_folder import load_image_folder
from bastion.data.audit.load import load_companion, load_dataset
from bastion.data.audit.report import render_json, render_markdown, render_table
from bastion.data.audit.run import run_audit
from bastion.data.manifest import load_manifest
from bastion.errors import InputError

# Bottom-right 2x2 patch of an 8x8 digit, as tests/data/audit/test_audit_backdoor.py stamps it.
PATCH = (slice(6, 8), slice(6, 8))


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(path)
    return path


def _noise(seed: int, shape: tuple[int, ...] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _two_classes(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            _png(root / name / f"{i}.png", _noise(100 + 100 * c + i))
    return root


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first 1,000 scikit-learn digits as 8-bit 8x8 images, and their classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images[:1000] * 255 / 16).astype(np.uint8)
    return images, np.asarray(bunch.target[:1000])


def _digit_folder(root: Path, images: np.ndarray, folders: np.ndarray) -> list[str]:
    """Write image i as ``<folder>/d<i>.png``; the relative paths in row order."""
    for i, (pixels, folder) in enumerate(zip(images, folders, strict=True)):
        _png(root / str(folder) / f"d{i:04d}.png", pixels)
    return sorted(f"{f}/d{i:04d}.png" for i, f in enumerate(folders))


# --- loading ------------------------------------------------------------------------------------------


def test_rows_follow_sorted_paths_and_labels_are_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _png(root / "dog" / "b.png", _noise(1))
    _png(root / "dog" / "a.png", _noise(2))
    _png(root / "cat" / "z.png", _noise(3))
    _png(root / "cat" / "inner" / "a.png", _noise(4))  # a subfolder belongs to its class
    _png(root / "cat-2" / "x.png", _noise(5))
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / ".hidden").mkdir()
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("a folder of pets")
    data = load_image_folder(root, "class")
    # Sorted by path components, as the manifest lists them: "cat" sorts before "cat-2" although "/" > "-".
    assert data.files == ["cat/inner/a.png", "cat/z.png", "cat-2/x.png", "dog/a.png", "dog/b.png"]
    assert data.classes == ["cat", "cat-2", "dog"]
    assert [data.classes[c] for c in data.labels] == ["cat", "cat", "cat-2", "dog", "dog"]
    assert data.kind == "image"
    assert data.image_shape == (8, 8)
    assert data.feature_names[:3] == ["y0x0", "y0x1", "y0x2"]
    # Scaled as .npz images are: divided by the largest pixel value.
    pixels = np.stack([_noise(s) for s in (4, 3, 5, 2, 1)]).reshape(5, -1).astype(np.float64)
    assert np.allclose(data.features, pixels / pixels.max())
    assert data.folder["skipped_files"] == 2
    assert data.folder["skipped_examples"] == ["README.md", "dog/notes.txt"]
    assert data.folder["hidden_skipped"] == 2
    assert data.folder["resized"] == 0


def test_features_match_the_same_pixels_as_npz(tmp_path: Path) -> None:
    pixels = np.stack([_noise(s) // 2 for s in range(6)])  # darker than 255: the largest value scales
    classes = np.array(["a", "a", "a", "b", "b", "b"])
    for i, (image, name) in enumerate(zip(pixels, classes, strict=True)):
        _png(tmp_path / "folder" / name / f"{i}.png", image)
    np.savez(tmp_path / "same.npz", x=pixels, y=classes)
    folder, arrays = load_dataset(tmp_path / "folder", "class"), load_dataset(tmp_path / "same.npz", "y")
    assert np.array_equal(folder.features, arrays.features)
    assert np.array_equal(folder.labels, arrays.labels)
    assert folder.image_shape == arrays.image_shape


def test_one_mode_and_one_size_for_every_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _two_classes(tmp_path / "mixed")
    _png(root / "dog" / "colour.png", _noise(7, (8, 8, 3)))
    _png(root / "dog" / "wide.png", _noise(8, (8, 16)))
    _png(root / "cat" / "photo.jpg", _noise(9, (20, 20, 3)))
    data = load_image_folder(root, "class")
    assert data.image_shape == (8, 8, 3)  # one colour image makes every image RGB
    assert data.folder["mode"] == "RGB"
    assert data.folder["size"] == [8, 8]  # the most common size
    assert data.folder["resized"] == 2
    assert data.feature_names[:3] == ["y0x0r", "y0x0g", "y0x0b"]
    gray = np.asarray(data.features.reshape(-1, 8, 8, 3)[data.files.index("cat/0.png")])
    assert np.allclose(gray[..., 0], gray[..., 1])  # a grayscale image became three equal channels
    monkeypatch.setenv("BASTION_AUDIT_IMAGE_SIDE", "4")
    small = load_image_folder(root, "class")
    assert small.image_shape == (4, 4, 3)
    assert small.folder["resized"] == len(small.files)
    assert "at most 4" in small.folder["rule"]


def test_sixteen_bit_images_keep_their_depth(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    values = {"a": 1000, "b": 40000}
    for name, top in values.items():
        pixels = np.full((4, 4), top, dtype=np.uint16)
        pixels[0, 0] = 0
        _png(root / name / "x.png", pixels)
        _png(root / name / "y.png", pixels // 2)
    data = load_image_folder(root, "class")
    assert data.folder["mode"] == "F"
    # Converting to 8 bits would have clipped both classes to 255; their ratio survives instead.
    assert data.features.max() == 1.0
    assert data.features[data.files.index("a/x.png")].max() == pytest.approx(1000 / 40000)


def test_a_holdout_folder_is_decoded_like_the_data(tmp_path: Path) -> None:
    data = load_image_folder(_two_classes(tmp_path / "train"), "class")
    holdout = tmp_path / "holdout"
    _png(holdout / "dog" / "big.png", _noise(3, (32, 32)))
    _png(holdout / "cat" / "one.png", _noise(4, (8, 8)))
    other = load_companion(holdout, data, "class")
    assert other.features.shape == (2, 64)
    assert [other.classes[c] for c in other.labels] == ["cat", "dog"]
    _png(holdout / "bird" / "x.png", _noise(5))
    with pytest.raises(InputError, match="label 'bird' does not occur"):
        load_companion(holdout, data, "class")


# --- bad input ---------------------------------------------------------------------------------------


def _corrupt(root: Path) -> str:
    (root / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return "dog/bad.png: not a readable image"


def _truncated(root: Path) -> str:
    whole = _png(root / "dog" / "cut.png", _noise(5, (64, 64))).read_bytes()
    (root / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])
    return "dog/cut.png: not a readable image"


def _postscript(root: Path) -> str:
    # Pillow would hand this to its EPS plugin, which runs Ghostscript; only image formats are decoded.
    (root / "dog" / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    return "dog/eps.png: not a readable image"


def _top_level_image(root: Path) -> str:
    _png(root / "loose.png", _noise(6))
    return "loose.png: an image outside any class folder"


def _link_outside(root: Path) -> str:
    outside = _png(root.parent / "elsewhere.png", _noise(6))
    (root / "dog" / "link.png").symlink_to(outside)
    return "dog/link.png: a symbolic link to"


def _broken_link(root: Path) -> str:
    (root / "dog" / "gone.png").symlink_to(root / "nowhere.png")
    return "dog/gone.png: a broken symbolic link"


def _linked_folder(root: Path) -> str:
    (root / "cat" / "more").symlink_to(root / "dog")
    return "cat/more: a symbolic link to a folder"


def _empty_class(root: Path) -> str:
    (root / "bird").mkdir()
    (root / "bird" / "notes.txt").write_text("no images here")
    return "bird: a class folder with no images"


def _mixed_depth(root: Path) -> str:
    _png(root / "dog" / "deep.png", np.full((8, 8), 3000, dtype=np.uint16))
    return "mixes 16/32-bit grayscale images (dog/deep.png) with 8-bit ones (cat/0.png)"


def _fifo(root: Path) -> str:
    os.mkfifo(root / "dog" / "pipe.png")
    return "dog/pipe.png: not a regular file (a FIFO)"


@pytest.mark.parametrize(
    "break_it",
    [
        _corrupt,
        _truncated,
        _postscript,
        _top_level_image,
        _link_outside,
        _broken_link,
        _linked_folder,
        _empty_class,
        _mixed_depth,
        _fifo,
    ],
)
def test_bad_folders_are_one_line_errors_naming_the_file(tmp_path: Path, break_it: object) -> None:
    root = _two_classes(tmp_path / "data")
    message = break_it(root)  # type: ignore[operator]
    with pytest.raises(InputError) as raised:
        load_dataset(root, "class")
    text = raised.value.diagnostics()
    assert message in text
    assert len(text.splitlines()) == 1


@pytest.mark.parametrize("limit", [1000, 3000])  # Pillow's error (over twice the limit) and its warning
def test_a_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    root = _two_classes(tmp_path / "data")
    _png(root / "dog" / "bomb.png", np.zeros((64, 64), dtype=np.uint8))
    # 4,096 pixels: above the lowered limit, as a 100,000-pixel-square PNG of a few kilobytes is above
    # the real one.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(InputError, match=r"dog/bomb\.png: refused as a possible decompression bomb"):
        load_image_folder(root, "class")


@pytest.mark.parametrize(
    ("build", "label", "message"),
    [
        (lambda root: root.mkdir(), "class", "the folder is empty"),
        (lambda root: _png(root / "cat" / "a.png", _noise(1)), "class", "a single class folder ('cat')"),
        (lambda root: (root.mkdir(), (root / "x.txt").write_text("")), "class", "no class folders"),
        (lambda root: _two_classes(root), "label", "pass --label class (not 'label')"),
    ],
)
def test_folders_that_are_not_image_folders(tmp_path: Path, build: object, label: str, message: str) -> None:
    root = tmp_path / "data"
    build(root)  # type: ignore[operator]
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_image_folder(root, label)


def test_memory_budget_is_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _two_classes(tmp_path / "data")
    monkeypatch.setenv("BASTION_AUDIT_IN_MEMORY_BYTES", "1000")  # six 8x8 images need 3,072 bytes
    with pytest.raises(InputError) as raised:
        load_image_folder(root, "class")
    text = raised.value.diagnostics()
    assert "6 images of 8x8 decode to" in text
    assert "BASTION_AUDIT_IN_MEMORY_BYTES" in text
    assert "BASTION_AUDIT_IMAGE_SIDE" in text


# --- channels on files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def poisoned_folder(
    digits: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, set[str], set[str]]:
    """Digits as a folder: 12 images moved to a wrong class folder, and a 2x2-patch backdoor on 100 images
    of other classes moved into folder 0 (10%, the rate test_audit_backdoor.py finds on digits)."""
    images, classes = digits
    rng = np.random.default_rng(3)
    images, folders = images.copy(), classes.copy()
    backdoor = np.sort(rng.choice(np.flatnonzero(classes != 0), 100, replace=False))
    images[(backdoor, *PATCH)] = 255
    folders[backdoor] = 0
    rest = np.setdiff1d(np.flatnonzero(classes != 0), backdoor)
    moved = np.sort(rng.choice(rest, 12, replace=False))
    folders[moved] = (classes[moved] + rng.integers(1, 9, len(moved))) % 9 + 1  # never 0, never their own
    assert np.all(folders[moved] != classes[moved])
    root = tmp_path_factory.mktemp("digits") / "train"
    _digit_folder(root, images, folders)
    return (
        root,
        {f"{folders[i]}/d{i:04d}.png" for i in moved},
        {f"0/d{i:04d}.png" for i in backdoor},
    )


@pytest.fixture(scope="module")
def poisoned_report(poisoned_folder: tuple[Path, set[str], set[str]]) -> dict[str, object]:
    root, _, _ = poisoned_folder
    data = load_dataset(root, "class")
    result = run_audit(data, AuditOptions(seed=0, channels=("label", "backdoor")))
    return {"json": json.loads(render_json(result, label="class")), "table": render_table(result)}


def test_relabelled_images_are_flagged_with_their_files(
    poisoned_folder: tuple[Path, set[str], set[str]], poisoned_report: dict[str, object]
) -> None:
    root, moved, _ = poisoned_folder
    report = poisoned_report["json"]
    rows = report["rows"]  # type: ignore[index]
    by_label = {r["file"] for r in rows if "label" in r["channels"]}
    assert len(by_label & moved) >= 10
    assert len(by_label - moved) <= 10
    # Each row's number is its file's position among the folder's sorted paths.
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
    assert all(files[r["row"]] == r["file"] for r in rows)


def test_backdoor_moved_into_a_target_folder_is_found_by_file(
    poisoned_folder: tuple[Path, set[str], set[str]], poisoned_report: dict[str, object]
) -> None:
    root, _, planted = poisoned_folder
    report = poisoned_report["json"]
    rows = report["rows"]  # type: ignore[index]
    by_backdoor = {r["file"] for r in rows if "backdoor" in r["channels"]}
    assert len(by_backdoor & planted) >= 97
    assert len(by_backdoor - planted) <= 4
    (pattern,) = report["channels"]["backdoor"]["patterns"]  # type: ignore[index]
    assert pattern["target_name"] == "0"
    # Pixel features are named by position, so the trigger reads as the bottom-right corner.
    assert set(pattern["feature_names"]) == {"y6x6", "y6x7", "y7x6", "y7x7"}
    # The table shows each row's file beside its number.
    lines = str(poisoned_report["table"]).splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ROW", "FILE"])
    shown = [line.split()[:2] for line in lines[header + 1 :] if line.split() and line.split()[0].isdigit()]
    files = {r["row"]: r["file"] for r in rows}
    assert len(shown) == 30
    assert all(files[int(row)] == file for row, file in shown)
    assert report["dataset"]["path"] == str(root)  # type: ignore[index]


# --- CLI and sanitize --------------------------------------------------------------------------------


@pytest.fixture
def conflicting(tmp_path: Path) -> Path:
    """Two classes of noise images, one of them also copied into the other class's folder."""
    root = _two_classes(tmp_path / "pets", per_class=12)
    (root / "dog" / "copy.png").write_bytes((root / "cat" / "4.png").read_bytes())
    (root / "cat" / "notes.txt").write_text("kept out of the audit and of the copies")
    return root


def test_cli_audit_json_names_files_and_rejects_output_inside(
    conflicting: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "audit.json"
    argv = ["data", "audit", str(conflicting), "--label", "class", "--channels", "integrity"]
    capsys.readouterr()
    assert main([*argv, "--format", "json", "-o", str(report)]) in (0, 1)
    err = capsys.readouterr().err
    assert "25 images in 2 classes, decoded as L 8x8; 1 non-image files skipped (cat/notes.txt)" in err
    data = json.loads(report.read_text())
    files = {r["file"]: r for r in data["rows"]}
    assert set(files) == {"cat/4.png", "dog/copy.png"}
    assert all(r["quarantine"] for r in files.values())
    assert data["dataset"]["image_folder"]["skipped_files"] == 1
    assert data["lineage"]["consumed"]["data_root"].startswith("merkle-sha256:")
    assert main([*argv, "--format", "markdown"]) in (0, 1)
    assert "| Row | File | Score | Channels | Suggested | Reason |" in capsys.readouterr().out
    # A report inside the folder would become one of its files.
    assert main([*argv, "-o", str(conflicting / "r.json")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert main([*argv, "--stream"]) == 2
    assert "drop --stream" in capsys.readouterr().err
    assert main(["data", "audit", str(conflicting), "--label", "y"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pass --label class" in err
    assert len(err.splitlines()) == 1


def test_sanitize_copies_images_byte_for_byte_and_verifies(
    conflicting: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.read_bytes() for p in conflicting.rglob("*") if p.is_file()}
    key = tmp_path / "k.pem"
    assert main(["data", "keygen", str(key)]) == 0
    argv = ["data", "sanitize", str(conflicting), "--label", "class", "--channels", "integrity"]
    capsys.readouterr()
    assert main([*argv, "--sign-key", str(key), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    clean, quarantine = tmp_path / "pets.clean", tmp_path / "pets.quarantine"
    manifest_path = tmp_path / "pets.clean.manifest.json"
    assert summary["clean"] == str(clean)
    assert summary["quarantined"] == 2
    assert {p: p.read_bytes() for p in conflicting.rglob("*") if p.is_file()} == before  # input untouched
    kept = sorted(str(p.relative_to(clean)) for p in clean.rglob("*") if p.is_file())
    removed = sorted(str(p.relative_to(quarantine)) for p in quarantine.rglob("*") if p.is_file())
    assert removed == ["cat/4.png", "dog/copy.png", "reasons.csv"]
    assert len(kept) == 23
    assert "cat/notes.txt" not in kept
    for name in kept:
        assert (clean / name).read_bytes() == (conflicting / name).read_bytes()
    for name in removed[:2]:
        assert (quarantine / name).read_bytes() == (conflicting / name).read_bytes()
    with (quarantine / "reasons.csv").open(newline="") as fh:
        reasons = list(csv.DictReader(fh))
    assert [(r["row"], r["file"], r["label"]) for r in reasons] == [
        ("6", "cat/4.png", "cat"),  # cat/0, cat/1, cat/10, cat/11, cat/2, cat/3, cat/4: sorted by name
        ("24", "dog/copy.png", "dog"),
    ]
    assert all(r["channels"] == "label" and "same features" in r["reason"] for r in reasons)
    manifest = load_manifest(manifest_path)
    assert sorted(f.path for f in manifest.files) == kept
    (record,) = manifest.lineage
    assert record["produced"]["clean"] == f"merkle-sha256:{manifest.root}"
    assert record["parameters"]["label"] == "class"
    verify = ["data", "verify", str(clean), "--manifest", str(manifest_path)]
    assert main([*verify, "--public-key", str(tmp_path / "k.pub.pem")]) == 0
    # The outputs exist now: nothing is replaced without --force, and no stray temporary folder is left.
    capsys.readouterr()
    assert main(argv) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["pets", "pets.clean", "pets.quarantine", "pets.clean.manifest.json", "k.pem", "k.pub.pem"]
    )
    assert main([*argv, "--force"]) == 0
    assert sorted(str(p.relative_to(quarantine)) for p in quarantine.rglob("*") if p.is_file()) == removed


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["-o", "{d}/pets/clean"], "-o/--output {d}/pets/clean: inside the input folder"),
        (["--quarantine", "{d}"], "--quarantine {d}: contains the input folder"),
        (["--manifest", "{d}/pets/cat/m.json"], "inside the input folder"),
        (["-o", "{d}/out", "--quarantine", "{d}/out/q"], "overlap"),
        (["-o", "{d}/missing/clean"], "directory {d}/missing does not exist"),
        (["-o", "{d}/afile"], "exists and is not a folder"),
        (["-o", "{d}/precious", "--force"], "holds notes.md, which a sanitize does not write"),
    ],
)
def test_sanitize_refuses_outputs_before_the_audit(
    conflicting: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], outputs: list[str], message: str
) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.md").write_text("do not delete")
    argv = ["data", "sanitize", str(conflicting), "--label", "class", "--channels", "integrity"]
    capsys.readouterr()
    assert main([*argv, *(o.format(d=tmp_path) for o in outputs)]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(d=tmp_path) in err
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "pets", "precious"]
    assert (tmp_path / "precious" / "notes.md").read_text() == "do not delete"


def test_sanitize_refuses_a_folder_changed_since_its_audit(conflicting: Path, tmp_path: Path) -> None:
    from bastion.data.sanitize import SanitizeOutputs, write_sanitized

    result = run_audit(load_dataset(conflicting, "class"), AuditOptions(channels=("integrity",)))
    _png(conflicting / "cat" / "0a.png", _noise(99))  # shifts every later row by one
    outputs = SanitizeOutputs.beside(conflicting)
    with pytest.raises(InputError, match="changed since it was audited"):
        write_sanitized(conflicting, result, outputs, consumed={}, parameters={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets"]


def test_markdown_shows_files(conflicting: Path) -> None:
    result = run_audit(load_dataset(conflicting, "class"), AuditOptions(channels=("integrity",)))
    text = render_markdown(result)
    assert "| 24 | dog/copy.png |" in text
    assert "image folder: 25 images in 2 classes" in text


def test_a_failed_commit_puts_the_replaced_folder_back(tmp_path: Path) -> None:
    from bastion.data.sanitize import Staging

    _png(tmp_path / "clean" / "cat" / "old.png", _noise(1))
    staging = Staging()
    _png(staging.open_dir(tmp_path / "clean") / "cat" / "new.png", _noise(2))
    staging.write(tmp_path / "m.json", b"{}")
    (tmp_path / "m.json").mkdir()  # appears after the up-front checks: the second rename fails
    with pytest.raises(InputError, match=r"m\.json: cannot write it"):
        staging.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "m.json"]
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")] == ["clean/cat/old.png"]


def _stage_then_interrupt(target: Path) -> None:
    from bastion.data.sanitize import staged

    with staged() as staging:
        _png(staging.open_dir(target) / "cat" / "a.png", _noise(1))
        raise KeyboardInterrupt


def test_an_interrupted_run_leaves_no_staged_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _stage_then_interrupt(tmp_path / "clean")
    assert list(tmp_path.iterdir()) == []
