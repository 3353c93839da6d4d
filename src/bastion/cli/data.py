"""``bastion data``: fingerprint a dataset into a manifest, verify data against it, make signing keys."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli import data_audit
from bastion.cli.common import add_event_options, note
from bastion.errors import ConfigError, InputError, UsageError

if TYPE_CHECKING:
    from bastion.data.verify import FileChange, VerifyResult

HELP = """Training-data security: integrity manifests, poisoning audits, sanitizing with validation.

  bastion data fingerprint PATH [--output MANIFEST] [--source TEXT] [--sign-key KEY.pem]
  bastion data verify PATH --manifest MANIFEST [--public-key PUB.pem] [--format table|json]
  bastion data keygen KEY.pem
  bastion data audit DATA --label COLUMN [--reference TRUSTED] [--source-column COLUMN] [--format json]
  bastion data sanitize DATA --label COLUMN [--validate] [--recipe mlp] [--sign-key KEY.pem]

A manifest records each file's SHA-256 and, for CSV, JSONL, Parquet and NumPy files, a hash per row and
a Merkle root over them; it is canonical JSON (RFC 8785) and may carry an Ed25519 signature. A compressed
CSV or JSONL file (NAME.csv.gz, .bz2, .zst) is hashed per row as the table inside, its SHA-256 as stored.
Symlinks are recorded as links (their target text), never followed; one that leaves the dataset, dangles
or loops is refused by fingerprint, as are FIFOs and devices, unreadable folders and names that are not
UTF-8. --output may be a new file inside the dataset (it is left out of the manifest) but never the
input, a file of the dataset (other than an earlier manifest there) or the signing key.
Exit codes of verify: 0 identical and signature valid; 1 differences (including files it cannot check,
such as a symlink leaving the dataset, or rows that no longer parse), a manifest whose hashes contradict
each other, or a failed signature; 2 bad input.
Exit codes of audit: 0 no finding at --fail-on (default high) or above; 1 there is one; 2 bad input.
Exit codes of sanitize: 0 written; 1 --validate rejected the sanitized set (nothing written); 2 bad input."""

JSON_SCHEMA_VERSION = 1


def _path_arg(text: str) -> Path:
    # Path("") is ".", so an empty argument (an unset shell variable) would silently mean this directory.
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def add_parser(sub: Any) -> None:
    """Register ``data`` and its subcommands fingerprint, verify and keygen."""
    group = sub.add_parser("data", help="fingerprint, verify, audit and sanitize datasets", description=HELP)
    group.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    fp = commands.add_parser("fingerprint", help="write a manifest for a file or directory")
    fp.add_argument("path", type=_path_arg, metavar="PATH", help="a data file or a directory of files")
    fp.add_argument(
        "--output",
        "-o",
        type=_path_arg,
        metavar="MANIFEST",
        help="write here (default: stdout); never over the input, a file of the dataset or the key",
    )
    fp.add_argument("--source", default="", metavar="TEXT", help="where the data came from (recorded)")
    fp.add_argument(
        "--sign-key", type=_path_arg, metavar="KEY.pem", help="sign with this Ed25519 private key"
    )
    add_event_options(fp)
    fp.set_defaults(handler=run_fingerprint)

    ver = commands.add_parser("verify", help="compare data with a manifest")
    ver.add_argument("path", type=_path_arg, metavar="PATH", help="the data file or directory")
    ver.add_argument(
        "--manifest", "-m", type=_path_arg, required=True, metavar="MANIFEST", help="manifest file"
    )
    ver.add_argument(
        "--public-key", type=_path_arg, metavar="PUB.pem", help="require a signature by this key"
    )
    ver.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ver.set_defaults(handler=run_verify)

    key = commands.add_parser("keygen", help="write a new Ed25519 signing key")
    key.add_argument("key", type=_path_arg, metavar="KEY.pem", help="private key file to create (mode 0600)")
    key.set_defaults(handler=run_keygen)

    data_audit.add_commands(commands)


def _require_extra() -> None:
    # The data commands need the optional `data` extra; say so in one line instead of an ImportError.
    missing = [m for m in ("rfc8785", "cryptography") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"bastion data needs {', '.join(missing)}: pip install 'bastion-ai[data]'")


def _utf8_arg(value: str | None, option: str) -> None:
    # The shell hands over raw bytes; undecodable ones arrive as lone surrogates that JSON cannot carry.
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{option}: not valid UTF-8 text") from None


def run_fingerprint(args: argparse.Namespace) -> int:
    """Build (and optionally sign) a manifest, then write it atomically or to stdout."""
    _require_extra()
    from bastion.cli.registry import actor_of, open_store_from
    from bastion.data.manifest import build_manifest, check_input, check_output
    from bastion.data.readers import printable
    from bastion.data.signing import load_private_key, sign_manifest
    from bastion.render import atomic_write_text
    from bastion.store.events import record

    _utf8_arg(args.source, "--source")
    _utf8_arg(args.db, "--db")
    actor = actor_of(args)
    _utf8_arg(actor, "--actor" if args.actor else "the actor (BASTION_ACTOR or login name)")
    check_input(args.path)
    # Everything that can fail in a second is checked before hashing a large dataset: the key, where the
    # manifest goes (never over the data or the key) and the event store.
    key = load_private_key(args.sign_key) if args.sign_key else None
    if args.output is not None:
        check_output(args.output, args.path, keys=[args.sign_key] if args.sign_key else [])
    store = open_store_from(args)
    try:
        exclude = [args.output] if args.output is not None else []
        manifest = build_manifest(args.path, args.source, exclude=exclude)
        if key is not None:
            manifest = sign_manifest(manifest, key)
        text = manifest.to_json().decode("utf-8")
        if args.output is None:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        else:
            try:
                atomic_write_text(args.output, text)
            except OSError as exc:
                shown = printable(str(args.output), escape_backslash=False)
                raise InputError(f"{shown}: cannot write the manifest ({exc.strerror or exc})") from None
        rows = sum(f.row_count or 0 for f in manifest.files)
        payload = {
            "path": printable(str(args.path), escape_backslash=False),
            "manifest_digest": "manifest-sha256:" + manifest.digest(),
            "manifest": None if args.output is None else printable(str(args.output), escape_backslash=False),
            "source": manifest.source,
            "files": len(manifest.files),
            "rows": rows,
            "signed": key is not None,
        }
        record(
            store,
            actor=actor,
            action="data.fingerprinted",
            subject="merkle-sha256:" + manifest.root,
            payload=payload,
        )
    finally:
        store.close()
    signed = ", signed" if key is not None else ""
    note(f"fingerprinted {len(manifest.files)} file(s), {rows} row(s){signed}; root {manifest.root}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Re-fingerprint the data, compare with the manifest, check the signature, report."""
    _require_extra()
    from dataclasses import replace

    from bastion.data.manifest import Survey, build_manifest, check_input, load_manifest, manifest_problem
    from bastion.data.signing import load_public_key, verify_manifest_signature
    from bastion.data.verify import diff_manifests

    check_input(args.path)
    manifest = load_manifest(args.manifest)
    expected = load_public_key(args.public_key) if args.public_key else None
    # Verify reports what it cannot fingerprint (a symlink leaving the dataset, rows that no longer parse)
    # as differences, where fingerprint refuses them: a tampered dataset is not bad input.
    survey = Survey()
    current = build_manifest(args.path, manifest.source, exclude=[args.manifest], survey=survey)
    result = replace(
        diff_manifests(manifest, current, survey),
        signature_error=verify_manifest_signature(manifest, expected),
        signed=manifest.signature is not None,
        manifest_error=manifest_problem(manifest),
    )
    text = render_json(result) if args.format == "json" else render_table(result)
    sys.stdout.write(text)
    sys.stdout.flush()
    note("verified: identical" if result.ok else "verification FAILED")
    return 0 if result.ok else 1


