"""Suite-wide fixtures: every test gets its own store, so no test writes to the user's data directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("store") / "bastion.db"
    monkeypatch.setenv("BASTION_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("BASTION_ACTOR", "tester")
    return path
