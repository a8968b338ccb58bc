"""`POST /api/chat`: the reference Express relay's protocol, and the Vercel AI SDK's, on the same engine.

A stateless generation (nothing stored) with one listener. By default it
encodes `data: {"content": …}` events and a final `data: [DONE]`, so existing
clients of the reference (a `fetch` reader splitting on `data: `) work
unchanged. A request from the AI SDK (`messages[].parts`, or `?protocol=ai-sdk`)
is answered in its UI message stream protocol instead (see `aisdk.py`), with a thinking
model's thought as reasoning parts; the plain protocol sends thoughts only when the request
says `"reasoning": true`.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from . import aisdk, answers, limits, sse
from .chat_requests import chat_request, json_body
from .listen import ApiEvents, sse_stream

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.post("/chat")
@limits.per_owner
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = json_body()
    ai_sdk = aisdk.is_ai_sdk_request(body, request.args.get("protocol", ""))
    messages, model = chat_request(aisdk.to_plain_request(body) if ai_sdk else body, app.settings)
    generation = answers.answer_unstored(messages, model)
    reasoning = isinstance(body, dict) and body.get("reasoning") is True  # thoughts only when asked
    encoder = aisdk.UIMessageStreamEvents(generation.key) if ai_sdk else ApiEvents(reasoning)
    stream = sse_stream(
        generation, 0, encoder, flush_interval=app.settings.flush_interval, ping_interval=app.settings.ping_interval
    )
    headers = {**sse.HEADERS, **aisdk.HEADERS} if ai_sdk else sse.HEADERS
    return Response(stream, headers=headers)
