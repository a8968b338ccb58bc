"""The controls around a conversation: regenerate, alternatives, edit and resend, add to an
answer being written, rename, per-conversation model and system prompt, pin to the top of the
list, search and export."""

from __future__ import annotations

import json
import re

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for

from . import answers, attachments_store, context_store, limits, storage
from .continuation import segments
from .message_views import answer_view, conversation_views
from .reasoning import EFFORTS
from .security import current_owner
from .status import Status

bp = Blueprint("controls", __name__)


def trickle():
    return current_app.extensions["trickle"]


def _message_or_404(message_id: int, role: str):
    row = storage.get_message(trickle().engine, message_id, current_owner())
    if row is None or row.role != role:
        abort(404, "There is no such message.")
    return row


def _conversation_or_404(conversation_id: int):
    row = storage.get_conversation(trickle().engine, conversation_id, current_owner())
    if row is None:
        abort(404, "This conversation does not exist (it may have been deleted).")
    return row


def _back_to(conversation_id: int, generation=None):
    """Without JavaScript: wait for the answer, then show the conversation."""
    if generation is not None:
        answers.wait_until_done(generation)
    return redirect(url_for("pages.conversation", conversation_id=conversation_id), 303)


@bp.post("/messages/<int:message_id>/regenerate")
@limits.per_owner
def regenerate(message_id: int):
    """A new answer to the same question; the previous one stays as an alternative (1/2)."""
    app = trickle()
    old = _message_or_404(message_id, "assistant")
    if old.status == Status.STREAMING:
        abort(409, "This answer is still being written; stop it first.")
    generation = answers.regenerate(old)
    if not request.headers.get("HX-Request"):
        return _back_to(old.conversation_id, generation)
    row = storage.get_message(app.engine, generation.key)
    return render_template("_message.html", m=answer_view(row, generation))


@bp.post("/messages/<int:message_id>/activate")
def activate(message_id: int):
    """Flip to another alternative answer; it is the one sent upstream from now on."""
    app = trickle()
    row = _message_or_404(message_id, "assistant")
    storage.activate(app.engine, row)
    if not request.headers.get("HX-Request"):
        return _back_to(row.conversation_id)
    return render_template("_message.html", m=answer_view(row, app.registry.get(row.id)))


@bp.post("/messages/<int:message_id>/edit")
@limits.per_owner
def edit(message_id: int):
    """Replace a question: later turns are hidden (kept in the database), a new answer starts."""
    question = _message_or_404(message_id, "user")
    if not question.active:
        abort(409, "This message was already replaced.")
    content = answers.question_text(request.form.get("content"))
    generation = answers.edit(question, content)
    if not request.headers.get("HX-Request"):
        return _back_to(question.conversation_id, generation)
    return render_template("_messages.html", messages=conversation_views(question.conversation_id))


@bp.post("/messages/<int:message_id>/context")
@limits.per_owner
def add_context(message_id: int):
    """Add to the answer being written: it keeps what it wrote and goes on with this in mind."""
    app = trickle()
    answer = _message_or_404(message_id, "assistant")
    generation = app.registry.get(message_id)
    if answer.status != Status.STREAMING:
        abort(409, "This answer has ended: send your message as a new one.")
    if generation is None:  # written by another worker, which this request cannot reach
        abort(409, "This answer is being written by another server process: wait for it to end, then send this.")
    answers.add_context(generation, request.form.get("content"))
    if not request.headers.get("HX-Request"):
        return _back_to(answer.conversation_id, generation)
    return render_template("_message.html", m=answer_view(storage.get_message(app.engine, message_id), generation))


@bp.post("/c/<int:conversation_id>/rename")
def rename(conversation_id: int):
    app = trickle()
    conversation = _conversation_or_404(conversation_id)
    title = " ".join((request.form.get("title") or "").split())[:200]
    if not title:
        abort(400, "A title cannot be empty.")
    storage.update_conversation(app.engine, conversation_id, title=title)
    if not request.headers.get("HX-Request"):
        return _back_to(conversation_id)
    return render_template("_title.html", conversation=storage.get_conversation(app.engine, conversation.id))


@bp.post("/c/<int:conversation_id>/options")
def options(conversation_id: int):
    """Per-conversation model, system prompt and reasoning effort."""
    app = trickle()
    _conversation_or_404(conversation_id)
    model = (request.form.get("model") or "").strip()
    if model and model not in app.models():
        abort(400, f"Unknown model {model!r}.")
    system_prompt = (request.form.get("system_prompt") or "").strip()
    if len(system_prompt) > app.settings.max_input_chars:
        abort(413, "The system prompt is too long.")
    effort = (request.form.get("reasoning_effort") or "").strip()
    if effort and effort not in EFFORTS:
        abort(400, f"Unknown reasoning effort {effort!r}.")
    storage.update_conversation(
        app.engine,
        conversation_id,
        model=model or None,
        system_prompt=system_prompt or None,
        reasoning_effort=effort or None,
    )
    if not request.headers.get("HX-Request"):
        return _back_to(conversation_id)
    return render_template("_saved.html", model=model or app.settings.chat_model)


