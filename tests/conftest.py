"""Suite-wide fixtures: every test gets its own store, and a real PostgreSQL server when a test asks.

The server is started from Debian's binaries on loopback, in a temporary folder, the first time a test
asks for ``postgres_url``. `make test` installs the `postgresql` package and sets
BASTION_REQUIRE_POSTGRES=1, so a server that cannot start fails the run instead of skipping its tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The gate runs the property tests on examples fixed by each test's source: a random search that finds a new
# corner case must not decide whether an unrelated change lands. `make fuzz` searches at random, with more
# examples, and whatever it finds becomes a fixed regression test.
settings.register_profile("gate", derandomize=True)
settings.register_profile("fuzz", derandomize=False, max_examples=1_000)
settings.load_profile(os.environ.get("BASTION_HYPOTHESIS_PROFILE", "gate"))


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("store") / "bastion.db"
    monkeypatch.setenv("BASTION_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("BASTION_ACTOR", "tester")
    return path


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, so the server runs as Debian's postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running server; yields a URL for a superuser on 127.0.0.1."""
    binaries = _pg_bin()
    required = os.environ.get("BASTION_REQUIRE_POSTGRES") == "1"
    if binaries is None:
        if required:
            pytest.fail(
                "PostgreSQL is not installed (apt-get install postgresql); BASTION_REQUIRE_POSTGRES=1"
            )
        pytest.skip("PostgreSQL is not installed")
    root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [str(binaries / "initdb"), "-D", str(data), "-U", "bastion", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    log = root / "server.log"
    subprocess.run(
        _as_postgres(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://bastion@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's server."""
    import psycopg

    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.rsplit("/", 1)[0] + "/" + name


def _count() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_counter = _count()
