"""Load an image folder in the ImageFolder layout (DIR/<class>/<images>) for the audit: one row per image.

Rows are the image files sorted by their path components (class folder, then any subfolders, then file
name), the order ``bastion data fingerprint`` lists them in; a row's 0-based number is its position in that
order and its label is its class folder's name. Files count as images by suffix (the manifest's image
suffixes); other files are skipped and counted, as torchvision's ImageFolder skips them, so the audit sees
what a training job reading the folder sees; hidden files and folders (a name starting with ".") are
skipped too. Pillow decodes each image by its content, restricted to the formats those suffixes name.

Every image is converted to one mode (8-bit grayscale when all are grayscale, 16/32-bit grayscale when all
are, else RGB, dropping alpha as torchvision's loader does) and one size: when sizes differ or exceed the
side cap, all are resized to the most common size scaled down to the cap (bilinear, antialiased; other
aspect ratios are stretched, never cropped, so a trigger in a corner stays in the image). Pixels are then
scaled to [0, 1] as ``.npz`` images are (divided by the largest value when it exceeds 1).
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bastion.data.audit.base import AuditData
from bastion.data.audit.load import env_int, from_arrays, in_memory_limit
from bastion.data.readers import IMAGE_SUFFIXES, one_line_reason, printable
from bastion.errors import InputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

# The --label value for an image folder: the label is the name of the class folder an image sits in.
LABEL_KEYWORD = "class"
LAYOUT = "DIR/<class>/<image>"
# Longest side after resizing. The channels work on every pixel value and their cost follows the number of
# values: 1,000 digits with a 10% patch backdoor took about 10 s at 8x8, 1 min at 16x16 (grayscale or RGB),
# 2 min at 28x28 grayscale and 7 min at 32x32 RGB, all channels on two cores (before two exact speed-ups of
# the backdoor channel: 85 s at 32x32 RGB now, `benchmarks/image_folder.py` in docs/benchmarks.md). 32 keeps
# MNIST (28x28) and CIFAR (32x32) images, where the usual 3x3 trigger patches are defined, at full size:
# a 3x3 patch on 32x32 RGB images was found on 100 of 100 rows, and on 92 after halving them to 16x16.
DEFAULT_MAX_SIDE = 32
# Pillow plugins allowed to decode. Content picks the plugin, so without this list a file named .png holding
# PostScript would be handed to the EPS plugin, which runs Ghostscript. MPO is how Pillow opens many camera
# JPEGs.
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF")
GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# Grayscale deeper than 8 bits: Pillow's conversion to "L" would clip every value above 255, so these are
# decoded as 32-bit floats instead and scaled like the rest.
DEEP_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SKIPPED_EXAMPLES = 5


def max_side() -> int:
    """The longest side images are resized to at most; ``BASTION_AUDIT_IMAGE_SIDE`` overrides it."""
    return env_int("BASTION_AUDIT_IMAGE_SIDE", DEFAULT_MAX_SIDE, 1)


@dataclass(frozen=True, slots=True)
class ImageFile:
    """One image of the folder: its path relative to the folder (with ``/``), where it is, and its class."""

    rel: str
    path: Path
    label: str


@dataclass(frozen=True, slots=True)
class FolderListing:
    """The images of a folder in row order, and what was left out (non-image files by name, hidden ones)."""

    root: Path
    images: tuple[ImageFile, ...]
    classes: tuple[str, ...]
    skipped: tuple[str, ...]
    hidden: int


@dataclass(slots=True)
class ImageFolderData(AuditData):
    """AuditData of an image folder, with each row's file (relative path) and how the images were decoded."""

    files: list[str] = field(default_factory=list)
    folder: dict[str, Any] = field(default_factory=dict)


def _shown(path: Path) -> str:
    return printable(str(path), escape_backslash=False)


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image suffixes the folder loader reads."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _special(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"))
    return next((text for test, text in kinds if test(mode)), "a block device or other special file")


