"""``bastion gate`` and ``bastion verify``: the policy decision for CI and the check before serving."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.atomic import atomic_write_text
from bastion.cli.common import note, wants_color
from bastion.cli.registry import actor_of, emit_json, open_registry, require_registry_extra, store_options

if TYPE_CHECKING:
    from bastion.registry.check import VersionCheck
    from bastion.registry.gate import GateResult
    from bastion.registry.policy import Policy
    from bastion.registry.record import VersionRecord
    from bastion.registry.versions import Registry

GATE_HELP = """Decide whether a registered version may go on, under a policy of CEL rules.

  bastion gate MODEL@VERSION --policy policy.yaml [--format table|json|sarif|junit] [--output FILE]

Before deciding, the gate re-hashes the artifact at its registered location and verifies its signature
(skip with --no-verify); the facts policies see are documented in docs/policy.md. The decision is an
event in the log. Exit codes: 0 passed; 1 blocked; 2 the policy or the input is wrong, or a rule could
not be evaluated (never a pass)."""

VERIFY_HELP = """Check that a registered version's artifact is intact and signed, before it is loaded.

  bastion verify MODEL@VERSION [--path ARTIFACT] [--public-key PUB.pem | --ca-chain CA.pem] [--identity ID]
                               [--policy policy.yaml] [--format table|json]

Re-hashes every file, compares them with the registered digests, and verifies the model-signing bundle
(with the recorded trust material unless you give --public-key or --ca-chain). With --policy, the
version must also pass the gate. The outcome is an event in the log.
Exit codes: 0 verified (and passed); 1 changed, bad signature or blocked by the policy; 2 bad input."""


def add_parser(sub: Any) -> None:
    """Register ``gate`` and ``verify``."""
    common = store_options()
    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument(
        "--path", type=Path, metavar="ARTIFACT", help="check this copy instead of the registered one"
    )
    trust.add_argument(
        "--public-key", type=Path, metavar="PUB.pem", help="verify with this key (key signatures)"
    )
    trust.add_argument(
        "--ca-chain",
        type=Path,
        action="append",
        default=[],
        metavar="CA.pem",
        help="trusted CA chain (certificate signatures; repeatable)",
    )
    trust.add_argument("--identity", metavar="ID", help="the signer identity the signature must name")

    gate = sub.add_parser(
        "gate", parents=[common, trust], help="decide under a policy (CI)", description=GATE_HELP
    )
    gate.formatter_class = argparse.RawDescriptionHelpFormatter
    gate.add_argument("ref", metavar="MODEL@VERSION")
    gate.add_argument("--policy", type=Path, required=True, metavar="POLICY.yaml", help="the policy file")
    gate.add_argument("--format", choices=("table", "json", "sarif", "junit"), default="table")
    gate.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write the result here (default: stdout)"
    )
    gate.add_argument("--no-verify", action="store_true", help="decide on recorded facts without re-hashing")
    gate.set_defaults(handler=run_gate)

    verify = sub.add_parser(
        "verify", parents=[common, trust], help="check a version before serving it", description=VERIFY_HELP
    )
    verify.formatter_class = argparse.RawDescriptionHelpFormatter
    verify.add_argument("ref", metavar="MODEL@VERSION")
    verify.add_argument("--policy", type=Path, metavar="POLICY.yaml", help="also require the gate to pass")
    verify.add_argument("--format", choices=("table", "json"), default="table")
    verify.set_defaults(handler=run_verify)


def _check(args: argparse.Namespace, registry: Registry, record: VersionRecord) -> VersionCheck:
    from bastion.registry.check import check_version

    check = check_version(
        record,
        artifact=args.path,
        public_key=args.public_key,
        ca_chain=args.ca_chain,
        identity=args.identity,
    )
    registry.record_check(
        record.ref,
        "model.verified",
        {
            "ok": check.ok,
            "intact": check.intact,
            "digest": check.digest,
            "registered_digest": record.digest,
            "changed": list(check.changed),
            "missing": list(check.missing),
            "extra": list(check.extra),
            "signature_verified": None if check.signature is None else check.signature.verified,
            "detail": check.detail,
        },
        actor=actor_of(args),
    )
    return check


def decide(
    args: argparse.Namespace,
    registry: Registry,
    record: VersionRecord,
    check: VersionCheck | None,
    policy: Policy,
) -> GateResult:
    """Evaluate the policy on the version's facts and record the decision as an event."""
    from dataclasses import replace

    from bastion.registry.facts import version_facts
    from bastion.registry.policy import evaluate

    if check is not None and check.signature is not None:
        record = replace(record, signature=check.signature)
    facts = version_facts(
        record, now=dt.datetime.now(dt.UTC), verification=None if check is None else check.facts()
    )
    result = evaluate(policy, facts)
    result = replace(result, subject=record.ref, digest=record.digest)
    registry.record_check(
        record.ref,
        "gate.evaluated",
        {
            "policy": result.policy,
            "policy_file": str(args.policy),
            "verdict": result.verdict,
            "passed": result.passed,
            "digest": record.digest,
            "blocking": [o.rule_id for o in result.outcomes if o.blocking],
        },
        actor=actor_of(args),
    )
    return result


def run_gate(args: argparse.Namespace) -> int:
    """Evaluate the policy and print or write the result."""
    from bastion.registry.gate import render_gate
    from bastion.registry.policy import load_policy

    require_registry_extra("yaml", "cel", "model_signing")
    policy = load_policy(args.policy)  # fail on a bad policy before hashing gigabytes
    registry = open_registry(args)
    record = registry.get(args.ref)
    check = None if args.no_verify else _check(args, registry, record)
    result = decide(args, registry, record, check, policy)
    to_tty = args.output is None and args.format == "table"
    text = render_gate(result, args.format, color=to_tty and wants_color(sys.stdout))
    if args.output is not None:
        atomic_write_text(args.output, text)
        note(f"{result.headline()} (written to {args.output})")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return result.exit_code


def run_verify(args: argparse.Namespace) -> int:
    """Verify the artifact and signature, and with --policy the gate too."""
    require_registry_extra("model_signing", *(("yaml", "cel") if args.policy is not None else ()))
    registry = open_registry(args)
    policy = None
    if args.policy is not None:
        from bastion.registry.policy import load_policy

        policy = load_policy(args.policy)
    record = registry.get(args.ref)
    check = _check(args, registry, record)
    result = decide(args, registry, record, check, policy) if policy is not None else None
    if args.format == "json":
        data = check.to_dict()
        if result is not None:
            from bastion.registry.gate import gate_dict

            data["gate"] = gate_dict(result)
        emit_json(data)
    else:
        print(f"{'VERIFIED' if check.ok else 'FAILED'}: {record.ref}: {check.detail}")
        for label, paths in (("changed", check.changed), ("missing", check.missing), ("added", check.extra)):
            for path in paths:
                print(f"  {label}: {path}")
        if check.signature is not None:
            state = "valid" if check.signature.verified else "INVALID"
            print(f"  signature: {check.signature.method} by {check.signature.signer} ({state})")
        else:
            print("  signature: none recorded (sign with `bastion registry sign`)")
        if result is not None:
            print(f"  gate: {result.headline()}")
    if result is not None and result.exit_code == 2:
        return 2
    return 0 if check.ok and (result is None or result.passed) else 1
