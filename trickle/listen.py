"""Listeners: an HTTP response attached to a generation, and the encoders that speak for it.

One loop (`follow`) replays from a cursor, then follows live, batching what
arrived since the last write; an encoder turns text into a protocol (the page's
HTML fragments, or the JSON events of `/api/chat`). One engine, several encoders.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gevent import get_hub
from gevent.hub import Waiter
from markupsafe import escape

from . import sse
from .render import Splitter


def _wait(event, seconds: float) -> None:
    """`event.wait(seconds)` without a Timeout exception thrown into this greenlet when it expires
    (the usual outcome here: every flush interval of every stream)."""
    if event.is_set():
        return
    hub = get_hub()
    waiter = Waiter(hub)
    timer = hub.loop.timer(seconds)
    timer.start(waiter.switch, None)
    event.rawlink(waiter.switch)
    try:
        waiter.get()
    finally:
        timer.close()
        event.unlink(waiter.switch)


def follow(generation, cursor: int, encoder, *, flush_interval: float, ping_interval: float) -> Iterator[bytes]:
    """Yield the encoded stream of `generation` from `cursor` until it ends or the client leaves.

    The WSGI server closes this generator when a write fails (the client left),
    which detaches the listener in `finally`.
    """
    generation.attach()
    try:
        cursor = max(cursor, 0)
        if cursor > generation.length and not generation.finished:
            # A follower of another worker's answer lags the owner by up to SAVE_INTERVAL_S: the client
            # already has text this copy has not, so wait for it rather than send it twice.
            yield sse.PING
            while cursor > generation.length and not generation.finished:
                if getattr(generation, "abandoned", False):
                    return
                generation.wakeup.wait(ping_interval)
                yield sse.PING  # how a client that left is noticed
        index, pending = generation.locate(cursor)
        cursor = min(cursor, generation.length)
        replay = encoder.needs_prefix and not generation.finished
        head = encoder.start(generation.text()[:cursor] if replay else "", cursor)
        yield head.encode() if head else sse.PING  # headers and a first byte go out at once
        last_write = time.monotonic()
        notice = None
        while True:
            wakeup = generation.wakeup
            parts = generation.parts
            if index < len(parts):
                pending += "".join(parts[index:])
                index = len(parts)
            out = []
            if pending:
                cursor += len(pending)
                out.append(encoder.text(pending, cursor))
                pending = ""
            if generation.notice != notice:
                notice = generation.notice
                out.append(encoder.notice(notice, cursor))
            if generation.finished and index == len(generation.parts):
                out.append(encoder.finish(generation, generation.length))
                yield "".join(out).encode()
                return
            if getattr(generation, "abandoned", False):
                return  # the client reconnects to a worker that stays up
            if out:
                yield "".join(out).encode()
                last_write = time.monotonic()
                _wait(generation.wakeup, flush_interval)  # batch: only a burst or the end cuts this short
                continue
            quiet = time.monotonic() - last_write
            if quiet >= ping_interval:
                yield sse.PING  # keeps proxies open, and is how we learn that the client left
                last_write = time.monotonic()
                continue
            generation.idle_waiters += 1
            try:
                wakeup.wait(ping_interval - quiet)
            finally:
                generation.idle_waiters -= 1
    finally:
        generation.detach()


@dataclass(frozen=True)
class Shown:
    """What the page holds when an answer ends: its first `length` characters, of which all but
    `tail` are finished blocks in `#blocks-<id>` (rendered exactly as the final answer renders them)."""

    length: int
    tail: str


class PageEvents:
    """The chat page's events: `block` (a finished markdown block), `delta` (tail text),
    `status` (e.g. retrying…) and `done` (the final message fragment)."""

    needs_prefix = True

    def __init__(self, message_id: int, render_final: Callable[[object, Shown | None], str]):
        self.message_id = message_id
        self.render_final = render_final
        self.splitter = Splitter()
        self.in_step = False  # the page's blocks are the splitter's: true when the stream began at its cursor

    def start(self, prefix: str, cursor: int) -> str:
        self.splitter = Splitter(prefix)  # the page already shows this much
        self.in_step = len(prefix) == cursor
        return ""

    def text(self, delta: str, cursor: int) -> str:
        blocks = self.splitter.feed(delta)
        if not blocks:
            return sse.event(str(escape(delta)), "delta", cursor)
        tail = (
            f'<span class="tail" id="tail-{self.message_id}" hx-swap-oob="true" sse-swap="delta" '
            f'hx-swap="beforeend" hx-target="this">{escape(self.splitter.tail)}</span>'
        )
        return sse.event("".join(blocks) + tail, "block", cursor)

    def notice(self, notice: str | None, cursor: int) -> str:
        return sse.event(str(escape(notice or "")), "status", cursor)

    def finish(self, generation, cursor: int) -> str:
        # In step, the page got every character up to the end: `cursor` is what it holds.
        shown = Shown(cursor, self.splitter.tail) if self.in_step else None
        return sse.event(self.render_final(generation, shown), "done", cursor)


class ApiEvents:
    """The reference Express relay's protocol: `data: {"content": …}` events, then `data: [DONE]`."""

    needs_prefix = False

    def start(self, prefix: str, cursor: int) -> str:
        return ""

    def text(self, delta: str, cursor: int) -> str:
        return f"data: {json.dumps({'content': delta}, ensure_ascii=False)}\n\n"

    def notice(self, notice: str | None, cursor: int) -> str:
        return f": {notice}\n\n" if notice else ""

    def finish(self, generation, cursor: int) -> str:
        if generation.status.is_error:
            error = json.dumps({"error": generation.error or generation.status}, ensure_ascii=False)
            return f"data: {error}\n\ndata: [DONE]\n\n"
        return "data: [DONE]\n\n"
