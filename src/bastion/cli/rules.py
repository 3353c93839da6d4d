"""``bastion rules list`` and ``bastion rules explain ID``: the rule catalogue for people and machines."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from bastion.cli.common import is_tty, output_width, wants_color
from bastion.errors import UsageError
from bastion.rules import Rule, all_rules, get_rule, select


def add_parser(sub: Any) -> None:
    """Register ``rules`` and its two subcommands."""
    p = sub.add_parser("rules", help="list the rules or explain one")
    rules_sub = p.add_subparsers(dest="rules_command", metavar="{list,explain}", required=True)
    lp = rules_sub.add_parser("list", help="list every rule (or a family, by prefix)")
    lp.add_argument(
        "--prefix", action="append", metavar="PREFIX", help="only rules starting with PREFIX, e.g. BST-PKL"
    )
    lp.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    lp.set_defaults(handler=run_list)
    ep = rules_sub.add_parser("explain", help="print a rule's documentation page")
    ep.add_argument("rule_id", metavar="ID", help="a rule code such as BST-SCAN-001")
    ep.set_defaults(handler=run_explain)


def rule_summary(rule: Rule) -> dict[str, str]:
    """The fields ``rules list --format json`` shows for one rule."""
    return {"code": rule.code, "name": rule.name, "severity": rule.severity.label, "summary": rule.summary}


def _table(rules: list[Rule]) -> str:
    from rich.console import Console
    from rich.table import Table

    console = Console(
        file=io.StringIO(),
        width=output_width(sys.stdout),
        force_terminal=wants_color(sys.stdout),
        no_color=not wants_color(sys.stdout),
        highlight=False,
    )
    table = Table(show_lines=False)
    for column in ("Code", "Severity", "Name", "Summary"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Code", "Severity"))
    for r in rules:
        table.add_row(r.code, r.severity.label, r.name, r.summary)
    console.print(table)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def run_list(args: argparse.Namespace) -> int:
    """Print the catalogue, optionally narrowed to families by prefix."""
    rules = select(args.prefix) if args.prefix else all_rules()
    if not rules:
        raise UsageError(
            f"no rule code starts with {', '.join(args.prefix)}; `bastion rules list` shows every rule"
        )
    if args.format == "json":
        sys.stdout.write(json.dumps([rule_summary(r) for r in rules], indent=2) + "\n")
    else:
        sys.stdout.write(_table(rules))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Print one rule's page; an unknown code is a usage error (exit 2)."""
    page = get_rule(args.rule_id).page()
    if is_tty(sys.stdout) and wants_color(sys.stdout):
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(page))
    else:
        sys.stdout.write(page)
    return 0
