"""The chat pages and their htmx fragments; every page works from the server's HTML alone."""

from __future__ import annotations

import time

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for
from markupsafe import Markup

from . import limits, sse, storage
from .errors import error_response
from .listen import PageEvents, Shown, sse_stream
from .registry import Draining
from .render import Splitter, render_markdown, renders_by_blocks
from .security import current_owner
from .status import Status
from .textlog import EndedMessage
from .titles import first_line_title

bp = Blueprint("pages", __name__)


def trickle():
    return current_app.extensions["trickle"]


def message_view(row, live=None, siblings: list[int] | None = None) -> dict:
    """What `_message.html` needs for one message, finished or still streaming.

    `siblings` are the ids of every answer to the same question (regenerated ones).
    """
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


def _tokens_per_second(row) -> float | None:
    if not row.tokens_out or row.duration_ms is None or row.ttft_ms is None:
        return None
    seconds = (row.duration_ms - row.ttft_ms) / 1000
    return round(row.tokens_out / seconds, 1) if seconds > 0 else None


def answer_view(row, live=None) -> dict:
    """A message with its alternatives looked up (for fragments that show one message)."""
    siblings = storage.alternatives(trickle().engine, row) if row.role == "assistant" else None
    return message_view(row, live, siblings)


def conversation_page(conversation=None, status: int = 200):
    app = trickle()
    registry = app.registry
    rows = storage.list_messages(app.engine, conversation.id) if conversation else []
    siblings = storage.alternatives_by_question(app.engine, conversation.id) if conversation else {}
    views = [message_view(row, registry.get(row.id), siblings.get(row.reply_to)) for row in rows]
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
        usage=storage.usage_totals(app.engine, owner),
        conversation_usage=storage.usage_totals(app.engine, owner, conversation.id) if conversation else None,
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


def message_content():
    """The posted message, cleaned, and None; or None and the error response that says what is wrong."""
    content = (request.form.get("content") or "").replace("\x00", "").strip()  # PostgreSQL refuses NUL
    limit = trickle().settings.max_input_chars
    if not content:
        return None, error_response(400, "Type a message first.")
    if len(content) > limit:
        return None, error_response(413, f"Your message is {len(content):,} characters long; the limit is {limit:,}.")
    return content, None


@bp.post("/messages")
@limits.per_owner
def send_message():
    """Store the question and an empty answer, start the generation, return both bubbles."""
    app = trickle()
    content, problem = message_content()
    if problem:
        return problem
    raw_id = (request.form.get("conversation_id") or "").strip()
    if raw_id and not (raw_id.isascii() and raw_id.isdigit()):
        return error_response(400, "conversation_id must be a number.")
    conversation_id = int(raw_id) if raw_id else None
    if conversation_id is not None and conversation_id > 2**63 - 1:
        return error_response(404, "This conversation no longer exists.")
    chosen = "" if conversation_id else request.form.get("model", "").strip()  # the new-chat picker
    if chosen and chosen not in app.models():
        return error_response(400, f"Unknown model {chosen!r}.")
    owner = current_owner()
    created = False
    if conversation_id:
        conversation = storage.get_conversation(app.engine, conversation_id, owner)
        if conversation is None:
            return error_response(404, "This conversation no longer exists.")
    refused = limits.refusal(app.engine, app.settings, app.registry, owner, conversation_id)
    if refused:
        return error_response(429, refused)
    if not conversation_id:
        title = first_line_title(content)
        conversation_id = storage.create_conversation(
            app.engine, title, owner=owner, system_prompt=app.settings.system_prompt
        )
        conversation = storage.get_conversation(app.engine, conversation_id)
        created = True
    if chosen and chosen != app.settings.chat_model:
        storage.update_conversation(app.engine, conversation_id, model=chosen)
        conversation = storage.get_conversation(app.engine, conversation_id)
    model = conversation.model or app.settings.chat_model
    user_id, answer_id = storage.append_exchange(app.engine, conversation_id, content, model)
    try:
        generation = start_answer(answer_id, conversation_id, model)
    except Draining as err:
        storage.finish_message(app.engine, answer_id, "", Status.INTERRUPTED, str(err))
        return error_response(503, str(err))
    if created:
        app.titles.ask(conversation_id, content, model, title)

    if not request.headers.get("HX-Request"):  # no JavaScript: answer once complete
        wait_for_answer(generation)
        return redirect(
            url_for("pages.conversation", conversation_id=conversation_id, _anchor=f"message-{answer_id}"), 303
        )
    user_row = storage.get_message(app.engine, user_id)
    answer_row = storage.get_message(app.engine, answer_id)
    headers = {"HX-Push-Url": url_for("pages.conversation", conversation_id=conversation_id)} if created else {}
    return (
        render_template(
            "_exchange.html",
            user=message_view(user_row),
            answer=message_view(answer_row, generation),
            conversation=conversation,
            created=created,
            models=app.models(),
            settings=app.settings,
        ),
        200,
        headers,
    )


