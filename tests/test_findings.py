"""The shared vocabulary: ordering, fingerprints that ignore offsets, rule registry rules."""

from __future__ import annotations

import pytest

from bastion.errors import UsageError
from bastion.findings import Finding, Location, Severity, sort_findings
from bastion.rules import Rule, all_rules, get_rule, register, select


def _finding(offset: int | None, evidence: dict[str, object] | None = None) -> Finding:
    loc = Location("models/a.pt", ("archive/data.pkl",), offset)
    return Finding.make("BST-SCAN-001", Severity.HIGH, "m", loc, evidence or {"global": "os.system"})


def test_severity_is_ordered_and_parsed() -> None:
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert Severity.parse("High") is Severity.HIGH
    with pytest.raises(ValueError, match="unknown severity"):
        Severity.parse("urgent")


def test_fingerprint_ignores_offsets_but_not_evidence() -> None:
    a = _finding(10, {"global": "os.system", "offset": 10})
    b = _finding(99, {"global": "os.system", "offset": 99})
    c = _finding(10, {"global": "posix.system", "offset": 10})
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_location_display_joins_members() -> None:
    loc = Location("x.zip").child("inner.tar").child("data.pkl")
    assert loc.display == "x.zip!inner.tar!data.pkl"


def test_sort_puts_most_severe_first() -> None:
    low = Finding.make("BST-FMT-001", Severity.LOW, "l", Location("b"))
    crit = Finding.make("BST-FMT-001", Severity.CRITICAL, "c", Location("z"))
    assert sort_findings([low, crit]) == [crit, low]


def test_every_rule_has_a_complete_page() -> None:
    rules = all_rules()
    assert {"BST-SCAN-001", "BST-FMT-001"} <= {r.code for r in rules}
    for rule in rules:
        page = rule.page()
        for section in (
            "## What it does",
            "## Why is this bad?",
            "## Example",
            "## Use instead",
            "## References",
        ):
            assert section in page, (rule.code, section)
        assert rule.summary
        assert rule.what_it_does
        assert rule.why_bad
        assert rule.references


def test_rule_codes_are_unique_and_well_formed() -> None:
    rule = get_rule("BST-SCAN-001")
    register(rule)  # declaring the identical rule again is harmless
    with pytest.raises(ValueError, match="declared twice"):
        register(Rule(**{**{f: getattr(rule, f) for f in rule.__dataclass_fields__}, "name": "other"}))
    with pytest.raises(ValueError, match="does not match"):
        register(Rule(**{**{f: getattr(rule, f) for f in rule.__dataclass_fields__}, "code": "PKL1"}))


def test_unknown_rule_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown rule"):
        get_rule("BST-NOPE-999")


def test_select_by_prefix() -> None:
    assert [r.code for r in select(["BST-SCAN"])] == ["BST-SCAN-001"]
