"""Open the store: resolve its URL, create the engine, bring the schema up to date, map driver errors.

SQLite is the default (a file under the user's data directory); PostgreSQL is used when the URL says so.
Every write runs in a transaction that holds the database's write lock from its first statement (SQLite
``BEGIN IMMEDIATE``; a PostgreSQL advisory lock where order matters), so concurrent processes queue
instead of interleaving. Driver errors become one-line :class:`StoreError` messages naming the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from bastion.errors import BastionError

ENV_URL = "BASTION_DATABASE_URL"
ENV_TIMEOUT = "BASTION_DATABASE_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
# One advisory-lock key for every ordered write on PostgreSQL (event appends, version numbering).
PG_WRITE_LOCK = 0x6261_7374  # "bast"


class StoreError(BastionError):
    """The store cannot be opened or used: a bad URL, a locked or newer database, a server that is down."""


def default_url() -> str:
    """``BASTION_DATABASE_URL`` if set, else a SQLite file in the user's data directory."""
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env
    from platformdirs import user_data_dir

    folder = Path(user_data_dir("bastion", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)  # the default store is created on first use, like its folder
    return "sqlite:///" + str(folder / "bastion.db")


def normalise_url(text: str | None) -> str:
    """Turn ``--db`` (a URL or a plain path to a SQLite file) into a SQLAlchemy URL with our drivers."""
    raw = (text or "").strip() or default_url()
    if "://" not in raw:
        raw = "sqlite:///" + str(Path(raw).expanduser().resolve())
    try:
        url = make_url(raw)
    except exc.ArgumentError:
        raise StoreError(f"{raw}: not a database URL (expected sqlite:///PATH or postgresql://...)") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"{url.render_as_string()}: unsupported database (use SQLite or PostgreSQL)")
    return url.render_as_string(hide_password=False)


def _timeout() -> float:
    text = os.environ.get(ENV_TIMEOUT, "")
    try:
        return float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise StoreError(f"{ENV_TIMEOUT}={text!r}: expected a number of seconds") from None


@dataclass
class Store:
    """An open store: an engine plus the URL it was opened with (password hidden in messages)."""

    engine: Engine
    display: str
    timeout: float

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite store."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction (SQLite: deferred, so readers never block writers in WAL)."""
        with self._errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction that holds the write lock from its first statement."""
        with self._errors(), self.engine.connect() as conn:
            conn = conn.execution_options(bastion_write=True)
            with conn.begin():
                if not self.is_sqlite:
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")
                yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except exc.OperationalError as error:
            raise StoreError(self.describe(error)) from None
        except exc.DBAPIError as error:
            raise StoreError(f"{self.display}: {_first_line(error.orig)}") from None

    def describe(self, error: exc.OperationalError) -> str:
        """One line for a driver error: a locked SQLite file and an unreachable server get plain words."""
        text = _first_line(error.orig)
        if "locked" in text or "busy" in text:
            return (
                f"{self.display}: the database is locked by another process "
                f"(gave up after {self.timeout:g} s; set {ENV_TIMEOUT} to wait longer)"
            )
        if "unable to open" in text:
            return f"{self.display}: cannot open the database file ({text})"
        return f"{self.display}: {text}"

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _sqlite_engine(url: str, timeout: float) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        folder = Path(path).parent
        if not folder.is_dir():
            raise StoreError(f"{url}: the folder {folder} does not exist")
    engine = create_engine(url, connect_args={"timeout": timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit transactions would start
        # them lazily, after the first read, which is too late to take the write lock).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers and one writer at once; survives kill -9
        cursor.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable at checkpoints, never corrupt
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("bastion_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Open (and by default create or upgrade) the store at ``url`` (``--db``), or the default store."""
    full = normalise_url(url)
    timeout = _timeout()
    display = make_url(full).render_as_string(hide_password=True)
    if make_url(full).get_backend_name() == "sqlite":
        engine = _sqlite_engine(full, timeout)
    else:
        try:
            engine = create_engine(full, connect_args={"connect_timeout": max(1, int(timeout))})
        except ImportError:
            raise StoreError(
                f"{display}: PostgreSQL needs psycopg: pip install 'bastion-ai[postgres]'"
            ) from None
    store = Store(engine, display, timeout)
    if migrate:
        from bastion.store.migrate import upgrade

        try:
            upgrade(store)  # one query when the schema is current
        except BaseException:
            store.close()
            raise
    return store
