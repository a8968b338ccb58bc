"""Context added to answers while they were written, in SQL: each addition with its offset.

An addition is a row of its own that points at its answer, rather than a user message in the
conversation's order: it belongs to that answer (an alternative answer has its own, hiding an
answer hides them, Retry keeps them) and its place is inside the answer's text (`at`, in
characters of `messages.content`), which prompt history, the page and the exports cut at
(`continuation.interleaved`, `continuation.segments`). Deleting the answer deletes them.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import storage
from .continuation import interleaved

added_context = sa.Table(
    "added_context",
    storage.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("at", sa.Integer, nullable=False),  # offset in the answer's text (its thought not counted)
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


def add(engine: Engine, message_id: int, at: int, content: str) -> int:
    """Store an addition to an answer; done before it goes upstream."""
    with engine.begin() as db:
        return db.execute(
            added_context.insert().values(message_id=message_id, at=at, content=content, created_at=time.time())
        ).inserted_primary_key[0]


def _read(db, message_ids) -> dict[int, list[tuple[int, str]]]:
    query = added_context.select().where(added_context.c.message_id.in_(list(message_ids))).order_by(added_context.c.id)
    found: dict[int, list[tuple[int, str]]] = {}
    for row in db.execute(query):
        found.setdefault(row.message_id, []).append((row.at, row.content))
    return found


def listed(engine: Engine, message_ids) -> dict[int, list[tuple[int, str]]]:
    """Answer id → its additions as (offset, text), in the order they came."""
    ids = list(message_ids)
    if not ids:
        return {}
    with engine.connect() as db:
        return _read(db, ids)


def last_offset(engine: Engine, message_id: int) -> int | None:
    """Where the last addition to an answer sits (None: it has none): what follows is written live."""
    query = sa.select(sa.func.max(added_context.c.at)).where(added_context.c.message_id == message_id)
    with engine.connect() as db:
        return db.execute(query).scalar()


def move_to_start(engine: Engine, message_id: int) -> None:
    """Retry writes an answer again from nothing: its additions stay, before all of it."""
    with engine.begin() as db:
        db.execute(added_context.update().where(added_context.c.message_id == message_id).values(at=0))


def upstream_turns(db: Connection, rows) -> dict[int, list[dict]]:
    """For `storage.prompt_messages`: answer id → the turns it is upstream, for answers with additions."""
    answers = {row.id: row for row in rows if row.role == "assistant"}
    found = _read(db, answers) if answers else {}
    return {mid: interleaved(answers[mid].content, added) for mid, added in found.items()}
