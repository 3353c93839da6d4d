"""Inputs for the speed benchmarks: big torch checkpoints and a directory of many small mixed model files.

python benchmarks/speed_data.py OUT_DIR [--files 1000]      # the mixed directory
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import build_corpus
from picklekit import system_pickle

_TENSOR_BYTES = 64 << 20  # each tensor of the big checkpoints


def make_checkpoint(path: Path, gb: float) -> int:
    """Write a torch zip checkpoint of about ``gb`` GiB of float32 tensors; return its size in bytes."""
    import torch

    count = max(1, round(gb * 2**30 / _TENSOR_BYTES))
    state = {f"layers.{i}.weight": torch.zeros(_TENSOR_BYTES // 4, dtype=torch.float32) for i in range(count)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    del state
    return path.stat().st_size


def _variant(src: Path, expected: str, i: int) -> bytes:
    """The bytes of file ``i``: pickles get fresh content, other formats are copied as they are."""
    if src.suffix == ".pkl" and expected == "benign":
        return pickle.dumps({"id": i, "values": list(range(i % 50)), "name": f"file-{i}"}, protocol=i % 6)
    if src.suffix == ".pkl" and expected == "malicious" and i % 2:
        return system_pickle(2 + i % 3, cmd=f"echo bastion-test {i}")
    return src.read_bytes()


def make_mixed_dir(target: Path, files: int = 1000) -> int:
    """Fill ``target`` with ``files`` small model files, 70% benign, spread over 20 subfolders."""
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bastion-mixed-src-") as tmp:
        samples = [s for s in build_corpus(Path(tmp)) if s.path.is_file() and s.technique != "zip-bomb"]
        good = [s for s in samples if s.expected == "benign"]
        bad = [s for s in samples if s.expected == "malicious"]
        for i in range(files):
            sample = good[i % len(good)] if i % 10 < 7 else bad[i % len(bad)]
            dst = target / f"d{i % 20:02d}" / f"{i:04d}_{sample.path.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(_variant(sample.path, sample.expected, i))
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Build the mixed directory."""
    parser = argparse.ArgumentParser(description="Build the mixed directory used by the speed benchmark.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"wrote {make_mixed_dir(args.out_dir, args.files)} files to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
