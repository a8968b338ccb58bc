"""The chat pages and their htmx fragments; every page works from the server's HTML alone."""

from __future__ import annotations

import time

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for
from markupsafe import Markup

from . import answers, context_store, database, ledger, limits, open_streams, sse, storage
from .listen import PageEvents, Shown, sse_stream
from .message_views import answer_view, conversation_views, message_view, thought_view
from .render import render_markdown, renders_by_blocks
from .security import current_owner
from .status import Status
from .textlog import EndedMessage
from .validation import ATTACHMENT_FIELD

bp = Blueprint("pages", __name__)


def trickle():
    return current_app.extensions["trickle"]


def conversation_page(conversation=None, status: int = 200):
    app = trickle()
    views = conversation_views(conversation.id) if conversation else []
    search = request.args.get("q", "").strip()
    owner = current_owner()
    return render_template(
        "conversation.html",
        conversation=conversation,
        messages=views,
        search=search,
        conversations=storage.list_conversations(app.engine, owner, search=search or None),
        settings=app.settings,
        provider_label=app.provider.label,
        models=app.models(),
        usage=ledger.usage_totals(app.engine, owner),
        conversation_usage=ledger.usage_totals(app.engine, owner, conversation.id) if conversation else None,
    ), status


@bp.get("/")
def index():
    """A new chat: the welcome panel and an empty composer."""
    return conversation_page()


@bp.get("/c/<int:conversation_id>")
def conversation(conversation_id: int):
    row = storage.get_conversation(trickle().engine, conversation_id, current_owner())
    if row is None:
        abort(404, "This conversation does not exist (it may have been deleted).")
    return conversation_page(row)


def _conversation_id() -> int | None:
    """The posted conversation_id: none for a new chat; a 404 for one no database can hold.

    Its length is checked before `int()`, which raises over 4,300 digits; "0" is a new chat too."""
    raw_id = (request.form.get("conversation_id") or "").strip()
    if raw_id and not (raw_id.isascii() and raw_id.isdigit()):
        abort(400, "conversation_id must be a number.")
    digits = raw_id.lstrip("0")
    if len(digits) > 19 or (digits and int(digits) > 2**63 - 1):
        abort(404, "This conversation no longer exists.")
    return int(digits) if digits else None


def _chosen_model() -> str:
    """The new-chat picker's model, if one was chosen: it must be one people can pick."""
    chosen = request.form.get("model", "").strip()
    if chosen and chosen not in trickle().models():
        abort(400, f"Unknown model {chosen!r}.")
    return chosen


@bp.post("/messages")
@limits.per_owner
def send_message():
    """Ask a question (in a new chat when no conversation is given); answers both bubbles."""
    app = trickle()
    uploads = [(f.filename, f.read()) for f in request.files.getlist(ATTACHMENT_FIELD) if f.filename]
    content = answers.question_text(request.form.get("content"), with_files=bool(uploads))
    conversation_id = _conversation_id()
    files = answers.attached_files(uploads)
    sent = answers.ask(content, conversation_id, "" if conversation_id else _chosen_model(), files)
    if not request.headers.get("HX-Request"):  # no JavaScript: answer once complete
        answers.wait_until_done(sent.generation)
        anchor = f"message-{sent.answer_id}"
        return redirect(url_for("pages.conversation", conversation_id=sent.conversation.id, _anchor=anchor), 303)
    pushed = {"HX-Push-Url": url_for("pages.conversation", conversation_id=sent.conversation.id)}
    exchange = render_template(
        "_exchange.html",
        user=message_view(storage.get_message(app.engine, sent.question_id)),
        answer=message_view(storage.get_message(app.engine, sent.answer_id), sent.generation),
        conversation=sent.conversation,
        created=sent.created,
        models=app.models(),
        settings=app.settings,
    )
    return exchange, 200, pushed if sent.created else {}


@bp.post("/messages/<int:message_id>/retry")
@limits.per_owner
def retry_message(message_id: int):
    """Write an ended answer again (after an error, a stop or a restart)."""
    app = trickle()
    row = storage.get_message(app.engine, message_id, current_owner())
    if row is None or row.role != "assistant":
        abort(404, "There is no such answer.")
    if row.status == Status.STREAMING:
        abort(409, "This answer is still being written.")
    generation = answers.retry(row)
    if not request.headers.get("HX-Request"):
        answers.wait_until_done(generation)
        return redirect(url_for("pages.conversation", conversation_id=row.conversation_id), 303)
    return render_template("_message.html", m=answer_view(storage.get_message(app.engine, message_id), generation))


@bp.post("/messages/<int:message_id>/stop")
def stop_message(message_id: int):
    """Stop an answer mid-stream; the text so far is kept. Works from any worker."""
    app = trickle()
    row = storage.get_message(app.engine, message_id, current_owner())
    if row is None:
        abort(404, "There is no such answer.")
    app.registry.stop(message_id)
    if not request.headers.get("HX-Request"):
        generation = app.registry.get(message_id)
        if generation is not None:
            generation.done.wait(5)
        return redirect(url_for("pages.conversation", conversation_id=row.conversation_id), 303)
    return "", 204