def run_keygen(args: argparse.Namespace) -> int:
    """Write a private key (0600) and its public key beside it as ``<name>.pub.pem``; print the public key."""
    _require_extra()
    from bastion.data.readers import printable
    from bastion.data.signing import generate_key_pair, public_key_pem

    if not args.key.name:
        raise UsageError(f"{args.key}: not a file name")
    key, public_path = generate_key_pair(args.key)
    pem = public_key_pem(key.public_key())
    sys.stdout.write(pem)
    shown, shown_public = (printable(str(p), escape_backslash=False) for p in (args.key, public_path))
    note(f"wrote private key {shown} (0600) and public key {shown_public}")
    return 0


def _rows_json(change: FileChange) -> dict[str, Any] | None:
    if change.rows is None:
        return None
    return {"added": change.rows.added, "removed": change.rows.removed, "changed": change.rows.changed}


def render_json(result: VerifyResult) -> str:
    """The verify result as JSON with ``schema_version``."""
    data = {
        "schema_version": JSON_SCHEMA_VERSION,
        "ok": result.ok,
        "identical": result.identical,
        "signature": _signature_status(result),
        "signature_error": result.signature_error,
        "manifest_error": result.manifest_error,
        "added": result.added,
        "removed": result.removed,
        "changed": [
            {
                "path": c.path,
                "old_sha256": c.old_sha256,
                "new_sha256": c.new_sha256,
                "schema_changed": c.schema_changed,
                "rows": _rows_json(c),
                "rows_error": c.rows_error,
            }
            for c in result.changed
        ],
        "unverified": [{"path": u.path, "kind": u.kind, "reason": u.reason} for u in result.unverified],
    }
    return json.dumps(data, indent=2) + "\n"


