"""``bastion events``: list, follow and verify the hash-chained event log."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bastion.cli.registry import emit_json, open_store_from, print_events
from bastion.errors import UsageError

HELP = """The append-only event log every Bastion capability writes to.

  bastion events list [--action 'model.*'] [--subject 'fraud@*'] [--actor NAME] [--since TIME] [--until TIME]
                      [--limit N] [--format table|json]
  bastion events tail [-n 20] [--follow] [filters as for list]
  bastion events verify

Each event carries the SHA-256 of its payload and the hash of the event before it. `verify` re-checks the
whole chain and names every edited, deleted or reordered event.
Exit codes of verify: 0 intact; 1 broken (each break is listed); 2 bad input."""


def _time(text: str) -> Any:
    from bastion.store.events import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-03-01T12:00:00Z, got {text!r}"
        ) from None


def _filters() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--action", metavar="GLOB", help="e.g. 'model.*' or alias.moved")
    parent.add_argument("--subject", metavar="GLOB", help="e.g. 'fraud@*' or fraud@3")
    parent.add_argument("--actor", dest="by", metavar="GLOB", help="who acted")
    parent.add_argument("--since", type=_time, metavar="TIME", help="from this time (ISO 8601)")
    parent.add_argument("--until", type=_time, metavar="TIME", help="up to this time (ISO 8601)")
    parent.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    return parent


def add_parser(sub: Any) -> None:
    """Register ``events`` and its subcommands."""
    group = sub.add_parser("events", help="list, follow and verify the event log", description=HELP)
    group.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = group.add_subparsers(dest="events_command", metavar="SUBCOMMAND", required=True)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", metavar="URL", help="store: a path, sqlite:///PATH or postgresql://... URL")

    lst = commands.add_parser("list", parents=[db, _filters()], help="events matching filters, oldest first")
    lst.add_argument("--limit", type=int, metavar="N", help="only the newest N")
    lst.set_defaults(handler=run_list)

    tail = commands.add_parser(
        "tail", parents=[db, _filters()], help="the newest events; --follow waits for more"
    )
    tail.add_argument("-n", type=int, default=20, metavar="N", help="how many (default 20)")
    tail.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until interrupted"
    )
    tail.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    tail.add_argument("--max-polls", type=int, default=0, help=argparse.SUPPRESS)
    tail.set_defaults(handler=run_tail)

    ver = commands.add_parser("verify", parents=[db], help="re-check the hash chain")
    ver.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ver.set_defaults(handler=run_verify)


def _where(args: argparse.Namespace, after: int = 0) -> Any:
    from bastion.store.events import EventFilter

    if args.since and args.until and args.since > args.until:
        raise UsageError("--since is after --until")
    return EventFilter(args.action, args.subject, args.by, args.since, args.until, after)


def run_list(args: argparse.Namespace) -> int:
    """Print matching events."""
    from bastion.store.events import list_events

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit: expected a number >= 1")
    print_events(args, list_events(open_store_from(args), _where(args), limit=args.limit))
    return 0


def run_tail(args: argparse.Namespace) -> int:
    """Print the newest events, then (with --follow) new ones as they are appended."""
    from bastion.store.events import list_events

    store = open_store_from(args)
    found = list_events(store, _where(args), limit=max(args.n, 1))
    print_events(args, found)
    if not args.follow:
        return 0
    seen = found[-1].seq if found else 0
    polls = 0
    while not args.max_polls or polls < args.max_polls:
        time.sleep(args.interval)
        polls += 1
        fresh = list_events(store, _where(args, seen))
        if fresh:
            print_events(args, fresh)
            seen = fresh[-1].seq
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Verify the chain; exit 1 and list every break if it is broken."""
    from bastion.store.events import verify_log

    check = verify_log(open_store_from(args))
    if args.format == "json":
        emit_json({"ok": check.ok, "events": check.count, "head": check.head_seq, "problems": check.problems})
    elif check.ok:
        print(f"event log intact: {check.count} events, hash chain and head verified")
    else:
        print(f"event log BROKEN: {len(check.problems)} problem(s) in {check.count} events")
        for problem in check.problems:
            print(f"  {problem}")
    return 0 if check.ok else 1