@bp.get("/conversations")
def search():
    """The sidebar rows matching `q` (htmx active search; the full page does the same with ?q=)."""
    query = request.args.get("q", "").strip()
    if not request.headers.get("HX-Request"):
        return redirect(url_for("pages.index", q=query or None))
    return _sidebar_rows(query, _page_conversation())


@bp.post("/c/<int:conversation_id>/<any(pin, unpin):action>")
def pin(conversation_id: int, action: str):
    """Pin a conversation to the top of the list, or unpin it; answers the list (htmx) or the page
    it was on (the form's `current`, with the search `q`), its list open."""
    if not storage.pin_conversation(trickle().engine, conversation_id, current_owner(), action == "pin"):
        abort(404, "This conversation does not exist (it may have been deleted).")
    query = (request.form.get("q") or "").strip()
    if request.headers.get("HX-Request"):
        return _sidebar_rows(query, _page_conversation())
    current = _id_or_none(request.form.get("current") or "")
    if current is None:
        return redirect(url_for("pages.index", q=query or None, _anchor="sidebar"), 303)
    return redirect(url_for("pages.conversation", conversation_id=current, q=query or None, _anchor="sidebar"), 303)


def _id_or_none(raw: str) -> int | None:
    """Client input: ASCII digits of an id a database can hold, checked before `int()`."""
    if not re.fullmatch(r"[0-9]{1,19}", raw.strip()):
        return None
    return int(raw) if int(raw) <= 2**63 - 1 else None


def _page_conversation() -> int | None:
    """The conversation of the page htmx sent from (its URL, pushed after a new chat's first answer)."""
    match = re.search(r"/c/([0-9]{1,19})(?![0-9])", request.headers.get("HX-Current-URL", ""))
    return _id_or_none(match.group(1)) if match else None


def _sidebar_rows(query: str, current: int | None):
    """The sidebar's rows (pinned first), those matching `query` if any, `current` marked as the page's."""
    rows = storage.list_conversations(trickle().engine, current_owner(), search=query or None)
    conversation = {"id": current} if current is not None else None
    return render_template("_conversation_rows.html", conversations=rows, conversation=conversation, search=query)


def _filename(title: str, extension: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-")[:60] or "conversation"
    return f"{stem}.{extension}"


def _thought_markdown(row) -> str:
    """A thinking model's thought, as a collapsed section before its answer (GitHub and most
    Markdown viewers show `<details>`)."""
    if not row.thoughts:
        return ""
    summary = "Thought" if row.thought_ms is None else f"Thought for {max(1, round(row.thought_ms / 1000))} s"
    return f"<details><summary>{summary}</summary>\n\n{row.thoughts.strip()}\n\n</details>\n\n"


def _quoted(text: str) -> str:
    """Text as the rest of a Markdown quote: each of its lines stays in the quote."""
    return "\n> ".join(text.splitlines())


@bp.get("/c/<int:conversation_id>/export.<any(md, json):fmt>")
def export(conversation_id: int, fmt: str):
    """Download the conversation as shown (active messages) as Markdown or JSON."""
    app = trickle()
    conversation = _conversation_or_404(conversation_id)
    rows = storage.list_messages(app.engine, conversation_id)
    added = context_store.listed(app.engine, [r.id for r in rows if r.role == "assistant"])
    if fmt == "json":
        files = attachments_store.exported(app.engine, [r.id for r in rows if r.role == "user"])
        body = json.dumps(
            {
                "id": conversation.id,
                "title": conversation.title,
                "model": conversation.model or app.settings.chat_model,
                "system_prompt": conversation.system_prompt,
                "pinned": conversation.pinned_at is not None,
                "messages": [
                    {
                        "role": r.role,
                        "content": r.content,
                        "status": r.status,
                        "model": r.model,
                        "tokens_in": r.tokens_in,
                        "tokens_out": r.tokens_out,
                        **({"thoughts": r.thoughts, "thought_ms": r.thought_ms} if r.thoughts else {}),
                        **({"attachments": files[r.id]} if r.id in files else {}),
                        **(
                            {"added": [{"at": at, "content": text} for at, text in added[r.id]]}
                            if r.id in added
                            else {}
                        ),
                    }
                    for r in rows
                ],
            },
            ensure_ascii=False,
            indent=2,
        )
        mimetype = "application/json"
    else:
        parts = [f"# {conversation.title}\n"]
        if conversation.system_prompt:
            parts.append(f"> System: {conversation.system_prompt}\n")
        for r in rows:
            heading = "You" if r.role == "user" else f"Assistant ({r.model})" if r.model else "Assistant"
            before, rest = segments(r.content, added.get(r.id, []))
            body = "".join(f"{part.strip()}\n\n> **You added:** {_quoted(text)}\n\n" for part, text in before) + rest
            parts.append(f"## {heading}\n\n{_thought_markdown(r)}{body}\n")
        body = "\n".join(parts)
        mimetype = "text/markdown"
    disposition = f'attachment; filename="{_filename(conversation.title, fmt)}"'
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": disposition})
