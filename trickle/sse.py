"""Server-Sent Events framing: `event:`, `id:` and `data:` lines, and keep-alive comments."""

from __future__ import annotations

PING = b": ping\n\n"

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx and friends must not buffer the stream
}


def event(data: str, name: str | None = None, event_id: int | str | None = None) -> str:
    """One event; multi-line data becomes several `data:` lines, as the spec requires."""
    parts = []
    if name:
        parts.append(f"event: {name}\n")
    if event_id is not None:
        parts.append(f"id: {event_id}\n")
    if "\n" in data or "\r" in data:
        for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            parts.append(f"data: {line}\n")
    else:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts)
