"""The database itself: the engine (SQLite by default, PostgreSQL by URL) and its migrations.

Alembic's migrations in `migrations/` build the tables of `storage.py`; `migrate` applies them at
start and in `init-db`, under a lock, so that several workers or instances starting at once agree.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .settings import read_setting
from .storage import SCHEMA_REVISION

log = logging.getLogger("trickle.storage")


def normalize_url(url: str) -> str:
    """`postgres://` (Heroku's spelling) and a bare `postgresql://` run on psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def pool_options(env: Mapping[str, str] | None = None) -> dict:
    """The connection pool of a server database (PostgreSQL), per worker process.

    DB_POOL_SIZE connections are kept open, DB_MAX_OVERFLOW more are opened under load, and a
    request waits at most DB_POOL_TIMEOUT s for one. Workers × instances × (size + overflow)
    must stay under the server's max_connections (Heroku's smallest plans allow 20 to 120).
    """
    env = os.environ if env is None else env
    return {
        "pool_size": read_setting(env, "DB_POOL_SIZE"),
        "max_overflow": read_setting(env, "DB_MAX_OVERFLOW"),
        "pool_timeout": read_setting(env, "DB_POOL_TIMEOUT"),
    }


def make_engine(url: str, env: Mapping[str, str] | None = None) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so workers can share the file.

    PostgreSQL runs on psycopg 3, which cooperates with gevent by itself once the process is
    monkey-patched (it then waits on sockets with the patched `select`; psycopg >= 3.1.14).
    Connections are checked before use (`pool_pre_ping`), so the pool recovers by itself after a
    database restart, and connecting gives up after DB_CONNECT_TIMEOUT s (5) instead of hanging.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            for attempt in range(100):  # a new file: workers starting at once race to switch it to WAL,
                try:  # and SQLite answers "locked" at once there instead of waiting
                    cursor.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 99:
                        raise
                    time.sleep(0.05)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    env = os.environ if env is None else env
    connect_args = {}
    if url.startswith("postgresql+psycopg"):
        # A server that vanished without closing its connections (a network cut, a failover) must
        # not hang a query for the kernel's minutes: TCP keepalives and a send timeout end it in ~20 s.
        connect_args = {
            "connect_timeout": read_setting(env, "DB_CONNECT_TIMEOUT"),
            "application_name": "trickle",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
            "tcp_user_timeout": 20000,
        }
    return sa.create_engine(url, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args, **pool_options(env))


MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
_ADVISORY_LOCK = 0x7472_6963_6B6C  # "trickl": one key for every instance migrating this database


def _alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration, from the scripts (SCHEMA_REVISION must name it: a test checks)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None before any), read without loading Alembic."""
    with engine.connect() as db:
        return _revision(db)


def _revision(db) -> str | None:
    if not sa.inspect(db).has_table("alembic_version"):
        return None
    return db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _sqlite_file_lock(engine: Engine):
    """Workers of one box migrating one SQLite file: an exclusive lock on a file beside it."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(os.path.abspath(database) + ".migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a blocking call, but only at start, before serving
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine: Engine) -> bool:
    """Bring the schema to the newest migration; True if anything ran. Idempotent, and safe when
    several workers or instances start at once: they queue on a lock (a PostgreSQL advisory lock
    held by the migrating transaction, or a file lock beside the SQLite file), and those that get it
    after the first find the schema current and do nothing."""
    before = current_revision(engine)
    if before == SCHEMA_REVISION:  # the usual start: nothing to wait for, nor to import
        return False
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its chatter; we say what changed
    from alembic import command

    def upgrade(db) -> bool:
        before = _revision(db)  # again, under the lock: another worker may have just done it
        if before == SCHEMA_REVISION:
            return False
        log.info("migrating the database from %s to %s", before or "nothing", SCHEMA_REVISION)
        command.upgrade(_alembic_config(db), "head")
        return True

    if engine.dialect.name == "postgresql":
        with engine.begin() as db:  # DDL is transactional here: all of it or none
            db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
            return upgrade(db)
    with _sqlite_file_lock(engine) if engine.dialect.name == "sqlite" else nullcontext():
        with engine.begin() as db:
            return upgrade(db)


def ping(engine: Engine) -> None:
    with engine.connect() as db:
        db.execute(sa.text("SELECT 1"))
