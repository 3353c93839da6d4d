"""The rule catalogue: each rule is declared once, as data, with the page that documents it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bastion.errors import UsageError
from bastion.findings import Severity

_CODE = re.compile(r"^BST-[A-Z0-9]{2,6}-\d{3}$")


@dataclass(frozen=True, slots=True)
class Reference:
    """A pointer to an external catalogue entry (CWE, OWASP, MITRE ATLAS, an advisory)."""

    label: str
    url: str = ""


CWE_502 = Reference(
    "CWE-502: Deserialization of Untrusted Data", "https://cwe.mitre.org/data/definitions/502.html"
)
OWASP_LLM03 = Reference(
    "OWASP LLM03:2025 Supply Chain", "https://genai.owasp.org/llmrisk/llm032025-supply-chain/"
)
ATLAS_AML_T0010 = Reference(
    "MITRE ATLAS AML.T0010: ML Supply Chain Compromise", "https://atlas.mitre.org/techniques/AML.T0010"
)
ATLAS_AML_T0011 = Reference(
    "MITRE ATLAS AML.T0011.000: Unsafe ML Artifacts", "https://atlas.mitre.org/techniques/AML.T0011.000"
)
SUPPLY_CHAIN_REFS = (CWE_502, OWASP_LLM03, ATLAS_AML_T0010, ATLAS_AML_T0011)


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule's identity and its documentation page (ruff's sections)."""

    code: str
    name: str
    severity: Severity
    summary: str
    what_it_does: str
    why_bad: str
    example: str
    use_instead: str
    false_positives: str = "None known."
    references: tuple[Reference, ...] = SUPPLY_CHAIN_REFS
    tags: tuple[str, ...] = field(default=())

    def page(self) -> str:
        """Render the rule's documentation as Markdown."""
        refs = "\n".join(f"- {r.label}" + (f" <{r.url}>" if r.url else "") for r in self.references)
        return (
            f"# {self.code}: {self.name}\n\n"
            f"Default severity: **{self.severity.label}**\n\n{self.summary}\n\n"
            f"## What it does\n\n{self.what_it_does}\n\n"
            f"## Why is this bad?\n\n{self.why_bad}\n\n"
            f"## Example\n\n{self.example}\n\n"
            f"## Use instead\n\n{self.use_instead}\n\n"
            f"## Known false positives\n\n{self.false_positives}\n\n"
            f"## References\n\n{refs}\n"
        )


_REGISTRY: dict[str, Rule] = {}


@dataclass(frozen=True, slots=True)
class RuleFamily:
    """Declares the rules of one family, which share their advice, caveats and references."""

    why_bad: str
    use_instead: str
    false_positives: str
    references: tuple[Reference, ...]

    def __call__(
        self,
        code: str,
        name: str,
        severity: Severity,
        summary: str,
        what: str,
        example: str,
        why: str | None = None,
        *,
        use_instead: str | None = None,
        fp: str | None = None,
    ) -> Rule:
        """Register one rule of the family; keyword arguments override the family's text."""
        return register(
            Rule(
                code=code,
                name=name,
                severity=severity,
                summary=summary,
                what_it_does=what,
                why_bad=why or self.why_bad,
                example=example,
                use_instead=use_instead or self.use_instead,
                false_positives=fp or self.false_positives,
                references=self.references,
            )
        )


def register(rule: Rule) -> Rule:
    """Add ``rule`` to the catalogue; a code may be declared only once."""
    if not _CODE.match(rule.code):
        raise ValueError(f"rule code {rule.code!r} does not match BST-AREA-NNN")
    existing = _REGISTRY.get(rule.code)
    if existing is not None and existing != rule:
        raise ValueError(f"rule code {rule.code} is declared twice")
    _REGISTRY[rule.code] = rule
    return rule


def _load_catalogue() -> None:
    # Importing the scanners registers their rules; the import is here so that the catalogue is
    # complete whichever entry point asked for it.
    import bastion.data.audit.rules  # noqa: F401  (declares the BST-DATA rules; no heavy imports)
    from bastion.scan.registry import load_all

    load_all()


def all_rules() -> list[Rule]:
    """Every registered rule, sorted by code."""
    _load_catalogue()
    return [_REGISTRY[c] for c in sorted(_REGISTRY)]


def get_rule(code: str) -> Rule:
    """Return the rule with ``code`` or raise a :class:`UsageError` naming it."""
    code = code.strip().upper()
    rule = _REGISTRY.get(code)
    if rule is None:  # not yet imported: a finding's module registers its rules before reporting
        _load_catalogue()
        rule = _REGISTRY.get(code)
    if rule is None:
        raise UsageError(f"unknown rule {code!r}; `bastion rules list` shows every rule")
    return rule


def select(prefixes: Iterable[str]) -> list[Rule]:
    """Rules whose code starts with any of ``prefixes`` (``BST-PKL`` selects the whole family)."""
    wanted = tuple(p.strip().upper() for p in prefixes)
    return [r for r in all_rules() if r.code.startswith(wanted)]
