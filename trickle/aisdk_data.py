"""The AI SDK 4's data stream protocol, and the plain text stream, as encoders for `follow()`.

AI SDK 3.x/4.x `useChat` (its `callChatApi`, from `@ai-sdk/ui-utils` 1.x) reads
by default the *data stream*: lines of `CODE:JSON`, each ending in a newline,
with `x-vercel-ai-data-stream: v1`. Trickle sends what the SDK's own
`toDataStreamResponse()` sends for a text answer: `f:{"messageId"}` (the step
starts), `0:"text"`…, then `e:{finishReason, usage, isContinued}` (the step
ends) and `d:{finishReason, usage}` (the message ends); `3:"message"` before
them when the answer failed (the client throws it as its error). The client
skips empty lines, so a bare newline is the keep-alive.

`streamProtocol: 'text'` (4.x) and `TextStreamChatTransport` (5+) read the
answer's text as it is, nothing else: no notice, no finish, no keep-alive.
"""

from __future__ import annotations

import json
import logging

from flask import Response

from .generation import Generation
from .listen import Encoder, byte_stream, until_begun
from .status import Status
from .textlog import Followed

NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8", **NO_BUFFERING}
DATA_HEADERS = {**TEXT_HEADERS, "x-vercel-ai-data-stream": "v1"}

# The codes of the parts sent here, named as `@ai-sdk/ui-utils` names them (`data-stream-parts`).
CODES = {"text": "0", "error": "3", "finish_message": "d", "finish_step": "e", "start_step": "f", "reasoning": "g"}


def line(name: str, value) -> str:
    """One part: its code, a colon, its value as the SDK's `JSON.stringify` writes it, a newline."""
    return f"{CODES[name]}:{json.dumps(value, ensure_ascii=False, separators=(',', ':'))}\n"


def _usage(generation: Generation) -> dict:
    usage = generation.usage
    return {
        "promptTokens": usage.prompt_tokens if usage else 0,
        "completionTokens": usage.completion_tokens if usage else 0,
    }


class DataStreamEvents(Encoder):
    """Encoder for `follow()`: one assistant message, one step, its text parts and its finish.

    Each kind of event is one line: a thinking model's thought is reasoning (`g:`), which `useChat`
    shows apart from the answer."""

    def __init__(self, message_id: str):
        self.message_id = f"msg-{message_id}"

    def start(self, prefix: str, cursor: int, thought_length: int = 0) -> str:
        return line("start_step", {"messageId": self.message_id})

    def text(self, delta: str, cursor: int) -> str:
        return line("text", delta)

    def thought(self, delta: str, cursor: int) -> str:
        return line("reasoning", delta)

    def finish(self, generation: Generation, cursor: int) -> str:  # /api/chat follows only its own generations
        out = []
        reason = "stop" if generation.status in (Status.DONE, Status.STOPPED) else "error"
        if generation.status.is_error:
            out.append(line("error", generation.error or f"The answer ended: {generation.status}."))
        usage = _usage(generation)
        out.append(line("finish_step", {"finishReason": reason, "usage": usage, "isContinued": False}))
        out.append(line("finish_message", {"finishReason": reason, "usage": usage}))
        return "".join(out)


class StreamCut(Exception):
    """Raised into the WSGI server to close a text stream without its end: the text protocol
    has no way to say that an answer failed, so its client must not read a part as the whole."""


class QuietStreamCuts(logging.Filter):
    """The WSGI server logs a body that raised as an error, with its traceback; a `StreamCut` is an
    answer that failed (logged already, with its outcome), so it becomes one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, StreamCut):
            record.msg, record.args = "a text stream was cut: the answer failed (%s)", (str(error),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class TextStreamEvents(Encoder):
    """Encoder for `follow()`: the answer's text, nothing else."""

    def text(self, delta: str, cursor: int) -> str:
        return delta

    def finish(self, followed: Followed, cursor: int) -> str:
        if followed.status.is_error:
            raise StreamCut(followed.error or followed.status)
        return ""


def data_stream_response(generation: Generation, settings) -> Response:
    """The data stream of one answer (keep-alive: an empty line, which the client skips)."""
    stream = byte_stream(
        generation,
        0,
        DataStreamEvents(generation.key),
        keepalive=b"\n",
        flush_interval=settings.flush_interval,
        ping_interval=settings.ping_interval,
    )
    return Response(stream, headers=DATA_HEADERS)


def text_stream_response(generation: Generation, settings) -> Response:
    """The text stream of one answer, or an HTTP error if it fails before any text.

    The response waits for the first text: until then a failure can still be a status
    (502, its message as the body), which is the only error these clients read."""
    until_begun(generation, settings.ping_interval)
    if generation.finished and generation.status.is_error and not generation.length:
        message = generation.error or f"The answer ended: {generation.status}."
        return Response(message, status=502, headers=TEXT_HEADERS)
    stream = byte_stream(
        generation,
        0,
        TextStreamEvents(),
        keepalive=b"",
        flush_interval=settings.flush_interval,
        ping_interval=settings.ping_interval,
    )
    return Response(stream, headers=TEXT_HEADERS)
