"""Every malicious benchmark sample is blocked by Bastion and no benign one is even flagged as suspicious.

The corpus (benchmarks/corpus.py) holds one sample per published technique or scanner bypass; a failure
here names the technique that slipped through. Samples are built in code and never loaded.
"""

from __future__ import annotations

import io
import pickletools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bastion.findings import Finding, Severity
from bastion.scan import ScanOptions, scan_paths
from corpus import DEMO, SPECS, Sample, build_corpus

MALICIOUS = sorted(name for name, spec in SPECS.items() if spec.expected == "malicious")
BENIGN = sorted(name for name, spec in SPECS.items() if spec.expected == "benign")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    """The whole corpus, built once per test module (and per xdist worker)."""
    out = tmp_path_factory.mktemp("corpus")
    return {s.technique: s for s in build_corpus(out)}


def _findings(sample: Sample) -> list[Finding]:
    return scan_paths([str(sample.path)], ScanOptions(jobs=1)).findings


def _describe(findings: list[Finding]) -> str:
    return (
        "; ".join(f"{f.severity.label} {f.rule_id} {f.location.display}: {f.message}" for f in findings)
        or "none"
    )


# Samples whose opcode stream is broken on purpose (the bypass is the parse error itself).
BROKEN_ON_PURPOSE = {"genops-error-after-payload"}


def test_corpus_has_every_kind() -> None:
    assert len(MALICIOUS) >= 80
    assert len(BENIGN) >= 20


def test_demo_mixes_benign_and_malicious() -> None:
    kinds = [SPECS[name].expected for name in DEMO]
    assert (kinds.count("benign"), kinds.count("malicious")) == (6, 8)


def test_hand_assembled_pickles_are_well_formed(corpus: dict[str, Sample]) -> None:
    # pickletools only disassembles (it never imports or calls anything), and it checks the stack
    # discipline, so a sample that passes is a pickle a loader would actually run.
    for name in MALICIOUS:
        sample = corpus[name]
        if sample.fmt != "pickle" or name in BROKEN_ON_PURPOSE:
            continue
        pickletools.dis(sample.path.read_bytes(), out=io.StringIO())


@pytest.mark.parametrize("technique", MALICIOUS)
def test_malicious_sample_is_blocked(corpus: dict[str, Sample], technique: str) -> None:
    sample = corpus[technique]
    findings = _findings(sample)
    blocking = [f for f in findings if f.severity >= Severity.HIGH]
    assert blocking, f"{technique} ({sample.reference}) not blocked; findings: {_describe(findings)}"


@pytest.mark.parametrize("technique", BENIGN)
def test_benign_sample_is_clean(corpus: dict[str, Sample], technique: str) -> None:
    sample = corpus[technique]
    noisy = [f for f in _findings(sample) if f.severity >= Severity.MEDIUM]
    assert not noisy, f"{technique} falsely flagged: {_describe(noisy)}"
