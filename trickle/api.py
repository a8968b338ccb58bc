"""`POST /api/chat`: the reference Express relay's protocol, and the Vercel AI SDK's, on the same engine.

A stateless generation (nothing stored) with one listener. By default it
encodes `data: {"content": …}` events and a final `data: [DONE]`, so existing
clients of the reference (a `fetch` reader splitting on `data: `) work
unchanged. A request from the AI SDK (`messages[].parts`, or `?protocol=ai-sdk`)
is answered in its UI message stream protocol instead (see `aisdk.py`).
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, request

from . import aisdk, sse
from .errors import error_response
from .listen import ApiEvents, follow
from .registry import Draining

bp = Blueprint("api", __name__, url_prefix="/api")

ROLES = ("system", "user", "assistant")


class BadRequest(Exception):
    """A chat request that cannot be answered: an HTTP status and a sentence saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
    if not isinstance(model, str):
        raise BadRequest(400, '"model" must be a string.')
    if sum(len(m["content"]) for m in messages) > settings.max_input_chars * 4:
        raise BadRequest(413, "The conversation is too long for this server's MAX_INPUT_CHARS.")
    return messages, model


def start_generation(app, messages: list[dict], model: str):
    """A stateless generation for one protocol listener; raises `Draining` while shutting down."""
    return app.registry.start(uuid.uuid4().hex, app.provider, messages, model, stored=False)


@bp.post("/chat")
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = request.get_json(silent=True)
    protocol = request.args.get("protocol", "")
    if protocol not in ("", "json", "ai-sdk"):
        return error_response(400, 'protocol must be "json" or "ai-sdk".')
    ai_sdk = protocol == "ai-sdk" or (protocol == "" and aisdk.is_ai_sdk_request(body))
    try:
        if ai_sdk:
            body = aisdk.to_plain_request(body)
            if isinstance(body, str):
                raise BadRequest(400, body)
        messages, model = chat_request(body, app.settings)
    except BadRequest as err:
        return error_response(err.status, err.message)
    try:
        generation = start_generation(app, messages, model)
    except Draining as err:
        return error_response(503, str(err))
    encoder = aisdk.UIMessageStreamEvents(generation.key) if ai_sdk else ApiEvents()
    stream = follow(generation, 0, encoder, flush_interval=app.settings.flush_interval,
                    ping_interval=app.settings.ping_interval)
    headers = {**sse.HEADERS, **aisdk.HEADERS} if ai_sdk else sse.HEADERS
    return Response(stream, headers=headers)