def _signature_status(result: VerifyResult) -> str:
    if result.signature_error is not None:
        return "invalid"
    return "valid" if result.signed else "absent"


def _indices(values: tuple[int, ...], limit: int = 20) -> str:
    # Long lists are cut so one bad file cannot flood the terminal; --format json has them all.
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in total)" if len(values) > limit else "")


def render_table(result: VerifyResult) -> str:
    """A plain-text report, one line per file and per row category.

    Names are shown with control characters escaped: a name holding ``\\r`` could otherwise rewrite its
    own line into a fake "ok"; --format json carries the exact names.
    """
    from bastion.data.readers import printable

    lines = [f"{'STATUS':<10} PATH / DETAIL"]
    lines += [f"{'added':<10} {printable(p)}" for p in result.added]
    lines += [f"{'removed':<10} {printable(p)}" for p in result.removed]
    for change in result.changed:
        schema = "  (schema changed)" if change.schema_changed else ""
        lines.append(f"{'changed':<10} {printable(change.path)}{schema}")
        if change.rows_error is not None:
            lines.append(
                f"{'':<10}   rows unreadable: {printable(change.rows_error, escape_backslash=False)}"
            )
        if change.rows is not None:
            categories = (
                ("rows added", change.rows.added),
                ("rows removed", change.rows.removed),
                ("rows changed", change.rows.changed),
            )
            for label, values in categories:
                if values:
                    lines.append(f"{'':<10}   {label}: {_indices(values)}")
            if not any(values for _, values in categories):
                lines.append(f"{'':<10}   rows: none differ (order, line endings or formatting changed)")
    # Unverified paths and reasons are built from escaped names already (see bastion.data.manifest).
    lines += [f"{u.kind:<10} {u.path}: {u.reason}" for u in result.unverified]
    if len(lines) == 1:
        # "ok" only when everything holds; the data can match while the manifest or signature fails.
        lines.append(f"{'ok' if result.ok else 'same':<10} no differences in the data")
    if result.manifest_error is not None:
        lines.append(f"manifest: inconsistent ({printable(result.manifest_error, escape_backslash=False)})")
    sig = _signature_status(result)
    error = f" ({result.signature_error})" if result.signature_error else ""  # fixed texts, no names
    lines.append(f"signature: {sig}{error}")
    return "\n".join(lines) + "\n"
