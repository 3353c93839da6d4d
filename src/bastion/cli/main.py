"""Entry point of the ``bastion`` command (placeholder until the CLI lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    from bastion.scan import scan_paths

    args = sys.argv[1:] if argv is None else argv
    report = scan_paths(args[1:])
    for f in report.findings:
        print(f.severity.label, f.rule_id, f.location.display, f.message)
    return 1 if report.findings else 0
