"""Fixtures of the governance tests: a registry in its own SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.registry.versions import Registry
from bastion.store.database import open_store


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    store = open_store(str(tmp_path / "registry.db"))
    yield Registry(store)
    store.close()