class _Walk:
    """The folder's class folders and files, refusing what a manifest of it could not cover."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real = Path(os.path.realpath(root))
        self.files: list[tuple[tuple[str, ...], Path]] = []
        self.skipped: list[tuple[str, ...]] = []
        self.hidden = 0

    def fail(self, parts: tuple[str, ...], reason: str) -> InputError:
        return InputError(f"{_shown(self.root.joinpath(*parts))}: {reason}")

    def entries(self, parts: tuple[str, ...]) -> list[tuple[str, str]]:
        """(name, kind) of each visible entry of a folder, kind "dir" or "file" (special files: "special")."""
        directory = self.root.joinpath(*parts)
        try:
            with os.scandir(directory) as listing:
                names = sorted(entry.name for entry in listing)
        except OSError as exc:
            raise self.fail(parts, f"cannot read the folder ({exc.strerror or exc})") from None
        found = []
        for name in names:
            if name.startswith("."):
                self.hidden += 1
                continue
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                # Reports and manifests are UTF-8; a row's file could not be named in them.
                raise self.fail((*parts, name), "the name is not valid UTF-8") from None
            found.append((name, self.kind((*parts, name))))
        return found

    def kind(self, parts: tuple[str, ...]) -> str:
        path = self.root.joinpath(*parts)
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            raise self.fail(parts, f"cannot read it ({exc.strerror or exc})") from None
        if stat.S_ISLNK(mode):
            return self.link(parts)
        if stat.S_ISDIR(mode):
            return "dir"
        return "file" if stat.S_ISREG(mode) else "special"

    def link(self, parts: tuple[str, ...]) -> str:
        # A link to a file inside the folder is read like the file (torchvision follows links); one that
        # leaves the folder is refused, since the manifest that names the audited data could not cover it.
        # A linked folder is refused as well: inside, it only repeats images already read; outside, it
        # leaves the folder; either way it could loop.
        path = self.root.joinpath(*parts)
        target = printable(os.readlink(path))
        try:
            real = Path(os.path.realpath(path, strict=True))
        except OSError as exc:
            loop = exc.errno == errno.ELOOP
            what = "symbolic link loop" if loop else "broken symbolic link"
            raise self.fail(parts, f"a {what} (-> {target})") from None
        if self.real not in real.parents:
            raise self.fail(
                parts, f"a symbolic link to {target}, outside the folder (copy the image in instead)"
            )
        if real.is_dir():
            raise self.fail(
                parts, f"a symbolic link to a folder ({target}); move or copy the images in instead"
            )
        return "file" if real.is_file() else "special"

    def run(self) -> tuple[str, ...]:
        top = self.entries(())
        if not top and not self.hidden:
            raise InputError(f"{_shown(self.root)}: the folder is empty")
        classes = []
        for name, kind in top:
            if kind == "dir":
                classes.append(name)
            elif is_image_name(name):
                raise self.fail((name,), f"an image outside any class folder (the layout is {LAYOUT})")
            else:
                self.skipped.append((name,))
        if not classes:
            raise InputError(f"{_shown(self.root)}: no class folders (the layout is {LAYOUT})")
        for name in classes:
            before = len(self.files)
            self.walk((name,))
            if len(self.files) == before:
                raise self.fail((name,), "a class folder with no images")
        return tuple(classes)

    def walk(self, parts: tuple[str, ...]) -> None:
        # Subfolders of a class belong to the class, as in torchvision's ImageFolder.
        for name, kind in self.entries(parts):
            child = (*parts, name)
            if kind == "dir":
                self.walk(child)
            elif not is_image_name(name):
                self.skipped.append(child)
            elif kind == "special":
                # Opening a FIFO would block the audit forever.
                mode = os.stat(self.root.joinpath(*child)).st_mode
                raise self.fail(child, f"not a regular file ({_special(mode)})")
            else:
                self.files.append((child, self.root.joinpath(*child)))


def list_image_folder(root: Path) -> FolderListing:
    """The images of ``root`` in row order with their classes; InputError when it is not an image folder."""
    if not root.is_dir():
        raise InputError(f"{_shown(root)}: not a folder")
    walk = _Walk(root)
    classes = walk.run()
    ordered = sorted(walk.files, key=lambda item: item[0])
    images = tuple(ImageFile("/".join(parts), path, parts[0]) for parts, path in ordered)
    skipped = tuple("/".join(parts) for parts in sorted(walk.skipped))
    return FolderListing(root, images, classes, skipped, walk.hidden)


@contextmanager
def _decoding(image: ImageFile) -> Iterator[None]:
    """Turn any failure of Pillow on ``image`` into a one-line InputError naming the file."""
    from PIL import Image

    shown = printable(str(image.path), escape_backslash=False)
    with warnings.catch_warnings():
        # Decoder warnings (odd EXIF, palette transparency) describe pixels the training job gets the same
        # way; only the size warning matters, and it must stop the decode.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                f"{shown}: refused as a possible decompression bomb (more than {Image.MAX_IMAGE_PIXELS} "
                "pixels, Pillow's limit)"
            ) from None
        except MemoryError:
            raise InputError(f"{shown}: not enough memory to decode it") from None
        except Exception as exc:
            # A decoder fails in many ways (OSError, SyntaxError, zlib.error, struct.error, ValueError);
            # each means this file cannot be read, and the block holds nothing but Pillow's calls.
            raise InputError(f"{shown}: not a readable image ({one_line_reason(exc)})") from None


def _header(image: ImageFile) -> tuple[tuple[int, int], str]:
    """Size and mode from the header alone (Pillow decodes pixels only on load)."""
    from PIL import Image

    with _decoding(image), Image.open(image.path, formats=PILLOW_FORMATS) as opened:
        return opened.size, opened.mode


def _target_size(sizes: list[tuple[int, int]], side: int) -> tuple[int, int]:
    """The most common size (ties: the larger, then the wider), scaled down to at most ``side`` pixels."""
    counts = Counter(sizes)
    width, height = max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(image: ImageFile, mode: str, size: tuple[int, int]) -> np.ndarray[Any, Any]:
    """One image's pixels in ``mode`` at ``size`` (first frame of an animation, as torchvision reads it)."""
    from PIL import Image

    with _decoding(image), Image.open(image.path, formats=PILLOW_FORMATS) as opened:
        # A JPEG can be decoded at 1/2, 1/4 or 1/8 scale directly, which makes large photos fast; draft never
        # goes below the requested size, and the resize below makes the rest of the way.
        opened.draft(None, size)
        picture: PILImage.Image = opened.convert(mode)
        if picture.size != size:
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(picture)


