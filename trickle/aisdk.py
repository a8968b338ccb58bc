"""The Vercel AI SDK's UI message stream protocol (v1), as one more encoder for `follow()`.

`useChat` (through `DefaultChatTransport`) posts `{id, messages: [{id, role,
parts: [{type: "text", text}…]}…], trigger, messageId}` and reads SSE events
whose data are JSON parts: `start`, `text-start`, `text-delta`…, `text-end`,
`finish` (an `error` part before it when the answer failed), then `[DONE]`;
the response carries `x-vercel-ai-ui-message-stream: v1`.

Only the parts' minimal shapes are sent: AI SDK 5 validates them with strict
schemas, so an extra key (even a standard one like `finishReason`) would make
it reject the stream.

`protocol_for` also says which protocol a `/api/chat` body asks for (this one,
the AI SDK 4's data stream, the text stream or the reference's JSON), and
`to_plain_request` reads the SDK's messages as `{role, content}`.
"""

from __future__ import annotations

import json

from .chat_requests import BadChatRequest
from .listen import Encoder
from .textlog import Followed

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
PROTOCOLS = ("json", "ai-sdk", "ai-sdk-data", "text")


def protocol_for(body, named: str = "") -> str:
    """Which protocol answers the request: the one `?protocol=` names, else the one its body shows.

    Read from what each AI SDK version's `useChat` posts (the table is in docs/protocols.md):
    5 and 6 send messages made of `parts` with no `content` (`ai-sdk`, the UI message stream);
    4.1.20 and later send a string `content` beside `parts`, and 4.1 the chat's `id` beside
    `messages` (`ai-sdk-data`, the data stream). 3.x and 4.0 post `{messages: [{role, content}]}`,
    which is the reference client's body too: that stays `json`, and such a client names its
    protocol in the URL. The text stream has no body of its own: only `?protocol=text` asks for it.
    """
    if named:
        if named not in PROTOCOLS:
            raise BadChatRequest(400, f"protocol must be one of {', '.join(PROTOCOLS)}.")
        return named
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return "json"
    with_parts = [m for m in body["messages"] if isinstance(m, dict) and isinstance(m.get("parts"), list)]
    if any(not isinstance(m.get("content"), str) for m in with_parts):
        return "ai-sdk"
    if with_parts or isinstance(body.get("id"), str):
        return "ai-sdk-data"
    return "json"


class PartsError(BadChatRequest):
    """A `parts` message that cannot be read as text (a 400); its message says which part."""

    def __init__(self, message: str):
        super().__init__(400, message)


def to_plain_request(body):
    """The request with each `parts` message turned into `{role, content}`.

    Text parts are joined into the content; `file` parts with a `data:` URL make it OpenAI
    content parts, read as attachments are (`content_parts`); other parts (files by address,
    which are never fetched, reasoning, tool calls, data…) are not text the model reads here,
    and a message with nothing but those is left out. Messages that already have a string `content` pass
    unchanged, and anything malformed is left for the shared validation to name.
    """
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return body
    plain = []
    for position, message in enumerate(body["messages"]):
        if not isinstance(message, dict) or "parts" not in message or isinstance(message.get("content"), str):
            plain.append(message)  # AI SDK 4 sends both: its content is the message's text
            continue
        parts = message["parts"]
        if not isinstance(parts, list):
            raise PartsError(f"messages[{position}].parts must be a list.")
        texts, files = [], []
        for index, part in enumerate(parts):
            if isinstance(part, dict) and part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise PartsError(f"messages[{position}].parts[{index}].text must be a string.")
                texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") == "file" and str(part.get("url")).startswith("data:"):
                files.append({"type": "file", "file": {"filename": part.get("filename"), "file_data": part.get("url")}})
        if parts and not texts and not files:
            continue
        text = "".join(texts)
        content = ([{"type": "text", "text": text}] if text else []) + files if files else text
        plain.append({"role": message.get("role"), "content": content})
    return {**body, "messages": plain}


def part(chunk: dict) -> str:
    """One SSE event holding one UI message chunk, serialized like the SDK's own `JSON.stringify`."""
    return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


class UIMessageStreamEvents(Encoder):
    """Encoder for `follow()`: one assistant message with one text part, after a reasoning part
    when the model thought."""

    def __init__(self, message_id: str):
        self.message_id = f"msg-{message_id}"
        self.text_id = f"text-{message_id}"
        self.reasoning_id = f"reasoning-{message_id}"
        self.text_open = False
        self.reasoning_open = False

    def start(self, prefix: str, cursor: int, thought_length: int = 0) -> str:
        return part({"type": "start", "messageId": self.message_id})

    def text(self, delta: str, cursor: int) -> str:
        head = ""
        if not self.text_open:  # opened at the first text, so a failure before it leaves no empty part
            self.text_open = True
            head = part({"type": "text-start", "id": self.text_id})
        return head + part({"type": "text-delta", "id": self.text_id, "delta": delta})

    def thought(self, delta: str, cursor: int) -> str:
        """A thinking model's thought: a reasoning part (`useChat` shows it), before the text part."""
        head = ""
        if not self.reasoning_open:
            self.reasoning_open = True
            head = part({"type": "reasoning-start", "id": self.reasoning_id})
        return head + part({"type": "reasoning-delta", "id": self.reasoning_id, "delta": delta})

    def thought_done(self, event) -> str:
        return self._end_reasoning()

    def _end_reasoning(self) -> str:
        if not self.reasoning_open:
            return ""
        self.reasoning_open = False
        return part({"type": "reasoning-end", "id": self.reasoning_id})

    def notice(self, notice: str | None, cursor: int) -> str:
        return f": {' '.join(notice.split())}\n\n" if notice else ""  # a comment: the SDK skips it

    def finish(self, followed: Followed, cursor: int) -> str:
        out = [self._end_reasoning()]  # stopped (or failed) mid-thought
        if self.text_open:
            out.append(part({"type": "text-end", "id": self.text_id}))
        if followed.status.is_error:
            out.append(part({"type": "error", "errorText": followed.error or followed.status}))
        out.append(part({"type": "finish"}))
        out.append(DONE)
        return "".join(out)
