"""`POST /api/chat`: the reference Express relay's protocol, and the Vercel AI SDK's, on the same engine.

A stateless generation (nothing stored) with one listener. By default it
encodes `data: {"content": …}` events and a final `data: [DONE]`, so existing
clients of the reference (a `fetch` reader splitting on `data: `) work
unchanged. A request from the AI SDK is answered in the protocol its version
reads: the UI message stream (5+, `aisdk.py`), the data stream (3.x/4.x), or
plain text (`aisdk_data.py`); `aisdk.protocol_for` says which.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from . import aisdk, aisdk_data, answers, limits, sse
from .chat_requests import chat_request, json_body
from .listen import ApiEvents, sse_stream

bp = Blueprint("api", __name__, url_prefix="/api")
bp.record_once(lambda state: logging.getLogger("gunicorn.error").addFilter(aisdk_data.QuietStreamCuts()))


@bp.post("/chat")
@limits.per_owner
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = json_body()
    protocol = aisdk.protocol_for(body, request.args.get("protocol", ""))
    messages, model = chat_request(body if protocol == "json" else aisdk.to_plain_request(body), app.settings)
    generation = answers.answer_unstored(messages, model)
    if protocol == "ai-sdk-data":
        return aisdk_data.data_stream_response(generation, app.settings)
    if protocol == "text":
        return aisdk_data.text_stream_response(generation, app.settings)
    ui_stream = protocol == "ai-sdk"
    encoder = aisdk.UIMessageStreamEvents(generation.key) if ui_stream else ApiEvents()
    stream = sse_stream(
        generation, 0, encoder, flush_interval=app.settings.flush_interval, ping_interval=app.settings.ping_interval
    )
    return Response(stream, headers={**sse.HEADERS, **aisdk.HEADERS} if ui_stream else sse.HEADERS)
