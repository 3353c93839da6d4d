"""``bastion registry``: register model versions, list and compare them, move aliases and approvals, sign."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli.common import is_tty, note
from bastion.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from bastion.registry.record import VersionRecord
    from bastion.registry.versions import Registry
    from bastion.store.database import Store
    from bastion.store.events import Event

HELP = """The governed model registry: immutable versions with digests, datasets, scans and signatures.

  bastion registry add NAME PATH [--data MANIFEST]... [--audit REPORT]... [--parent MODEL@VERSION]
                                 [--scan-report SCAN.json] [--meta KEY=VALUE]...
  bastion registry list [NAME] [--state STATE]
  bastion registry show MODEL@VERSION          (or MODEL@ALIAS, or MODEL for the newest)
  bastion registry history MODEL[@VERSION]
  bastion registry diff MODEL@A MODEL@B
  bastion registry alias MODEL@VERSION ALIAS --reason TEXT      (bastion registry alias MODEL ALIAS --remove)
  bastion registry aliases MODEL [--alias production] [--at 2026-03-01T12:00:00Z]
  bastion registry approve|deploy|deprecate|revoke|quarantine MODEL@VERSION --reason TEXT [--reinstate]
  bastion registry keygen KEY.pem
  bastion registry sign MODEL@VERSION --key KEY.pem [--certificate CERT.pem --chain CA.pem] [--sigstore]

