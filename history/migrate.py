"""Schema migrations with Alembic, run by the service on its first database call (``upgrade``) or by hand
(``alembic -c history/alembic.ini -x url=... upgrade head``).

A fresh database can be reached by several writers at once (two Recorder threads, two replicas): the
migration is serialised, so exactly one creates the schema and the others find it at head. On PostgreSQL
an advisory lock in the migration's transaction does it; on SQLite an exclusive lock on a file beside the
database (Alembic's own steps are not safe to run twice at once there: "table alembic_version already
exists", or ``KeyError: 'script'`` from two configs loading at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x4C47_4849  # "LGHI": LineGuard history
_PROCESS_LOCK = threading.Lock()  # Alembic's `context` and `op` are process-wide: one migration at a time


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@contextlib.contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on ``<database>.migrate.lock`` while the schema is checked (a no-op in memory)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock = Path(database).expanduser().with_name(Path(database).name + ".migrate.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database's schema to ``revision`` (idempotent, and safe from several processes at once)."""
    cfg = config()
    with _PROCESS_LOCK, _sqlite_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