def _feature_names(shape: tuple[int, ...]) -> list[str]:
    # Pixels named by position in the decoded image, so a trigger's features read as a place ("y6x7").
    if len(shape) == 2:
        return [f"y{r}x{c}" for r in range(shape[0]) for c in range(shape[1])]
    return [f"y{r}x{c}{ch}" for r in range(shape[0]) for c in range(shape[1]) for ch in "rgb"]


def _like_mode(root: Path, like: AuditData) -> str:
    shape = like.image_shape
    if (
        like.kind != "image"
        or shape is None
        or len(shape) not in (2, 3)
        or (len(shape) == 3 and shape[2] != 3)
    ):
        raise InputError(f"{_shown(root)}: an image folder cannot be encoded like {like.path}")
    if len(shape) == 3:
        return "RGB"
    folder = getattr(like, "folder", None) or {}
    return "F" if folder.get("mode") == "F" else "L"


def _choose_mode(listing: FolderListing, modes: list[str]) -> str:
    deep = [i for i, m in enumerate(modes) if m in DEEP_MODES]
    if not deep:
        return "L" if all(m in GRAY_MODES for m in modes) else "RGB"
    shallow = [i for i, m in enumerate(modes) if m not in DEEP_MODES]
    if shallow:
        # Deep values would dwarf 8-bit ones after scaling, and clipping them to 8 bits would lose them.
        first_deep, first_shallow = (printable(listing.images[i[0]].rel) for i in (deep, shallow))
        raise InputError(
            f"{_shown(listing.root)}: mixes 16/32-bit grayscale images ({first_deep}) with 8-bit ones "
            f"({first_shallow}); convert them to one bit depth first"
        )
    return "F"