The store is a SQLite file in your data directory unless --db or BASTION_DATABASE_URL names another
(a path, sqlite:///PATH or postgresql://USER@HOST/DB). Every change is an event in the hash-chained log
(`bastion events`). The actor is --actor, else BASTION_ACTOR, else your login name.
Exit codes: 0 done; 2 bad input or a refused change (the reason is printed)."""

STATE_COMMANDS = {
    "approve": "approved",
    "deploy": "deployed",
    "deprecate": "deprecated",
    "revoke": "revoked",
    "quarantine": "quarantined",
}


def require_registry_extra(*modules: str) -> None:
    """Signing, policies and the AI-BOM need the ``registry`` extra; one line says so, not an ImportError."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"this command needs {', '.join(missing)}: pip install 'bastion-ai[registry]'")


def store_options() -> argparse.ArgumentParser:
    """The ``--db`` and ``--actor`` options every governance command shares."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="URL", help="store: a path, sqlite:///PATH or postgresql://... URL")
    parent.add_argument(
        "--actor", metavar="NAME", help="who is acting (default: BASTION_ACTOR or login name)"
    )
    return parent


def open_store_from(args: argparse.Namespace) -> Store:
    """The store named by ``--db`` (or the default)."""
    from bastion.store.database import open_store

    return open_store(getattr(args, "db", None))


def open_registry(args: argparse.Namespace) -> Registry:
    """The registry in the store named by ``--db``."""
    from bastion.registry.versions import Registry

    return Registry(open_store_from(args))


def record_event(args: argparse.Namespace, action: str, subject: str, payload: dict[str, Any]) -> None:
    """Append one event to the store named by ``--db`` (or the default): how every command leaves a trace."""
    from bastion.store.events import record

    record(open_store_from(args), actor=actor_of(args), action=action, subject=subject, payload=payload)


def actor_of(args: argparse.Namespace) -> str:
    """``--actor`` or the default actor."""
    from bastion.registry.versions import default_actor

    return str(getattr(args, "actor", None) or default_actor())


def _meta_pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    # Values that parse as JSON keep their type (numbers, lists, objects for metrics); the rest are text.
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def add_parser(sub: Any) -> None:
    """Register ``registry`` and its subcommands."""
    common = store_options()
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    group = sub.add_parser(
        "registry", help="register, approve, alias and sign model versions", description=HELP
    )
    group.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = group.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)

    add = commands.add_parser("add", parents=[common, fmt], help="register a new version of a model")
    add.add_argument("name", metavar="NAME")
    add.add_argument("path", type=Path, metavar="PATH", help="the model file or directory")
    add.add_argument(
        "--data",
        type=Path,
        action="append",
        default=[],
        metavar="MANIFEST",
        help="a `bastion data fingerprint` manifest of training data (repeatable)",
    )
    add.add_argument(
        "--audit",
        type=Path,
        action="append",
        default=[],
        metavar="REPORT",
        help="a `bastion data audit --format json` report of one of those datasets (repeatable)",
    )
    add.add_argument("--parent", metavar="MODEL@VERSION", help="the version this one was fine-tuned from")
    add.add_argument(
        "--scan-report",
        type=Path,
        metavar="SCAN.json",
        help="a `bastion scan --format json` report (default: scan now)",
    )
    add.add_argument(
        "--meta",
        type=_meta_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="free metadata: license, intended_use, metrics={...} (repeatable)",
    )
    add.set_defaults(handler=run_add)

    lst = commands.add_parser("list", parents=[common, fmt], help="list versions")
    lst.add_argument("name", nargs="?", metavar="NAME")
    lst.add_argument("--state", metavar="STATE", help="only versions in this state")
    lst.set_defaults(handler=run_list)

    show = commands.add_parser("show", parents=[common, fmt], help="everything about one version")
    show.add_argument("ref", metavar="MODEL@VERSION")
    show.set_defaults(handler=run_show)

    hist = commands.add_parser("history", parents=[common, fmt], help="the events of a model or version")
    hist.add_argument("ref", metavar="MODEL[@VERSION]")
    hist.set_defaults(handler=run_history)

    diff = commands.add_parser("diff", parents=[common, fmt], help="compare two versions")
    diff.add_argument("left", metavar="MODEL@A")
    diff.add_argument("right", metavar="MODEL@B")
    diff.set_defaults(handler=run_diff)

    alias = commands.add_parser("alias", parents=[common, fmt], help="point an alias at a version")
    alias.add_argument("ref", metavar="MODEL@VERSION")
    alias.add_argument("alias", metavar="ALIAS")
    alias.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    alias.add_argument("--remove", action="store_true", help="remove the alias from MODEL")
    alias.set_defaults(handler=run_alias)

    aliases = commands.add_parser("aliases", parents=[common, fmt], help="alias moves, or which served when")
    aliases.add_argument("name", metavar="MODEL")
    aliases.add_argument("--alias", metavar="ALIAS", help="only this alias")
    aliases.add_argument("--at", metavar="TIME", help="with --alias: the version it pointed to at TIME")
    aliases.set_defaults(handler=run_aliases)

    for command, state in STATE_COMMANDS.items():
        move = commands.add_parser(command, parents=[common, fmt], help=f"mark a version {state}")
        move.add_argument("ref", metavar="MODEL@VERSION")
        move.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
        move.add_argument(
            "--reinstate",
            action="store_true",
            help="allow leaving revoked/quarantined (recorded as a reinstatement)",
        )
        move.set_defaults(handler=run_state, state=state)

    keygen = commands.add_parser("keygen", help="write a new EC P-256 model-signing key")
    keygen.add_argument(
        "key", type=Path, metavar="KEY.pem", help="private key to create (0600); .pub.pem beside"
    )
    keygen.set_defaults(handler=run_keygen)

    sign = commands.add_parser(
        "sign", parents=[common, fmt], help="sign a registered version (model-signing)"
    )
    sign.add_argument("ref", metavar="MODEL@VERSION")
    sign.add_argument("--key", type=Path, metavar="KEY.pem", help="private key (EC) to sign with")
    sign.add_argument("--certificate", type=Path, metavar="CERT.pem", help="signing certificate (with --key)")
    sign.add_argument(
        "--chain",
        type=Path,
        action="append",
        default=[],
        metavar="CA.pem",
        help="certificate chain up to your private CA (repeatable)",
    )
    sign.add_argument("--sigstore", action="store_true", help="keyless Sigstore signing (needs the network)")
    sign.add_argument("--signature", type=Path, metavar="PATH", help="where to write the bundle")
    sign.set_defaults(handler=run_sign)


# --- output helpers ----------------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    """Indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def record_dict(record: VersionRecord) -> dict[str, Any]:
    """A version as JSON-ready data."""
    from dataclasses import asdict

    from bastion.registry.versions import jsonable

    data: dict[str, Any] = jsonable(asdict(record))
    data["ref"] = record.ref
    return data


def event_line(event: Event) -> str:
    """One event as a line of text."""
    details = ", ".join(f"{k}={_short(v)}" for k, v in event.payload.items() if v not in (None, "", [], {}))
    return (
        f"{event.seq:>6}  {event.at[:19]}Z  {event.actor:<12} {event.action:<18} {event.subject}  {details}"
    )


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def print_record(record: VersionRecord) -> None:
    """A version as text."""
    out = [
        f"{record.ref}  [{record.state}]"
        + (f"  aliases: {', '.join(record.aliases)}" if record.aliases else "")
    ]
    out.append(f"  registered  {record.created_at:%Y-%m-%d %H:%M:%S}Z by {record.created_by}")
    out.append(f"  artifact    {record.location}")
    out.append(f"  digest      {record.digest}")
    out.append(f"  format      {record.format}" + (f" ({record.framework})" if record.framework else ""))
    out.append(f"  size        {_size(record.size)} in {len(record.files)} file(s)")
    if record.parent:
        out.append(f"  parent      {record.parent}")
    if record.scan:
        counts = ", ".join(f"{k} {v}" for k, v in record.scan.counts.items() if v)
        out.append(f"  scan        {record.scan.verdict}" + (f" ({counts})" if counts else ""))
    else:
        out.append("  scan        none")
    if record.signature:
        sig = record.signature
        state = {True: "verified", False: "FAILED", None: "not verified"}[sig.verified]
        out.append(f"  signature   {sig.method} by {sig.signer} ({state})")
    else:
        out.append("  signature   none")
    for ds in record.datasets:
        audit = ds.audit.get("verdict") if ds.audit else "not audited"
        signed = "signed" if ds.signed else "unsigned"
        out.append(
            f"  dataset     {ds.digest} ({ds.rows or '?'} rows, {signed}, {audit}) {ds.source or ''}".rstrip()
        )
    if not record.datasets:
        out.append("  dataset     none recorded")
    for approval in record.approvals:
        out.append(
            f"  {approval.state:<11} {approval.at:%Y-%m-%d %H:%M}Z by {approval.actor}: {approval.reason}"
        )
    for key, value in sorted(record.metadata.items()):
        out.append(f"  meta        {key} = {_short(value)}")
    print("\n".join(out))


# --- handlers ----------------------------------------------------------------------------------------


def _show(args: argparse.Namespace, record: VersionRecord) -> None:
    if args.format == "json":
        emit_json(record_dict(record))
    else:
        print_record(record)


def run_add(args: argparse.Namespace) -> int:
    """Register a version."""
    registry = open_registry(args)
    metadata = dict(args.meta)
    record = registry.add(
        args.name,
        args.path,
        actor=actor_of(args),
        datasets=args.data,
        audits=args.audit,
        parent=args.parent,
        scan_report=args.scan_report,
        metadata=metadata,
    )
    note(f"registered {record.ref} ({record.digest})")
    _show(args, record)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """List versions, one line each (streamed, so 100k versions print without building a table)."""
    from bastion.registry.versions import VersionRow

    registry = open_registry(args)
    rows = registry.list_versions(args.name, state=args.state)
    if args.format == "json":
        # One object per version, streamed in blocks: a 100k-version listing never builds one big string.
        fields = VersionRow._fields
        sys.stdout.write("[")
        block: list[dict[str, Any]] = []
        first = True

        def flush() -> None:
            nonlocal first
            if block:
                # One json.dumps per block of objects: the encoder's per-call overhead dominates otherwise.
                text = json.dumps(block, indent=None, separators=(", ", ": "))[1:-1].replace(
                    "}, {", "},\n  {"
                )
                sys.stdout.write(("\n  " if first else ",\n  ") + text)
                first = False
                block.clear()

        for row in rows:
            item = dict(zip(fields, row, strict=True))
            item["signed"] = bool(item["signed"])
            block.append(item)
            if len(block) >= 5000:
                flush()
        flush()
        sys.stdout.write("\n]\n")
        return 0
    if not is_tty(sys.stdout):
        # Piped: tab-separated columns (sizes in bytes), cheap enough that 100,000 versions take a fraction
        # of a second and easy for cut/awk; on a terminal, aligned columns with readable sizes.
        out = ["VERSION\tSTATE\tFORMAT\tBYTES\tSCAN\tSIGNED\tCREATED\n"]
        for row in rows:
            out.append(
                f"{row.name}@{row.version}\t{row.state}\t{row.format}\t{row.size}\t{row.verdict or '-'}\t"
                f"{'yes' if row.signed else 'no'}\t{row.created_at}\n"
            )
            if len(out) >= 5000:
                sys.stdout.write("".join(out))
                out.clear()
        sys.stdout.write("".join(out))
        return 0
    out = [
        f"{'VERSION':<40} {'STATE':<12} {'FORMAT':<12} {'SIZE':>10}  {'SCAN':<10} {'SIGNED':<6}  CREATED\n"
    ]
    for row in rows:
        out.append(
            f"{row.name + '@' + str(row.version):<40} {row.state:<12} {row.format:<12} "
            f"{_size(row.size):>10}  "
            f"{row.verdict or '-':<10} {'yes' if row.signed else 'no':<6}  {row.created_at[:19]}Z\n"
        )
    sys.stdout.write("".join(out))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Show one version."""
    _show(args, open_registry(args).get(args.ref))
    return 0


def print_events(args: argparse.Namespace, found: Sequence[Event]) -> None:
    """Events as JSON or lines."""
    if args.format == "json":
        emit_json([e.to_dict() for e in found])
        return
    for event in found:
        print(event_line(event))


def run_history(args: argparse.Namespace) -> int:
    """Every event about a model or version."""
    print_events(args, open_registry(args).history(args.ref))
    return 0


def run_diff(args: argparse.Namespace) -> int:
    """Compare two versions."""
    diff = open_registry(args).diff(args.left, args.right)
    if args.format == "json":
        emit_json(diff.__dict__)
        return 0
    print(f"{diff.left} -> {diff.right}")
    for key, left, right in diff.fields:
        print(f"  {key}: {_short(left)} -> {_short(right)}")
    for label, paths in (("+", diff.files_added), ("-", diff.files_removed), ("~", diff.files_changed)):
        for path in paths:
            print(f"  {label} {path}")
    for digest in diff.datasets_added:
        print(f"  + dataset {digest}")
    for digest in diff.datasets_removed:
        print(f"  - dataset {digest}")
    if not (diff.fields or diff.files_added or diff.files_removed or diff.files_changed):
        print("  identical artifacts and facts")
    return 0


def run_alias(args: argparse.Namespace) -> int:
    """Move or remove an alias."""
    from bastion.registry.versions import parse_ref

    registry = open_registry(args)
    if args.remove:
        name, _ = parse_ref(args.ref)
        registry.remove_alias(name, args.alias, actor=actor_of(args), reason=args.reason)
        note(f"removed {name}@{args.alias}")
        return 0
    record = registry.set_alias(args.ref, args.alias, actor=actor_of(args), reason=args.reason)
    note(f"{record.name}@{args.alias} -> {record.ref}")
    _show(args, record)
    return 0


def run_aliases(args: argparse.Namespace) -> int:
    """Alias history, or which version an alias named at a time."""
    from bastion.store.events import parse_time

    registry = open_registry(args)
    if args.at:
        if not args.alias:
            raise UsageError("--at needs --alias (which alias to look up)")
        try:
            moment = parse_time(args.at)
        except ValueError:
            raise UsageError(
                f"--at {args.at!r}: expected an ISO 8601 time such as 2026-03-01T12:00:00Z"
            ) from None
        version = registry.alias_at(args.name, args.alias, moment)
        answer = {"model": args.name, "alias": args.alias, "at": args.at, "version": version}
        if args.format == "json":
            emit_json(answer)
        else:
            served = f"{args.name}@{version}" if version is not None else "nothing"
            print(f"{args.name}@{args.alias} at {moment:%Y-%m-%d %H:%M:%S}Z: {served}")
        return 0
    moves = registry.alias_history(args.name, args.alias)
    if args.format == "json":
        emit_json(moves)
        return 0
    for move in moves:
        target = f"{args.name}@{move['version']}" if move["version"] is not None else "(removed)"
        print(f"{move['at'][:19]}Z  {move['alias']:<12} -> {target:<24} by {move['actor']}: {move['reason']}")
    return 0


def run_state(args: argparse.Namespace) -> int:
    """Approve, deploy, deprecate, revoke or quarantine a version."""
    record = open_registry(args).transition(
        args.ref, args.state, actor=actor_of(args), reason=args.reason, reinstate=args.reinstate
    )
    note(f"{record.ref} is now {record.state}")
    _show(args, record)
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    """Write an EC P-256 signing key pair."""
    require_registry_extra("model_signing", "OpenSSL")
    from bastion.registry.signing import generate_key

    public = generate_key(args.key)
    note(f"wrote {args.key} (private, 0600) and {public}")
    return 0


def public_material(key: Path | None, certificate: Path | None, chain: Sequence[Path]) -> str | None:
    """The PEM a verifier needs later: the public key of ``key``, or the certificate chain."""
    if certificate is not None:
        return "".join(p.read_text(encoding="utf-8") for p in (certificate, *chain))
    if key is None:
        return None
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def run_sign(args: argparse.Namespace) -> int:
    """Sign a registered version's artifact and record the signature."""
    from dataclasses import replace

    require_registry_extra("model_signing", "OpenSSL")
    from bastion.registry.signing import sign_model

    registry = open_registry(args)
    record = registry.get(args.ref)
    artifact = Path(record.location)
    info = sign_model(
        artifact,
        key=args.key,
        certificate=args.certificate,
        chain=args.chain,
        sigstore=args.sigstore,
        signature=args.signature,
    )
    info = replace(info, public_key=public_material(args.key, args.certificate, args.chain))
    record = registry.record_signature(record.ref, info, actor=actor_of(args))
    note(f"signed {record.ref}: {info.bundle_path} ({info.method}, {info.signer})")
    _show(args, record)
    return 0
