"""Listeners: a response attached to an answer, and the encoders that speak for it.

One loop (`follow`) replays from a cursor, then follows live, batching what
arrived since the last write into one `Update`; an `Encoder` turns those events
into a protocol's wire events (the page's HTML fragments, the JSON events of
`/api/chat`, `/ws` messages, the AI SDK's parts and lines). One engine, several
encoders; `byte_stream` makes a response body of them (`sse_stream` for the SSE ones).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from json.encoder import encode_basestring as json_string  # json.dumps's own quoting (ensure_ascii=False)

from gevent import get_hub
from gevent.hub import Waiter
from markupsafe import escape

from . import sse
from .live_markdown import LiveTail
from .render import Splitter
from .textlog import Followed


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


@dataclass(frozen=True, slots=True)
class Start:
    """The first event: where the stream begins, and (for an answer still streaming) the text
    before that point, which the client already holds."""

    prefix: str
    cursor: int
    thought_length: int = 0  # how much of `prefix` is the thought


@dataclass(frozen=True, slots=True)
class Update:
    """One write: the text that arrived since the last one (ending at offset `cursor`), the
    notice if it changed, and the answer once it ended. One per flush, never one per token.

    Of the new text, `thought` (first, ending at `thought_cursor`) is the thought's. `whole_thought`
    comes once the thought is over (the answer began), or with `rethought` when the answer so far
    turned out to be a thought (a template opened the tag), with `thinking` if it may still go on.
    """

    cursor: int
    text: str = ""
    notice_changed: bool = False
    notice: str | None = None
    ended: Followed | None = None
    thought: str = ""
    thought_cursor: int = 0
    whole_thought: str | None = None
    rethought: bool = False
    thinking: bool = False
    thought_ms: int | None = None


class Ping:
    """Nothing to say: each transport keeps its connection alive (and notices a client that left) its own way."""


PING = Ping()
StreamEvent = Start | Update | Ping


def follow(followed: Followed, cursor: int, *, flush_interval: float, ping_interval: float) -> Iterator[StreamEvent]:
    """The events of `followed` from `cursor` until it ends or the client leaves.

    The WSGI server closes the response (and with it this generator) when a write
    fails (the client left), which detaches the listener in `finally`.
    """
    followed.attach()
    try:
        cursor = max(cursor, 0)
        if cursor > followed.length and not followed.finished:
            # A follower of another worker's answer lags the owner by up to SAVE_INTERVAL_S: the client
            # already has text this copy has not, so wait for it rather than send it twice.
            yield PING
            while cursor > followed.length and not followed.finished:
                if followed.abandoned:
                    return
                followed.wakeup.wait(ping_interval)
                yield PING  # how a client that left is noticed
        index, pending = followed.locate(cursor)
        cursor = min(cursor, followed.length)
        boundary = min(followed.thought_length, cursor)  # where the thought ends, as the client knows
        yield Start(followed.logged()[:cursor] if cursor and not followed.finished else "", cursor, boundary)
        answering = cursor > boundary  # the client shows answer text (so the thought is over)
        last_write = time.monotonic()
        notice = None
        while True:
            wakeup = followed.wakeup
            parts = followed.parts
            if index < len(parts):
                pending += "".join(parts[index:])
                index = len(parts)
            start, cursor = cursor, cursor + len(pending)
            noticed = followed.notice != notice
            if noticed:
                notice = followed.notice
            finished = followed.finished and index == len(followed.parts)
            if pending or finished:
                thought, text, extra = _thought_split(followed, pending, start, cursor, boundary, answering)
                if extra:
                    boundary, answering = extra["thought_cursor"], not extra["thinking"]
                elif text and not answering:
                    answering = True
                if finished:
                    yield Update(cursor, text, noticed, notice, followed, thought, **extra)
                    return
            elif noticed:
                thought, text, extra = "", "", {}
            if followed.abandoned:
                return  # the client reconnects to a worker that stays up
            if pending or noticed:
                yield Update(cursor, text, noticed, notice, None, thought, **extra)
                pending = ""
                last_write = time.monotonic()
                _wait(followed.wakeup, flush_interval)  # batch: only a burst or the end cuts this short
                continue
            quiet = time.monotonic() - last_write
            if quiet >= ping_interval:
                yield PING  # keeps proxies open, and is how we learn that the client left
                last_write = time.monotonic()
                continue
            followed.idle_waiters += 1
            try:
                wakeup.wait(ping_interval - quiet)
            finally:
                followed.idle_waiters -= 1
    finally:
        followed.detach()


def until_begun(followed: Followed, ping_interval: float) -> None:
    """Wait (without attaching) until `followed` has text or has ended: for a response that
    decides its status by how the answer begins."""
    while True:
        wakeup = followed.wakeup
        if followed.length or followed.finished:
            return
        wakeup.wait(ping_interval)


def _thought_split(followed: Followed, pending: str, start: int, end: int, boundary: int, answering: bool):
    """Cut the new text `pending` (offsets `start`..`end`) at the thought's end: (thought, answer text,
    the Update's thought fields). Only a thought's end or a rethink costs more than slicing."""
    now_boundary = followed.thought_length
    cut = min(max(now_boundary - start, 0), len(pending))
    thought, text = pending[:cut], pending[cut:]
    extra = {"thought_cursor": start + cut} if thought else {}
    rethought = answering and now_boundary > boundary and start > boundary
    closing = text and now_boundary > 0 and not answering
    if rethought or closing:
        extra.update(
            thought_cursor=min(now_boundary, end),
            whole_thought=followed.logged()[:now_boundary],
            rethought=bool(rethought),
            thinking=not text,
            thought_ms=followed.thought_ms,
        )
    elif thought:
        extra["thinking"] = True
    return thought, text, extra


class Encoder:
    """Turns the events of `follow()` into one protocol's wire events, each one string."""

    def start(self, prefix: str, cursor: int, thought_length: int = 0) -> str:
        return ""

    def text(self, delta: str, cursor: int) -> str:
        raise NotImplementedError

    def notice(self, notice: str | None, cursor: int) -> str:
        return ""

    def thought(self, delta: str, cursor: int) -> str:
        """Thought text: not said unless a protocol (or its client) asks."""
        return ""

    def thought_done(self, event: Update) -> str:
        """The thought is over (`event.whole_thought`), or the answer so far was one (`event.rethought`)."""
        return ""

    def finish(self, followed: Followed, cursor: int) -> str:
        raise NotImplementedError

    def encode(self, event: StreamEvent) -> list[str]:
        """The wire events for one event of `follow()`: none for a ping, or when there is nothing to say."""
        if isinstance(event, Update):
            out = []
            if event.thought and not event.rethought:
                out.append(self.thought(event.thought, event.thought_cursor))
            if event.whole_thought is not None:
                out.append(self.thought_done(event))
            if event.text:
                out.append(self.text(event.text, event.cursor))
            if event.notice_changed:
                out.append(self.notice(event.notice, event.cursor))
            if event.ended is not None:
                out.append(self.finish(event.ended, event.ended.length))
            return [wire for wire in out if wire]
        if isinstance(event, Start):
            head = self.start(event.prefix, event.cursor, event.thought_length)
            return [head] if head else []
        return []


