"""Time the audit of an image folder: scikit-learn digits as 32x32 RGB PNGs, with a 3x3 patch backdoor.

Writes ``--images`` images under benchmarks/.work/image_folder/ in the ImageFolder layout
(``<class>/<image>.png``): each digit upscaled 4x with a little colour noise, and on ``--backdoor`` of
them (taken from classes 1-9) a white 3x3 patch in the bottom-right corner with the label 0. Then runs the
in-memory audit (all channels) as ``bastion data audit DIR --label class`` does, and prints the wall time
per phase and the recall and precision of the planted rows among the rows flagged for removal.

    .venv/bin/python benchmarks/image_folder.py [--images 1000] [--backdoor 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

WORK = Path(__file__).resolve().parent / ".work" / "image_folder"
SIDE = 32


def generate(root: Path, images: int, backdoor: float, seed: int) -> set[int]:
    """Write the folder; return the planted images' rows (positions in sorted path order)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(digits.target), images, replace=images > len(digits.target))
    labels = digits.target[picks].copy()
    planted = rng.permutation(np.flatnonzero(labels != 0))[: round(backdoor * images)]
    stamped = set(planted.tolist())
    names: list[str] = []
    if root.exists():
        shutil.rmtree(root)
    for k, i in enumerate(picks):
        gray = np.kron((digits.images[i] * 255 / 16).astype(np.uint8), np.ones((4, 4), dtype=np.uint8))
        rgb = np.clip(gray[:, :, None].astype(int) + rng.integers(0, 20, (SIDE, SIDE, 3)), 0, 255)
        label = int(labels[k])
        if k in stamped:
            rgb[-4:-1, -4:-1, :] = 255
            label = 0
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{label}/img{k:05d}.png"
        Image.fromarray(rgb.astype(np.uint8)).save(root / name)
        names.append(name)
    order = {name: row for row, name in enumerate(sorted(names))}
    return {order[names[k]] for k in planted.tolist()}


def main() -> None:
    """Generate the folder, audit it, print timings and the planted rows found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000)
    parser.add_argument("--backdoor", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from bastion.data.audit.base import AuditOptions
    from bastion.data.audit.image_folder import load_image_folder
    from bastion.data.audit.run import run_audit

    root = WORK / f"digits-{args.images}"
    planted = generate(root, args.images, args.backdoor, args.seed)
    started = time.perf_counter()
    data = load_image_folder(root, "class")
    loaded = time.perf_counter()
    result = run_audit(data, AuditOptions(seed=args.seed))
    done = time.perf_counter()
    removed = set(result.removed_rows)
    found = len(removed & planted)
    print(
        json.dumps(
            {
                "images": args.images,
                "features": int(data.features.shape[1]),
                "load_s": round(loaded - started, 1),
                "audit_s": round(done - loaded, 1),
                "planted": len(planted),
                "planted_removed": found,
                "removed": len(removed),
                "precision": round(found / len(removed), 3) if removed else None,
            }
        )
    )


if __name__ == "__main__":
    main()
