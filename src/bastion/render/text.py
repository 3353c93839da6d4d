"""The human report: a rich table of findings, then verdict counts, skips and notices."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.findings import Finding, Report, Severity, sort_findings
from bastion.render.interface import RenderOptions, location_text, summary

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _console(options: RenderOptions) -> Console:
    return Console(
        file=io.StringIO(),
        width=options.width,
        force_terminal=options.color,
        color_system="standard" if options.color else None,
        no_color=not options.color,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )


def findings_table(findings: list[Finding], title: str) -> Table:
    """A table with one row per finding, most severe first."""
    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Rule", no_wrap=True)
    table.add_column("Location", overflow="fold")
    table.add_column("Message", overflow="fold")
    for f in sort_findings(findings):
        table.add_row(
            Text(f.severity.label, style=SEVERITY_STYLE[f.severity]),
            Text(f.rule_id),
            Text(location_text(f.location)),
            Text(f.message),
        )
    return table


def render_text(report: Report, options: RenderOptions) -> str:
    """Render ``report`` for a person reading a terminal."""
    console = _console(options)
    if report.findings:
        console.print(findings_table(report.findings, "Findings"))
    else:
        console.print("No findings.")
    if report.suppressed:
        console.print(findings_table(report.suppressed, "Suppressed (not counted)"))
    for sk in report.skipped:
        console.print(Text(f"skipped {location_text(sk.location)}: {sk.reason}"))
    for notice in report.notices:
        console.print(Text(f"notice: {notice}", style="yellow"))
    s = summary(report)
    verdicts = ", ".join(f"{n} {v}" for v, n in s["verdicts"].items())
    console.print(Text(f"Targets: {s['targets']} ({verdicts})"))
    out = console.file
    assert isinstance(out, io.StringIO)
    # Rich pads table titles to the full width; trailing blanks only make diffs noisy.
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"
