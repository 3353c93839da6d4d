"""The store's tables as SQLAlchemy Core metadata: the event log and the model registry.

The migrations in ``bastion/store/migrations`` create exactly these tables; a test compares the two so
that a change here without a migration fails.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# The hash-chained event log. ``seq`` is assigned by the writer under a lock (previous + 1), never by an
# autoincrement, so a gap means a deleted event; ``prev_hash`` is unique, so two writers can never fork
# the chain from the same predecessor even if the lock were bypassed.
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),  # RFC 3339 UTC with microseconds: hashed as written
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON (RFC 8785)
    Column("payload_digest", String(80), nullable=False),
    Column("prev_hash", String(80), nullable=False, unique=True),
    Column("hash", String(80), nullable=False, unique=True),
)
Index("ix_events_subject", events.c.subject)
Index("ix_events_action", events.c.action)

# One row, updated in the same transaction as every append: deleting the newest events is then detected
# too, because the head no longer matches the last row.
event_head = Table(
    "event_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("hash", String(80), nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(200), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), ForeignKey("models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("location", Text, nullable=False),
    Column("digest", String(80), nullable=False),
    Column("format", String(40), nullable=False),
    Column("framework", String(80)),
    Column("size", BigInteger, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("parent", String(250)),
    Column("scan", Text),  # JSON ScanSummary
    Column("scan_verdict", String(20)),  # kept apart so that listing 100k versions parses no JSON
    Column("metadata", Text, nullable=False),  # JSON
    # The mutable governance state; every change is also an event.
    Column("state", String(20), nullable=False),
    Column("signature", Text),  # JSON SignatureInfo of the newest signature
    Column("registered_event", BigInteger),
    UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
)
Index("ix_model_versions_digest", model_versions.c.digest)

artifact_files = Table(
    "artifact_files",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id"), primary_key=True),
    Column("path", String(1000), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
)

version_datasets = Table(
    "version_datasets",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id"), primary_key=True),
    Column("digest", String(100), primary_key=True),
    Column("source", Text),
    Column("path", Text),
    Column("rows", BigInteger),
    Column("files", Integer, nullable=False),
    Column("signed", Boolean, nullable=False),
    Column("signer", String(200)),
    Column("audit", Text),  # JSON summary of the audit that consumed this manifest, if known
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version_id", Integer, ForeignKey("model_versions.id"), nullable=False),
    Column("state", String(20), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", String(40), nullable=False),
    Column("event_seq", BigInteger),
)
Index("ix_approvals_version", approvals.c.version_id)

aliases = Table(
    "aliases",
    metadata,
    Column("name", String(200), ForeignKey("models.name"), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
)

# Every alias move, kept forever: "which version served production on 2026-03-01" is one query.
alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("alias", String(100), nullable=False),
    Column("version", Integer),  # None when the alias was removed
    Column("previous", Integer),
    Column("at", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_seq", BigInteger),
)
Index("ix_alias_history_name_alias", alias_history.c.name, alias_history.c.alias, alias_history.c.at)
