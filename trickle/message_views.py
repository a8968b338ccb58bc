"""What `_message.html` shows for a message: one view-model for the page, its fragments and the stream's end."""

from __future__ import annotations

from flask import current_app, url_for
from markupsafe import Markup

from . import attachments_store, context_store, storage
from .continuation import segments
from .live_markdown import LiveTail
from .render import Splitter, render_markdown
from .status import Status


def message_view(
    row, live=None, siblings: list[int] | None = None, files: list | None = None, added: list | None = None
) -> dict:
    """What `_message.html` needs for one message, finished or still streaming.

    `siblings` are the ids of every answer to the same question (regenerated ones); `files` its
    attachments (looked up when not given); `added` the context added to an answer while it was
    written, as (offset, text) (`context_store.listed`): the text before each is shown, then it.
    """
    if files is None and row.role == "user":
        files = attachments_store.listed(current_app.extensions["trickle"].engine, [row.id]).get(row.id, [])
    status = live.status if live is not None else row.status
    text = live.text() if live is not None else row.content
    thought = live.thought() if live is not None else (row.thoughts or "")
    thought_ms = live.thought_ms if live is not None else row.thought_ms
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
        "first_thought_ms": _first_thought_ms(row),
        "siblings": siblings or [row.id],
        "files": [_file_view(f) for f in files or ()],
    }
    if row.role == "assistant":
        view.update(thought_view(row.id, status, thought, thought_ms, not text))
    before, rest = segments(text, added or [])
    view["added"] = [{"html": render_markdown(part), "text": context} for part, context in before]
    if status == Status.STREAMING:
        splitter = Splitter()  # what the stream writes follows the last addition (`PageEvents(since=…)`)
        view.update(
            blocks=splitter.feed(rest),
            tail_html=Markup(LiveTail(f"tail-{row.id}", splitter.tail).html()),
            cursor=len(thought) + len(text),
            notice=live.notice if live is not None else None,
        )
    elif row.role == "assistant":
        view["html"] = render_markdown(rest)
    return view


def thought_view(message_id: int, status: str, thought: str, thought_ms: int | None, thinking: bool) -> dict:
    """What `_thought.html` needs: the disclosure open and fed live while the model thinks (or may
    yet: hidden while empty), closed ("Thought for N s") once the answer began."""
    view = {
        "id": message_id,
        "status": status,
        "thought": thought,
        "thinking": thinking and status == Status.STREAMING,
        "thought_s": None if thought_ms is None else max(1, round(thought_ms / 1000)),
    }
    if view["thinking"]:
        splitter = Splitter()
        thought_blocks = splitter.feed(thought)
        thought_tail = Markup(LiveTail(f"thought-tail-{message_id}", splitter.tail).html())
        view.update(thought_blocks=thought_blocks, thought_tail_html=thought_tail)
    elif thought:
        view["thought_html"] = render_markdown(thought)
    return view


def _first_thought_ms(row) -> int | None:
    """The time to the first thought: the answer's first token came `thought_ms` after it."""
    if row.ttft_ms is None or not row.thought_ms:
        return None
    return max(0, row.ttft_ms - row.thought_ms)


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
    # The tokens out include the thought's: they count from the first thought on.
    seconds = (row.duration_ms - row.ttft_ms + (row.thought_ms or 0)) / 1000
    return round(row.tokens_out / seconds, 1) if seconds > 0 else None


def answer_view(row, live=None) -> dict:
    """A message with its alternatives looked up (for fragments that show one message)."""
    engine = current_app.extensions["trickle"].engine
    if row.role != "assistant":
        return message_view(row, live)
    added = context_store.listed(engine, [row.id]).get(row.id, [])
    return message_view(row, live, storage.alternatives(engine, row), added=added)


def conversation_views(conversation_id: int) -> list[dict]:
    """Every shown message of a conversation, the live ones as far as they are written."""
    app = current_app.extensions["trickle"]
    rows = storage.list_messages(app.engine, conversation_id)
    siblings = storage.alternatives_by_question(app.engine, conversation_id)
    files = attachments_store.listed(app.engine, [row.id for row in rows if row.role == "user"])
    added = context_store.listed(app.engine, [row.id for row in rows if row.role == "assistant"])
    return [
        message_view(
            row, app.registry.get(row.id), siblings.get(row.reply_to), files.get(row.id, []), added.get(row.id)
        )
        for row in rows
    ]
