"""The append-only, hash-chained event log every capability writes to.

Each event records who did what to which subject and when, the SHA-256 of its payload, and the hash of
the event before it; its own hash covers all of that plus its sequence number. An edited event no longer
matches its hash, a deleted one leaves a gap in the sequence (or, at the end, disagrees with the head row),
and a reordered one breaks the chain: :func:`verify_log` names the event in each case.

Appends run inside the caller's write transaction (:meth:`Store.write`), so a registry change and the
event that records it commit together or not at all; the write lock serialises writers across processes,
and the unique ``prev_hash`` column makes a fork impossible even without it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from sqlalchemy import Connection, func, insert, select, update

from bastion.errors import InputError
from bastion.store.database import Store
from bastion.store.schema import event_head, events

GENESIS = "sha256:" + "0" * 64


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the log."""

    seq: int
    at: str  # RFC 3339 UTC, microseconds, "Z"
    actor: str
    action: str
    subject: str
    payload: Mapping[str, Any]
    payload_digest: str
    prev_hash: str
    hash: str

    @property
    def when(self) -> dt.datetime:
        """``at`` as an aware datetime."""
        return parse_time(self.at)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, as ``events list --format json`` prints it."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "payload": dict(self.payload),
            "payload_digest": self.payload_digest,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def now_text() -> str:
    """The current UTC time as the log writes it."""
    return format_time(dt.datetime.now(dt.UTC))


def format_time(moment: dt.datetime) -> str:
    """An aware datetime as RFC 3339 UTC with microseconds and a ``Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC 3339 time (``Z`` or an offset; a bare date means its midnight UTC)."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of the payload's canonical JSON (RFC 8785)."""
    return "sha256:" + hashlib.sha256(rfc8785.dumps(dict(payload))).hexdigest()


def event_hash(seq: int, at: str, actor: str, action: str, subject: str, digest: str, prev: str) -> str:
    """The hash an event must carry: canonical JSON of every field but the hash itself."""
    body: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload_digest": digest,
        "prev_hash": prev,
    }
    return "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def append_event(
    conn: Connection, *, actor: str, action: str, subject: str, payload: Mapping[str, Any] | None = None
) -> Event:
    """Append one event inside the caller's write transaction (see :meth:`Store.write`) and return it."""
    body = dict(payload or {})
    try:
        text = rfc8785.dumps(body).decode("utf-8")
    except (TypeError, ValueError, rfc8785.CanonicalizationError) as error:
        raise InputError(f"event {action} on {subject}: payload is not plain JSON ({error})") from None
    head = conn.execute(select(event_head.c.seq, event_head.c.hash).where(event_head.c.id == 1)).first()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
    at = now_text()
    digest = payload_digest(body)
    own = event_hash(seq, at, actor, action, subject, digest, prev)
    conn.execute(
        insert(events).values(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            payload=text,
            payload_digest=digest,
            prev_hash=prev,
            hash=own,
        )
    )
    if head:
        conn.execute(update(event_head).where(event_head.c.id == 1).values(seq=seq, hash=own))
    else:
        conn.execute(insert(event_head).values(id=1, seq=seq, hash=own))
    return Event(seq, at, actor, action, subject, body, digest, prev, own)


def record(
    store: Store, *, actor: str, action: str, subject: str, payload: Mapping[str, Any] | None = None
) -> Event:
    """Append one event in its own transaction."""
    with store.write() as conn:
        return append_event(conn, actor=actor, action=action, subject=subject, payload=payload)


def _row_event(row: Any) -> Event:
    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = {"unreadable": row.payload}
    return Event(
        row.seq,
        row.at,
        row.actor,
        row.action,
        row.subject,
        payload if isinstance(payload, dict) else {"value": payload},
        row.payload_digest,
        row.prev_hash,
        row.hash,
    )


@dataclass(frozen=True)
class EventFilter:
    """Which events to list: glob patterns on action, subject and actor, and a time window."""

    action: str | None = None  # e.g. "model.*"
    subject: str | None = None  # e.g. "fraud@*" or "fraud@3"
    actor: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    after_seq: int = 0

    def matches(self, event: Event) -> bool:
        """True if ``event`` passes every set condition."""
        if self.action and not fnmatch.fnmatchcase(event.action, self.action):
            return False
        if self.subject and not fnmatch.fnmatchcase(event.subject, self.subject):
            return False
        if self.actor and not fnmatch.fnmatchcase(event.actor, self.actor):
            return False
        when = event.when
        if self.since and when < self.since:
            return False
        return not (self.until and when > self.until)


