"""The JSON chat protocols' requests (`/api/chat` in both its forms, and `/ws`): read and checked.

A request that cannot be answered raises `BadChatRequest`, an HTTP error like `abort()`'s:
`errors.py` answers it as `{"error": …}` under /api, and `ws.py` as an error message.
"""

from __future__ import annotations

import gc
import json

from flask import request
from werkzeug.exceptions import HTTPException

from .content_parts import read_parts

ROLES = ("system", "user", "assistant")
MODEL_CHARS = 200  # longer than any model id a provider lists
TOO_DEEP = "The JSON is nested too deeply to read; a chat request needs no more than a few levels."


class BadChatRequest(HTTPException):
    """A chat request that cannot be answered: an HTTP status and a sentence saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.code = status


def is_text(value: str) -> bool:
    """Whether a string can be sent on as UTF-8: JSON can spell lone surrogates ("\\ud800"); no text holds one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_size(body, settings) -> None:
    """Refuse a request with too many messages before anything walks them (the openai client's
    per-request transform costs about 0.2 ms a message, all of it on the event loop)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list) and len(messages) > settings.max_request_messages:
        raise BadChatRequest(
            413,
            f"The request holds {len(messages):,} messages; the limit is "
            f"{settings.max_request_messages:,} (MAX_REQUEST_MESSAGES).",
        )


def _messages(body, settings) -> list[dict]:
    """The validated message list; raises `BadChatRequest` saying what is wrong with it."""
    if not isinstance(body, dict):
        raise BadChatRequest(
            400, 'The body must be a JSON object like {"messages": [{"role": "user", "content": "Hi"}]}.'
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadChatRequest(400, '"messages" must be a non-empty list.')
    check_size(body, settings)
    clean, total = [], 0
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadChatRequest(400, f"messages[{position}] must be an object with role and content.")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadChatRequest(400, f"messages[{position}].role must be one of {', '.join(ROLES)}.")
        if isinstance(content, list):  # OpenAI content parts: text, images, files
            content, chars = read_parts(content, f"messages[{position}].content", role, settings)
        elif not isinstance(content, str):
            raise BadChatRequest(400, f"messages[{position}].content must be a string (or a list of content parts).")
        else:
            chars = len(content)
        total += chars
        if total > settings.max_input_chars * 4:
            raise BadChatRequest(413, "The conversation is too long for this server's MAX_INPUT_CHARS.")
        texts = [part["text"] for part in content if part["type"] == "text"] if isinstance(content, list) else [content]
        if not all(is_text(text) for text in texts):
            raise BadChatRequest(
                400, f"messages[{position}].content is not valid Unicode text (it holds a lone surrogate)."
            )
        clean.append({"role": role, "content": content})
    return clean


def _model(body, settings) -> str:
    """The model asked for: a printable name (it goes into the log line of every answer)."""
    model = body.get("model") or settings.chat_model
    if not isinstance(model, str) or not is_text(model):
        raise BadChatRequest(400, '"model" must be a string.')
    if len(model) > MODEL_CHARS or not model.isprintable():
        raise BadChatRequest(
            400, f'"model" must be a model name: at most {MODEL_CHARS} characters, no control characters.'
        )
    return model


def chat_request(body, settings) -> tuple[list[dict], str]:
    """The messages and model of a chat request, checked against the server's limits.

    Shared by every protocol (`/api/chat`, `/ws`); raises `BadChatRequest`.
    """
    messages = _messages(body, settings)
    return messages, _model(body, settings)


def parse_json(text: str | bytes):
    """A JSON value, or None when it is not JSON; a 400 when it nests deeper than the parser can
    follow (a `RecursionError` otherwise: a 500 on /api/chat, a dead socket on /ws).

    The cyclic garbage collector is off while it parses: a body of 300,000 empty lists made it
    run dozens of full collections over the whole heap (1.5 s of the event loop, 10 times the
    parse itself). A parse never yields to another greenlet, and JSON makes no cycles to collect.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    except RecursionError:
        raise BadChatRequest(400, TOO_DEEP) from None
    except ValueError:
        return None
    finally:
        if collecting:
            gc.enable()


def json_body():
    """The parsed JSON body, or None; a chunked body over MAX_CONTENT_LENGTH is a 413, not cut short.

    With a Content-Length, Werkzeug refuses an oversize body up front; a chunked one it
    quietly stops reading at the limit, which would look like broken JSON (a 400).
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        request.stream.read(1)  # past the limit: Werkzeug raises RequestEntityTooLarge here
    return parse_json(data) if request.is_json else None
