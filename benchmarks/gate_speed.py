"""Speed of one gate decision: facts from a version with 5,000 scan findings, then the example policy.

Loads examples/policy.yaml once (compiling every CEL expression), then times ``version_facts`` +
``evaluate`` together, as ``bastion gate`` runs them for every decision, over ``--runs`` runs, and prints a
Markdown line with the median and p95; the target is under 50 ms per decision. A second line times the
same policy plus one rule that reads ``scan.findings`` (the CEL binding copies every finding in, so
that is the expensive kind of rule).

    .venv/bin/python benchmarks/gate_speed.py [--findings 5000] [--runs 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.registry.facts import version_facts
from bastion.registry.policy import Policy, evaluate, load_policy, parse_policy
from bastion.registry.record import (
    APPROVED,
    Approval,
    ArtifactFile,
    DatasetRef,
    ScanSummary,
    SignatureInfo,
    VersionRecord,
)

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.yaml"
TARGET_MS = 50.0
SEVERITIES = ("low", "medium", "low", "info", "medium")  # no high or critical: the policy passes them
FINDINGS_RULE = """
  - id: no-pickle-globals
    require: '!scan.findings.exists(f, f.rule.startsWith("BST-PKL-9"))'
"""


def record(findings: int) -> VersionRecord:
    """A healthy version whose scan recorded ``findings`` findings of low to medium severity."""
    now = datetime.now(UTC)
    items = tuple(
        {
            "rule": f"BST-PKL-{i % 40:03d}",
            "severity": SEVERITIES[i % len(SEVERITIES)],
            "message": f"pickle imports a callable that is not on the safe list (finding {i})",
            "location": f"weights/shard-{i % 16}.pkl@{1024 + i}",
        }
        for i in range(findings)
    )
    counts = {
        s: sum(1 for f in items if f["severity"] == s) for s in ("critical", "high", "medium", "low", "info")
    }
    digest = "sha256:" + "ab" * 32
    return VersionRecord(
        name="fraud-detector",
        version=7,
        created_at=now - timedelta(days=3),
        created_by="alice",
        location="models/fraud-detector",
        digest=digest,
        format="pickle",
        framework="scikit-learn",
        size=123_456_789,
        files=(ArtifactFile("model.pkl", "ab" * 32, 123_456_789),),
        datasets=(
            DatasetRef(
                digest="manifest-sha256:" + "cd" * 32,
                source="transactions-2025",
                rows=1_000_000,
                files=12,
                signed=True,
                audit={"verdict": "clean", "flagged": 120, "high": 0, "audited_at": now - timedelta(days=5)},
            ),
        ),
        scan=ScanSummary("suspicious", counts, items, "0.1.0", now - timedelta(days=1)),
        signature=SignatureInfo(
            method="key",
            signer="sha256:5b1c3a0c2d6f4e8a9b7c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708",
            bundle_path="model.sig",
            signed_at=now - timedelta(days=2),
            digest=digest,
            verified=True,
        ),
        state=APPROVED,
        approvals=(Approval(APPROVED, "bob", "reviewed the evaluation", now - timedelta(days=1)),),
        metadata={"license": "Apache-2.0", "metrics": {"auc": 0.97}},
    )


def time_decisions(policy: Policy, rec: VersionRecord, runs: int) -> tuple[list[float], str]:
    """Milliseconds per decision (facts + evaluate) over ``runs`` runs, and the last verdict."""
    times: list[float] = []
    verdict = ""
    for _ in range(runs):
        start = time.perf_counter()
        result = evaluate(policy, version_facts(rec, now=datetime.now(UTC)))
        times.append((time.perf_counter() - start) * 1000.0)
        verdict = result.verdict
    return times, verdict


def summarise(label: str, times: list[float], verdict: str, findings: int) -> dict[str, Any]:
    """Median, p95 and max of ``times``, and whether the median meets the target."""
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {
        "case": label,
        "findings": findings,
        "runs": len(times),
        "verdict": verdict,
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(ordered[-1], 2),
        "target_ms": TARGET_MS,
        "meets_target": p95 < TARGET_MS,
    }


def main() -> None:
    """Run both cases and print one Markdown line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    rec = record(args.findings)
    text = POLICY.read_text(encoding="utf-8")
    cases = [
        ("examples/policy.yaml", load_policy(POLICY)),
        (
            "examples/policy.yaml + a rule over scan.findings",
            parse_policy(text + FINDINGS_RULE, "policy.yaml"),
        ),
    ]
    rows = []
    for label, policy in cases:
        evaluate(policy, version_facts(rec, now=datetime.now(UTC)))  # warm-up: imports, first conversion
        times, verdict = time_decisions(policy, rec, args.runs)
        row = summarise(label, times, verdict, args.findings)
        rows.append(row)
        print(
            f"| gate decision ({label}), {args.findings:,} findings | median {row['median_ms']} ms | "
            f"p95 {row['p95_ms']} ms | {row['runs']} runs | {verdict} | target < {TARGET_MS:g} ms: "
            f"{'met' if row['meets_target'] else 'missed'} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
