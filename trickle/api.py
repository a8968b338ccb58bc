"""`POST /api/chat`: the reference Express relay's protocol, and the Vercel AI SDK's, on the same engine.

A stateless generation (nothing stored) with one listener. By default it
encodes `data: {"content": …}` events and a final `data: [DONE]`, so existing
clients of the reference (a `fetch` reader splitting on `data: `) work
unchanged. A request from the AI SDK (`messages[].parts`, or `?protocol=ai-sdk`)
is answered in its UI message stream protocol instead (see `aisdk.py`).
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, g, request

from . import aisdk, limits, sse
from .errors import error_response
from .listen import ApiEvents, sse_stream
from .registry import Draining

bp = Blueprint("api", __name__, url_prefix="/api")

ROLES = ("system", "user", "assistant")


class BadRequest(Exception):
    """A chat request that cannot be answered: an HTTP status and a sentence saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _is_text(value: str) -> bool:
    """Whether a string can be sent on as UTF-8: JSON can spell lone surrogates ("\\ud800"); no text holds one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _messages(body) -> list[dict] | str:
    """The validated message list, or a sentence saying what is wrong with it."""
    if not isinstance(body, dict):
        return 'The body must be a JSON object like {"messages": [{"role": "user", "content": "Hi"}]}.'
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return '"messages" must be a non-empty list.'
    clean = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{position}] must be an object with role and content."
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"messages[{position}].role must be one of {', '.join(ROLES)}."
        if not isinstance(content, str):
            return f"messages[{position}].content must be a string."
        if not _is_text(content):
            return f"messages[{position}].content is not valid Unicode text (it holds a lone surrogate)."
        clean.append({"role": role, "content": content})
    return clean


def chat_request(body, settings) -> tuple[list[dict], str]:
    """The messages and model of a chat request, checked against the server's limits.

    Shared by every protocol (`/api/chat`, `/ws`); raises `BadRequest`.
    """
    messages = _messages(body)
    if isinstance(messages, str):
        raise BadRequest(400, messages)
    model = body.get("model") or settings.chat_model
    if not isinstance(model, str) or not _is_text(model):
        raise BadRequest(400, '"model" must be a string.')
    if sum(len(m["content"]) for m in messages) > settings.max_input_chars * 4:
        raise BadRequest(413, "The conversation is too long for this server's MAX_INPUT_CHARS.")
    return messages, model


def _json_body():
    """The parsed JSON body, or None; a chunked body over MAX_CONTENT_LENGTH is a 413, not cut short.

    With a Content-Length, Werkzeug refuses an oversize body up front; a chunked one it
    quietly stops reading at the limit, which would look like broken JSON (a 400).
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        request.stream.read(1)  # past the limit: Werkzeug raises RequestEntityTooLarge here
    return request.get_json(silent=True)


def start_generation(app, messages: list[dict], model: str):
    """A stateless generation for one protocol listener, counted against its owner's limits.

    Raises `BadRequest` (429) when a limit refuses it, `Draining` while shutting down.
    """
    owner = g.get("owner")
    if owner is not None:
        refused = limits.refusal(app.engine, app.settings, app.registry, owner)
        if refused:
            raise BadRequest(429, refused)
    return app.registry.start(uuid.uuid4().hex, app.provider, messages, model, stored=False, owner=owner)


@bp.post("/chat")
@limits.per_owner
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = _json_body()
    protocol = request.args.get("protocol", "")
    if protocol not in ("", "json", "ai-sdk"):
        return error_response(400, 'protocol must be "json" or "ai-sdk".')
    ai_sdk = protocol == "ai-sdk" or (protocol == "" and aisdk.is_ai_sdk_request(body))
    try:
        if ai_sdk:
            body = aisdk.to_plain_request(body)
        messages, model = chat_request(body, app.settings)
        generation = start_generation(app, messages, model)
    except BadRequest as err:
        return error_response(err.status, err.message)
    except aisdk.PartsError as err:
        return error_response(400, str(err))
    except Draining as err:
        return error_response(503, str(err))
    encoder = aisdk.UIMessageStreamEvents(generation.key) if ai_sdk else ApiEvents()
    stream = sse_stream(
        generation, 0, encoder, flush_interval=app.settings.flush_interval, ping_interval=app.settings.ping_interval
    )
    headers = {**sse.HEADERS, **aisdk.HEADERS} if ai_sdk else sse.HEADERS
    return Response(stream, headers=headers)
