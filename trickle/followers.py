"""Answers written by other workers and instances, followed here; and this worker's answers, told to them.

A listener on a worker that does not write the answer follows a `RemoteAnswer`
(`Followers.track`), fed by the registry's monitor polling the database. With
REDIS_URL (several instances), two greenlets per worker use `live.Bus`: a
publisher that sends the new text of every answer written here that someone
follows elsewhere, once per flush interval, and a reader that follows other
workers' answers and receives Stop and watch requests in real time. The database
stays the source of truth and the fallback: followers still read it (every
SAVE_INTERVAL_S, or every 0.1 s while Redis is away).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent

from . import live_rows
from .generation import Generation
from .live import WATCH_RENEW_S, WATCH_TTL_S
from .outage import STALE_AFTER, DatabaseOutage, Outage
from .settings import Settings
from .status import Status
from .textlog import TextLog

FOLLOW_GRACE = 2.0  # an answer followed from elsewhere is kept this long without a listener


class RemoteAnswer(TextLog):
    """An answer written by another worker: the listener-facing side of a Generation, fed by the
    database poll and the Redis reader instead of a provider."""

    def __init__(self, key: int, text: str, thought: str = "", thought_ms: int | None = None):
        super().__init__(text, thought=thought, thought_ms=thought_ms)
        self.key = key
        self.ahead: dict[int, str] = {}  # text from Redis past a gap, by offset, until the gap fills
        self.idle_since = time.monotonic()  # when it last had no listener
        self.cursor = "0-0"  # the id of the last entry read from its Redis stream

    def detach(self) -> None:
        super().detach()
        if self.listeners <= 0:
            self.idle_since = time.monotonic()

    def followed(self, now: float) -> bool:
        """Worth following: a listener is attached, or one is about to (the response has not started
        iterating yet) or may come back (a reload) within FOLLOW_GRACE."""
        return not self.finished and (self.listeners > 0 or now - self.idle_since < FOLLOW_GRACE)

    def update(
        self, content: str, status: str, error: str | None, thought: str = "", thought_ms: int | None = None
    ) -> None:
        """The row as read from the database (its text lags the owner by up to SAVE_INTERVAL_S)."""
        if self.finished:
            return
        self._extend(0, thought + content if thought else content)
        self._thought_until(len(thought), thought_ms)
        if status != Status.STREAMING:
            self.status, self.error = Status(status), error
        self.signal()

    def feed(
        self,
        offset: int,
        text: str,
        notice: str | None = None,
        status: str | None = None,
        error: str | None = None,
        thought_length: int = 0,
        thought_ms: int | None = None,
    ) -> None:
        """One entry of the answer's Redis stream (the caller signals listeners once per read)."""
        if self.finished:
            return
        self._thought_until(thought_length, thought_ms)
        if text:
            if offset > self.length:
                self.ahead[offset] = text  # a gap before it (Redis lost entries): kept until filled
            else:
                self._extend(offset, text)
        if notice is not None:
            self.notice = notice or None
        if status is not None and not self.ahead and offset + len(text) <= self.length:
            self.status, self.error = Status(status), error or None  # else the database poll ends it whole

    def _thought_until(self, thought_length: int, thought_ms: int | None) -> None:
        """The owner's boundary between thought and answer only grows (see `textlog`)."""
        if thought_length > self.thought_length:
            self.thought_length = thought_length
        if thought_ms is not None:
            self.thought_ms = thought_ms

    def _extend(self, offset: int, text: str) -> None:
        end = offset + len(text)
        if end > self.length:
            self.parts.append(text[self.length - offset :])
            self.length = end
        while self.ahead:  # text that was ahead of a gap this filled
            start = min(self.ahead)
            if start > self.length:
                break
            chunk = self.ahead.pop(start)
            if start + len(chunk) > self.length:
                self.parts.append(chunk[self.length - start :])
                self.length = start + len(chunk)


class _Published:
    """How much of a live answer is in its Redis stream: parts[:index], i.e. text[:offset]."""

    __slots__ = ("index", "offset", "notice", "fresh", "watched_until")

    def __init__(self, fresh: bool = True):
        self.index = 0
        self.offset = 0
        self.notice: str | None = None
        self.fresh = fresh  # the stream is (re)created at the next publish
        self.watched_until = 0.0  # followed from another worker until then (monotonic): publish it


