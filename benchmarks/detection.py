"""Detection benchmark: Bastion and every anchor scanner on every corpus sample, one row per technique.

    python benchmarks/detection.py [--output FILE.md] [--json results.json] [--tools bastion,modelscan]

Each tool runs the way users run it, at its default gate: Bastion's ``--fail-on high`` (any finding at
high or above, which includes "could not be fully analysed"), and each anchor's CLI exit code. Cells:
``✓`` caught (or, for a benign file, passed), ``✗`` missed, ``skip`` the tool said there was nothing to
scan (a gate passes it, so it is a miss), ``err`` the tool failed (a gate that checks the exit code
blocks), ``fp`` a benign file flagged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchors
from corpus import Sample, build_corpus

TOOLS: tuple[str, ...] = ("bastion", *anchors.ANCHORS)
# modelaudit's default exit code fires on info and warning issues too; this derived column reads the
# same run at its critical tier, to show what a gate on critical issues alone would let through.
CRITICAL_VIEW = "modelaudit@critical"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One tool's verdict on one sample."""

    technique: str
    tool: str
    verdict: str  # flagged | clean | error | skipped | timeout | unavailable
    seconds: float
    detail: str = ""
    max_severity: str = ""


def run_bastion(sample: Sample) -> Outcome:
    """Scan in-process with Bastion's library and apply the default ``--fail-on high`` gate."""
    from bastion.findings import Severity
    from bastion.scan import ScanOptions, scan_paths
    from bastion.scan.context import INCOMPLETE_RULE

    started = time.perf_counter()
    try:
        report = scan_paths([str(sample.path)], ScanOptions(jobs=1))
    except Exception as exc:  # the benchmark must finish even if a scanner is broken
        return Outcome(sample.technique, "bastion", "error", time.perf_counter() - started, repr(exc)[:200])
    seconds = time.perf_counter() - started
    high = [f for f in report.findings if f.severity >= Severity.HIGH]
    if any(f.rule_id != INCOMPLETE_RULE for f in high):
        verdict = "flagged"
    elif high:
        verdict = "error"
    else:
        verdict = "clean"
    rules = sorted({f.rule_id for f in (high or report.findings)})
    return Outcome(sample.technique, "bastion", verdict, seconds, ",".join(rules))


def run_tool(tool: str, sample: Sample, timeout: float) -> Outcome:
    """One tool on one sample."""
    if tool == "bastion":
        return run_bastion(sample)
    res = anchors.run(tool, sample.path, timeout=timeout)
    return Outcome(sample.technique, tool, res.verdict, res.seconds, res.detail, res.max_severity)


def critical_view(outcome: Outcome) -> Outcome:
    """Re-read a modelaudit outcome at its critical tier: flagged only if some issue is critical."""
    if outcome.verdict == "flagged":
        verdict = "flagged" if outcome.max_severity == "critical" else "clean"
    else:
        verdict = outcome.verdict
    return Outcome(outcome.technique, CRITICAL_VIEW, verdict, 0.0, outcome.detail, outcome.max_severity)


def cell(sample: Sample, verdict: str) -> str:
    """The table cell for a verdict on a sample."""
    if sample.expected == "malicious":
        return {"flagged": "✓", "clean": "✗", "skipped": "✗ skip", "error": "err", "timeout": "t/o"}.get(
            verdict, "n/a"
        )
    return {"flagged": "fp", "clean": "✓", "skipped": "✓ skip", "error": "err", "timeout": "t/o"}.get(
        verdict, "n/a"
    )


def run_all(samples: Sequence[Sample], tools: Sequence[str], *, jobs: int, timeout: float) -> list[Outcome]:
    """Every tool on every sample; anchors run ``jobs`` at a time (each is its own process)."""
    outcomes = [run_bastion(s) for s in samples] if "bastion" in tools else []
    pairs = [(t, s) for t in tools if t != "bastion" for s in samples]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes.extend(pool.map(lambda pair: run_tool(pair[0], pair[1], timeout), pairs))
    outcomes += [critical_view(o) for o in outcomes if o.tool == "modelaudit"]
    return outcomes


