"""The compliance report: the controls Bastion evidences, from which records and events, and what is missing.

The control map (``data/controls.yaml``) is data: the controls, the framework items each maps to (OWASP
Top 10 for LLM Applications 2025, OWASP ML Top 10, MITRE ATLAS, NIST AI RMF, EU AI Act) and the event
actions that evidence each. The code here only looks for that evidence: one check per control, each
returning a status (evidenced, partial or gap), the evidence lines (event ids with the action and subject
behind them, report digests, counts) and, plainly, what is missing.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from bastion import __version__
from bastion.errors import ConfigError, InputError
from bastion.registry.card import dataset_label, missing_sections, model_card, plural
from bastion.registry.record import APPROVED, BLOCKED_STATES, DEPLOYED, DEPRECATED, DatasetRef, VersionRecord

EVIDENCED = "evidenced"
PARTIAL = "partial"
GAP = "gap"
STATUSES = (EVIDENCED, PARTIAL, GAP)
REPORT_FORMAT = "bastion.compliance"
SCHEMA_VERSION = 1
CONTROLS_FORMAT = "bastion.controls"
CONTROLS_PATH = Path(__file__).parent / "data" / "controls.yaml"
# Versions on their way to or in production: the ones approvals, gates and cards matter most for.
RELEASED = frozenset({APPROVED, DEPLOYED})
# Markdown and the terminal show this many evidence lines per control; JSON keeps them all.
SHOWN_LINES = 12


# -- the control map -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Framework:
    """A framework and its items (id -> title), in the order the map lists them."""

    key: str
    title: str
    items: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Control:
    """One control of the map: what it is, how it is evidenced and which framework items it maps to."""

    id: str
    title: str
    description: str
    check: str | None  # the evidence check's name, None when Bastion does not evidence it yet
    events: tuple[str, ...]
    maps: Mapping[str, tuple[str, ...]]
    gap: str | None = None
    note: str | None = None
    evidence_from: str | None = None  # where evidence comes from when it is not a list of event actions


@dataclass(frozen=True, slots=True)
class ControlMap:
    """The frameworks and controls of ``controls.yaml``."""

    frameworks: tuple[Framework, ...]
    controls: tuple[Control, ...]

    def framework(self, key: str) -> Framework:
        """The framework named ``key``."""
        return next(f for f in self.frameworks if f.key == key)


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' is missing or has the wrong type")
    return value


def parse_control_map(data: Any, source: str = "controls.yaml") -> ControlMap:
    """Check and convert the YAML data of a control map; ConfigError names the first problem."""
    if not isinstance(data, Mapping) or data.get("format") != CONTROLS_FORMAT:
        raise ConfigError(f"{source}: not a control map (format: {CONTROLS_FORMAT})")
    frameworks = []
    for key, raw in _need(data, "frameworks", Mapping, source).items():
        where = f"{source}: framework {key}"
        items = _need(raw, "items", Mapping, where)
        frameworks.append(
            Framework(
                str(key), str(_need(raw, "title", str, where)), {str(k): str(v) for k, v in items.items()}
            )
        )
    known = {f.key: f for f in frameworks}
    controls = []
    seen: set[str] = set()
    for i, raw in enumerate(_need(data, "controls", list, source)):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: control #{i + 1} is not a mapping")
        cid = str(_need(raw, "id", str, f"{source}: control #{i + 1}"))
        where = f"{source}: control {cid}"
        if cid in seen:
            raise ConfigError(f"{where}: duplicate id")
        seen.add(cid)
        check = str(_need(raw, "check", str, where))
        if check != "none" and check not in CHECKS:
            raise ConfigError(f"{where}: unknown check {check!r}")
        if check == "none" and not raw.get("gap"):
            raise ConfigError(f"{where}: a control without a check needs a 'gap' reason")
        maps: dict[str, tuple[str, ...]] = {}
        for fkey, ids in _need(raw, "maps", Mapping, where).items():
            if fkey not in known:
                raise ConfigError(f"{where}: unknown framework {fkey!r}")
            for item in ids or []:
                if str(item) not in known[fkey].items:
                    raise ConfigError(f"{where}: {fkey} has no item {item!r}")
            maps[str(fkey)] = tuple(str(item) for item in ids or [])
        controls.append(
            Control(
                id=cid,
                title=str(_need(raw, "title", str, where)),
                description=" ".join(str(_need(raw, "description", str, where)).split()),
                check=None if check == "none" else check,
                events=tuple(str(e) for e in raw.get("events") or []),
                maps=maps,
                gap=" ".join(str(raw["gap"]).split()) if raw.get("gap") else None,
                note=" ".join(str(raw["note"]).split()) if raw.get("note") else None,
                evidence_from=str(raw["evidence_from"]) if raw.get("evidence_from") else None,
            )
        )
    return ControlMap(tuple(frameworks), tuple(controls))


def load_control_map(path: Path | None = None) -> ControlMap:
    """The control map shipped in the package, or the one at ``path``."""
    if path is None:
        return _packaged_map()
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} not valid YAML") from None
    return parse_control_map(data, str(path))


@cache
def _packaged_map() -> ControlMap:
    import yaml

    text = CONTROLS_PATH.read_text(encoding="utf-8")
    return parse_control_map(yaml.safe_load(text), "bastion/registry/data/controls.yaml")


# -- events --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    id: int
    at: datetime | None
    actor: str
    action: str
    subject: str
    payload: Mapping[str, Any]

    def line(self, detail: str = "") -> str:
        subject = f" {self.subject}" if self.subject else ""
        return f"event {self.id}: {self.action}{subject}" + (f" ({detail})" if detail else "")


def _events(raw: Sequence[Mapping[str, Any]]) -> list[_Event]:
    out = []
    for i, item in enumerate(raw):
        e: Any = item  # rows from the store or from JSON: checked, not trusted
        if (
            not isinstance(e, Mapping)
            or not isinstance(e.get("id"), int)
            or not isinstance(e.get("action"), str)
        ):
            raise InputError(f"event #{i + 1}: needs an integer 'id' and an 'action'")
        payload = e.get("payload")
        at = e.get("at")
        out.append(
            _Event(
                id=e["id"],
                at=at if isinstance(at, datetime) else None,
                actor=str(e.get("actor") or ""),
                action=e["action"],
                subject=str(e.get("subject") or ""),
                payload=payload if isinstance(payload, Mapping) else {},
            )
        )
    return sorted(out, key=lambda ev: ev.id)


@dataclass
class _Context:
    records: Sequence[VersionRecord]
    events: list[_Event]
    now: datetime
    log_verified: bool | None
    by_action: dict[str, list[_Event]] = field(default_factory=dict)
    last: dict[tuple[str, str], _Event] = field(default_factory=dict)
    active: list[VersionRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Revoked, quarantined and deprecated versions are out of scope: nobody should be serving them.
        self.active = [r for r in self.records if r.state not in BLOCKED_STATES and r.state != DEPRECATED]
        for e in self.events:  # sorted by id, so the last one seen is the latest
            self.by_action.setdefault(e.action, []).append(e)
            self.last[(e.action, e.subject)] = e

    def of(self, *actions: str) -> list[_Event]:
        return sorted((e for a in actions for e in self.by_action.get(a, [])), key=lambda ev: ev.id)

    def latest(self, action: str, subject: str) -> _Event | None:
        return self.last.get((action, subject))


@dataclass(frozen=True, slots=True)
class _Outcome:
    evidence: list[str]
    missing: list[str]
    event_ids: list[int]
    # Set when the check has nothing at all to show: the status is then a gap whatever else is listed.
    nothing: bool = False


def _refs(records: Iterable[VersionRecord]) -> str:
    return ", ".join(r.ref for r in records)


def _no_versions(ctx: _Context) -> _Outcome | None:
    if ctx.active:
        return None
    what = "no active model versions are registered"
    if ctx.records:
        what += f" ({plural(len(ctx.records), 'version')} revoked, quarantined or deprecated)"
    return _Outcome([], [what], [], nothing=True)


def _event_lines(events: Sequence[_Event], detail: Callable[[_Event], str] | None = None) -> list[str]:
    return [e.line(detail(e) if detail else "") for e in events]


# -- the checks: one per control, named in controls.yaml -----------------------------------------------------


def check_artifact_scanning(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when every active version has a scan report and no approved or deployed version's
    verdict is malicious, suspicious or error; partial when some are unscanned or such a version ships;
    a gap when none is scanned."""
    if (none := _no_versions(ctx)) is not None:
        return none
    active = ctx.active
    scanned = [r for r in active if r.scan is not None]
    verdicts = Counter(r.scan.verdict for r in scanned if r.scan is not None)
    evidence = [f"{len(scanned)} of {plural(len(active), 'active version')} scanned"]
    if verdicts:
        evidence.append("verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())))
    for r in scanned:
        assert r.scan is not None
        digest = f", report {r.scan.report_digest}" if r.scan.report_digest else ""
        evidence.append(f"{r.ref}: {r.scan.verdict}{digest}")
    blocked = [r for r in ctx.records if r.state in BLOCKED_STATES and r.scan and r.scan.verdict != "clean"]
    evidence += [f"{r.ref}: {r.scan.verdict if r.scan else ''}, now {r.state}" for r in blocked]
    events = ctx.of(*control.events)
    evidence += _event_lines(events, lambda e: str(e.payload.get("verdict", "")))
    missing = []
    unscanned = [r for r in active if r.scan is None]
    if unscanned:
        missing.append(f"not scanned: {_refs(unscanned)}")
    for r in scanned:
        assert r.scan is not None
        if r.state in RELEASED and r.scan.verdict != "clean":
            missing.append(f"{r.ref} is {r.state} although its scan verdict is {r.scan.verdict}")
    return _Outcome(evidence, missing, [e.id for e in events], nothing=not scanned)


def _verification(ctx: _Context, record: VersionRecord) -> tuple[bool | None, _Event | None]:
    """The latest verification outcome of a version: from the event log, else from its record."""
    event = ctx.latest("model.verified", record.ref)
    if event is not None:
        return bool(event.payload.get("ok")), event
    return (record.signature.verified if record.signature else None), None


def check_model_signing(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when every active version is signed and its latest verification passed; partial when
    some are unsigned, never verified, or failed verification; a gap when none is signed."""
    if (none := _no_versions(ctx)) is not None:
        return none
    active = ctx.active
    signed = [r for r in active if r.signature is not None]
    outcomes = {r.ref: _verification(ctx, r) for r in signed}
    ok = [ref for ref, (passed, _) in outcomes.items() if passed]
    evidence = [
        f"{len(signed)} of {plural(len(active), 'active version')} signed",
        f"{len(ok)} of {plural(len(signed), 'signature')} verified",
    ]
    signers = sorted({r.signature.signer for r in signed if r.signature})
    if signers:
        evidence.append("signers: " + ", ".join(signers))
    events = ctx.of(*control.events)
    evidence += _event_lines(events, lambda e: "" if "ok" not in e.payload else f"ok: {e.payload['ok']}")
    missing = []
    unsigned = [r for r in active if r.signature is None]
    if unsigned:
        missing.append(f"not signed: {_refs(unsigned)}")
    never = [ref for ref, (passed, _) in outcomes.items() if passed is None]
    if never:
        missing.append(f"signed but never verified: {', '.join(never)}")
    for r in signed:
        passed, event = outcomes[r.ref]
        if passed is False:
            where = f" (event {event.id})" if event else ""
            missing.append(f"{r.ref} failed verification{where} and is still {r.state}")
    return _Outcome(evidence, missing, [e.id for e in events], nothing=not signed)


def _model_name(subject: str) -> str:
    # Alias events name "model@alias" (or "model@version", or just "model").
    return subject.rsplit("@", 1)[0] if "@" in subject else subject


def _alias_ref(event: _Event, key: str) -> str | None:
    """The version an alias event's ``from``/``to`` names, as a ref (None when the alias was unset)."""
    value = event.payload.get(key)
    if value is None or value == "":
        return None
    text = str(value)
    # The value may be a full ref or a version number of the subject's model.
    return text if "@" in text else f"{_model_name(event.subject)}@{text}"


def _alias_detail(event: _Event) -> str:
    if event.action.startswith("alias."):
        before, after = _alias_ref(event, "from") or "none", _alias_ref(event, "to") or "none"
        return f"{event.payload.get('alias', '?')}: {before} -> {after}"
    return f"{event.payload.get('from', '?')} -> {event.payload.get('to', '?')}"


def check_registry_approvals(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when every approved or deployed version has a recorded approval (actor and reason) for
    its state and the latest alias.moved event of every alias points where the alias is now; a gap when
    no state change has been recorded at all."""
    if not ctx.records:
        return _Outcome([], ["no model versions are registered"], [], nothing=True)
    approvals = [(r, a) for r in ctx.records for a in r.approvals]
    states = Counter(r.state for r in ctx.records)
    evidence = [
        f"{plural(len(approvals), 'state change')} recorded with actor and reason",
        "versions by state: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
    ]
    for r, a in approvals:
        if a.state in BLOCKED_STATES:
            event = f" (event {a.event_id})" if a.event_id is not None else ""
            evidence.append(f"{r.ref} {a.state} by {a.actor}: {a.reason}{event}")
    moves = ctx.of("alias.moved", "alias.removed")
    events = ctx.of(*control.events)
    evidence.append(f"{plural(len(moves), 'alias move')} recorded")
    evidence += _event_lines(events, _alias_detail)
    missing = []
    # The latest move of an alias must be the one that set it where it is: an older event pointing at a
    # version does not explain the current state if the alias moved away since.
    latest_move = {(_model_name(m.subject), str(m.payload.get("alias"))): m for m in moves}
    for r in ctx.records:
        if r.state in RELEASED and not any(a.state == r.state and a.actor and a.reason for a in r.approvals):
            missing.append(f"{r.ref} is {r.state} but no approval with an actor and a reason is recorded")
        for alias in r.aliases:
            last = latest_move.get((r.name, alias))
            if last is None or last.action != "alias.moved" or _alias_ref(last, "to") != r.ref:
                missing.append(
                    f"alias {alias} -> {r.ref} was not set by the latest recorded alias.moved event"
                )
    nothing = not approvals and not ctx.of("model.state")
    if nothing:
        missing.append("no state change (approval, deployment, revocation) is recorded for any version")
    return _Outcome(evidence, missing, [e.id for e in events], nothing=nothing)


def check_lineage_provenance(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when every active version names the dataset manifests it was trained on and every
    recorded parent is among the versions reported on; a gap when no version names its training data."""
    if (none := _no_versions(ctx)) is not None:
        return none
    active = ctx.active
    with_data = [r for r in active if r.datasets]
    datasets = _datasets(active)
    signed = [d for d in datasets.values() if d.signed]
    evidence = [
        f"{len(with_data)} of {plural(len(active), 'active version')} name their training data "
        f"({plural(len(datasets), 'distinct dataset manifest')})",
        f"{len(signed)} of {plural(len(datasets), 'dataset manifest')} signed",
    ]
    known = {r.ref for r in ctx.records}
    fine_tunes = [r for r in active if r.parent]
    evidence += [f"{r.ref} fine-tuned from {r.parent}" for r in fine_tunes]
    events = ctx.of(*control.events)
    evidence += _event_lines(events)
    missing = []
    without = [r for r in active if not r.datasets]
    if without:
        missing.append(f"no training data recorded: {_refs(without)}")
    for r in fine_tunes:
        if r.parent not in known:
            missing.append(f"{r.ref}'s parent {r.parent} is not among the versions in this report")
    return _Outcome(evidence, missing, [e.id for e in events], nothing=not with_data)


def _datasets(records: Iterable[VersionRecord]) -> dict[str, DatasetRef]:
    found: dict[str, DatasetRef] = {}
    for r in records:
        for d in r.datasets:
            if d.digest not in found or (d.audit and not found[d.digest].audit):
                found[d.digest] = d
    return found


def check_data_audit(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when every training dataset of an active version carries a `bastion data audit` result
    in its manifest lineage; a gap when none does (audit events alone, untied to a model, are partial)."""
    if (none := _no_versions(ctx)) is not None:
        return none
    datasets = _datasets(ctx.active)
    events = ctx.of(*control.events)
    if not datasets:
        missing = ["no training data is recorded for any active version, so no audit can be tied to a model"]
        return _Outcome(_event_lines(events), missing, [e.id for e in events], nothing=not events)
    audited = [d for d in datasets.values() if d.audit]
    evidence = [f"{len(audited)} of {plural(len(datasets), 'training dataset')} carry an audit result"]
    for d in audited:
        summary = ", ".join(
            f"{k} {v}" for k, v in sorted((d.audit or {}).items()) if isinstance(v, int | float | str)
        )
        evidence.append(f"{dataset_label(d)} ({d.digest}): {summary or 'audited'}")
    evidence += _event_lines(events)
    missing = [f"not audited: {dataset_label(d)} ({d.digest})" for d in datasets.values() if not d.audit]
    if not audited and events:
        missing.append(
            "audits ran (see events) but none is recorded in a registered version's training manifest"
        )
    return _Outcome(evidence, missing, [e.id for e in events], nothing=not audited and not events)


def check_policy_gates(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when gates ran and every approved or deployed version's latest gate decision passed;
    partial when a released version has no gate decision or its latest one blocked it; a gap when no
    gate decision is recorded."""
    events = ctx.of(*control.events)
    passed = [e for e in events if e.payload.get("passed")]
    policies = sorted({str(e.payload["policy"]) for e in events if e.payload.get("policy")})
    evidence = [
        f"{plural(len(events), 'gate decision')} recorded "
        f"({len(passed)} passed, {len(events) - len(passed)} blocked)"
    ]
    if policies:
        evidence.append("policies: " + ", ".join(policies))
    evidence += _event_lines(events, lambda e: "passed" if e.payload.get("passed") else "blocked")
    missing = []
    for r in ctx.active:
        if r.state not in RELEASED:
            continue
        last = ctx.latest("gate.evaluated", r.ref)
        if last is None:
            missing.append(f"{r.ref} is {r.state} without a recorded gate decision")
        elif not last.payload.get("passed"):
            missing.append(f"{r.ref} is {r.state} but its latest gate decision (event {last.id}) blocked it")
    if not events:
        missing.append("no gate decision is recorded: run `bastion gate NAME@VERSION --policy POLICY` in CI")
    return _Outcome(evidence, missing, [e.id for e in events], nothing=not events)


def check_event_log(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when the log holds events and `bastion events verify` found its hash chain intact;
    partial when the chain was not verified for this report; a gap when it is empty or broken."""
    events = ctx.events
    if not events:
        return _Outcome([], ["the event log is empty"], [], nothing=True)
    dated = [e.at for e in events if e.at is not None]
    evidence = [f"{plural(len(events), 'event')}, ids {events[0].id} to {events[-1].id}"]
    if dated:
        first, last = min(dated), max(dated)
        days = (last - first).days
        evidence.append(
            f"from {first.date().isoformat()} to {last.date().isoformat()} ({plural(days, 'day')})"
        )
    counts = Counter(e.action for e in events)
    evidence.append("by action: " + ", ".join(f"{a} {n}" for a, n in sorted(counts.items())))
    missing = []
    if ctx.log_verified is True:
        evidence.append("hash chain verified intact (`bastion events verify`)")
    elif ctx.log_verified is False:
        missing.append("`bastion events verify` found the hash chain broken: run it to see which event")
    else:
        missing.append("the hash chain was not verified for this report: run `bastion events verify`")
    return _Outcome(evidence, missing, [], nothing=ctx.log_verified is False)


def check_ai_bom(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when an AI-BOM was written after the latest registration; partial when the latest one
    predates a registration; a gap when none was written."""
    events = ctx.of(*control.events)
    if not events:
        return _Outcome([], ["no AI-BOM has been written: run `bastion bom`"], [], nothing=True)
    last = events[-1]
    evidence = _event_lines(events, lambda e: str(e.payload.get("digest") or ""))
    missing = []
    later = [e for e in ctx.of("model.registered") if e.id > last.id]
    if later:
        ids = ", ".join(str(e.id) for e in later)
        missing.append(
            f"the latest AI-BOM (event {last.id}) predates "
            f"{plural(len(later), 'registration')} (events {ids})"
        )
    return _Outcome(evidence, missing, [e.id for e in events])


def check_model_cards(ctx: _Context, control: Control) -> _Outcome:
    """Evidenced when a card was written for every active version and no card has a missing section;
    partial when some versions have no card or their cards miss sections; a gap when no card was written."""
    if (none := _no_versions(ctx)) is not None:
        return none
    events = ctx.of(*control.events)
    written = {e.subject for e in events}
    active = ctx.active
    with_card = [r for r in active if r.ref in written]
    evidence = [f"cards written for {len(with_card)} of {plural(len(active), 'active version')}"]
    evidence += _event_lines(events)
    missing = []
    without = [r for r in active if r.ref not in written]
    if without:
        missing.append(f"no card written: {_refs(without)}")
    for r in active:
        lacks = missing_sections(model_card(r))
        if lacks:
            shown = ", ".join(lacks[:4]) + (f" and {len(lacks) - 4} more" if len(lacks) > 4 else "")
            missing.append(f"{r.ref}'s card lacks {plural(len(lacks), 'section')}: {shown}")
    return _Outcome(evidence, missing, [e.id for e in events], nothing=not with_card)


CHECKS: Mapping[str, Callable[[_Context, Control], _Outcome]] = {
    "artifact_scanning": check_artifact_scanning,
    "model_signing": check_model_signing,
    "registry_approvals": check_registry_approvals,
    "lineage_provenance": check_lineage_provenance,
    "data_audit": check_data_audit,
    "policy_gates": check_policy_gates,
    "event_log": check_event_log,
    "ai_bom": check_ai_bom,
    "model_cards": check_model_cards,
}


def criteria(control: Control) -> str:
    """How the control's status is decided, in one paragraph (its check's docstring)."""
    if control.check is None:
        return "Always a gap: Bastion does not evidence this control yet."
    doc = CHECKS[control.check].__doc__ or ""
    return " ".join(doc.split())


# -- the report ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlResult:
    """A control's status with the evidence behind it and what is missing."""

    control: Control
    status: str
    evidence: tuple[str, ...]
    missing: tuple[str, ...]
    event_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FrameworkItem:
    """One framework item (e.g. "LLM03 Supply Chain"), the controls covering it and their statuses."""

    framework: str
    id: str
    title: str
    status: str
    controls: tuple[tuple[str, str], ...]  # (control id, status)


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """Every control's result and the per-framework view, as of ``generated_at``."""

    generated_at: datetime
    versions: int
    active_versions: int
    events: int
    log_verified: bool | None
    controls: tuple[ControlResult, ...]
    frameworks: tuple[FrameworkItem, ...]
    control_map: ControlMap

    def counts(self) -> dict[str, int]:
        """Number of controls per status."""
        found = Counter(c.status for c in self.controls)
        return {s: found.get(s, 0) for s in STATUSES}


def _status(outcome: _Outcome) -> str:
    if outcome.nothing:
        return GAP
    return PARTIAL if outcome.missing else EVIDENCED


def _item_status(statuses: Sequence[str]) -> str:
    if statuses and all(s == EVIDENCED for s in statuses):
        return EVIDENCED
    return PARTIAL if any(s != GAP for s in statuses) else GAP


def compliance_report(
    records: Sequence[VersionRecord],
    events: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    log_verified: bool | None = None,
    control_map: ControlMap | None = None,
) -> ComplianceReport:
    """Evaluate every control of the map against the registry's records and the event log.

    ``log_verified`` is the outcome of ``bastion events verify`` over the same log (None: not checked).
    """
    cmap = control_map or load_control_map()
    ctx = _Context(records, _events(events), now, log_verified)
    results = []
    for control in cmap.controls:
        if control.check is None:
            results.append(ControlResult(control, GAP, (), (control.gap or "not evidenced yet",), ()))
            continue
        outcome = CHECKS[control.check](ctx, control)
        results.append(
            ControlResult(
                control,
                _status(outcome),
                tuple(outcome.evidence),
                tuple(outcome.missing),
                tuple(outcome.event_ids),
            )
        )
    status_of = {r.control.id: r.status for r in results}
    items = []
    for fw in cmap.frameworks:
        for item, title in fw.items.items():
            covering = tuple((c.id, status_of[c.id]) for c in cmap.controls if item in c.maps.get(fw.key, ()))
            items.append(FrameworkItem(fw.key, item, title, _item_status([s for _, s in covering]), covering))
    return ComplianceReport(
        generated_at=now,
        versions=len(records),
        active_versions=len(ctx.active),
        events=len(ctx.events),
        log_verified=log_verified,
        controls=tuple(results),
        frameworks=tuple(items),
        control_map=cmap,
    )


# -- renderers -----------------------------------------------------------------------------------------------


def report_dict(report: ComplianceReport) -> dict[str, Any]:
    """The report as JSON-ready data."""
    return {
        "format": REPORT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "tool": "bastion",
        "version": __version__,
        "generated_at": report.generated_at.isoformat(),
        "scope": {
            "versions": report.versions,
            "active_versions": report.active_versions,
            "events": report.events,
            "log_verified": report.log_verified,
        },
        "summary": report.counts(),
        "controls": [
            {
                "id": r.control.id,
                "title": r.control.title,
                "status": r.status,
                "evidence": list(r.evidence),
                "missing": list(r.missing),
                "event_ids": list(r.event_ids),
                "maps": {k: list(v) for k, v in r.control.maps.items()},
            }
            for r in report.controls
        ],
        "frameworks": [
            {
                "id": fw.key,
                "title": fw.title,
                "items": [
                    {
                        "id": i.id,
                        "title": i.title,
                        "status": i.status,
                        "controls": [{"id": c, "status": s} for c, s in i.controls],
                    }
                    for i in report.frameworks
                    if i.framework == fw.key
                ],
            }
            for fw in report.control_map.frameworks
        ],
    }


def render_json(report: ComplianceReport) -> str:
    """The report as indented JSON with a final newline."""
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _shown(lines: Sequence[str]) -> list[str]:
    out = [f"- {line}" for line in lines[:SHOWN_LINES]]
    if len(lines) > SHOWN_LINES:
        out.append(f"- ... and {len(lines) - SHOWN_LINES} more (the JSON report lists all)")
    return out


def _maps_text(cmap: ControlMap, control: Control) -> list[str]:
    out = []
    for fw in cmap.frameworks:
        ids = control.maps.get(fw.key, ())
        if ids:
            out.append(f"- {fw.title}: " + "; ".join(f"{i} {fw.items[i]}" for i in ids))
    return out


def _scope_line(report: ComplianceReport) -> str:
    verified = {True: "verified", False: "BROKEN", None: "not verified"}[report.log_verified]
    return (
        f"Generated {report.generated_at.isoformat(timespec='seconds')} by bastion {__version__} from "
        f"{plural(report.versions, 'model version')} ({report.active_versions} active) and "
        f"{plural(report.events, 'event')} (hash chain {verified})."
    )


def render_markdown(report: ComplianceReport) -> str:
    """The report as Markdown: a summary, each control with its evidence and gaps, then each framework."""
    counts = report.counts()
    out = [
        "# Bastion compliance report",
        "",
        _scope_line(report),
        "",
        f"Controls: {counts[EVIDENCED]} evidenced, {counts[PARTIAL]} partial, {counts[GAP]} gap. "
        "A control is *evidenced* when the registry and the event log show it operating over everything in "
        "scope, *partial* when they show it for some of it, and a *gap* when they show nothing.",
        "",
        "| Control | Status | Missing |",
        "| --- | --- | --- |",
    ]
    for r in report.controls:
        out.append(f"| [{r.control.title}](#{r.control.id}) | {r.status} | {len(r.missing)} |")
    out.append("")
    for r in report.controls:
        out += [
            f'<a id="{r.control.id}"></a>',
            f"## {r.control.title}: {r.status}",
            "",
            r.control.description,
            "",
        ]
        if r.evidence:
            out += ["Evidence:", "", *_shown(r.evidence), ""]
        if r.missing:
            out += ["Missing:", "", *_shown(r.missing), ""]
        out += ["Maps to:", "", *(_maps_text(report.control_map, r.control) or ["- (no framework item)"]), ""]
    out += [
        "## Frameworks",
        "",
        "An item is *evidenced* when every Bastion control mapped to it is evidenced, *partial* when some "
        "evidence exists, and a *gap* otherwise. Evidence for an item is not compliance with it: the "
        "controls cover the parts of each item that a model registry can show.",
        "",
    ]
    for fw in report.control_map.frameworks:
        out += [f"### {fw.title}", "", "| Item | Status | Controls |", "| --- | --- | --- |"]
        for i in report.frameworks:
            if i.framework == fw.key:
                controls = ", ".join(f"{c} ({s})" for c, s in i.controls) or "no Bastion control"
                out.append(f"| {i.id} {_md(i.title)} | {i.status} | {controls} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


STATUS_STYLE = {EVIDENCED: "green", PARTIAL: "yellow", GAP: "bold red"}


def render_table(report: ComplianceReport, *, width: int = 110, color: bool = False) -> str:
    """The report for a terminal: a table of controls, then per-framework coverage counts."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
    )
    console.print(_scope_line(report), soft_wrap=True)
    table = Table(title="Controls", title_justify="left")
    table.add_column("Status", no_wrap=True)
    table.add_column("Control", overflow="fold")
    table.add_column("Evidence", overflow="fold")
    table.add_column("Missing", overflow="fold")
    for r in report.controls:
        evidence = "\n".join(r.evidence[:3]) + (
            f"\n(+{len(r.evidence) - 3} more)" if len(r.evidence) > 3 else ""
        )
        missing = "\n".join(r.missing[:3]) + (f"\n(+{len(r.missing) - 3} more)" if len(r.missing) > 3 else "")
        table.add_row(
            Text(r.status, style=STATUS_STYLE[r.status]), r.control.title, evidence or "-", missing or "-"
        )
    console.print(table)
    frameworks = Table(title="Framework coverage (items)", title_justify="left")
    frameworks.add_column("Framework", overflow="fold")
    for status in STATUSES:
        frameworks.add_column(status, justify="right")
    for fw in report.control_map.frameworks:
        found = Counter(i.status for i in report.frameworks if i.framework == fw.key)
        frameworks.add_row(fw.title, *(str(found.get(s, 0)) for s in STATUSES))
    console.print(frameworks)
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()
