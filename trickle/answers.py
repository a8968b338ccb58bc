"""Starting an answer: the one way in, whoever asks (the page and its no-JS form, Retry,
regenerate, edit and resend, `/api/chat` in both its protocols, `/ws`); and adding context
to one being written (the page's "Add to this answer", `/ws`'s `context`).

Every start takes the same steps: refuse when a limit says so (429), write the rows, start
the generation in this worker's registry. While the worker drains, a stored answer is
recorded `interrupted` and the request refused (503). Refusals are raised as HTTP errors,
which `errors.py` (or `ws.py`) answers in the form the client speaks.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import gevent
from flask import abort, current_app, g

from . import attachments_store, context_store, limits, live_rows, reasoning, storage
from .attachments import Attachment, read_attachment
from .continuation import interleaved
from .generation import Generation
from .registry import Draining
from .security import current_owner
from .status import Status
from .titles import first_line_title

log = logging.getLogger("trickle.answers")


@dataclass(frozen=True)
class Exchange:
    """A question just asked and the answer being written to it."""

    conversation: object  # its row, as it is now
    question_id: int
    answer_id: int
    generation: Generation
    created: bool  # the question started this conversation


def _trickle():
    return current_app.extensions["trickle"]


def question_text(posted: str | None, with_files: bool = False) -> str:
    """The question as typed, cleaned (line breaks as typed: `\\n`); a 400 when there is none (files
    alone will do), a 413 over MAX_INPUT_CHARS."""
    content = (posted or "").replace("\x00", "").strip()  # PostgreSQL refuses NUL
    content = content.replace("\r\n", "\n")  # a multipart form sends a textarea's line breaks as CRLF
    limit = _trickle().settings.max_input_chars
    if not content and not with_files:
        abort(400, "Type a message first.")
    if len(content) > limit:
        abort(413, f"Your message is {len(content):,} characters long; the limit is {limit:,} (MAX_INPUT_CHARS).")
    return content


def attached_files(uploads: list[tuple[str | None, bytes]]) -> list[Attachment]:
    """The files of a question, read and checked against every attachment limit, before anything is
    stored: a 413 past a count or size (MAX_ATTACHMENTS, MESSAGE_ATTACHMENTS_MAX_MB,
    OWNER_DAILY_ATTACHMENT_MB), a 4xx for a file that cannot be attached."""
    settings = _trickle().settings
    if not uploads:
        return []
    if len(uploads) > settings.max_attachments:
        abort(413, f"{len(uploads)} files attached; a message may have {settings.max_attachments} (MAX_ATTACHMENTS).")
    total = sum(len(data) for _, data in uploads)
    if total > settings.message_attachments_max_bytes:
        allowed = settings.message_attachments_max_bytes / (1024 * 1024)
        abort(
            413,
            f"The files come to {total / (1024 * 1024):.1f} MB; a message may attach {allowed:.1f} MB "
            "(MESSAGE_ATTACHMENTS_MAX_MB).",
        )
    files = [read_attachment(name, data, settings.attachment_max_bytes) for name, data in uploads]
    today = attachments_store.stored_today(_trickle().engine, current_owner())
    if today + sum(len(f.data) for f in files) > settings.owner_daily_attachment_bytes:
        abort(413, "You have attached as much as one day allows (OWNER_DAILY_ATTACHMENT_MB); try again tomorrow (UTC).")
    return files


def ask(content: str, conversation_id: int | None, model: str = "", files: list[Attachment] = ()) -> Exchange:
    """A question in one of the owner's conversations, or in a new one (on `model`, when chosen),
    with the files of `attached_files`."""
    app = _trickle()
    owner = current_owner()
    conversation = None
    if conversation_id is not None:
        conversation = storage.get_conversation(app.engine, conversation_id, owner)
        if conversation is None:
            abort(404, "This conversation no longer exists.")
    _refuse_if_over_a_limit(owner, conversation_id)
    created = conversation is None
    if created:
        chosen = model if model and model != app.settings.chat_model else None
        new_id = storage.create_conversation(
            app.engine,
            first_line_title(content or files[0].name),
            model=chosen,
            owner=owner,
            system_prompt=app.settings.system_prompt,
        )
        conversation = storage.get_conversation(app.engine, new_id)
    model = _model_of(conversation)
    question_id, answer_id = storage.append_exchange(app.engine, conversation.id, content, model)
    attachments_store.add(app.engine, question_id, owner, list(files))
    generation = _start(answer_id, conversation, model)
    if created:
        app.titles.ask(conversation.id, content, model, conversation.title)
    return Exchange(conversation, question_id, answer_id, generation, created)


def retry(answer) -> Generation:
    """Write an ended answer again, in place."""
    app = _trickle()
    _refuse_if_over_a_limit(current_owner())
    conversation = storage.get_conversation(app.engine, answer.conversation_id)
    model = _model_of(conversation)
    storage.restart_message(app.engine, answer.id, model)
    context_store.move_to_start(app.engine, answer.id)  # what was added to it stays, before all of it
    added = context_store.listed(app.engine, [answer.id]).get(answer.id, [])
    return _start(answer.id, conversation, model, interleaved("", added))


def regenerate(answer) -> Generation:
    """A new answer to the same question (its row's id is the generation's key); the old one stays."""
    app = _trickle()
    _refuse_if_over_a_limit(current_owner())
    conversation = storage.get_conversation(app.engine, answer.conversation_id)
    model = _model_of(conversation)
    answer_id = storage.regenerate(app.engine, answer.id, model)
    return _start(answer_id, conversation, model)


def edit(question, content: str) -> Generation:
    """Replace a question: the answers being written after it stop, its later turns are hidden."""
    app = _trickle()
    _refuse_if_over_a_limit(current_owner())
    for row in storage.list_messages(app.engine, question.conversation_id):
        if row.id > question.id and row.status == Status.STREAMING:
            app.registry.stop(row.id)
    conversation = storage.get_conversation(app.engine, question.conversation_id)
    model = _model_of(conversation)
    new_question, answer_id = storage.edit_and_resend(app.engine, question, content, model)
    attachments_store.copy(app.engine, question.id, new_question)  # the question keeps its files
    return _start(answer_id, conversation, model)


def answer_unstored(messages: list[dict], model: str) -> Generation:
    """An answer to the given messages that nothing stores (the JSON protocols), on the owner's limits."""
    app = _trickle()
    owner = g.get("owner")
    if owner is not None:
        _refuse_if_over_a_limit(owner)
    try:
        extra_body = reasoning.effort_fields(app.provider, app.settings.reasoning_effort)
        return app.registry.start(
            uuid.uuid4().hex, app.provider, messages, model, stored=False, owner=owner, extra_body=extra_body
        )
    except Draining as err:
        abort(503, str(err))


