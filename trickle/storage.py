"""Conversations and messages in SQL, behind a handful of named functions.

SQLAlchemy Core keeps SQLite (the default, one file, WAL) and PostgreSQL (by `DATABASE_URL`, on
psycopg 3) on the same code. The SQL of the app lives here and in its companions on the same
`metadata`: `ledger` (usage), `sharing_store`, `history_store`; `database` holds the engine and the
migrations. The tables are built by the Alembic migrations in `migrations/` (`database.migrate`),
never by `create_all`: a change here needs a new migration.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .status import Status

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
    sa.Column("pinned_at", sa.Float),  # None: not pinned; pinned ones come first, latest pin on top
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

# The migration this code needs (the newest in migrations/versions): a new migration updates it.
SCHEMA_REVISION = "0006"


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
    """The sidebar: pinned ones first (the latest pinned on top), then newest first; with `search`,
    those whose title or any message contains it."""
    order = (conversations.c.pinned_at.desc().nulls_last(), conversations.c.updated_at.desc())
    query = conversations.select().order_by(*order).limit(limit)
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


def pin_conversation(engine: Engine, conversation_id: int, owner: str | None, pinned: bool = True) -> bool:
    """Pin a conversation to the top of the list (pinning again moves it to the top), or unpin it.
    False if it does not exist or belongs to another owner."""
    query = conversations.update().where(conversations.c.id == conversation_id)
    if owner is not None:
        query = query.where(conversations.c.owner == owner)
    with engine.begin() as db:
        done = db.execute(query.values(pinned_at=time.time() if pinned else None))
    return done.rowcount == 1


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


def prompt_messages(engine: Engine, conversation, before_id: int, attached=None, added=None) -> list[dict]:
    """The history sent upstream for the answer `before_id` of `conversation` (its row: its system
    prompt comes first): earlier turns that have text or files (`attached(db, rows)` gives those with
    files as content parts: `attachments_store.upstream_parts`; `added(db, rows)` the answers that had
    context added as several turns: `context_store.upstream_turns`)."""
    query = (
        sa.select(messages.c.id, messages.c.role, messages.c.content)
        .where(messages.c.conversation_id == conversation.id, messages.c.id < before_id, messages.c.active)
        .order_by(messages.c.id)
    )
    with engine.connect() as db:
        rows = db.execute(query).all()
        parts = attached(db, rows) if attached else {}
        turns = added(db, rows) if added else {}
    history = []
    if conversation.system_prompt:
        history.append({"role": "system", "content": conversation.system_prompt})
    for r in rows:
        if r.id in turns:
            history.extend(turns[r.id])
        elif r.content or r.id in parts:
            history.append({"role": r.role, "content": parts.get(r.id, r.content)})
    return history


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
