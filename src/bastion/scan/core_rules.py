"""Rules that belong to the scan engine itself rather than to one format."""

from __future__ import annotations

from bastion.findings import Severity
from bastion.rules import CWE_502, OWASP_LLM03, Reference, Rule, register

register(
    Rule(
        code="BST-SCAN-001",
        name="incomplete-analysis",
        severity=Severity.HIGH,
        summary="A file could not be fully analysed, so it is not reported as clean.",
        what_it_does=(
            "Reports a file or archive member whose analysis stopped early: it is truncated or corrupt, "
            "it hit a hostile-input limit (nesting depth, decompression ratio, opcode or memo count), or a "
            "scanner failed on it."
        ),
        why_bad=(
            "Attackers craft files that break scanners (a pickle that ends right after its payload, a zip "
            "bomb, deep nesting) so that the scan errors and the gate fails open. Bastion fails closed: "
            "whatever could not be examined blocks at the default `--fail-on high`."
        ),
        example=(
            "A pickle whose stream stops right after `REDUCE` (the nullifAI technique), or a 10 GB zip bomb."
        ),
        use_instead=(
            "Re-export the model from its source in a safe format (safetensors) or review it by hand."
        ),
        false_positives="Genuinely corrupt downloads; re-download and compare the digest.",
        references=(CWE_502, OWASP_LLM03, Reference("ReversingLabs nullifAI (2025)")),
    )
)

register(
    Rule(
        code="BST-FMT-001",
        name="extension-content-mismatch",
        severity=Severity.MEDIUM,
        summary="The file's extension promises one format but its content is another.",
        what_it_does=(
            "Compares the format identified from magic bytes and structure with the one the extension "
            "implies."
        ),
        why_bad=(
            "Scanners that route by extension skip or misread such files (CVE-2025-1889, "
            "CVE-2025-10155), while "
            "loaders that sniff content still execute them: a pickle named `.safetensors` or `.bin` is "
            "a classic "
            "way to slip a payload past a gate."
        ),
        example="`model.safetensors` whose bytes are a pickle.",
        use_instead=(
            "Name files after what they contain; convert pickles to safetensors with `bastion convert`."
        ),
        false_positives=(
            "Tools that store several formats under a generic extension (`.bin` is allowed to hold either)."
        ),
        references=(CWE_502, OWASP_LLM03, Reference("CVE-2025-1889"), Reference("CVE-2025-10155")),
    )
)
