"""``bastion convert SRC DST``: rewrite a pickle-based checkpoint as safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bastion.cli.common import note


def add_parser(sub: Any) -> None:
    """Register ``convert``."""
    p = sub.add_parser(
        "convert",
        help="convert a pickle-based checkpoint to safetensors",
        description="Scan SRC, load it with the restricted unpickler (nothing outside the safe list runs) "
        "and write its tensors to DST in the safetensors format.",
    )
    p.add_argument("src", type=Path, metavar="SRC", help="checkpoint to read")
    p.add_argument("dst", type=Path, metavar="DST", help="safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--profile", default=None, help="allowlist profile for loading SRC (default: all curated)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Convert and print one line saying what was written."""
    # Imported here: only this command needs safetensors and the loaders.
    from bastion.convert import convert_to_safetensors

    result = convert_to_safetensors(args.src, args.dst, overwrite=args.overwrite, profile=args.profile)
    print(f"wrote {result.tensors} tensors ({result.total_bytes} bytes) to {result.dst}")
    if result.skipped:
        note(f"not tensors, left out: {', '.join(result.skipped)}")
    if result.cloned:
        note(f"shared storage, written as copies: {', '.join(result.cloned)}")
    return 0