def byte_stream(
    followed: Followed,
    cursor: int,
    encoder: Encoder,
    *,
    keepalive: bytes,
    flush_interval: float,
    ping_interval: float,
) -> Iterator[bytes]:
    """A response body: one write per event of `follow()`; `keepalive` (what the protocol's clients
    skip) for a ping, and for a start with nothing to say (headers and a first byte go out at once).
    A protocol with nothing its clients would skip passes b"" and writes nothing then."""
    with closing(follow(followed, cursor, flush_interval=flush_interval, ping_interval=ping_interval)) as events:
        for event in events:
            body = "".join(encoder.encode(event))
            if body:
                yield body.encode()
            elif keepalive and not isinstance(event, Update):
                yield keepalive


def sse_stream(
    followed: Followed, cursor: int, encoder: Encoder, *, flush_interval: float, ping_interval: float
) -> Iterator[bytes]:
    """An SSE response body: a comment is its keep-alive."""
    return byte_stream(
        followed, cursor, encoder, keepalive=sse.PING, flush_interval=flush_interval, ping_interval=ping_interval
    )


@dataclass(frozen=True)
class Shown:
    """What the page holds when an answer ends: its first `length` characters, of which all but
    `tail` are finished blocks in `#blocks-<id>` (rendered exactly as the final answer renders them)."""

    length: int
    tail: str


