"""``bastion card``, ``bastion bom`` and ``bastion compliance``: what the registry knows, for other people."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.atomic import atomic_write_text
from bastion.cli.common import note, wants_color
from bastion.cli.registry import actor_of, open_registry, store_options
from bastion.errors import InputError, UsageError

if TYPE_CHECKING:
    from bastion.registry.record import VersionRecord

CARD_HELP = """Write a model card from what the registry knows; a gap is marked "Missing:", never guessed.

  bastion card MODEL@VERSION [--format markdown|huggingface] [--output README.md]"""

BOM_HELP = """Write the AI-BOM of registered models: CycloneDX 1.6 JSON (validated) or SPDX 3.0.1 JSON-LD.

  bastion bom [MODEL[@VERSION]]... [--format cyclonedx|spdx] [--services SERVICES.json] [--output FILE]

Without MODEL, every version in the registry. --services adds external AI APIs (a JSON list of
{"provider", "name", "endpoints", ...}) as CycloneDX services."""

COMPLIANCE_HELP = """Map every control Bastion evidences to OWASP LLM and ML Top 10, MITRE ATLAS,
NIST AI RMF and the EU AI Act, with the events and reports behind each and the gaps listed plainly.

  bastion compliance report [MODEL]... [--format table|markdown|json] [--output FILE]"""


def add_parser(sub: Any) -> None:
    """Register ``card``, ``bom`` and ``compliance``."""
    common = store_options()
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--output", "-o", type=Path, metavar="FILE", help="write here (default: stdout)")

    card = sub.add_parser("card", parents=[common, output], help="write a model card", description=CARD_HELP)
    card.formatter_class = argparse.RawDescriptionHelpFormatter
    card.add_argument("ref", metavar="MODEL@VERSION")
    card.add_argument("--format", choices=("markdown", "huggingface"), default="markdown")
    card.set_defaults(handler=run_card)

    bom = sub.add_parser("bom", parents=[common, output], help="write the AI-BOM", description=BOM_HELP)
    bom.formatter_class = argparse.RawDescriptionHelpFormatter
    bom.add_argument("refs", nargs="*", metavar="MODEL[@VERSION]")
    bom.add_argument("--format", choices=("cyclonedx", "spdx"), default="cyclonedx")
    bom.add_argument("--services", type=Path, metavar="SERVICES.json", help="external AI APIs to include")
    bom.add_argument("--namespace", default="https://bastion.invalid/spdx/", help="SPDX element id namespace")
    bom.set_defaults(handler=run_bom)

    comp = sub.add_parser("compliance", help="compliance mapping with evidence", description=COMPLIANCE_HELP)
    comp.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = comp.add_subparsers(dest="compliance_command", metavar="SUBCOMMAND", required=True)
    report = commands.add_parser("report", parents=[common, output], help="controls, evidence and gaps")
    report.add_argument("models", nargs="*", metavar="MODEL")
    report.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    report.set_defaults(handler=run_compliance)


def _write(args: argparse.Namespace, text: str, what: str) -> None:
    if args.output is not None:
        atomic_write_text(args.output, text if text.endswith("\n") else text + "\n")
        note(f"wrote {what} to {args.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def run_card(args: argparse.Namespace) -> int:
    """Write a model card and record that it was written."""
    from bastion.registry.card import card_huggingface, card_markdown, missing_sections, model_card

    registry = open_registry(args)
    record = registry.get(args.ref)
    lineage: list[VersionRecord] = []
    parent = record.parent
    while parent is not None and len(lineage) < 50:  # a chain of fine-tunes back to the base model
        ancestor = registry.get(parent)
        lineage.append(ancestor)
        parent = ancestor.parent
    card = model_card(record, lineage=lineage)
    text = card_huggingface(card) if args.format == "huggingface" else card_markdown(card)
    _write(args, text, f"the model card of {record.ref}")
    missing = missing_sections(card)
    registry.record_check(
        record.ref,
        "card.written",
        {"format": args.format, "missing": missing, "output": str(args.output) if args.output else None},
        actor=actor_of(args),
    )
    if missing:
        note(f"{len(missing)} section(s) missing: {', '.join(missing)}")
    return 0


def _load_services(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    except ValueError as error:
        raise InputError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, list) or not all(isinstance(s, dict) and "name" in s for s in data):
        raise InputError(f'{path}: expected a JSON list of objects with at least a "name"')
    return data


def run_bom(args: argparse.Namespace) -> int:
    """Write the AI-BOM of the named versions (or all of them)."""
    from bastion.registry.bom import bom_json, build_bom, validate_bom
    from bastion.registry.versions import parse_ref

    registry = open_registry(args)
    services = _load_services(args.services)
    if args.refs:
        records = []
        for ref in args.refs:
            _, selector = parse_ref(ref)
            records.extend([registry.get(ref)] if selector else registry.records(ref))
    else:
        records = registry.records()
    if not records:
        raise UsageError(
            "the registry has no versions to describe (register one with `bastion registry add`)"
        )
    now = dt.datetime.now(dt.UTC)
    if args.format == "spdx":
        from bastion.registry.spdx import build_spdx, spdx_json

        text = spdx_json(build_spdx(records, now=now, namespace=args.namespace))
    else:
        bom = build_bom(records, services=services, now=now)
        validate_bom(bom)  # never hand out a BOM the schema rejects
        text = bom_json(bom)
    _write(args, text, f"the {args.format} AI-BOM of {len(records)} version(s)")
    import hashlib

    registry.record_check(
        "registry",
        "bom.written",
        {
            "format": args.format,
            "digest": "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "versions": [r.ref for r in records],
            "services": len(services),
        },
        actor=actor_of(args),
    )
    return 0


def run_compliance(args: argparse.Namespace) -> int:
    """Write the compliance report over the registry and the event log."""
    from bastion.registry.compliance import compliance_report, render_json, render_markdown, render_table
    from bastion.store.events import list_events, verify_log

    registry = open_registry(args)
    records = (
        [r for name in args.models for r in registry.records(name)] if args.models else registry.records()
    )
    if args.models and not records:
        raise InputError(f"{', '.join(args.models)}: no such model in the registry")
    events = [{**e.to_dict(), "id": e.seq, "at": e.when} for e in list_events(registry.store)]
    log_ok = verify_log(registry.store).ok
    report = compliance_report(records, events, now=dt.datetime.now(dt.UTC), log_verified=log_ok)
    if args.format == "json":
        text = render_json(report)
    elif args.format == "markdown":
        text = render_markdown(report)
    else:
        text = render_table(report, color=args.output is None and wants_color(sys.stdout))
    _write(args, text, "the compliance report")
    return 0
