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
from bastion.cli.registry import record_event
from bastion.errors import ConfigError, InputError

if TYPE_CHECKING:
    from bastion.data.verify import FileChange, VerifyResult

HELP = """Training-data security: integrity manifests, poisoning audits, sanitizing with validation.

  bastion data fingerprint PATH [--output MANIFEST] [--source TEXT] [--sign-key KEY.pem]
  bastion data verify PATH --manifest MANIFEST [--public-key PUB.pem] [--format table|json]
  bastion data keygen KEY.pem
  bastion data audit DATA --label COLUMN [--reference TRUSTED] [--source-column COLUMN] [--format json]
  bastion data sanitize DATA --label COLUMN [--validate] [--recipe mlp] [--sign-key KEY.pem]

A manifest records each file's SHA-256 and, for CSV, JSONL, Parquet and NumPy files, a hash per row and
a Merkle root over them; it is canonical JSON (RFC 8785) and may carry an Ed25519 signature.
Exit codes of verify: 0 identical and signature valid; 1 differences or a failed signature; 2 bad input.
Exit codes of audit: 0 no finding at --fail-on (default high) or above; 1 there is one; 2 bad input.
Exit codes of sanitize: 0 written; 1 --validate rejected the sanitized set (nothing written); 2 bad input."""

JSON_SCHEMA_VERSION = 1


def add_parser(sub: Any) -> None:
    """Register ``data`` and its subcommands fingerprint, verify and keygen."""
    group = sub.add_parser("data", help="fingerprint, verify, audit and sanitize datasets", description=HELP)
    group.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    fp = commands.add_parser("fingerprint", help="write a manifest for a file or directory")
    fp.add_argument("path", type=Path, metavar="PATH", help="a data file or a directory of files")
    fp.add_argument("--output", "-o", type=Path, metavar="MANIFEST", help="write here (default: stdout)")
    fp.add_argument("--source", default="", metavar="TEXT", help="where the data came from (recorded)")
    fp.add_argument("--sign-key", type=Path, metavar="KEY.pem", help="sign with this Ed25519 private key")
    add_event_options(fp)
    fp.set_defaults(handler=run_fingerprint)

    ver = commands.add_parser("verify", help="compare data with a manifest")
    ver.add_argument("path", type=Path, metavar="PATH", help="the data file or directory")
    ver.add_argument("--manifest", "-m", type=Path, required=True, metavar="MANIFEST", help="manifest file")
    ver.add_argument("--public-key", type=Path, metavar="PUB.pem", help="require a signature by this key")
    ver.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ver.set_defaults(handler=run_verify)

    key = commands.add_parser("keygen", help="write a new Ed25519 signing key")
    key.add_argument("key", type=Path, metavar="KEY.pem", help="private key file to create (mode 0600)")
    key.set_defaults(handler=run_keygen)

    data_audit.add_commands(commands)


def _require_extra() -> None:
    # The data commands need the optional `data` extra; say so in one line instead of an ImportError.
    missing = [m for m in ("rfc8785", "cryptography") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"bastion data needs {', '.join(missing)}: pip install 'bastion-ai[data]'")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")


def run_fingerprint(args: argparse.Namespace) -> int:
    """Build (and optionally sign) a manifest, then write it atomically or to stdout."""
    _require_extra()
    from bastion.data.manifest import build_manifest
    from bastion.data.signing import load_private_key, sign_manifest
    from bastion.render import atomic_write_text

    _check_path(args.path)
    # Load the key before hashing so that a wrong key fails in a second, not after a large dataset.
    key = load_private_key(args.sign_key) if args.sign_key else None
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
            raise InputError(f"{args.output}: cannot write the manifest ({exc.strerror or exc})") from None
    rows = sum(f.row_count or 0 for f in manifest.files)
    signed = ", signed" if key is not None else ""
    record_event(
        args,
        "data.fingerprinted",
        "merkle-sha256:" + manifest.root,
        {
            "path": str(args.path),
            "manifest_digest": "manifest-sha256:" + manifest.digest(),
            "manifest": None if args.output is None else str(args.output),
            "source": manifest.source,
            "files": len(manifest.files),
            "rows": rows,
            "signed": key is not None,
        },
    )
    note(f"fingerprinted {len(manifest.files)} file(s), {rows} row(s){signed}; root {manifest.root}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Re-fingerprint the data, compare with the manifest, check the signature, report."""
    _require_extra()
    from dataclasses import replace

    from bastion.data.manifest import build_manifest, load_manifest
    from bastion.data.signing import load_public_key, verify_manifest_signature
    from bastion.data.verify import diff_manifests

    _check_path(args.path)
    manifest = load_manifest(args.manifest)
    expected = load_public_key(args.public_key) if args.public_key else None
    current = build_manifest(args.path, manifest.source, exclude=[args.manifest])
    result = replace(
        diff_manifests(manifest, current),
        signature_error=verify_manifest_signature(manifest, expected),
        signed=manifest.signature is not None,
    )
    text = render_json(result) if args.format == "json" else render_table(result)
    sys.stdout.write(text)
    sys.stdout.flush()
    note("verified: identical" if result.ok else "verification FAILED")
    return 0 if result.ok else 1


def run_keygen(args: argparse.Namespace) -> int:
    """Write a private key (0600) and its public key beside it as ``<name>.pub.pem``; print the public key."""
    _require_extra()
    from bastion.data.signing import generate_key, public_key_pem
    from bastion.render import atomic_write_text

    public_path = args.key.with_name(args.key.stem + ".pub.pem")
    if public_path.exists():
        raise InputError(f"{public_path}: already exists; refusing to overwrite a key")
    pem = public_key_pem(generate_key(args.key).public_key())
    atomic_write_text(public_path, pem)
    sys.stdout.write(pem)
    note(f"wrote private key {args.key} (0600) and public key {public_path}")
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
        "added": result.added,
        "removed": result.removed,
        "changed": [
            {
                "path": c.path,
                "old_sha256": c.old_sha256,
                "new_sha256": c.new_sha256,
                "schema_changed": c.schema_changed,
                "rows": _rows_json(c),
            }
            for c in result.changed
        ],
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
    """A plain-text report, one line per file and per row category."""
    lines = [f"{'STATUS':<10} PATH / DETAIL"]
    lines += [f"{'added':<10} {p}" for p in result.added]
    lines += [f"{'removed':<10} {p}" for p in result.removed]
    for change in result.changed:
        lines.append(
            f"{'changed':<10} {change.path}" + ("  (schema changed)" if change.schema_changed else "")
        )
        if change.rows is not None:
            for label, values in (
                ("rows added", change.rows.added),
                ("rows removed", change.rows.removed),
                ("rows changed", change.rows.changed),
            ):
                if values:
                    lines.append(f"{'':<10}   {label}: {_indices(values)}")
    if len(lines) == 1:
        lines.append(f"{'ok':<10} no differences")
    sig = _signature_status(result)
    lines.append(f"signature: {sig}" + (f" ({result.signature_error})" if result.signature_error else ""))
    return "\n".join(lines) + "\n"
