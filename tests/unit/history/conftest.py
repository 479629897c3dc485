"""History fixtures: a real SQLite file and a real PostgreSQL server, and a database of each."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineguard.history.db import HistoryDB
from tests.postgres import PostgresServer, binaries


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = binaries()
    if bin_dir is None:
        message = "PostgreSQL is not installed: `make test` installs Debian's postgresql package (as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="lineguard-pg-")), bin_dir)
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop()


def fresh_pg_database(server: PostgresServer, name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def history_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryDB]:
    """A migrated, empty history database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
    else:
        server = request.getfixturevalue("postgres")
        url = fresh_pg_database(server, f"h_{abs(hash(request.node.name)) % 10**8}")
    db = HistoryDB(url)
    db.migrate()
    yield db
    db.close()
