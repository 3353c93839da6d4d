"""``bastion scan PATH...``: parse flags, resolve settings, scan, suppress, render, pick the exit code."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli.common import count_arg, is_tty, note, output_width, severity_arg, wants_color
from bastion.config import FORMAT_NAMES, ScanSettings, resolve
from bastion.errors import InputError
from bastion.findings import Report

if TYPE_CHECKING:
    from bastion.scan.engine import Progress, ScanOptions
    from bastion.suppressions import Suppression

HELP = """Scan model files, directories and archives without loading them.

Results go to stdout (or --output); progress and a one-line summary go to stderr. The default format is
the human table, whether or not stdout is a terminal: ask for json, sarif or markdown explicitly.
Settings come from flags, then BASTION_* environment variables, then bastion.toml ([scan] or top level)
or [tool.bastion] in pyproject.toml in the current directory (or --config FILE).

Suppressions (--suppressions FILE) are TOML entries, each with a target, a reason and an expiry:
  [[suppress]]
  rule = "BST-PKL-002"            # optional: a code or a family prefix such as BST-PKL
  path = "models/legacy/*.pkl"    # a glob on the path as shown, or: fingerprint = "..."
  reason = "replaced in Q3"
  expires = 2026-12-31            # after this date the entry stops working and is reported
--write-baseline FILE records today's findings and accepts them for this run; later runs with
--baseline FILE fail only on findings that are not in it.

Exit codes: 0 nothing at or above --fail-on; 1 findings at or above it; 2 usage, config or input error."""


def add_parser(sub: Any) -> None:
    """Register ``scan`` and its flags."""
    p = sub.add_parser("scan", help="scan model files for code that runs on load", description=HELP)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to scan")
    p.add_argument("--format", choices=FORMAT_NAMES, help="output format (default: table)")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write results to FILE (atomically)")
    p.add_argument(
        "--fail-on", type=severity_arg, metavar="SEVERITY", help="exit 1 at or above this (default: high)"
    )
    p.add_argument("--include", action="append", metavar="GLOB", help="only scan matching files (repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip matching files (repeatable)")
    p.add_argument("--max-depth", type=count_arg, metavar="N", help="archive nesting limit (default: 5)")
    p.add_argument(
        "--jobs", "-j", type=count_arg, metavar="N", help="worker processes (default: one per core)"
    )
    p.add_argument(
        "--digest", action=argparse.BooleanOptionalAction, default=None, help="record each file's sha256"
    )
    p.add_argument("--suppressions", type=Path, metavar="FILE", help="TOML file of [[suppress]] entries")
    p.add_argument("--baseline", type=Path, metavar="FILE", help="report only findings not in this baseline")
    p.add_argument(
        "--write-baseline", type=Path, metavar="FILE", help="record current findings as the baseline"
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="config file (default: ./bastion.toml or pyproject)"
    )
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace) -> ScanSettings:
    """Resolve flags over environment over config file."""
    flags = {
        "format": args.format,
        "fail_on": args.fail_on,
        "jobs": args.jobs,
        "max_depth": args.max_depth,
        "suppressions": args.suppressions,
        "baseline": args.baseline,
        "include": tuple(args.include) if args.include else None,
        "exclude": tuple(args.exclude) if args.exclude else None,
        "digest": args.digest,
    }
    return resolve(flags, os.environ, Path.cwd(), args.config)


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on stderr while scanning, or nothing."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr, no_color=not wants_color(sys.stderr))
    columns = (TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("scan", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def run(args: argparse.Namespace) -> int:
    """Run ``bastion scan`` and return its exit code."""
    from bastion.baseline import load_baseline
    from bastion.scan import scan_paths
    from bastion.suppressions import load_suppressions

    settings = settings_from_args(args)
    # Read every input file before scanning so that a typo fails in a second, not after an hour.
    suppressions = load_suppressions(settings.suppressions) if settings.suppressions else []
    baseline = load_baseline(settings.baseline) if settings.baseline and not args.write_baseline else None
    with progress_bar(is_tty(sys.stderr) and not args.no_progress) as callback:
        report = scan_paths(args.paths, scan_options(settings), progress=callback)
    reasons = accept_known(report, args, settings, suppressions, baseline)
    if not report.targets and not report.skipped:
        # Not an error (an empty folder is fine), but a misconfigured CI path should not pass unnoticed.
        report.notices.append("no files were scanned; check the paths and --include/--exclude globs")
    if settings.format != "table" or args.output is not None:
        # The table shows notices itself; machine formats on stdout must not hide them from a person.
        for notice in report.notices:
            note(f"notice: {notice}")
    emit(report, settings.format, args.output, reasons)
    return exit_code(report, settings)


def scan_options(settings: ScanSettings) -> ScanOptions:
    """The library's options for these settings."""
    from bastion.scan import ScanOptions
    from bastion.scan.context import Limits

    return ScanOptions(
        include=settings.include,
        exclude=settings.exclude,
        limits=Limits() if settings.max_depth is None else Limits(max_depth=settings.max_depth),
        digest=settings.digest,
        jobs=settings.jobs,
    )


def accept_known(
    report: Report,
    args: argparse.Namespace,
    settings: ScanSettings,
    suppressions: list[Suppression],
    baseline: frozenset[str] | None,
) -> dict[str, str]:
    """Apply suppressions, then write or apply the baseline; return fingerprint -> why it is accepted."""
    from bastion.baseline import apply_baseline, write_baseline
    from bastion.suppressions import apply_suppressions

    reasons = apply_suppressions(report, suppressions)
    if args.write_baseline:
        count = write_baseline(args.write_baseline, report.findings)
        note(f"wrote {count} finding(s) to baseline {args.write_baseline}; they no longer fail this run")
        written = frozenset(f.fingerprint for f in report.findings)
        reasons |= apply_baseline(report, written, str(args.write_baseline))
    elif baseline is not None:
        reasons |= apply_baseline(report, baseline, str(settings.baseline))
    return reasons


def emit(report: Report, fmt: str, output: Path | None, reasons: dict[str, str]) -> None:
    """Render to ``output`` (atomically) or stdout, then the summary line on stderr."""
    from bastion.render import RenderOptions, atomic_write_text, render, summary_line

    stdout = sys.stdout
    to_terminal = output is None and is_tty(stdout)
    options = RenderOptions(
        color=to_terminal and wants_color(stdout),
        width=output_width(stdout) if to_terminal else 120,
        suppression_reasons=reasons,
    )
    text = render(report, fmt, options)
    if output is not None:
        try:
            atomic_write_text(output, text)
        except OSError as exc:
            raise InputError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    else:
        stdout.write(text)
        stdout.flush()
    note(summary_line(report))


def exit_code(report: Report, settings: ScanSettings) -> int:
    """1 if any unsuppressed finding is at or above the threshold, else 0."""
    return 1 if report.at_or_above(settings.fail_on) else 0
