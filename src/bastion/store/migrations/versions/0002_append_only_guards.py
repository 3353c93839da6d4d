"""append-only guards: the event log and a version's registered facts refuse UPDATE and DELETE

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:50:00

The hash chain detects an edited or deleted event after the fact; these triggers stop the accident
before it happens (a stray UPDATE, a clean-up script). Someone who can drop triggers can still edit
rows, which is what `bastion events verify` is for.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Columns of model_versions that make up the registered, immutable record.
IMMUTABLE = ("name", "version", "created_at", "created_by", "location", "digest", "format", "size", "parent")
GUARDS = (
    # (trigger name, table, operation, message)
    ("events_append_only_update", "events", "UPDATE", "the event log is append-only"),
    ("events_append_only_delete", "events", "DELETE", "the event log is append-only"),
    (
        "artifact_files_immutable_update",
        "artifact_files",
        "UPDATE",
        "the files of a registered version are immutable",
    ),
    (
        "artifact_files_immutable_delete",
        "artifact_files",
        "DELETE",
        "the files of a registered version are immutable",
    ),
    ("model_versions_no_delete", "model_versions", "DELETE", "registered versions are never deleted"),
)


def _raise(message: str) -> str:
    return f"SELECT RAISE(ABORT, '{message}')"


def upgrade() -> None:
    """Create the guards for the store's dialect."""
    if op.get_bind().dialect.name == "sqlite":
        for name, table, operation, message in GUARDS:
            op.execute(f"CREATE TRIGGER {name} BEFORE {operation} ON {table} BEGIN {_raise(message)}; END")
        columns = ", ".join(IMMUTABLE)
        op.execute(
            f"CREATE TRIGGER model_versions_immutable BEFORE UPDATE OF {columns} ON model_versions "
            f"BEGIN {_raise('the registered facts of a version are immutable')}; END"
        )
        return
    op.execute(
        "CREATE FUNCTION bastion_refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$"
    )
    for name, table, operation, message in GUARDS:
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION bastion_refuse('{message}')"
        )
    columns = ", ".join(IMMUTABLE)
    op.execute(
        f"CREATE TRIGGER model_versions_immutable BEFORE UPDATE OF {columns} ON model_versions "
        "FOR EACH ROW EXECUTE FUNCTION bastion_refuse('the registered facts of a version are immutable')"
    )


def downgrade() -> None:
    """Drop the guards."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, table, _, _ in (*GUARDS, ("model_versions_immutable", "model_versions", "", "")):
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + ("" if sqlite else f" ON {table}"))
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS bastion_refuse()")
