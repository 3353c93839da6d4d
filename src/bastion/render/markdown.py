"""A Markdown report for pull-request comments and job summaries: summary, findings, rule links."""

from __future__ import annotations

from bastion.findings import Finding, Report, sort_findings
from bastion.render.interface import RenderOptions, location_text, rule_url, summary


def _cell(text: str) -> str:
    # A pipe or newline would end the table cell early.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    quoted = _cell(text).replace("`", "'")
    return f"`{quoted}`"


def _rule_link(code: str, options: RenderOptions) -> str:
    rule = options.rules(code)
    return f"[{code}]({rule_url(rule)})" if rule is not None else code


def _findings_table(findings: list[Finding], options: RenderOptions) -> list[str]:
    lines = ["| Severity | Rule | Location | Message |", "| --- | --- | --- | --- |"]
    for f in sort_findings(findings):
        lines.append(
            f"| {f.severity.label} | {_rule_link(f.rule_id, options)} | {_code(location_text(f.location))} "
            f"| {_cell(f.message)} |"
        )
    return lines


def render_markdown(report: Report, options: RenderOptions) -> str:
    """Render ``report`` as GitHub-flavoured Markdown."""
    s = summary(report)
    out = [f"# Bastion scan report ({report.tool} {report.version})", ""]
    out += ["| Files | Findings | Critical | High | Medium | Low | Info | Suppressed | Skipped |"]
    out += ["| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    sev = s["by_severity"]
    counts = [s["files"], s["findings"], *sev.values(), s["suppressed"], s["skipped"]]
    out += ["| " + " | ".join(str(n) for n in counts) + " |", ""]
    verdicts = ", ".join(f"{n} {v}" for v, n in s["verdicts"].items())
    out += [f"Verdicts: {verdicts}.", ""]
    out += ["## Findings", ""]
    out += _findings_table(report.findings, options) if report.findings else ["No findings."]
    if report.suppressed:
        out += ["", "## Suppressed", ""]
        out += _findings_table(report.suppressed, options)
    if report.skipped:
        out += ["", "## Skipped", ""]
        out += [f"- {_code(location_text(sk.location))}: {_cell(sk.reason)}" for sk in report.skipped]
    if report.notices:
        out += ["", "## Notices", ""]
        out += [f"- {_cell(n)}" for n in report.notices]
    return "\n".join(out) + "\n"
