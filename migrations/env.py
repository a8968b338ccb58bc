"""Alembic's entry point. The app runs migrations itself (`database.migrate`, from `flask --app app
init-db` and at start) and hands over its connection; the `alembic` command line (e.g.
`alembic revision -m "add a column"`) connects to DATABASE_URL, or the default SQLite file."""

from __future__ import annotations

import os

from alembic import context

from trickle import database, storage

target_metadata = storage.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    url = os.environ.get("DATABASE_URL") or "sqlite:///" + os.path.join(root, "instance", "trickle.db")
    engine = database.make_engine(url)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported: run them against a database.")
run_migrations_online()
