"""The benchmark corpus: a malicious sample per known attack or scanner bypass, benign files of each format.

Every sample is built in code: pickles are hand-assembled opcodes, containers are written with zipfile,
tarfile and py7zr, other formats with their own libraries (h5py, onnx.helper, gguf, safetensors) or a
tiny protobuf encoder (SavedModel). Malicious payloads only run ``echo bastion-test``. NOTHING here
loads a malicious sample.

    python benchmarks/corpus.py OUT_DIR           # the whole corpus
    python benchmarks/corpus.py OUT_DIR --demo    # a small mixed directory for `make demo`
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Importing the builder modules registers their samples.
import corpus_archives  # noqa: F401
import corpus_benign  # noqa: F401
import corpus_formats  # noqa: F401
import corpus_pickles  # noqa: F401
from corpus_registry import SPECS, Sample, Spec

__all__ = ["DEMO", "SPECS", "Sample", "Spec", "build_corpus", "build_demo", "main"]

# The `make demo` directory: six benign files and eight attacks across the main formats.
DEMO: tuple[str, ...] = (
    "benign-pickle-p4",
    "benign-torch-zip",
    "benign-safetensors",
    "benign-gguf",
    "benign-onnx",
    "benign-sklearn-joblib-z3",
    "pickle-os-system",
    "torch-zip-reduce",
    "polyglot-prefix",
    "keras-lambda",
    "gguf-ssti",
    "safetensors-overlap",
    "onnx-external-traversal",
    "joblib-compressed-payload",
)


def build_samples(out_dir: Path, names: Iterable[str]) -> list[Sample]:
    """Build the named samples into ``out_dir`` (created) and return them in order."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    with warnings.catch_warnings():
        # Library deprecation chatter must not turn into test errors (pytest runs with -W error).
        warnings.simplefilter("ignore")
        for name in names:
            spec = SPECS[name]
            sub = out_dir / spec.expected
            sub.mkdir(exist_ok=True)
            samples.append(spec.sample(spec.build(sub)))
    return samples


def build_corpus(out_dir: Path, *, kinds: Sequence[str] = ("malicious", "benign")) -> list[Sample]:
    """Build every registered sample of the given kinds under ``out_dir/<kind>/``."""
    return build_samples(out_dir, [name for name, spec in SPECS.items() if spec.expected in kinds])


def build_demo(out_dir: Path) -> list[Sample]:
    """Build the small mixed demo directory (flat: one folder a user can point the scanner at)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = build_samples(out_dir / ".build", DEMO)
    flat = []
    for sample in samples:
        # Name each file after its technique, so a listing of the folder reads like the demo's script.
        target = out_dir / (sample.technique + "".join(sample.path.suffixes))
        shutil.move(str(sample.path), target)
        flat.append(
            Sample(
                target, sample.technique, sample.expected, sample.reference, sample.description, sample.fmt
            )
        )
    shutil.rmtree(out_dir / ".build")
    return flat


def manifest(samples: Sequence[Sample], root: Path) -> list[dict[str, str]]:
    """A JSON-able list describing each sample, paths relative to ``root``."""
    return [
        {
            "path": str(s.path.relative_to(root)),
            "technique": s.technique,
            "expected": s.expected,
            "reference": s.reference,
            "format": s.fmt,
            "description": s.description,
        }
        for s in samples
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the corpus (or the demo directory) into OUT_DIR and write manifest.json."""
    parser = argparse.ArgumentParser(description="Build Bastion's benchmark corpus (never loads a sample).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--demo", action="store_true", help="write the small mixed demo directory instead")
    parser.add_argument("--kind", choices=("malicious", "benign"), action="append", help="only this kind")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.demo:
        samples = build_demo(args.out_dir)
    else:
        samples = build_corpus(args.out_dir, kinds=tuple(args.kind or ("malicious", "benign")))
    if not args.demo:  # the demo folder holds only model files, so a scan of it shows nothing else
        (args.out_dir / "manifest.json").write_text(
            json.dumps(manifest(samples, args.out_dir), indent=2) + "\n"
        )
    bad = sum(s.expected == "malicious" for s in samples)
    print(
        f"wrote {len(samples)} samples ({bad} malicious, {len(samples) - bad} benign) to {args.out_dir} "
        f"in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
