"""A migrated, empty history database of each kind: SQLite (unit) and PostgreSQL (a real server: marked
integration, so the unit run skips it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lineguard.history.db import HistoryDB
from tests.support import fresh_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def history_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryDB]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
    else:
        server = request.getfixturevalue("postgres")
        url = fresh_pg_database(server.url, f"h_{abs(hash(request.node.name)) % 10**8}")
    db = HistoryDB(url)
    db.migrate()
    yield db
    db.close()