def load_image_folder(
    root: Path,
    label: str,
    *,
    source_column: str | None = None,
    text_column: str | None = None,
    like: AuditData | None = None,
) -> ImageFolderData:
    """Decode an image folder into AuditData (``like``: encode a holdout or reference the same way)."""
    if label != LABEL_KEYWORD:
        raise InputError(
            f"{_shown(root)}: an image folder's label is its class folder; pass --label {LABEL_KEYWORD} "
            f"(not {label!r})"
        )
    if source_column is not None:
        raise InputError(f"{_shown(root)}: --source-column needs a table; an image folder has no columns")
    if text_column is not None:
        raise InputError(f"{_shown(root)}: --text-column needs a table; an image folder has no columns")
    listing = list_image_folder(root)
    if like is None and len(listing.classes) < 2:
        raise InputError(
            f"{_shown(root)}: a single class folder ({listing.classes[0]!r}); an audit needs at least two"
        )
    headers = [_header(image) for image in listing.images]
    sizes = [size for size, _ in headers]
    side = max_side()
    if like is None:
        mode = _choose_mode(listing, [m for _, m in headers])
        target = _target_size(sizes, side)
    else:
        mode = _like_mode(root, like)
        shape = like.image_shape or ()
        target = (int(shape[1]), int(shape[0]))
    channels = 3 if mode == "RGB" else 1
    n = len(listing.images)
    needed = n * target[0] * target[1] * channels * 8  # the float64 matrix every channel works on
    limit = in_memory_limit()
    if needed > limit:
        raise InputError(
            f"{_shown(root)}: {n} images of {target[0]}x{target[1]}{'x3' if channels == 3 else ''} decode to "
            f"{needed / 2**20:.0f} MiB, above the in-memory budget of {limit / 2**20:.0f} MiB; raise "
            f"BASTION_AUDIT_IN_MEMORY_BYTES, or lower BASTION_AUDIT_IMAGE_SIDE (now {side})"
        )
    shape = (n, target[1], target[0], 3) if channels == 3 else (n, target[1], target[0])
    pixels = np.empty(shape, dtype=np.float32 if mode == "F" else np.uint8)
    for row, image in enumerate(listing.images):
        pixels[row] = _decode(image, mode, target)
    features = pixels.astype(np.float64)
    top = float(features.max()) if features.size else 0.0
    if top > 1.0:
        features /= top  # pixels to [0, 1] whatever their bit depth, as .npz images are
    labels = np.array([image.label for image in listing.images], dtype=object)
    base = from_arrays(
        features, labels, kind="image", feature_names=_feature_names(shape[1:]), path=str(root)
    )
    resized = sum(1 for size in sizes if size != target)
    summary: dict[str, Any] = {
        "images": n,
        "classes": len(listing.classes),
        "mode": mode,
        "size": list(target),
        "distinct_sizes": len(set(sizes)),
        "resized": resized,
        "max_side": side,
        "rule": (
            f"the most common size scaled to a longest side of at most {side} (BASTION_AUDIT_IMAGE_SIDE), "
            "bilinear; other aspect ratios stretched, not cropped"
            if like is None
            else f"the size of {like.path}"
        ),
        "scale": top if top > 1.0 else 1.0,
        "skipped_files": len(listing.skipped),
        "skipped_examples": list(listing.skipped[:SKIPPED_EXAMPLES]),
        "hidden_skipped": listing.hidden,
    }
    values = {f.name: getattr(base, f.name) for f in fields(AuditData)}
    return ImageFolderData(**values, files=[image.rel for image in listing.images], folder=summary)


def folder_note(folder: dict[str, Any]) -> str:
    """One line saying how an image folder was read: mode, size, what was resized and what was skipped."""
    width, height = folder["size"]
    text = f"{folder['images']} images in {folder['classes']} classes"
    text += f", decoded as {folder['mode']} {width}x{height}"
    if folder["resized"]:
        text += f"; {folder['resized']} resized to it ({folder['rule']})"
    if folder["skipped_files"]:
        examples = ", ".join(printable(name) for name in folder["skipped_examples"])
        more = ", ..." if folder["skipped_files"] > len(folder["skipped_examples"]) else ""
        text += f"; {folder['skipped_files']} non-image files skipped ({examples}{more})"
    if folder["hidden_skipped"]:
        text += f"; {folder['hidden_skipped']} hidden entries skipped"
    return text


def folder_identity_from_manifest(root: Path, manifest_path: Path) -> dict[str, str]:
    """``data`` naming the written manifest at ``manifest_path``, once the folder's content matches it."""
    from bastion.data.manifest import build_manifest, load_manifest

    manifest = load_manifest(manifest_path)
    current = build_manifest(root, exclude=[manifest_path])
    if current.root != manifest.root:
        raise InputError(
            f"--input-manifest {manifest_path}: {_shown(root)} differs from the folder it fingerprinted"
        )
    return {"data": "manifest-sha256:" + manifest.digest(), "input_manifest": str(manifest_path)}
