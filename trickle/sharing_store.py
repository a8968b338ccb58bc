"""Shared links in SQL: each is an unguessable token and a frozen snapshot of one conversation.

The snapshot is a JSON document (`version`, `title`, `messages`: one object per message), so later
parts of a message (thoughts, attachments) become new keys without a new column. A link is looked up
in the database at every view, never cached: a revoked link is a 404 at once, on every instance.
Deleting the conversation deletes its links (a cascading foreign key, on SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import secrets
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import context_store, storage
from .status import Status

SNAPSHOT_VERSION = 1

shared_links = sa.Table(
    "shared_links",
    storage.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column(
        "conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The parts of a message a snapshot keeps: what `_message.html` shows, nothing about the owner. Not a
# failed answer's error, which may name the server's upstream: the page says it could not be completed.
SNAPSHOT_FIELDS = ("role", "content", "status", "model", "tokens_in", "tokens_out", "ttft_ms", "duration_ms")


def snapshot_of(engine: Engine, conversation) -> dict:
    """The conversation as shown now; an answer still being written is left out (it has no end yet)."""
    rows = [row for row in storage.list_messages(engine, conversation.id) if row.status != Status.STREAMING]
    added = context_store.listed(engine, [row.id for row in rows if row.role == "assistant"])
    kept = [
        {
            **{name: getattr(row, name) for name in SNAPSHOT_FIELDS},
            **({"added": [{"at": at, "content": text} for at, text in added[row.id]]} if row.id in added else {}),
        }
        for row in rows
    ]
    return {"version": SNAPSHOT_VERSION, "title": conversation.title, "messages": kept}


def create_share(engine: Engine, owner: str, conversation) -> str:
    """A new link to a snapshot of the conversation as it is now; returns its token (128 random bits)."""
    token = secrets.token_urlsafe(16)
    snapshot = json.dumps(snapshot_of(engine, conversation), ensure_ascii=False)
    with engine.begin() as db:
        db.execute(
            shared_links.insert().values(
                token=token,
                owner=owner,
                conversation_id=conversation.id,
                title=conversation.title,
                snapshot=snapshot,
                created_at=time.time(),
            )
        )
    return token


def list_shares(engine: Engine, owner: str, conversation_id: int | None = None):
    """The owner's links (of one conversation, when given), newest first."""
    query = (
        sa.select(shared_links.c.token, shared_links.c.title, shared_links.c.conversation_id, shared_links.c.created_at)
        .where(shared_links.c.owner == owner)
        .order_by(shared_links.c.id.desc())
    )
    if conversation_id is not None:
        query = query.where(shared_links.c.conversation_id == conversation_id)
    with engine.connect() as db:
        return db.execute(query).all()


def shared_snapshot(engine: Engine, token: str) -> dict | None:
    """The snapshot behind a link, or None once it is revoked or its conversation deleted."""
    conversations = storage.conversations
    query = (
        sa.select(shared_links.c.snapshot, shared_links.c.created_at)
        .select_from(shared_links.join(conversations, conversations.c.id == shared_links.c.conversation_id))
        .where(shared_links.c.token == token, conversations.c.owner == shared_links.c.owner)
    )
    with engine.connect() as db:
        row = db.execute(query).first()
    if row is None:
        return None
    return {**json.loads(row.snapshot), "shared_at": row.created_at}


def revoke_share(engine: Engine, owner: str, token: str) -> int | None:
    """Delete the owner's link (its snapshot goes with it); the conversation it showed, or None."""
    with engine.begin() as db:
        owned = sa.and_(shared_links.c.token == token, shared_links.c.owner == owner)
        row = db.execute(sa.select(shared_links.c.conversation_id).where(owned)).first()
        if row is None:
            return None
        db.execute(shared_links.delete().where(shared_links.c.token == token))
    return row.conversation_id
