"""`POST /api/chat`: the reference Express relay's protocol, on the same generation engine.

A stateless generation (nothing stored) with one listener that encodes
`data: {"content": …}` events and a final `data: [DONE]`; existing clients of
the reference (a `fetch` reader splitting on `data: `) work unchanged.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, request

from . import sse
from .errors import error_response
from .listen import ApiEvents, follow
from .registry import Draining

bp = Blueprint("api", __name__, url_prefix="/api")

ROLES = ("system", "user", "assistant")


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


@bp.post("/chat")
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = request.get_json(silent=True)
    messages = _messages(body)
    if isinstance(messages, str):
        return error_response(400, messages)
    model = body.get("model") or app.settings.chat_model
    if not isinstance(model, str):
        return error_response(400, '"model" must be a string.')
    if sum(len(m["content"]) for m in messages) > app.settings.max_input_chars * 4:
        return error_response(413, "The conversation is too long for this server's MAX_INPUT_CHARS.")
    try:
        generation = app.registry.start(uuid.uuid4().hex, app.provider, messages, model, stored=False)
    except Draining as err:
        return error_response(503, str(err))
    stream = follow(generation, 0, ApiEvents(), flush_interval=app.settings.flush_interval,
                    ping_interval=app.settings.ping_interval)
    return Response(stream, headers=sse.HEADERS)
