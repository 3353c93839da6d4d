"""``bastion mlflow``: import versions from an MLflow registry and write Bastion's verdicts back as tags."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli.common import note
from bastion.cli.registry import actor_of, emit_json, open_registry, store_options
from bastion.errors import UsageError

if TYPE_CHECKING:
    from bastion.registry.mlflow_sync import ImportResult, TagResult

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"

HELP = """Connect an MLflow model registry: import its versions, write Bastion's verdicts back as tags.

  bastion mlflow import --tracking-uri URI [--model NAME]... [--artifacts-dir DIR]
  bastion mlflow sync-tags --tracking-uri URI [MODEL@VERSION]... [--unalias-blocked]

`import` downloads each version's artifacts into DIR (default: mlflow-artifacts beside the SQLite store;
keep it, `bastion verify` re-hashes it), scans and registers them, and records MLflow's tags, aliases and
run in the version's metadata. MLflow aliases are recorded, not copied: Bastion aliases need approvals.
Importing again skips unchanged versions and registers a new Bastion version when MLflow's bytes changed.

`sync-tags` sets bastion.ref, .digest, .state, .scan, .signature, .verified, .gate (and .gate.policy) on
each imported MLflow version, bastion.blocked=true on revoked or quarantined ones, and with
--unalias-blocked removes their MLflow aliases. --tracking-uri defaults to MLFLOW_TRACKING_URI.
Needs the mlflow extra: pip install 'bastion-ai[mlflow]'. Exit codes: 0 done; 2 bad input or MLflow error."""


def add_parser(sub: Any) -> None:
    """Register ``mlflow`` and its subcommands."""
    common = store_options()
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--tracking-uri",
        metavar="URI",
        help=f"MLflow tracking URI (default: {ENV_TRACKING_URI}), e.g. http://mlflow:5000 or sqlite:///mlflow.db",
    )
    shared.add_argument(
        "--registry-uri",
        metavar="URI",
        help="MLflow model registry URI when it differs from the tracking URI",
    )
    shared.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    group = sub.add_parser(
        "mlflow", help="import versions from MLflow, write verdicts back as tags", description=HELP
    )
    group.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = group.add_subparsers(dest="mlflow_command", metavar="SUBCOMMAND", required=True)

    imp = commands.add_parser(
        "import", parents=[common, shared], help="register MLflow model versions in Bastion"
    )
    imp.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="only this MLflow registered model (repeatable; default: all)",
    )
    imp.add_argument(
        "--artifacts-dir",
        type=Path,
        metavar="DIR",
        help="where downloaded artifacts are kept (default: mlflow-artifacts beside the store)",
    )
    imp.set_defaults(handler=run_import)

    tags = commands.add_parser(
        "sync-tags", parents=[common, shared], help="write Bastion's verdicts to MLflow version tags"
    )
    tags.add_argument(
        "refs",
        nargs="*",
        metavar="MODEL@VERSION",
        help="Bastion versions to write back (default: the newest import of every MLflow version)",
    )
    tags.add_argument(
        "--unalias-blocked",
        action="store_true",
        help="also remove the MLflow aliases of revoked or quarantined versions",
    )
    tags.set_defaults(handler=run_sync_tags)


def tracking_uri_of(args: argparse.Namespace) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``; one of them is required."""
    uri = (args.tracking_uri or os.environ.get(ENV_TRACKING_URI, "")).strip()
    if not uri:
        raise UsageError(f"--tracking-uri: name the MLflow tracking URI (or set {ENV_TRACKING_URI})")
    return uri


def import_line(result: ImportResult) -> str:
    """One imported version as a line of text."""
    source = f"MLflow {result.mlflow_name} v{result.mlflow_version}"
    ref = result.ref or "-"
    detail = f"  ({result.detail})" if result.detail else ""
    return f"{result.status:<10} {ref:<32} <- {source:<40} {result.digest or ''}{detail}".rstrip()


def tag_line(result: TagResult) -> str:
    """One write-back as a line of text."""
    target = f"MLflow {result.mlflow_name} v{result.mlflow_version}"
    shown = ("state", "scan", "signature", "verified", "gate", "blocked")
    facts = " ".join(f"{k}={result.tags[f'bastion.{k}']}" for k in shown if f"bastion.{k}" in result.tags)
    removed = f"  aliases removed: {', '.join(result.removed_aliases)}" if result.removed_aliases else ""
    return f"{result.status:<10} {result.ref:<32} -> {target:<40} {facts}{removed}".rstrip()


def run_import(args: argparse.Namespace) -> int:
    """Import MLflow model versions into the registry."""
    from bastion.registry.mlflow_sync import CHANGED, IMPORTED, import_from_mlflow

    uri = tracking_uri_of(args)
    results = import_from_mlflow(
        open_registry(args),
        uri,
        actor=actor_of(args),
        names=args.model,
        registry_uri=args.registry_uri,
        artifacts_dir=args.artifacts_dir,
    )
    if args.format == "json":
        emit_json([r.to_dict() for r in results])
    else:
        for result in results:
            print(import_line(result))
    new = sum(1 for r in results if r.status in (IMPORTED, CHANGED))
    fresh = sum(1 for r in results if r.status == IMPORTED)
    note(f"{len(results)} MLflow version(s): {new} registered ({fresh} new, {new - fresh} changed)")
    return 0


def run_sync_tags(args: argparse.Namespace) -> int:
    """Write Bastion's verdicts back to MLflow."""
    from bastion.registry.mlflow_sync import MISSING, WRITTEN, write_back

    uri = tracking_uri_of(args)
    results = write_back(
        open_registry(args),
        uri,
        args.refs,
        actor=actor_of(args),
        registry_uri=args.registry_uri,
        unalias_blocked=args.unalias_blocked,
    )
    if args.format == "json":
        emit_json([r.to_dict() for r in results])
    else:
        for result in results:
            print(tag_line(result))
    written = sum(1 for r in results if r.status == WRITTEN)
    missing = [r.ref for r in results if r.status == MISSING]
    note(
        f"{len(results)} version(s): tags written on {written}"
        + (f"; gone from MLflow: {', '.join(missing)}" if missing else "")
    )
    return 0