def start_answer(answer_id: int, conversation_id: int, model: str):
    app = trickle()
    history = storage.prompt_messages(app.engine, conversation_id, answer_id)
    return app.registry.start(
        answer_id, app.provider, history, model, owner=current_owner(), conversation_id=conversation_id
    )


def wait_for_answer(generation) -> None:
    generation.attach()  # a waiting request is a listener: the answer must not be dropped as unwatched
    try:
        generation.done.wait(trickle().settings.stream_max + 10)
    finally:
        generation.detach()


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
    refused = limits.refusal(app.engine, app.settings, app.registry, current_owner())
    if refused:
        return error_response(429, refused)
    conversation = storage.get_conversation(app.engine, row.conversation_id)
    model = conversation.model or app.settings.chat_model
    storage.restart_message(app.engine, message_id, model)
    try:
        generation = start_answer(message_id, row.conversation_id, model)
    except Draining as err:
        storage.finish_message(app.engine, message_id, "", Status.INTERRUPTED, str(err))
        return error_response(503, str(err))
    if not request.headers.get("HX-Request"):
        wait_for_answer(generation)
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
            followed = app.registry.followers.track(message_id, row.content)
        else:
            followed = EndedMessage(row.content, row.status, row.error)
    stream = sse_stream(
        followed,
        cursor,
        PageEvents(message_id, _final_renderer(message_id)),
        flush_interval=app.settings.flush_interval,
        ping_interval=app.settings.ping_interval,
    )
    return Response(stream, headers=sse.HEADERS)


def _final_renderer(message_id: int):
    """Render the final bubble after the request is gone: reads nothing from `request` later."""
    app = current_app._get_current_object()
    environ = {
        key: request.environ[key]
        for key in ("wsgi.url_scheme", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST", "SCRIPT_NAME")
        if key in request.environ
    }
    environ.update({"PATH_INFO": "/", "REQUEST_METHOD": "GET"})
    token = session.get("csrf", "")

    def render(_followed, shown: Shown | None) -> str:
        with app.request_context(environ):
            session["csrf"] = token  # the forms in the fragment carry this page's token
            state = app.extensions["trickle"]
            row = storage.get_message(state.engine, message_id)
            if row is None:
                return ""
            view = answer_view(row)
            kept = _kept_blocks(row, shown)
            if kept is not None:
                view["html"] = kept
            fragment = render_template("_message.html", m=view).strip()
            if state.titles.named(row.conversation_id):  # the model's title arrived during this answer
                conversation = storage.get_conversation(state.engine, row.conversation_id)
                fragment += render_template("_title.html", conversation=conversation, oob=True)
            return fragment

    return render


def _kept_blocks(row, shown: Shown | None) -> Markup | None:
    """The final body, keeping the finished blocks the page already shows (`hx-preserve`) and
    rendering only the tail: a long answer's end is then a small swap, not a new page's worth of
    HTML to parse and lay out. None when the page may not hold exactly the final render's blocks."""
    text = row.content or ""
    if shown is None or shown.length != len(text) or not shown.tail or len(shown.tail) == len(text):
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
        storage.ping(trickle().engine)
    except Exception:
        return {"status": "error", "database": "unreachable"}, 503
    return {
        "status": "ok",
        "database_ms": round((time.monotonic() - started) * 1000, 1),
        "live_generations": len(trickle().registry.live),
    }
