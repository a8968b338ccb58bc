"""What `_message.html` shows for a message: one view-model for the page, its fragments and the stream's end."""

from __future__ import annotations

from flask import current_app, url_for

from . import attachments_store, storage
from .render import Splitter, render_markdown
from .status import Status


def message_view(row, live=None, siblings: list[int] | None = None, files: list | None = None) -> dict:
    """What `_message.html` needs for one message, finished or still streaming.

    `siblings` are the ids of every answer to the same question (regenerated ones); `files` its
    attachments (looked up when not given).
    """
    if files is None and row.role == "user":
        files = attachments_store.listed(current_app.extensions["trickle"].engine, [row.id]).get(row.id, [])
    status = live.status if live is not None else row.status
    text = live.text() if live is not None else row.content
    view = {
        "id": row.id,
        "role": row.role,
        "status": status,
        "model": row.model,
        "error": live.error if live is not None else row.error,
        "text": text,
        "tokens_in": row.tokens_in,
        "tokens_out": row.tokens_out,
        "ttft_ms": row.ttft_ms,
        "duration_ms": row.duration_ms,
        "tokens_per_s": _tokens_per_second(row),
        "siblings": siblings or [row.id],
        "files": [_file_view(f) for f in files or ()],
    }
    if status == Status.STREAMING:
        splitter = Splitter()
        view.update(
            blocks=splitter.feed(text),
            tail=splitter.tail,
            cursor=len(text),
            notice=live.notice if live is not None else None,
        )
    elif row.role == "assistant":
        view["html"] = render_markdown(text)
    return view


def _file_view(row) -> dict:
    return {
        "url": url_for("attachments.attachment", attachment_id=row.id),
        "name": row.name,
        "kind": row.kind,
        "width": row.width,
        "height": row.height,
        "size": row.size,
    }


def _tokens_per_second(row) -> float | None:
    if not row.tokens_out or row.duration_ms is None or row.ttft_ms is None:
        return None
    seconds = (row.duration_ms - row.ttft_ms) / 1000
    return round(row.tokens_out / seconds, 1) if seconds > 0 else None


def answer_view(row, live=None) -> dict:
    """A message with its alternatives looked up (for fragments that show one message)."""
    engine = current_app.extensions["trickle"].engine
    siblings = storage.alternatives(engine, row) if row.role == "assistant" else None
    return message_view(row, live, siblings)


def conversation_views(conversation_id: int) -> list[dict]:
    """Every shown message of a conversation, the live ones as far as they are written."""
    app = current_app.extensions["trickle"]
    rows = storage.list_messages(app.engine, conversation_id)
    siblings = storage.alternatives_by_question(app.engine, conversation_id)
    files = attachments_store.listed(app.engine, [row.id for row in rows if row.role == "user"])
    return [
        message_view(row, app.registry.get(row.id), siblings.get(row.reply_to), files.get(row.id, [])) for row in rows
    ]
