"""Conversations and messages in SQL, behind a handful of named functions.

SQLAlchemy Core keeps SQLite (the default, one file, WAL) and PostgreSQL (by
`DATABASE_URL`, on psycopg 3) on the same code. All SQL of the app lives in this
module. The tables below are built by the Alembic migrations in `migrations/`
(`migrate`), never by `create_all`: a change here needs a new migration.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager, nullcontext

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .settings import read_setting
from .status import Status

log = logging.getLogger("trickle.storage")

metadata = sa.MetaData()

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("title", sa.String(200), nullable=False, default="New chat"),
    sa.Column("model", sa.String(200)),
    sa.Column("system_prompt", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("reasoning_effort", sa.String(16)),  # None: REASONING_EFFORT's default
)

# status: "streaming" while a generation owns the row, then how it ended:
# "done", "stopped" (Stop or nobody watching), "failed" (upstream error, timeout),
# "interrupted" (the server went away mid-answer).
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False, default=""),
    sa.Column("status", sa.String(16), nullable=False, default=Status.DONE.value),
    sa.Column("error", sa.Text),
    sa.Column("model", sa.String(200)),
    sa.Column("tokens_in", sa.Integer),
    sa.Column("tokens_out", sa.Integer),
    sa.Column("ttft_ms", sa.Integer),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float),  # a live generation touches it every save
    sa.Column("watched_at", sa.Float),  # a listener on another worker touches it
    sa.Column("stop_requested", sa.Boolean, nullable=False, default=False),
    # An answer replies to a user message; regenerating adds a sibling. Only active
    # rows are shown and sent upstream; replaced ones stay, so history stays honest.
    sa.Column("reply_to", sa.Integer),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("cost", sa.Float),  # estimated USD, from MODEL_PRICES
    sa.Column("thoughts", sa.Text),  # a thinking model's thought, apart: search and history never see it
    sa.Column("thought_ms", sa.Integer),  # how long it thought before the answer began
)

# One row per answer, stored or not (the JSON API stores no messages): what budgets count.
usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("conversation_id", sa.Integer, index=True),
    sa.Column("model", sa.String(200)),
    sa.Column("tokens_in", sa.Integer, nullable=False, default=0),
    sa.Column("tokens_out", sa.Integer, nullable=False, default=0),
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)


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


# The migration this code needs (the newest in migrations/versions): a new migration updates it.
SCHEMA_REVISION = "0002"
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


def create_conversation(
    engine: Engine, title: str, model: str | None = None, owner: str | None = None, system_prompt: str | None = None
) -> int:
    now = time.time()
    with engine.begin() as db:
        result = db.execute(
            conversations.insert().values(
                title=title, model=model, owner=owner, system_prompt=system_prompt, created_at=now, updated_at=now
            )
        )
        return result.inserted_primary_key[0]


def get_conversation(engine: Engine, conversation_id: int, owner: str | None = None):
    """The conversation, or None if it does not exist or belongs to another owner."""
    query = conversations.select().where(conversations.c.id == conversation_id)
    if owner is not None:
        query = query.where(conversations.c.owner == owner)
    with engine.connect() as db:
        return db.execute(query).first()


def list_conversations(engine: Engine, owner: str | None = None, search: str | None = None, limit: int = 200):
    """The sidebar: newest first; with `search`, those whose title or any message contains it."""
    query = conversations.select().order_by(conversations.c.updated_at.desc()).limit(limit)
    if owner is not None:
        query = query.where(conversations.c.owner == owner)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        in_messages = sa.select(messages.c.id).where(
            messages.c.conversation_id == conversations.c.id, messages.c.content.ilike(pattern, escape="\\")
        )
        query = query.where(sa.or_(conversations.c.title.ilike(pattern, escape="\\"), in_messages.exists()))
    with engine.connect() as db:
        return db.execute(query).all()


def update_conversation(engine: Engine, conversation_id: int, **values) -> None:
    """Rename, or set the model, system prompt or reasoning effort (only the given columns change)."""
    settable = ("title", "model", "system_prompt", "reasoning_effort")
    allowed = {key: value for key, value in values.items() if key in settable}
    with engine.begin() as db:
        db.execute(conversations.update().where(conversations.c.id == conversation_id).values(**allowed))


def retitle(engine: Engine, conversation_id: int, expected: str, title: str) -> bool:
    """Set a title unless it changed meanwhile (a rename by hand wins over a suggested one)."""
    with engine.begin() as db:
        done = db.execute(
            conversations.update()
            .where(conversations.c.id == conversation_id, conversations.c.title == expected)
            .values(title=title)
        )
    return done.rowcount == 1


def delete_conversation(engine: Engine, conversation_id: int) -> None:
    """Delete a conversation and its messages (the usage rows stay: budgets must not be reset)."""
    with engine.begin() as db:
        db.execute(messages.delete().where(messages.c.conversation_id == conversation_id))
        db.execute(conversations.delete().where(conversations.c.id == conversation_id))


def list_messages(engine: Engine, conversation_id: int):
    """The conversation as shown: active messages in order."""
    query = (
        messages.select()
        .where(messages.c.conversation_id == conversation_id, messages.c.active)
        .order_by(messages.c.id)
    )
    with engine.connect() as db:
        return db.execute(query).all()


def get_message(engine: Engine, message_id: int, owner: str | None = None):
    """The message, or None if it does not exist or its conversation belongs to another owner."""
    query = messages.select().where(messages.c.id == message_id)
    if owner is not None:
        query = query.where(
            messages.c.conversation_id.in_(sa.select(conversations.c.id).where(conversations.c.owner == owner))
        )
    with engine.connect() as db:
        return db.execute(query).first()


def append_exchange(engine: Engine, conversation_id: int, content: str, model: str) -> tuple[int, int]:
    """Commit the user's message and an empty streaming answer in one transaction.

    This happens before anything is sent upstream, so the question is never lost.
    """
    now = time.time()
    with engine.begin() as db:
        user_id = db.execute(
            messages.insert().values(
                conversation_id=conversation_id, role="user", content=content, status=Status.DONE, created_at=now
            )
        ).inserted_primary_key[0]
        answer_id = _insert_answer(db, conversation_id, user_id, model, now)
        db.execute(conversations.update().where(conversations.c.id == conversation_id).values(updated_at=now))
    return user_id, answer_id


def _insert_answer(db, conversation_id: int, reply_to: int, model: str, now: float) -> int:
    return db.execute(
        messages.insert().values(
            conversation_id=conversation_id,
            role="assistant",
            content="",
            status=Status.STREAMING,
            reply_to=reply_to,
            model=model,
            created_at=now,
            heartbeat_at=now,
        )
    ).inserted_primary_key[0]


def regenerate(engine: Engine, answer_id: int, model: str) -> int:
    """A new answer to the same question; the old one stays as an alternative."""
    now = time.time()
    with engine.begin() as db:
        old = db.execute(messages.select().where(messages.c.id == answer_id)).first()
        db.execute(messages.update().where(messages.c.id == answer_id).values(active=False))
        return _insert_answer(db, old.conversation_id, old.reply_to, model, now)


def alternatives(engine: Engine, answer) -> list[int]:
    """Ids of every answer to the same question, oldest first (the `1/2` switcher)."""
    if answer.reply_to is None:
        return [answer.id]
    query = (
        sa.select(messages.c.id)
        .where(messages.c.reply_to == answer.reply_to, messages.c.role == "assistant")
        .order_by(messages.c.id)
    )
    with engine.connect() as db:
        return [row.id for row in db.execute(query)]


def alternatives_by_question(engine: Engine, conversation_id: int) -> dict[int, list[int]]:
    """For a whole conversation at once: question id → ids of its answers, oldest first."""
    query = (
        sa.select(messages.c.id, messages.c.reply_to)
        .where(
            messages.c.conversation_id == conversation_id,
            messages.c.role == "assistant",
            messages.c.reply_to.is_not(None),
        )
        .order_by(messages.c.id)
    )
    found: dict[int, list[int]] = {}
    with engine.connect() as db:
        for row in db.execute(query):
            found.setdefault(row.reply_to, []).append(row.id)
    return found


def activate(engine: Engine, answer) -> None:
    """Show this alternative (and send it upstream from now on) instead of its siblings."""
    with engine.begin() as db:
        db.execute(messages.update().where(messages.c.reply_to == answer.reply_to).values(active=False))
        db.execute(messages.update().where(messages.c.id == answer.id).values(active=True))


def edit_and_resend(engine: Engine, user_message, content: str, model: str) -> tuple[int, int]:
    """Replace a question and everything after it: those turns are hidden, not rewritten."""
    with engine.begin() as db:
        db.execute(
            messages.update()
            .where(messages.c.conversation_id == user_message.conversation_id, messages.c.id >= user_message.id)
            .values(active=False)
        )
    return append_exchange(engine, user_message.conversation_id, content, model)


def restart_message(engine: Engine, message_id: int, model: str) -> None:
    """Empty an ended answer so that a new generation can write it again (Retry)."""
    now = time.time()
    with engine.begin() as db:
        db.execute(
            messages.update()
            .where(messages.c.id == message_id)
            .values(
                content="",
                thoughts=None,
                thought_ms=None,
                status=Status.STREAMING,
                error=None,
                model=model,
                tokens_in=None,
                tokens_out=None,
                ttft_ms=None,
                duration_ms=None,
                heartbeat_at=now,
                watched_at=None,
                stop_requested=False,
            )
        )


def prompt_messages(engine: Engine, conversation_id: int, before_id: int) -> list[dict]:
    """The history sent upstream for the answer `before_id`: earlier turns that have text."""
    query = (
        sa.select(messages.c.role, messages.c.content)
        .where(messages.c.conversation_id == conversation_id, messages.c.id < before_id, messages.c.active)
        .order_by(messages.c.id)
    )
    with engine.connect() as db:
        conversation = db.execute(
            sa.select(conversations.c.system_prompt).where(conversations.c.id == conversation_id)
        ).first()
        rows = db.execute(query).all()
    history = [{"role": row.role, "content": row.content} for row in rows if row.content]
    if conversation and conversation.system_prompt:
        history.insert(0, {"role": "system", "content": conversation.system_prompt})
    return history


def _progress_row(mid: int, content: str, thoughts: str | None = None, thought_ms: int | None = None) -> dict:
    return {"mid": mid, "content": content, "thoughts": thoughts or None, "thought_ms": thought_ms}


def reasoning_effort(engine: Engine, conversation_id: int) -> str | None:
    """The conversation's own reasoning effort (None: the REASONING_EFFORT setting's)."""
    query = sa.select(conversations.c.reasoning_effort).where(conversations.c.id == conversation_id)
    with engine.connect() as db:
        return db.execute(query).scalar()


def save_progress(engine: Engine, progress: Iterable[tuple]) -> None:
    """Save (id, text[, thought, thought_ms]) so far of several live answers in one transaction (and
    mark them alive).

    Only rows still streaming: a save that waited for a connection while its answer ended must not
    put an older text over the final one.
    """
    # In id order, as PostgreSQL locks the rows of `id IN (…)` updates: two savers never deadlock.
    rows = sorted((_progress_row(*entry) for entry in progress), key=lambda row: row["mid"])
    if not rows:
        return
    now = time.time()
    statement = (
        messages.update()
        .where(messages.c.id == sa.bindparam("mid"), messages.c.status == Status.STREAMING)
        .values(
            content=sa.bindparam("content"),
            thoughts=sa.bindparam("thoughts"),
            thought_ms=sa.bindparam("thought_ms"),
            heartbeat_at=now,
        )
    )
    with engine.begin() as db:
        db.execute(statement, rows)


def touch_heartbeats(engine: Engine, message_ids: Iterable[int]) -> None:
    ids = list(message_ids)
    if ids:
        with engine.begin() as db:
            db.execute(messages.update().where(messages.c.id.in_(ids)).values(heartbeat_at=time.time()))


def finish_message(
    engine: Engine,
    message_id: int,
    content: str,
    status: str,
    error: str | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    ttft_ms: int | None = None,
    duration_ms: int | None = None,
    cost: float | None = None,
    model: str | None = None,
    thoughts: str | None = None,
    thought_ms: int | None = None,
) -> None:
    extra = {"model": model} if model else {}
    with engine.begin() as db:
        db.execute(
            messages.update()
            .where(messages.c.id == message_id)
            .values(
                **extra,
                content=content,
                thoughts=thoughts or None,
                thought_ms=thought_ms,
                status=status,
                error=error,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                ttft_ms=ttft_ms,
                duration_ms=duration_ms,
                cost=cost,
                heartbeat_at=time.time(),
            )
        )


def record_usage(
    engine: Engine,
    owner: str | None,
    conversation_id: int | None,
    model: str,
    tokens_in: int,
    tokens_out: int,
    cost: float,
) -> None:
    with engine.begin() as db:
        db.execute(
            usage.insert().values(
                owner=owner,
                conversation_id=conversation_id,
                model=model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost=cost,
                created_at=time.time(),
            )
        )


def tokens_used(engine: Engine, since: float, owner: str | None = None) -> int:
    """Tokens in and out since `since`, for one owner or the whole instance."""
    query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.tokens_in + usage.c.tokens_out), 0)).where(
        usage.c.created_at >= since
    )
    if owner is not None:
        query = query.where(usage.c.owner == owner)
    with engine.connect() as db:
        return int(db.execute(query).scalar_one())


def usage_totals(engine: Engine, owner: str, conversation_id: int | None = None) -> dict:
    """Tokens and cost for an owner (all time) or one of their conversations, for the page."""
    query = sa.select(
        sa.func.coalesce(sa.func.sum(usage.c.tokens_in), 0).label("tokens_in"),
        sa.func.coalesce(sa.func.sum(usage.c.tokens_out), 0).label("tokens_out"),
        sa.func.coalesce(sa.func.sum(usage.c.cost), 0.0).label("cost"),
    ).where(usage.c.owner == owner)
    if conversation_id is not None:
        query = query.where(usage.c.conversation_id == conversation_id)
    with engine.connect() as db:
        row = db.execute(query).one()
    return {"tokens_in": int(row.tokens_in), "tokens_out": int(row.tokens_out), "cost": float(row.cost)}


def count_streaming(engine: Engine, owner: str) -> int:
    """Answers of this owner being written now, on any worker."""
    query = (
        sa.select(sa.func.count())
        .select_from(messages.join(conversations))
        .where(conversations.c.owner == owner, messages.c.status == Status.STREAMING)
    )
    with engine.connect() as db:
        return int(db.execute(query).scalar_one())


def count_messages(engine: Engine, conversation_id: int) -> int:
    query = sa.select(sa.func.count()).where(messages.c.conversation_id == conversation_id, messages.c.active)
    with engine.connect() as db:
        return int(db.execute(query).scalar_one())


def request_stop(engine: Engine, message_id: int) -> None:
    """Ask whichever worker owns the generation to stop it (it checks at every save)."""
    with engine.begin() as db:
        db.execute(
            messages.update()
            .where(messages.c.id == message_id, messages.c.status == Status.STREAMING)
            .values(stop_requested=True)
        )


def read_signals(engine: Engine, message_ids: Iterable[int]) -> dict[int, tuple[bool, float | None]]:
    """For live answers owned here: (stop requested elsewhere, last time a remote listener was seen)."""
    ids = list(message_ids)
    if not ids:
        return {}
    query = sa.select(messages.c.id, messages.c.stop_requested, messages.c.watched_at).where(messages.c.id.in_(ids))
    with engine.connect() as db:
        return {row.id: (bool(row.stop_requested), row.watched_at) for row in db.execute(query)}


def read_remote_progress(engine: Engine, cursors: dict[int, int]):
    """For answers followed from another worker: text past each cursor, status, error, heartbeat."""
    if not cursors:
        return {}
    ids = list(cursors)
    query = sa.select(
        messages.c.id,
        messages.c.content,
        messages.c.thoughts,
        messages.c.thought_ms,
        messages.c.status,
        messages.c.error,
        messages.c.heartbeat_at,
    ).where(messages.c.id.in_(ids))
    now = time.time()
    with engine.begin() as db:
        rows = db.execute(query).all()
        db.execute(
            messages.update()
            .where(messages.c.id.in_(ids), messages.c.status == Status.STREAMING)
            .values(watched_at=now)
        )
    return {row.id: row for row in rows}


def mark_interrupted(engine: Engine, stale_before: float, message_ids: Iterable[int] | None = None) -> int:
    """Close answers left "streaming" by a worker that died (no heartbeat since `stale_before`)."""
    condition = sa.and_(
        messages.c.status == Status.STREAMING,
        sa.or_(messages.c.heartbeat_at.is_(None), messages.c.heartbeat_at < stale_before),
    )
    if message_ids is not None:
        condition = sa.and_(condition, messages.c.id.in_(list(message_ids)))
    with engine.begin() as db:
        result = db.execute(
            messages.update()
            .where(condition)
            .values(status=Status.INTERRUPTED, error="The server restarted while this answer was being written.")
        )
        return result.rowcount


def ping(engine: Engine) -> None:
    with engine.connect() as db:
        db.execute(sa.text("SELECT 1"))