@bp.get("/messages/<int:message_id>/events")
def message_events(message_id: int):
    """Attach to an answer: replay from the cursor, follow it live, end with `done`.

    Never starts a generation, so the browser's automatic re-request of an
    ended stream is harmless: it gets `done` at once.
    """
    app = trickle()
    cursor = request.headers.get("Last-Event-ID", type=int)
    if cursor is None:
        cursor = request.args.get("cursor", default=0, type=int)
    row = storage.get_message(app.engine, message_id, current_owner())
    if row is None:
        abort(404, "There is no such answer.")
    followed = app.registry.get(message_id)
    if followed is None:
        if row.status == Status.STREAMING:  # written by another worker: follow it from here
            followed = app.registry.followers.track(message_id, row.content, row.thoughts or "", row.thought_ms)
        else:
            followed = EndedMessage(row.content, row.status, row.error, row.thoughts or "", row.thought_ms)
    render_final, render_thought = _stream_renderers(message_id)
    since = context_store.last_offset(app.engine, message_id) if not followed.finished else None
    stream = sse_stream(
        followed,
        cursor,
        PageEvents(message_id, render_final, render_thought, since or 0),
        flush_interval=app.settings.flush_interval,
        ping_interval=app.settings.ping_interval,
    )
    return Response(open_streams.held(stream), headers=sse.HEADERS)  # a 429 past MAX_STREAMS_PER_*


def _stream_renderers(message_id: int):
    """Render the thought disclosure and the final bubble (with the conversation's totals, out of
    band) after the request is gone: they read nothing from `request` later."""
    app = current_app._get_current_object()
    environ = {
        key: request.environ[key]
        for key in ("wsgi.url_scheme", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST", "SCRIPT_NAME")
        if key in request.environ
    }
    environ.update({"PATH_INFO": "/", "REQUEST_METHOD": "GET"})
    token = session.get("csrf", "")
    owner = current_owner()

    def render_final(_followed, shown: Shown | None) -> str:
        with app.request_context(environ):
            session["csrf"] = token  # the forms in the fragment carry this page's token
            state = app.extensions["trickle"]
            row = storage.get_message(state.engine, message_id)
            if row is None:
                return ""
            view = answer_view(row)
            kept = None if view["added"] else _kept_blocks(row, shown)  # the page's blocks follow the last addition
            if kept is not None:
                view["html"] = kept
            fragment = render_template("_message.html", m=view).strip()
            if state.titles.named(row.conversation_id):  # the model's title arrived during this answer
                conversation = storage.get_conversation(state.engine, row.conversation_id)
                fragment += render_template("_title.html", conversation=conversation, oob=True)
            totals = ledger.usage_totals(state.engine, owner, row.conversation_id)  # this answer's included
            return fragment + render_template("_usage.html", conversation_usage=totals, oob=True)

    def render_thought(thought: str, thinking: bool, thought_ms: int | None) -> str:
        with app.request_context(environ):
            view = thought_view(message_id, Status.STREAMING, thought, thought_ms, thinking)
            return render_template("_thought.html", m=view).strip()

    return render_final, render_thought


def _kept_blocks(row, shown: Shown | None) -> Markup | None:
    """The final body, keeping the finished blocks the page already shows (`hx-preserve`) and
    rendering only the tail: a long answer's end is then a small swap, not a new page's worth of
    HTML to parse and lay out. None when the page may not hold exactly the final render's blocks."""
    text = row.content or ""
    if shown is None or shown.length != len(row.thoughts or "") + len(text):
        return None
    if len(shown.tail) == len(text):  # no finished block shown: nothing to keep
        return None
    if not text.endswith(shown.tail) or not renders_by_blocks(text):
        return None
    return Markup(f'<div class="blocks" id="blocks-{row.id}" hx-preserve="true"></div>') + render_markdown(shown.tail)


@bp.post("/c/<int:conversation_id>/delete")
def delete_conversation(conversation_id: int):
    app = trickle()
    if storage.get_conversation(app.engine, conversation_id, current_owner()) is None:
        abort(404, "This conversation does not exist (it may have been deleted).")
    for row in storage.list_messages(app.engine, conversation_id):
        if row.status == Status.STREAMING:
            app.registry.stop(row.id)
    storage.delete_conversation(app.engine, conversation_id)
    if request.headers.get("HX-Request"):
        current = request.headers.get("HX-Current-URL", "")
        if current.rstrip("/").endswith(f"/c/{conversation_id}"):
            return "", 200, {"HX-Redirect": url_for("pages.index")}
        return "", 200
    return redirect(url_for("pages.index"), 303)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers and the database is reachable."""
    started = time.monotonic()
    try:
        database.ping(trickle().engine)
    except Exception:
        return {"status": "error", "database": "unreachable"}, 503
    return {
        "status": "ok",
        "database_ms": round((time.monotonic() - started) * 1000, 1),
        "live_generations": len(trickle().registry.live),
    }
