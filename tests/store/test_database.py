"""Opening the store: migrations on SQLite and PostgreSQL, a newer store, a locked file, bad URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from bastion.cli.main import main
from bastion.store.database import StoreError, normalise_url, open_store
from bastion.store.events import record
from bastion.store.migrate import HEAD, REVISIONS, current_revision, script_revisions
from bastion.store.schema import metadata


def test_known_revisions_match_the_scripts() -> None:
    assert list(REVISIONS) == script_revisions()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_exactly_the_schema(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "m.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(url)
    assert current_revision(store) == HEAD
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diffs == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_store_is_upgraded_with_its_data(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from bastion.store.database import normalise_url
    from bastion.store.migrate import _config

    url = normalise_url(
        str(tmp_path / "old.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")  # a store written by the first release
        conn.execute(
            text(
                "INSERT INTO events (seq, at, actor, action, subject, payload, payload_digest, prev_hash,"
                " hash) VALUES (1, 'x', 'a', 'old', 's', '{}', 'd', 'p', 'h')"
            )
        )
    engine.dispose()
    store = open_store(url)
    assert current_revision(store) == HEAD
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT action FROM events")).scalar_one() == "old"
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
    store.close()


def test_registered_facts_are_immutable_but_state_moves(tmp_path: Path) -> None:
    from sqlalchemy.exc import DBAPIError

    store = open_store(str(tmp_path / "imm.db"))
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, created_at, created_by) VALUES ('m', 't', 'a')"))
        conn.execute(
            text(
                "INSERT INTO model_versions (name, version, created_at, created_by, location, digest,"
                " format, size, file_count, metadata, state)"
                " VALUES ('m', 1, 't', 'a', '/m', 'sha256:1', 'pickle', 1, 0, '{}', 'registered')"
            )
        )
    with pytest.raises(DBAPIError, match="immutable"), store.engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET digest = 'sha256:2'"))
    with pytest.raises(DBAPIError, match="never deleted"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM model_versions"))
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET state = 'approved'"))
    store.close()


def test_store_from_a_newer_bastion_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    open_store(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="schema revision 9999, written by a newer Bastion"):
        open_store(str(path))
    assert path.read_bytes() == before


def test_locked_sqlite_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.db"
    store = open_store(str(path))
    monkeypatch.setenv("BASTION_DATABASE_TIMEOUT", "0.3")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        locked = open_store(str(path))
        with pytest.raises(StoreError, match=r"locked by another process \(gave up after 0.3 s"):
            record(locked, actor="a", action="x", subject="y")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    record(store, actor="a", action="x", subject="y")  # and it works once the lock is gone


def test_cli_reports_locked_store_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A new store must be created (a write), and another process holds the file's exclusive lock.
    path = tmp_path / "locked.db"
    monkeypatch.setenv("BASTION_DATABASE_TIMEOUT", "0.2")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        code = main(["events", "list", "--db", str(path)])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "locked by another process" in err


def test_urls() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("relative.db").startswith("sqlite:////")
    with pytest.raises(StoreError, match="unsupported database"):
        normalise_url("mysql://u@h/db")
    with pytest.raises(StoreError, match="does not exist"):
        open_store("/nonexistent-folder/x.db")


def test_default_store_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    store = open_store()
    record(store, actor="a", action="x", subject="y")
    assert (tmp_path / "env.db").exists()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 1
