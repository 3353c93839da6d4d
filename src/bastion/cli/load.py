"""``bastion load PATH``: unpickle with the safe allowlist and describe what came out."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``load``."""
    p = sub.add_parser(
        "load",
        help="unpickle a file allowing only known-safe globals, and describe the result",
        description="Load a pickle-based file with Bastion's restricted unpickler; any global not on the "
        "safe list is refused (exit 2) instead of being imported.",
    )
    p.add_argument("path", metavar="PATH", help="the file to load")
    p.add_argument("--profile", default=None, help="allowlist profile (default: the safe load default)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load ``args.path`` safely and print a description of the object."""
    # Imported here: the restricted unpickler is only needed by this command.
    from bastion.safeload import describe, safe_load

    obj = safe_load(args.path, profile=args.profile)
    text = describe(obj)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
