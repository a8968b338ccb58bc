"""A whole history in and out of SQL: export every conversation of an owner, import many in one
transaction, delete them all.

A conversation travels as a plain dict (the Trickle export's shape, see `history.py`): its title,
model, system prompt and times (when it was pinned, if it is), and every message in order, hidden
alternatives included, a reply pointing at its question by position, an answer with the context
added to it while it was written (`added`: offset and text). So an export imported elsewhere gives
the same history back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import context_store, storage
from .status import Status

conversations = storage.conversations
messages = storage.messages

CONVERSATION_FIELDS = ("title", "model", "system_prompt", "created_at", "updated_at", "pinned_at")
MESSAGE_FIELDS = (
    "role",
    "content",
    "status",
    "error",
    "model",
    "tokens_in",
    "tokens_out",
    "ttft_ms",
    "duration_ms",
    "cost",
    "created_at",
    "active",
)


def export_conversations(engine: Engine, owner: str, batch: int = 50) -> Iterator[dict]:
    """Every conversation of the owner, oldest first, read a batch at a time (a long history is
    never held whole)."""
    after = 0
    while True:
        with engine.connect() as db:
            rows = db.execute(
                conversations.select()
                .where(conversations.c.owner == owner, conversations.c.id > after)
                .order_by(conversations.c.id)
                .limit(batch)
            ).all()
            if not rows:
                return
            found = db.execute(
                messages.select()
                .where(messages.c.conversation_id.in_([row.id for row in rows]))
                .order_by(messages.c.id)
            ).all()
        added = context_store.listed(engine, [message.id for message in found if message.role == "assistant"])
        by_conversation: dict[int, list] = {}
        for message in found:
            by_conversation.setdefault(message.conversation_id, []).append(message)
        for row in rows:
            yield _exported(row, by_conversation.get(row.id, []), added)
        after = rows[-1].id


def _exported(row, rows: list, added: dict) -> dict:
    position = {message.id: index for index, message in enumerate(rows)}
    exported = [
        {
            **{name: getattr(message, name) for name in MESSAGE_FIELDS},
            "active": bool(message.active),
            "reply_to": position.get(message.reply_to),
            **(
                {"added": [{"at": at, "content": text} for at, text in added[message.id]]}
                if message.id in added
                else {}
            ),
        }
        for message in rows
    ]
    return {**{name: getattr(row, name) for name in CONVERSATION_FIELDS}, "messages": exported}


def import_conversations(engine: Engine, owner: str, found: Iterable[dict], pause=None) -> int:
    """Store each conversation for the owner, all in one transaction: a problem raised while `found`
    is still being read leaves nothing behind. `pause` runs between conversations (to let other
    requests of this worker run). Returns how many were stored."""
    count = 0
    with engine.begin() as db:
        for conversation in found:
            _insert(db, owner, conversation)
            count += 1
            if pause is not None:
                pause()
    return count


def _insert(db, owner: str, conversation: dict) -> None:
    now = time.time()
    created = conversation.get("created_at") or now
    values = {name: conversation.get(name) for name in CONVERSATION_FIELDS}
    values.update(owner=owner, created_at=created, updated_at=conversation.get("updated_at") or created)
    values["title"] = _text(values["title"] or "Imported chat")[:200]
    values["system_prompt"] = _text(values["system_prompt"])
    conversation_id = db.execute(conversations.insert().values(**values)).inserted_primary_key[0]
    ids: list[int] = []
    for message in conversation["messages"]:
        row = {name: message.get(name) for name in MESSAGE_FIELDS}
        reply_to = message.get("reply_to")
        status = row["status"] or Status.DONE.value
        row.update(
            conversation_id=conversation_id,
            content=_text(row["content"] or ""),
            error=_text(row["error"]),
            status=Status.INTERRUPTED.value if status == Status.STREAMING else status,  # nothing writes it here
            created_at=row["created_at"] or created,
            active=True if row["active"] is None else bool(row["active"]),
            stop_requested=False,
            reply_to=ids[reply_to] if isinstance(reply_to, int) and 0 <= reply_to < len(ids) else None,
        )
        ids.append(db.execute(messages.insert().values(**row)).inserted_primary_key[0])
        for addition in message.get("added") or ():  # checked by `importers`
            db.execute(
                context_store.added_context.insert().values(
                    message_id=ids[-1],
                    at=addition["at"],
                    content=_text(addition["content"]),
                    created_at=row["created_at"],
                )
            )


def _text(value: str | None) -> str | None:
    """PostgreSQL refuses NUL in text; nobody wrote one on purpose."""
    return value.replace("\x00", "") if value else value


def streaming_of(engine: Engine, owner: str) -> list[int]:
    """The owner's answers being written now (to stop before deleting everything)."""
    query = (
        sa.select(messages.c.id)
        .select_from(messages.join(conversations))
        .where(conversations.c.owner == owner, messages.c.status == Status.STREAMING)
    )
    with engine.connect() as db:
        return [row.id for row in db.execute(query)]


def delete_all(engine: Engine, owner: str) -> int:
    """Every conversation and message of the owner, in one transaction; their shared links go with
    them (a cascading foreign key). Usage rows stay: budgets must not be reset. Returns how many
    conversations went."""
    owned = sa.select(conversations.c.id).where(conversations.c.owner == owner)
    with engine.begin() as db:
        db.execute(messages.delete().where(messages.c.conversation_id.in_(owned)))
        gone = db.execute(conversations.delete().where(conversations.c.owner == owner)).rowcount
    return gone