def add_context(generation: Generation, posted: str | None) -> int:
    """Add context to an answer being written: the answer so far stays and continues with it as
    the next user turn (stored before it goes upstream, when the answer is stored). Checked as a
    question is (400, 413); waits until the answer took it and returns its offset in the answer's
    text, or refuses (409) when the answer ended first."""
    content = question_text(posted)
    added = generation.add_context(content)
    try:
        at = None if added is None else added.wait(_trickle().settings.stream_max + 10)
    except gevent.Timeout:
        at = None
    except Exception:  # `on_context` failed: the answer stopped there, with the text so far
        log.warning("context for generation %s was not stored", generation.key, exc_info=True)
        abort(503, "What you added could not be saved, so the answer stopped there. Try again in a moment.")
    if at is None:
        abort(409, "The answer ended before it could take what you added: send it as a new message.")
    return at


def wait_until_done(generation: Generation) -> None:
    """Without JavaScript the response comes once the answer is complete."""
    generation.attach()  # a waiting request is a listener: the answer must not be dropped as unwatched
    try:
        generation.done.wait(_trickle().settings.stream_max + 10)
    finally:
        generation.detach()


def _refuse_if_over_a_limit(owner: str, conversation_id: int | None = None) -> None:
    app = _trickle()
    refused = limits.refusal(app.engine, app.settings, app.registry, owner, conversation_id)
    if refused:
        abort(429, refused)


def _model_of(conversation) -> str:
    return conversation.model or _trickle().settings.chat_model


def _start(answer_id: int, conversation, model: str, own: list[dict] = ()) -> Generation:
    """The stored answer's generation, on the history of `conversation` (its row, as read a moment
    ago: its system prompt and reasoning effort) up to it, and the turns `own` added to it before
    (for Retry)."""
    app = _trickle()
    conversation_id = conversation.id
    history = storage.prompt_messages(
        app.engine, conversation, answer_id, attachments_store.upstream_parts, context_store.upstream_turns
    )
    history.extend(own)
    effort = conversation.reasoning_effort or app.settings.reasoning_effort
    try:
        return app.registry.start(
            answer_id,
            app.provider,
            history,
            model,
            owner=current_owner(),
            conversation_id=conversation_id,
            extra_body=reasoning.effort_fields(app.provider, effort),
        )
    except Draining as err:
        live_rows.finish_message(app.engine, answer_id, "", Status.INTERRUPTED, str(err))
        abort(503, str(err))