def _totals(
    samples: Sequence[Sample], tools: Sequence[str], table: dict[tuple[str, str], Outcome]
) -> list[str]:
    bad = [s for s in samples if s.expected == "malicious"]
    good = [s for s in samples if s.expected == "benign"]
    lines = ["| | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]

    def count(group: Sequence[Sample], verdicts: set[str], tool: str) -> str:
        if any((s.technique, tool) not in table for s in group):
            return "n/a"
        return str(sum(table[(s.technique, tool)].verdict in verdicts for s in group))

    rows = [
        (f"malicious caught (of {len(bad)})", bad, {"flagged"}),
        (f"malicious blocked incl. errors (of {len(bad)})", bad, {"flagged", "error", "timeout"}),
        (f"malicious passed: clean or skipped (of {len(bad)})", bad, {"clean", "skipped"}),
        (f"benign false positives (of {len(good)})", good, {"flagged"}),
        (f"benign blocked incl. errors (of {len(good)})", good, {"flagged", "error", "timeout"}),
    ]
    for label, group, verdicts in rows:
        lines.append(f"| {label} | " + " | ".join(count(group, verdicts, t) for t in tools) + " |")
    seconds = [
        "same run"
        if t == CRITICAL_VIEW
        else f"{sum(o.seconds for (_, tt), o in table.items() if tt == t):.1f}"
        for t in tools
    ]
    lines.append("| seconds, all samples (anchors: one process per file) | " + " | ".join(seconds) + " |")
    return lines


NOTES = (
    "Cells: `✓` caught (benign: passed), `✗` missed, `✗ skip` the tool said there was nothing to scan "
    "(modelscan exit 3, which a gate must let through), `err` the tool failed (exit 2, or a crash; a gate "
    "that checks the exit code blocks it), `fp` a benign file flagged. Each tool is judged at its default "
    "gate: Bastion `--fail-on high` (run in-process through `bastion.scan.scan_paths`, the code behind "
    "`bastion scan`), the anchors' CLI exit codes (picklescan without `--strict`). "
    f"`{CRITICAL_VIEW}` re-reads the same modelaudit run and counts only critical issues as flagged, "
    "because modelaudit's default exit code also fires on info and warning issues. modelscan has its "
    "h5py extra but not the tensorflow one (all of TensorFlow), so its `.keras` and SavedModel checks "
    "report a missing dependency and the file counts as skipped."
)


def summary(
    samples: Sequence[Sample], tools: Sequence[str], table: dict[tuple[str, str], Outcome]
) -> list[str]:
    """One sentence per tool: what its default gate catches, misses and wrongly blocks."""
    bad = [s for s in samples if s.expected == "malicious"]
    good = [s for s in samples if s.expected == "benign"]
    lines = []
    for tool in tools:
        got = {
            s.technique: table[(s.technique, tool)].verdict for s in samples if (s.technique, tool) in table
        }
        if len(got) < len(samples):
            continue
        caught = [s.technique for s in bad if got[s.technique] == "flagged"]
        errors = [s.technique for s in bad if got[s.technique] in ("error", "timeout")]
        passed = [s.technique for s in bad if got[s.technique] in ("clean", "skipped")]
        wrong = [s.technique for s in good if got[s.technique] != "clean" and got[s.technique] != "skipped"]
        missed = ", ".join(f"`{t}`" for t in passed) if 0 < len(passed) <= 8 else f"{len(passed)} samples"
        missed = missed if passed else "none"
        lines.append(
            f"- **{tool}**: blocks {len(caught) + len(errors)} of {len(bad)} attacks "
            f"({len(caught)} detected, {len(errors)} by failing), lets through {missed}; blocks "
            f"{len(wrong)} of {len(good)} benign files."
        )
    return lines


def markdown(samples: Sequence[Sample], tools: Sequence[str], outcomes: Sequence[Outcome]) -> str:
    """The per-technique tables and totals as Markdown."""
    table = {(o.technique, o.tool): o for o in outcomes}
    header = "| technique | reference | format | " + " | ".join(tools) + " |"
    rule = "|---|---|---|" + "---|" * len(tools)
    out = [
        *summary(samples, tools, table),
        "",
        "### Totals",
        "",
        *_totals(samples, tools, table),
        "",
        NOTES,
        "",
    ]
    for kind in ("malicious", "benign"):
        out += [f"### {kind.capitalize()} samples", "", header, rule]
        for s in (s for s in samples if s.expected == kind):
            got = [table.get((s.technique, t)) for t in tools]
            cells = " | ".join(cell(s, o.verdict) if o else "n/a" for o in got)
            out.append(f"| {s.technique} | {s.reference or '-'} | {s.fmt} | {cells} |")
        out.append("")
    versions = ", ".join(f"{t} {anchors.version(t)}" for t in tools if t in anchors.ANCHORS)
    out.append(f"Anchor versions: {versions}. Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.")
    return "\n".join(out) + "\n"


def load_outcomes(path: Path, tools: Sequence[str]) -> list[Outcome]:
    """Outcomes of ``tools`` saved by an earlier ``--json`` run."""
    return [Outcome(**o) for o in json.loads(path.read_text()) if o["tool"] in tools]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the corpus, run every tool, print or write the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write Markdown here instead of stdout")
    parser.add_argument("--json", type=Path, help="also write every raw outcome as JSON")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS)
    )
    parser.add_argument(
        "--reuse-anchors",
        type=Path,
        metavar="JSON",
        help="reuse anchor outcomes saved by --json; run Bastion, and anchors only on new samples",
    )
    parser.add_argument("--corpus-dir", type=Path, help="build the corpus here (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=2, help="anchor processes at once")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per anchor run")
    parser.add_argument("--install", action="store_true", help="install missing anchors first")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    reused: list[Outcome] = []
    if args.reuse_anchors:
        reused = load_outcomes(args.reuse_anchors, [*anchors.ANCHORS, CRITICAL_VIEW])
        tools = ["bastion", *anchors.ANCHORS]
    elif args.install:
        for tool in tools:
            if tool != "bastion":
                anchors.install(tool)
    with tempfile.TemporaryDirectory(prefix="bastion-corpus-") as tmp:
        samples = build_corpus(args.corpus_dir or Path(tmp))
        started = time.perf_counter()
        if args.reuse_anchors:
            # Bastion always runs live; anchors only on samples the saved file does not cover.
            have = {o.technique for o in reused if o.tool == "modelaudit"}
            fresh = [s for s in samples if s.technique not in have]
            reused = [o for o in reused if o.technique in {s.technique for s in samples}]
            outcomes = run_all(samples, ["bastion"], jobs=args.jobs, timeout=args.timeout) + reused
            outcomes += run_all(fresh, list(anchors.ANCHORS), jobs=args.jobs, timeout=args.timeout)
        else:
            outcomes = run_all(samples, tools, jobs=args.jobs, timeout=args.timeout)
        print(f"ran {len(outcomes)} scans in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    columns = [*tools, CRITICAL_VIEW] if "modelaudit" in tools else tools
    text = markdown(samples, columns, outcomes)
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
