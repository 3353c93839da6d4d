"""Versioned schema migrations with Alembic, run in-process on open; a newer store is refused, not touched.

Opening a current store costs one query: Alembic is imported only when there is something to migrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text

from bastion.store.database import Store, StoreError

SCRIPTS = Path(__file__).parent / "migrations"
# Every revision in migrations/versions, oldest first; a test checks this against the scripts.
REVISIONS = ("0001", "0002")
HEAD = REVISIONS[-1]


def _config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def script_revisions() -> list[str]:
    """The revisions the Alembic scripts define, oldest first (what REVISIONS must equal)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config())
    return [rev.revision for rev in reversed(list(scripts.walk_revisions()))]


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


def current_revision(store: Store) -> str | None:
    """The schema revision the store is at, or None for an empty database."""
    with store.read() as conn:
        return _revision(conn)


def _refuse_newer(store: Store, current: str | None) -> None:
    if current is not None and current not in REVISIONS:
        raise StoreError(
            f"{store.display}: the store is at schema revision {current}, written by a newer Bastion; "
            "upgrade Bastion to use it (nothing was changed)"
        )


def upgrade(store: Store) -> str:
    """Bring the store to the newest revision, in one write transaction; refuse a store from the future."""
    current = current_revision(store)
    _refuse_newer(store, current)
    if current == HEAD:
        return HEAD
    from alembic import command

    with store.write() as conn:
        # The write transaction holds the lock: a second process opening a new store waits here and then
        # finds the schema current instead of creating the tables twice.
        current = _revision(conn)
        _refuse_newer(store, current)
        if current != HEAD:
            command.upgrade(_config(conn), "head")
    return HEAD
