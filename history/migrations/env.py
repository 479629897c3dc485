"""Alembic environment: runs the migrations on the connection ``lineguard.history.migrate`` hands over, or on the
URL of ``alembic -x url=...`` (``alembic -c history/alembic.ini -x url=postgresql+psycopg://... upgrade head``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from lineguard.history.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -c history/alembic.ini -x url=sqlite:///history.db upgrade head")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
