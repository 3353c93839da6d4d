"""What every command group shares: a parser that raises instead of exiting, and terminal facts."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import NoReturn, TextIO

from bastion.errors import UsageError
from bastion.findings import Severity


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line UsageErrors (exit 2 through ``main``)."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage block and exiting."""
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def add_event_options(parser: argparse.ArgumentParser) -> None:
    """``--db`` and ``--actor``: where the command's event goes and who it names."""
    parser.add_argument(
        "--db", metavar="URL", help="event store (default: BASTION_DATABASE_URL or the user store)"
    )
    parser.add_argument(
        "--actor", metavar="NAME", help="who is acting (default: BASTION_ACTOR or login name)"
    )


def severity_arg(text: str) -> Severity:
    """argparse type for ``--fail-on``."""
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count_arg(text: str) -> int:
    """argparse type for whole numbers >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def seed_arg(text: str) -> int:
    """argparse type for a random seed: 0 to 2**32 - 1, the range NumPy and scikit-learn accept."""
    value = count_arg(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed below 2**32, got {value}")
    return value


def wants_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR", ""):
        return False
    return is_tty(stream) and os.environ.get("TERM") != "dumb"


def is_tty(stream: TextIO) -> bool:
    """True if ``stream`` is an interactive terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def output_width(stream: TextIO) -> int:
    """The terminal's width on a TTY; a fixed 120 columns for files and pipes, so output is stable."""
    if is_tty(stream):
        return max(60, shutil.get_terminal_size((120, 24)).columns)
    return 120


def note(message: str) -> None:
    """Print a one-line notice on stderr."""
    print(f"bastion: {message}", file=sys.stderr)
