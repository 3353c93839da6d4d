"""The hash-chained event log: tamper detection, concurrent writers, kill -9, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from bastion.cli.main import main
from bastion.store.database import Store, open_store
from bastion.store.events import EventFilter, list_events, record, verify_log


def _fill(store: Store, n: int = 6) -> None:
    for i in range(n):
        record(store, actor="alice", action="model.registered", subject=f"fraud@{i + 1}", payload={"i": i})


def _as_attacker(conn: Connection) -> None:
    """Drop the append-only triggers, as someone with write access to the database could."""
    sqlite = conn.dialect.name == "sqlite"
    for name, table in (("events_append_only_update", "events"), ("events_append_only_delete", "events")):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}" + ("" if sqlite else f" ON {table}"))


def _sql(store: Store, statement: str) -> None:
    with store.engine.begin() as conn:
        _as_attacker(conn)
        conn.exec_driver_sql(statement)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        str(tmp_path / "events.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    opened = open_store(url)
    yield opened
    opened.close()


def test_intact_log_verifies(store: Store) -> None:
    _fill(store)
    check = verify_log(store)
    assert check.ok, check.problems
    assert check.count == 6
    assert check.head_seq == 6


def test_guards_refuse_edits_and_deletes(store: Store) -> None:
    _fill(store, 2)
    for statement in (
        "UPDATE events SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 2",
    ):
        with pytest.raises(DBAPIError, match="the event log is append-only"), store.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert verify_log(store).ok


def test_edited_field_is_named(store: Store) -> None:
    _fill(store)
    _sql(store, "UPDATE events SET actor = 'mallory' WHERE seq = 3")
    check = verify_log(store)
    assert check.problems == ["event 3 (model.registered fraud@3): edited (its fields do not match its hash)"]


def test_edited_payload_is_named(store: Store) -> None:
    _fill(store)
    with store.engine.begin() as conn:
        _as_attacker(conn)
        conn.execute(text("UPDATE events SET payload = :p WHERE seq = 4"), {"p": '{"i":99}'})
    check = verify_log(store)
    assert len(check.problems) == 1
    assert check.problems[0].startswith("event 4 ")
    assert "payload edited" in check.problems[0]


def test_deleted_event_is_named(store: Store) -> None:
    _fill(store)
    _sql(store, "DELETE FROM events WHERE seq = 2")
    check = verify_log(store)
    assert check.problems == ["event 2 deleted: the log jumps from event 1 to event 3"]


def test_deleted_newest_events_are_caught_by_the_head(store: Store) -> None:
    _fill(store)
    _sql(store, "DELETE FROM events WHERE seq >= 5")
    assert verify_log(store).problems == ["events 5-6 deleted from the end (the head records event 6)"]


def test_reordered_events_are_named(store: Store) -> None:
    _fill(store)
    # Swap the contents of events 2 and 3 but keep the sequence numbers: both now fail their hashes.
    _sql(store, "UPDATE events SET seq = -2 WHERE seq = 2")
    _sql(store, "UPDATE events SET seq = 2 WHERE seq = 3")
    _sql(store, "UPDATE events SET seq = 3 WHERE seq = -2")
    problems = verify_log(store).problems
    assert any(p.startswith("event 2 ") for p in problems)
    assert any(p.startswith("event 3 ") for p in problems)


def test_filters(store: Store) -> None:
    _fill(store, 3)
    record(store, actor="bob", action="alias.moved", subject="fraud@production", payload={"to": 2})
    assert [e.seq for e in list_events(store, EventFilter(action="model.*"))] == [1, 2, 3]
    assert [e.actor for e in list_events(store, EventFilter(subject="fraud@prod*"))] == ["bob"]
    assert [e.seq for e in list_events(store, EventFilter(actor="alice"), limit=2)] == [2, 3]


_WRITER = """
import sys
from bastion.store.database import open_store
from bastion.store.events import record
store = open_store(sys.argv[1])
for i in range(int(sys.argv[3])):
    record(store, actor=sys.argv[2], action="test.write", subject=f"{sys.argv[2]}#{i}", payload={"i": i})
"""


def _writers(url: str, processes: int, each: int) -> None:
    env = {**os.environ, "BASTION_DATABASE_TIMEOUT": "60"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, url, f"w{p}", str(each)], env=env)
        for p in range(processes)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * processes


def test_concurrent_writers_never_fork_the_chain(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    _writers(url, 4, 25)
    reopened = open_store(url)
    check = verify_log(reopened)
    assert check.ok, check.problems
    assert check.count == 100
    subjects = {e.subject for e in list_events(reopened)}
    reopened.close()
    assert len(subjects) == 100  # nothing lost, nothing written twice


_LOOP = """
import sys
from bastion.store.database import open_store
from bastion.store.events import record
store = open_store(sys.argv[1])
i = 0
while True:
    record(store, actor="loop", action="test.write", subject=f"loop#{i}", payload={"blob": "x" * 20000})
    i += 1
"""


def test_log_survives_kill_9_mid_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    open_store(url).close()
    proc = subprocess.Popen([sys.executable, "-c", _LOOP, url])
    store = open_store(url)
    deadline = time.monotonic() + 60
    while verify_log(store).count < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    check = verify_log(store)
    assert check.ok, check.problems
    assert check.count >= 40
    record(store, actor="after", action="test.write", subject="after-kill")
    assert verify_log(store).ok


def test_cli_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    _fill(open_store(db))
    assert main(["events", "verify", "--db", db]) == 0
    assert "intact: 6 events" in capsys.readouterr().out
    _sql(open_store(db), "UPDATE events SET subject = 'fraud@9' WHERE seq = 5")
    assert main(["events", "verify", "--db", db]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out
    assert "event 5 (model.registered fraud@9): edited" in out
    assert main(["events", "list", "--db", db, "--subject", "fraud@1", "--format", "json"]) == 0
    assert '"subject": "fraud@1"' in capsys.readouterr().out


def test_cli_tail_shows_the_newest_and_follows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "tail.db")
    _fill(open_store(db), 5)
    assert main(["events", "tail", "-n", "2", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["4", "5"]
    code = main(["events", "tail", "-n", "1", "--follow", "--interval", "0", "--max-polls", "2", "--db", db])
    assert code == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["5"]
    assert main(["events", "list", "--since", "2999-01-01", "--db", db]) == 0
    assert capsys.readouterr().out == ""
    assert main(["events", "list", "--since", "not-a-date", "--db", db]) == 2