def _glob_prefix(pattern: str | None) -> str | None:
    if not pattern:
        return None
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    return pattern[:cut]


def list_events(store: Store, where: EventFilter | None = None, *, limit: int | None = None) -> list[Event]:
    """Events matching ``where`` in log order; with ``limit``, the newest ``limit`` of them."""
    where = where or EventFilter()
    query = select(events).where(events.c.seq > where.after_seq)
    # Narrow in SQL where a glob has a literal prefix; the exact match is done in Python.
    for column, pattern in ((events.c.action, where.action), (events.c.subject, where.subject)):
        prefix = _glob_prefix(pattern)
        if prefix:
            query = query.where(column.startswith(prefix, autoescape=True))
    if where.since:
        query = query.where(events.c.at >= format_time(where.since))
    found: list[Event] = []
    with store.read() as conn:
        for row in conn.execute(query.order_by(events.c.seq)):
            event = _row_event(row)
            if where.matches(event):
                found.append(event)
    return found[-limit:] if limit else found


def last_seq(store: Store) -> int:
    """The newest event's sequence number, 0 for an empty log."""
    with store.read() as conn:
        return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())


@dataclass
class LogCheck:
    """What :func:`verify_log` found: the number of events read and every problem, each naming an event."""

    count: int = 0
    head_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the chain is intact."""
        return not self.problems


def _iter_rows(store: Store) -> Iterator[Any]:
    with store.read() as conn:
        yield from conn.execute(select(events).order_by(events.c.seq)).yield_per(5000)


def verify_log(store: Store, *, limit_problems: int = 50) -> LogCheck:
    """Re-check every event's payload digest, hash and link, the sequence and the head; name each break."""
    check = LogCheck()
    expected_seq, prev_hash = 1, GENESIS

    def problem(text: str) -> None:
        if len(check.problems) < limit_problems:
            check.problems.append(text)

    for row in _iter_rows(store):
        check.count += 1
        if row.seq != expected_seq:
            if row.seq > expected_seq:
                gone = (
                    f"event {expected_seq}"
                    if row.seq == expected_seq + 1
                    else (f"events {expected_seq}-{row.seq - 1}")
                )
                problem(f"{gone} deleted: the log jumps from event {expected_seq - 1} to event {row.seq}")
            else:
                problem(f"event {row.seq}: out of order after event {expected_seq - 1}")
        digest = _payload_text_digest(row.payload)
        if digest != row.payload_digest:
            problem(f"event {row.seq} ({row.action} {row.subject}): payload edited (digest does not match)")
        own = event_hash(
            row.seq, row.at, row.actor, row.action, row.subject, row.payload_digest, row.prev_hash
        )
        if own != row.hash:
            problem(
                f"event {row.seq} ({row.action} {row.subject}): edited (its fields do not match its hash)"
            )
        elif row.prev_hash != prev_hash and row.seq == expected_seq:
            problem(
                f"event {row.seq} ({row.action} {row.subject}): "
                f"does not follow event {row.seq - 1} (reordered or replaced)"
            )
        expected_seq, prev_hash = row.seq + 1, row.hash
    with store.read() as conn:
        head = conn.execute(select(event_head.c.seq, event_head.c.hash)).first()
    check.head_seq = head.seq if head else 0
    if head is None and check.count:
        problem("head record missing: the log cannot show whether its newest events were deleted")
    elif head is not None and (head.seq != expected_seq - 1 or head.hash != prev_hash):
        if head.seq > expected_seq - 1:
            problem(
                f"events {expected_seq}-{head.seq} deleted from the end (the head records event {head.seq})"
            )
        else:
            problem(f"head record names event {head.seq} but the log ends at event {expected_seq - 1}")
    return check


def _payload_text_digest(text: str) -> str:
    try:
        return payload_digest(json.loads(text))
    except (ValueError, TypeError, rfc8785.CanonicalizationError):
        return "unreadable"


def subject_events(store: Store, subjects: Sequence[str]) -> list[Event]:
    """Every event about any of ``subjects`` (exact names), in log order."""
    if not subjects:
        return []
    with store.read() as conn:
        rows = conn.execute(select(events).where(events.c.subject.in_(list(subjects))).order_by(events.c.seq))
        return [_row_event(row) for row in rows]
