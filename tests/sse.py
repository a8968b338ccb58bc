"""Reading Server-Sent Events the way a browser's EventSource does, from any response.

One parser for every test: a `requests` response (over a socket) and a Flask test-client
response (in process) both come in as an iterable of byte chunks, cut anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Event:
    event: str
    id: int | None
    data: str


def chunks_of(response) -> Iterable[bytes]:
    """The body of a streamed response as it arrives: `requests` (stream=True) or Werkzeug's test response."""
    if hasattr(response, "iter_content"):
        return response.iter_content(chunk_size=None)
    return response.iter_encoded() if hasattr(response, "iter_encoded") else response.response


def events(response) -> Iterator[Event]:
    """Parse an SSE byte stream into events (comments such as `: ping` are skipped)."""
    buffer = b""
    fields: dict[str, str] = {}
    data: list[str] = []
    for chunk in chunks_of(response):
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8").removesuffix("\r")
            if not line:
                if data or fields:
                    event_id = fields.get("id")
                    yield Event(fields.get("event", "message"), int(event_id) if event_id else None, "\n".join(data))
                fields, data = {}, []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value


def events_until_done(response) -> list[tuple[str, str]]:
    """(event, data) pairs of a page's event stream, up to and including `done`."""
    found = []
    for event in events(response):
        found.append((event.event, event.data))
        if event.event == "done":
            break
    return found


def data_until_done(response) -> list[str]:
    """The data of each event of a JSON stream (`/api/chat`), up to and including the final "[DONE]"."""
    found = []
    for event in events(response):
        found.append(event.data)
        if event.data == "[DONE]":
            break
    return found


def read_api_stream(response) -> tuple[str, list[str]]:
    """`/api/chat`'s JSON protocol, as the reference's browser client reads it: the text, and every data line."""
    raw = data_until_done(response)
    text = "".join(json.loads(data).get("content", "") for data in raw if data != "[DONE]")
    return text, raw
