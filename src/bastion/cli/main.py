"""Entry point of the ``bastion`` command: build the parser, run the handler, map errors to exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from bastion import __version__
from bastion.cli import convert, data, events, gate, load, registry, rules, scan, transparency
from bastion.cli import mlflow as mlflow_cli
from bastion.cli.common import Parser
from bastion.errors import BastionError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> Parser:
    """The whole command line: global flags and one subcommand per command group."""
    parser = Parser(prog="bastion", description="Bastion: secure AI systems from training data to answers.")
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    parser.add_argument("--debug", action="store_true", help="log debug details and show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for group in (scan, rules, load, convert, data, registry, events, gate, transparency, mlflow_cli):
        group.add_parser(sub)
    return parser


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(f"bastion: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _take_debug(argv: list[str]) -> tuple[list[str], bool]:
    # --debug is global but people type it anywhere (`bastion scan x --debug`); it is taken out before
    # parsing so that every subcommand accepts it and even a parser failure honours it.
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--debug"]
    return head + argv[end:], len(head) != end


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (0 pass, 1 findings, 2 error)."""
    args_list, debug = _take_debug(sys.argv[1:] if argv is None else argv)
    if debug:
        import logging  # only under --debug: the scan path should not pay for it

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(args_list)
        args.debug = debug
        handler: Handler = args.handler
        return handler(args)
    except BastionError as exc:
        return _fail(exc.diagnostics(), debug)
    except BrokenPipeError:
        # The reader went away (`bastion scan ... | head`); nothing left to say to it.
        sys.stderr.close()
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("bastion: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}", debug)
    except Exception as exc:  # the last line of defence: one line, never a traceback unasked
        hint = "" if debug else "; rerun with --debug for the traceback"
        return _fail(f"internal error ({type(exc).__name__}: {exc}){hint}", debug)