class PageEvents(Encoder):
    """The chat page's events: `block` (finished markdown blocks, and the tail that follows them),
    `tail` (the unfinished block, formatted: out-of-band swaps of `#tail-<id>` or of its open code
    lines), `delta` (text appended where the tail ends, when its formatting only grew by it; see
    live_markdown), `status` (e.g. retrying…) and `done` (the final message fragment); for a thought,
    `thought-block`, `thought-tail` and `thought-delta` the same way, and `thought-state` (the
    disclosure, opened or closed).

    `render_thought(thought, thinking, thought_ms)` renders `_thought.html`. With context added to
    the answer, the page's blocks hold only what follows the last addition, at offset `since`.
    """

    def __init__(
        self,
        message_id: int,
        render_final: Callable[[Followed, Shown | None], str],
        render_thought: Callable[[str, bool, int | None], str],
        since: int = 0,
    ):
        self.message_id = message_id
        self.since = since
        self.render_final = render_final
        self.render_thought = render_thought
        self.splitter = Splitter()
        self.thoughts = Splitter()
        self.tail = LiveTail(f"tail-{message_id}")
        self.thought_tail = LiveTail(f"thought-tail-{message_id}")
        self.in_step = False  # the page's blocks are the splitter's: true when the stream began at its cursor

    def start(self, prefix: str, cursor: int, thought_length: int = 0) -> str:
        # The page already shows this much, its tails rendered as these render them.
        self.thoughts = Splitter(prefix[:thought_length])
        answer = prefix[thought_length:]
        self.splitter = Splitter(answer[self.since :] if len(answer) >= self.since else answer)
        self.thought_tail.replace(self.thoughts.tail)
        self.tail.replace(self.splitter.tail)
        self.in_step = len(prefix) == cursor
        return ""

    def text(self, delta: str, cursor: int) -> str:
        return self._stream(self.splitter, self.tail, delta, cursor, "")

    def thought(self, delta: str, cursor: int) -> str:
        # Into the open disclosure every streaming bubble has (hidden while empty): an element swapped
        # in would miss the events that come before htmx has processed it.
        return self._stream(self.thoughts, self.thought_tail, delta, cursor, "thought-")

    def thought_done(self, event: Update) -> str:
        html = self.render_thought(event.whole_thought, event.thinking, event.thought_ms)
        if event.thinking:  # the disclosure swapped in shows this thought, its tail as `thought_tail` renders it
            self.thoughts = Splitter(event.whole_thought)
            self.thought_tail.replace(self.thoughts.tail)
        state = sse.event(html, "thought-state", event.thought_cursor)
        if event.rethought:  # what the page shows as the answer was the thought: empty the answer
            # (as a `tail` event: a page loaded before the thought began has no disclosure to receive it)
            self.splitter = Splitter()
            emptied = f'<div id="blocks-{self.message_id}" hx-swap-oob="innerHTML"></div>' + self.tail.swap("")
            state += sse.event(emptied, "tail", event.thought_cursor)
        return state

    def _stream(self, splitter: Splitter, tail: LiveTail, delta: str, cursor: int, kind: str) -> str:
        blocks = splitter.feed(delta)
        if blocks:
            return sse.event("".join(blocks) + tail.swap(splitter.tail), f"{kind}block", cursor)
        patch = tail.grow(delta)
        return sse.event(patch.data, f"{kind}{patch.event}", cursor)

    def notice(self, notice: str | None, cursor: int) -> str:
        return sse.event(str(escape(notice or "")), "status", cursor)

    def encode(self, event: StreamEvent) -> list[str]:
        if isinstance(event, Update) and event.ended is not None and event.cursor != event.ended.length:
            self.in_step = False  # an answer read back whole (nothing replayed): the page holds less than its end
        return super().encode(event)

    def finish(self, followed: Followed, cursor: int) -> str:
        # In step, the page got every character up to the end: `cursor` is what it holds.
        shown = Shown(cursor, self.splitter.tail) if self.in_step else None
        return sse.event(self.render_final(followed, shown), "done", cursor)


class ApiEvents(Encoder):
    """The reference Express relay's protocol: `data: {"content": …}` events, then `data: [DONE]`.

    Thoughts only for a client that asks (`"reasoning": true`), as `data: {"reasoning": …}`: the
    reference client appends the `content` of every event, and would print "undefined".
    """

    def __init__(self, reasoning: bool = False):
        self.reasoning = reasoning

    def thought(self, delta: str, cursor: int) -> str:
        return f"data: {json.dumps({'reasoning': delta}, ensure_ascii=False)}\n\n" if self.reasoning else ""

    def text(self, delta: str, cursor: int) -> str:
        return f'data: {{"content":{json_string(delta)}}}\n\n'  # once per flush: no encoder object built

    def notice(self, notice: str | None, cursor: int) -> str:
        return f": {notice}\n\n" if notice else ""

    def finish(self, followed: Followed, cursor: int) -> str:
        if followed.status.is_error:
            error = json.dumps({"error": followed.error or followed.status}, ensure_ascii=False)
            return f"data: {error}\n\ndata: [DONE]\n\n"
        return "data: [DONE]\n\n"
