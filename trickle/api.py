"""`POST /api/chat`: the reference Express relay's protocol, and the Vercel AI SDK's, on the same engine.

A stateless generation (nothing stored) with one listener. By default it
encodes `data: {"content": …}` events and a final `data: [DONE]`, so existing
clients of the reference (a `fetch` reader splitting on `data: `) work
unchanged. A request from the AI SDK is answered in the protocol its version
reads: the UI message stream (5+, `aisdk.py`), the data stream (3.x/4.x), or
plain text (`aisdk_data.py`); `aisdk.protocol_for` says which. A thinking
model's thought goes out as reasoning parts in the AI SDK's UI message stream,
and in the plain protocol only when the request says `"reasoning": true`.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from . import aisdk, aisdk_data, answers, limits, open_streams, sse
from .chat_requests import chat_request, check_size, json_body
from .listen import ApiEvents, sse_stream

bp = Blueprint("api", __name__, url_prefix="/api")
bp.record_once(lambda state: logging.getLogger("gunicorn.error").addFilter(aisdk_data.QuietStreamCuts()))


@bp.post("/chat")
@limits.per_owner
def chat():
    """Stream one answer for the given messages; nothing is stored."""
    app = current_app.extensions["trickle"]
    body = json_body()
    check_size(body, app.settings)  # before anything walks the messages
    protocol = aisdk.protocol_for(body, request.args.get("protocol", ""))
    messages, model = chat_request(body if protocol == "json" else aisdk.to_plain_request(body), app.settings)
    open_streams.refuse_if_full()  # before an answer starts that nobody could read
    generation = answers.answer_unstored(messages, model)
    reasoning = isinstance(body, dict) and body.get("reasoning") is True  # thoughts only when asked
    response = _response(protocol, generation, app.settings, reasoning)
    response.response = open_streams.held(response.response)  # counted open until the server closes it
    return response


def _response(protocol: str, generation, settings, reasoning: bool) -> Response:
    """The answer in the protocol the request speaks."""
    if protocol == "ai-sdk-data":
        return aisdk_data.data_stream_response(generation, settings)
    if protocol == "text":
        return aisdk_data.text_stream_response(generation, settings)
    ui_stream = protocol == "ai-sdk"
    encoder = aisdk.UIMessageStreamEvents(generation.key) if ui_stream else ApiEvents(reasoning)
    stream = sse_stream(
        generation, 0, encoder, flush_interval=settings.flush_interval, ping_interval=settings.ping_interval
    )
    return Response(stream, headers={**sse.HEADERS, **aisdk.HEADERS} if ui_stream else sse.HEADERS)
