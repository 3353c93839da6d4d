"""A fixed report, a fixed rule catalogue, and snapshot comparison with ``--snapshot-update``.

``pytest tests/render --snapshot-update`` (or ``BASTION_SNAPSHOT_UPDATE=1 pytest ...`` from anywhere:
pytest only reads this file's options when tests/render is named on the command line) rewrites the
snapshots under tests/snapshots/ instead of comparing against them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.findings import Confidence, Finding, Location, Report, Severity, Skipped, Target, Verdict
from bastion.render.interface import RenderOptions
from bastion.rules import Reference, Rule

SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--snapshot-update", action="store_true", help="rewrite tests/snapshots/* from the output"
    )


def _rule(code: str, name: str, severity: Severity, summary: str) -> Rule:
    return Rule(
        code=code,
        name=name,
        severity=severity,
        summary=summary,
        what_it_does=f"Reports {name}.",
        why_bad="It runs code when the model is loaded.",
        example="`pickle.dumps(Evil())`",
        use_instead="safetensors.",
        references=(
            Reference(
                "CWE-502: Deserialization of Untrusted Data",
                "https://cwe.mitre.org/data/definitions/502.html",
            ),
        ),
    )


# Not registered in the global catalogue: snapshots must not move when real rules are edited.
FAKE_RULES = {
    r.code: r
    for r in (
        _rule(
            "BST-TEST-001",
            "dangerous-global",
            Severity.CRITICAL,
            "A pickle imports a callable that runs commands.",
        ),
        _rule(
            "BST-TEST-002",
            "unknown-global",
            Severity.MEDIUM,
            "A pickle imports a global that is not known to be safe.",
        ),
        _rule("BST-TEST-003", "incomplete-analysis", Severity.HIGH, "A file could not be fully analysed."),
    )
}


@pytest.fixture
def render_options() -> RenderOptions:
    return RenderOptions(
        color=False,
        width=110,
        rules=FAKE_RULES.get,
        suppression_reasons={_suppressed().fingerprint: "legacy model, replaced in Q3 (suppression #1)"},
    )


def _suppressed() -> Finding:
    return Finding.make(
        "BST-TEST-002",
        Severity.LOW,
        "Imports `collections.OrderedDict`; allow it in a profile if expected.",
        Location("models/legacy/old.pkl", (), 3),
        {"global": "collections.OrderedDict"},
    )


def build_report() -> Report:
    """The report every snapshot renders: every kind of record, two levels of nesting."""
    evil = Location("models/evil.pkl")
    ckpt = Location("models/ckpt.pt")
    member = ckpt.child("archive/data.pkl")
    broken = Location("models/broken.pkl")
    report = Report(tool="bastion", version="0.0.0-test", duration_s=1.25)
    report.findings = [
        Finding.make(
            "BST-TEST-002",
            Severity.MEDIUM,
            "Imports `mylib.Layer` | not on the safe list; review it before loading.",
            member.at(7),
            {"global": "mylib.Layer", "opcode": "GLOBAL", "offset": 7},
            confidence=Confidence.MEDIUM,
        ),
        Finding.make(
            "BST-TEST-001",
            Severity.CRITICAL,
            "Calls `os.system` on load; do not load this file, convert the weights instead.",
            evil.at(42),
            {"global": "os.system", "opcode": "STACK_GLOBAL", "offset": 42},
        ),
        Finding.make(
            "BST-TEST-003",
            Severity.HIGH,
            "Could not be fully analysed: pickle ends before STOP; treat the file as unsafe.",
            broken,
            {"reason": "pickle ends before STOP"},
        ),
    ]
    report.suppressed = [_suppressed()]
    report.skipped = [Skipped(Location("models/unreadable.bin"), "cannot read: Permission denied")]
    report.notices = [
        "suppression #2 (BST-TEST-001 on models/old/*) expired on 2025-01-01 and no longer suppresses."
    ]
    report.targets = [
        Target(evil, "pickle", 120, Verdict.MALICIOUS, "ab" * 32),
        Target(ckpt, "zip", 2048, Verdict.SUSPICIOUS),
        Target(member, "pickle", 300, Verdict.SUSPICIOUS),
        Target(broken, "pickle", 10, Verdict.ERROR),
        Target(Location("models/legacy/old.pkl"), "pickle", 64, Verdict.CLEAN),
    ]
    return report


@pytest.fixture
def report() -> Report:
    return build_report()


@pytest.fixture
def snapshot(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare ``text`` with tests/snapshots/NAME, or rewrite it when updating."""
    update = bool(request.config.getoption("--snapshot-update", default=False)) or bool(
        os.environ.get("BASTION_SNAPSHOT_UPDATE")
    )

    def check(name: str, text: str) -> None:
        path = SNAPSHOTS / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"missing snapshot {path}; run pytest tests/render --snapshot-update"
        expected = path.read_text(encoding="utf-8")
        assert text == expected, (
            f"{name} differs from its snapshot; run pytest tests/render --snapshot-update"
        )

    return check
