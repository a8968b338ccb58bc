"""`POST /api/chat`: the reference Express relay's protocol, and the Vercel AI SDK's, on the same engine.

A stateless generation (nothing stored) with one listener. By default it
encodes `data: {"content": …}` events and a final `data: [DONE]`, so existing
clients of the reference (a `fetch` reader splitting on `data: `) work
unchanged. A request from the AI SDK (`messages[].parts`, or `?protocol=ai-sdk`)
is answered in its UI message stream protocol instead (see `aisdk.py`).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from . import aisdk, answers, limits, open_streams, sse
from .chat_requests import chat_request, check_size, json_body
from .listen import ApiEvents, sse_stream

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.post("/chat")
@limits.per_owner
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = json_body()
    check_size(body, app.settings)  # before anything walks the messages
    ai_sdk = aisdk.is_ai_sdk_request(body, request.args.get("protocol", ""))
    messages, model = chat_request(aisdk.to_plain_request(body) if ai_sdk else body, app.settings)
    open_streams.refuse_if_full()  # before an answer starts that nobody could read
    generation = answers.answer_unstored(messages, model)
    encoder = aisdk.UIMessageStreamEvents(generation.key) if ai_sdk else ApiEvents()
    stream = sse_stream(
        generation, 0, encoder, flush_interval=app.settings.flush_interval, ping_interval=app.settings.ping_interval
    )
    headers = {**sse.HEADERS, **aisdk.HEADERS} if ai_sdk else sse.HEADERS
    return Response(open_streams.held(stream), headers=headers)