class Followers:
    """What crosses workers: the answers followed here, and what is published of those written here.

    `live` is the registry's own table of this worker's generations (the answers written here);
    `on_track` starts the registry's monitor, which polls the followed answers.
    """

    def __init__(
        self,
        engine,
        settings: Settings,
        bus,
        live: dict[object, Generation],
        database: DatabaseOutage,
        on_track: Callable[[], None],
    ):
        self.engine = engine
        self.settings = settings
        self.bus = bus  # a live.Bus with REDIS_URL, else None: other workers are followed through the database
        self.live = live
        self.database = database
        self.on_track = on_track
        self.remote: dict[int, RemoteAnswer] = {}
        self.reading = False  # the reader is connected: followers need no fast database polling
        self.redis = Outage("Redis")
        self._published: dict[object, _Published] = {}
        self._publisher: gevent.Greenlet | None = None
        self._reader: gevent.Greenlet | None = None

    # -- answers written elsewhere ---------------------------------------------
    def track(self, message_id: int, text: str, thought: str = "", thought_ms: int | None = None) -> RemoteAnswer:
        """The answer `message_id`, written by another worker, followed here from its `thought` and
        `text` on."""
        remote = self.remote.get(message_id)
        if remote is None:
            remote = self.remote[message_id] = RemoteAnswer(message_id, text, thought, thought_ms)
            self.on_track()
            if self.bus is not None:
                self._ensure_bus_greenlets()
                if not self.redis.failing:  # else the reader asks once Redis is back
                    gevent.spawn(self._watch, message_id)  # not in the request: no waiting on Redis there
        return remote

    def _watch(self, message_id: int) -> None:
        try:
            self.bus.watch([message_id])  # the owner publishes it; the entry wakes our reader too
        except Exception:
            self.redis.failed()

    def poll(self) -> None:
        """Read the followed answers from the database (which also tells their owners someone watches)."""
        now = time.monotonic()
        for key, remote in list(self.remote.items()):
            if not remote.followed(now):
                del self.remote[key]
        asked = dict(self.remote)
        # The query yields to other greenlets: answers followed meanwhile are not in its rows (not deleted).
        rows = live_rows.read_remote_progress(self.engine, {key: remote.length for key, remote in asked.items()})
        stale = time.time() - STALE_AFTER
        for key, remote in asked.items():
            row = rows.get(key)
            if row is None:  # deleted meanwhile
                remote.update(remote.text(), Status.FAILED, "This conversation was deleted.", remote.thought())
            elif (
                row.status == Status.STREAMING
                and (row.heartbeat_at or 0) < stale
                and key not in self.live
                and self.database.may_judge_heartbeats()
            ):
                live_rows.mark_interrupted(self.engine, stale, [key])
            else:
                remote.update(row.content, row.status, row.error, row.thoughts or "", row.thought_ms)
        if rows:
            self.database.ok()

    def abandon(self) -> None:
        """Shutting down: listeners of followed answers end, and reconnect to a worker that stays."""
        for remote in self.remote.values():
            remote.abandoned = True
            remote.signal()

    # -- answers written here, told to other workers --------------------------------
    def publishing(self, key) -> None:
        """A stored answer starts here: publish it through Redis whenever someone follows it elsewhere."""
        if self.bus is None:
            return
        self._published[key] = _Published(fresh=not self._reset_stream(key))
        self._ensure_bus_greenlets()

    def _reset_stream(self, key) -> bool:
        """Before a listener can attach: no stream of an earlier generation of this message (Retry)."""
        if self.redis.failing:  # no waiting on Redis in a request while it is away: the publisher does it
            return False
        try:
            self.bus.reset(key)
            return True
        except Exception:
            self.redis.failed()
            return False

    def published_end(self, generation: Generation, outcome: str, error: str | None, saved: bool) -> None:
        """The answer ended (and was `saved`): publish the rest with its outcome, even unwatched, for
        a follower may be attaching right now."""
        published = self._published.pop(generation.key, None)
        if not saved or published is None:
            return
        try:
            self.bus.publish_end(
                generation.key,
                published.offset,
                "".join(generation.parts[published.index :]),
                outcome,
                error,
                published.fresh,
                generation.thought_length,
                generation.thought_ms,
            )
        except Exception:  # followers get the end from the database instead
            self.redis.failed()

    def stop_elsewhere(self, message_id: int) -> None:
        """Ask the answer's owner, wherever it is, to stop it."""
        if self.bus is not None and not self.redis.failing:
            try:  # at once, through the owner's reader; the database flag below is the fallback
                self.bus.publish_stop(message_id)
            except Exception:
                self.redis.failed()
        live_rows.request_stop(self.engine, message_id)

    # -- Redis: publishing what is written here, reading what is written elsewhere ----------------
    def _ensure_bus_greenlets(self) -> None:
        if self._published and (self._publisher is None or self._publisher.dead):
            self._publisher = gevent.spawn(self._publish_loop)
        if self._reader is None or self._reader.dead:
            self._reader = gevent.spawn(self._read_loop)

    def _publish_loop(self) -> None:
        """Every flush interval, the new text (and notice) of every answer written here, in one pipeline."""
        interval = max(self.settings.flush_interval, 0.01)
        failures = 0
        while self._published:
            gevent.sleep(interval if not failures else min(0.25 * 2**failures, 2.0))
            batch = []
            now = time.monotonic()
            for key, state in list(self._published.items()):
                if state.watched_until < now:  # nobody follows it from elsewhere: nothing to send
                    continue
                generation = self.live.get(key)
                if generation is None:  # ended: `published_end` publishes the rest with the outcome
                    continue
                parts = generation.parts
                count = len(parts)
                notice = generation.notice
                if count == state.index and notice == state.notice and not state.fresh:
                    continue
                text = "".join(parts[state.index : count]) if count > state.index else ""
                batch.append((key, state, count, text, notice, generation.thought_length, generation.thought_ms))
            if not batch:
                continue
            try:
                lost = self.bus.publish(
                    (key, state.offset, text, None if notice == state.notice else notice or "", state.fresh, *thought)
                    for key, state, _, text, notice, *thought in batch
                )
            except Exception:
                failures += 1
                self.redis.failed()
                continue
            failures = 0
            self.redis.ok()
            for key, state, count, text, notice, *_ in batch:
                if key in lost:  # Redis restarted: its stream is gone, publish it whole again
                    state.index, state.offset, state.notice, state.fresh = 0, 0, None, True
                else:
                    state.index, state.offset = count, state.offset + len(text)
                    state.notice, state.fresh = notice, False

    def _read_loop(self) -> None:
        """One blocking XREAD for everything this worker waits for: the answers it follows, and the
        control stream (Stop and watch requests for the answers it writes)."""
        bus = self.bus
        control_id = None
        watched_at = 0.0
        failures = 0
        while self.live or self.remote:
            try:
                if control_id is None:
                    control_id = bus.last_id(bus.control)
                    watched_at = 0.0  # (re)connected: tell the owners again what is followed here
                now = time.monotonic()
                followed = [key for key, remote in self.remote.items() if remote.followed(now)]
                if followed and time.monotonic() - watched_at >= WATCH_RENEW_S:
                    watched_at = time.monotonic()
                    bus.watch(followed)
                streams = {bus.control: control_id}
                for key in followed:
                    streams[bus.answer_key(key)] = self.remote[key].cursor
                response = bus.read(streams)
            except Exception:
                self.reading = False  # followers poll the database every 0.1 s meanwhile
                self.redis.failed()
                control_id = None
                for remote in self.remote.values():  # Redis may have restarted empty: read every stream
                    remote.cursor = "0-0"  # from its start again (offsets drop what is known)
                failures += 1
                gevent.sleep(min(0.25 * 2**failures, 2.0))
                continue
            failures = 0
            self.reading = True
            self.redis.ok()
            for stream, entries in response:
                if stream == bus.control:
                    control_id = entries[-1][0]
                    self._control(entries)
                    continue
                remote = self.remote.get(bus.message_id(stream))
                if remote is None or remote.finished:
                    continue
                remote.cursor = entries[-1][0]
                for _, fields in entries:
                    remote.feed(
                        int(fields.get("o", 0)),
                        fields.get("t", ""),
                        fields.get("n"),
                        fields.get("s"),
                        fields.get("e"),
                        int(fields.get("h", 0)),
                        int(fields["d"]) if "d" in fields else None,
                    )
                remote.signal()
        self.reading = False

    def _control(self, entries) -> None:
        until = time.monotonic() + WATCH_TTL_S
        for _, fields in entries:
            if "stop" in fields:
                generation = self.live.get(int(fields["stop"]))
                if generation is not None:
                    generation.cancel(Status.STOPPED, None)
            for key in filter(None, fields.get("watch", "").split(",")):
                state = self._published.get(int(key))
                if state is not None:
                    state.watched_until = until
