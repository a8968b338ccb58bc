"""The rows of answers being written: what the engine saves and polls while a generation runs.

Progress saved for many answers in one transaction, heartbeats, the final save with its outcome,
Stop requested from another worker, the poll of answers followed from elsewhere, and the sweep that
closes answers whose worker died. The tables are `storage`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .status import Status
from .storage import messages


def _progress_row(mid: int, content: str, thoughts: str | None = None, thought_ms: int | None = None) -> dict:
    return {"mid": mid, "content": content, "thoughts": thoughts or None, "thought_ms": thought_ms}


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
