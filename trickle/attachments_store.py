"""Attachments in SQL: each file stored with its message, in the database itself.

In the database rather than on a disk so that every instance of a scaled-out deployment (PostgreSQL)
serves and sends the same files; deleting the message or its conversation deletes them (a cascading
foreign key). `upstream_parts` turns them into the OpenAI content parts `storage.prompt_messages`
sends: an image as an `image_url` with a `data:` URL, a text file inlined between marks naming it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import storage
from .attachments import Attachment, content_part, data_url

attachments = sa.Table(
    "attachments",
    storage.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "image" or "text"
    sa.Column("mime", sa.String(64), nullable=False),  # decoded from the bytes: image/png, image/jpeg, text/plain
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

LISTED = [column for column in attachments.c if column.name != "data"]


def add(engine: Engine, message_id: int, owner: str | None, files: list[Attachment]) -> None:
    if not files:
        return
    now = time.time()
    rows = [
        dict(
            message_id=message_id,
            owner=owner,
            name=f.name,
            kind=f.kind,
            mime=f.mime,
            size=len(f.data),
            width=f.width,
            height=f.height,
            data=f.data,
            created_at=now,
        )
        for f in files
    ]
    with engine.begin() as db:
        db.execute(attachments.insert(), rows)


def copy(engine: Engine, from_message: int, to_message: int) -> None:
    """An edited question keeps its files: the new message gets copies of the old one's."""
    columns = [c for c in attachments.c if c.name not in ("id", "message_id")]
    source = sa.select(sa.literal(to_message), *columns).where(attachments.c.message_id == from_message)
    with engine.begin() as db:
        db.execute(attachments.insert().from_select(["message_id", *(c.name for c in columns)], source))


def get(engine: Engine, attachment_id: int, owner: str | None):
    """The file with its bytes, or None when it does not exist or belongs to another owner."""
    query = attachments.select().where(attachments.c.id == attachment_id, attachments.c.owner == owner)
    with engine.connect() as db:
        return db.execute(query).first()


def listed(engine: Engine, message_ids: list[int]) -> dict[int, list]:
    """Message id → its files (without their bytes), in the order they were attached."""
    if not message_ids:
        return {}
    query = sa.select(*LISTED).where(attachments.c.message_id.in_(message_ids)).order_by(attachments.c.id)
    found: dict[int, list] = {}
    with engine.connect() as db:
        for row in db.execute(query):
            found.setdefault(row.message_id, []).append(row)
    return found


def stored_today(engine: Engine, owner: str | None) -> int:
    """Bytes this owner attached since midnight UTC (the OWNER_DAILY_ATTACHMENT_MB budget)."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    query = sa.select(sa.func.coalesce(sa.func.sum(attachments.c.size), 0)).where(
        attachments.c.owner == owner, attachments.c.created_at >= midnight
    )
    with engine.connect() as db:
        return int(db.execute(query).scalar_one())


def exported(engine: Engine, message_ids: list[int]) -> dict[int, list[dict]]:
    """For the JSON export: message id → its files, each whole as a `data:` URL (the export stands alone)."""
    if not message_ids:
        return {}
    query = attachments.select().where(attachments.c.message_id.in_(message_ids)).order_by(attachments.c.id)
    found: dict[int, list[dict]] = {}
    with engine.connect() as db:
        for row in db.execute(query):
            found.setdefault(row.message_id, []).append(
                {"name": row.name, "type": row.mime, "url": data_url(row.mime, row.data)}
            )
    return found


def upstream_parts(db: Connection, rows) -> dict[int, list[dict]]:
    """For `storage.prompt_messages`: message id → its content as OpenAI content parts, for the
    messages that have files: the text first (when there is any), then each file's part."""
    query = attachments.select().where(attachments.c.message_id.in_([row.id for row in rows]))
    found: dict[int, list[dict]] = {}
    for file in db.execute(query.order_by(attachments.c.id)):
        found.setdefault(file.message_id, []).append(content_part(file))
    return {
        row.id: [{"type": "text", "text": row.content}] * bool(row.content) + found[row.id]
        for row in rows
        if row.id in found
    }
