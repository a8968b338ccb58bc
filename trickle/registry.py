"""The generations live in this worker, and the answers it follows from other workers.

One monitor greenlet per worker does the periodic work for all of them at once:
deadlines, saving progress in one transaction, Stop requests made on another
worker, following other workers' answers from the database, and closing
answers whose worker died. Nothing of that costs anything per token.

With REDIS_URL (several instances), two more greenlets per worker use `live.Bus`:
a publisher that sends the new text of every answer written here once per flush
interval, and a reader that follows other workers' answers and receives Stop in
real time. The database stays the source of truth and the fallback: followers
still read it (every SAVE_INTERVAL_S, or every 0.1 s while Redis is away).
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.event import Event

from . import metrics, pricing, storage
from .generation import Generation
from .live import WATCH_RENEW_S, WATCH_TTL_S
from .settings import Settings
from .status import Status

log = logging.getLogger("trickle.registry")

FOLLOW_INTERVAL = 0.1  # how often answers owned by other workers are polled
STALE_AFTER = 15.0  # an answer whose heartbeat is older than this has lost its worker
SWEEP_INTERVAL = 10.0
FINISH_RETRY_S = 30.0  # how long the end of an answer is retried while the database is away
FOLLOW_GRACE = 2.0  # an answer followed from elsewhere is kept this long without a listener


class _Outage:
    """One log line when something starts failing and one when it is back, not one per tick."""

    def __init__(self, what: str):
        self.what = what
        self.since: float | None = None

    def failed(self) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s failed; retrying until it is back", self.what, exc_info=True)
        else:
            log.debug("%s still failing", self.what, exc_info=True)

    def ok(self) -> None:
        if self.since is not None:
            log.warning("%s works again after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None

    @property
    def failing(self) -> bool:
        return self.since is not None


class _Published:
    """How much of a live answer is in its Redis stream: parts[:index], i.e. text[:offset]."""

    __slots__ = ("index", "offset", "notice", "fresh", "watched_until")

    def __init__(self, fresh: bool = True):
        self.index = 0
        self.offset = 0
        self.notice: str | None = None
        self.fresh = fresh  # the stream is (re)created at the next publish
        self.watched_until = 0.0  # followed from another worker until then (monotonic): publish it


class Draining(Exception):
    """The worker is shutting down and takes no new generations."""


class RemoteGeneration:
    """An answer written by another worker, followed through the database.

    It has the listener-facing side of a Generation (parts, status, wakeup…),
    fed by the monitor's polling instead of a provider.
    """

    def __init__(self, key: int, text: str):
        self.key = key
        self.parts = [text] if text else []
        self.length = len(text)
        self.status = Status.STREAMING
        self.error: str | None = None
        self.notice: str | None = None
        self.listeners = 0
        self.idle_waiters = 0
        self.wakeup = Event()
        self.abandoned = False  # this worker stops following; listeners end without a final event
        self.ahead: dict[int, str] = {}  # text from Redis past a gap, by offset, until the gap fills
        self.idle_since = time.monotonic()  # when it last had no listener
        self.cursor = "0-0"  # the id of the last entry read from its Redis stream

    finished = Generation.finished
    text = Generation.text
    locate = Generation.locate
    _signal = Generation._signal

    def attach(self) -> None:
        self.listeners += 1

    def detach(self) -> None:
        self.listeners -= 1
        if self.listeners <= 0:
            self.idle_since = time.monotonic()

    def followed(self, now: float) -> bool:
        """Worth following: a listener is attached, or one is about to (the response has not started
        iterating yet) or may come back (a reload) within FOLLOW_GRACE."""
        return not self.finished and (self.listeners > 0 or now - self.idle_since < FOLLOW_GRACE)

    def update(self, content: str, status: str, error: str | None) -> None:
        """The row as read from the database (its text lags the owner by up to SAVE_INTERVAL_S)."""
        if self.finished:
            return
        self._extend(0, content)
        if status != Status.STREAMING:
            self.status, self.error = Status(status), error
        self._signal()

    def feed(
        self, offset: int, text: str, notice: str | None = None, status: str | None = None, error: str | None = None
    ) -> None:
        """One entry of the answer's Redis stream (the caller signals listeners once per read)."""
        if self.finished:
            return
        if text:
            if offset > self.length:
                self.ahead[offset] = text  # a gap before it (Redis lost entries): kept until filled
            else:
                self._extend(offset, text)
        if notice is not None:
            self.notice = notice or None
        if status is not None and not self.ahead and offset + len(text) <= self.length:
            self.status, self.error = Status(status), error or None  # else the database poll ends it whole

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


class Registry:
    def __init__(self, engine, settings: Settings, bus=None):
        self.engine = engine
        self.settings = settings
        self.bus = bus  # a live.Bus with REDIS_URL, else None: other workers are followed through the database
        self.live: dict[object, Generation] = {}
        self.remote: dict[int, RemoteGeneration] = {}
        self.draining = False
        self._monitor: gevent.Greenlet | None = None
        self._saved_length: dict[object, int] = {}
        self._published: dict[object, _Published] = {}
        self._publisher: gevent.Greenlet | None = None
        self._reader: gevent.Greenlet | None = None
        self._db = _Outage("the database")
        # None while the database fails; at start it was just reached (migrations), as if for long.
        self._db_reachable_since: float | None = time.monotonic() - STALE_AFTER
        self._redis = _Outage("Redis")
        self._reading = False  # the reader is connected: followers need no fast database polling

    # -- local generations ---------------------------------------------------
    def start(
        self,
        key,
        provider,
        messages: list[dict],
        model: str,
        *,
        stored: bool = True,
        owner: str | None = None,
        conversation_id: int | None = None,
    ) -> Generation:
        """Start a generation; `stored` ones save progress and outcome under message id `key`."""
        if self.draining:
            raise Draining("The server is restarting; send your message again in a moment.")
        settings = self.settings
        generation = Generation(
            key,
            provider,
            messages,
            model,
            fallback_models=settings.fallback_models,
            retry_attempts=settings.retry_attempts,
            retry_max_wait=settings.retry_max_wait,
            grace=settings.disconnect_grace if stored else 0.0,
            attach_timeout=settings.attach_timeout,
            flush_chars=settings.flush_chars,
            on_finish=self._finished if stored else self._finished_unstored,
        )
        generation.owner, generation.conversation_id = owner, conversation_id
        metrics.ACTIVE_STREAMS.inc()
        self.live[key] = generation
        self._saved_length[key] = 0 if stored else -1
        if stored and self.bus is not None:
            self._published[key] = _Published(fresh=not self._reset_stream(key))
            self._ensure_bus_greenlets()
        self._ensure_monitor()
        return generation.start()

    def _reset_stream(self, key) -> bool:
        """Before a listener can attach: no stream of an earlier generation of this message (Retry)."""
        if self._redis.failing:  # no waiting on Redis in a request while it is away: the publisher does it
            return False
        try:
            self.bus.reset(key)
            return True
        except Exception:
            self._redis.failed()
            return False

    def get(self, key) -> Generation | None:
        return self.live.get(key)

    def count_unstored(self, owner: str) -> int:
        """Answers of this owner streaming through the API in this worker (stored ones are in the database)."""
        return sum(1 for g in self.live.values() if g.owner == owner and self._saved_length.get(g.key) == -1)

    def _forget(self, generation: Generation) -> None:
        self.live.pop(generation.key, None)
        self._saved_length.pop(generation.key, None)
        metrics.ACTIVE_STREAMS.dec()

    def _finished_unstored(self, generation: Generation, outcome: str, error: str | None) -> None:
        self._forget(generation)
        self._account(generation, outcome, stored=False)

    def _finished(self, generation: Generation, outcome: str, error: str | None) -> None:
        self._forget(generation)
        usage = generation.usage
        cost = self._cost(generation)
        # The answer must reach the database, even through a restart of it: retried with backoff for
        # up to FINISH_RETRY_S. Listeners see the end only after this (`Generation._finish`).
        saved = self._retrying(
            f"saving message {generation.key}",
            lambda: storage.finish_message(
                self.engine,
                generation.key,
                generation.text(),
                outcome,
                error,
                tokens_in=usage.prompt_tokens,
                tokens_out=usage.completion_tokens,
                ttft_ms=generation.ttft_ms,
                duration_ms=generation.duration_ms,
                cost=cost,
                model=generation.model,
            ),
        )
        published = self._published.pop(generation.key, None)
        if saved and published is not None:  # even unwatched: a follower may be attaching right now
            try:
                self.bus.publish_end(
                    generation.key,
                    published.offset,
                    "".join(generation.parts[published.index :]),
                    outcome,
                    error,
                    published.fresh,
                )
            except Exception:  # followers get the end from the database instead
                self._redis.failed()
        self._account(generation, outcome, stored=True)

    def _retrying(self, what: str, action, budget: float = FINISH_RETRY_S) -> bool:
        deadline = time.monotonic() + budget
        delay = 0.25
        while True:
            try:
                action()
                self._db_ok()
                return True
            except Exception:
                self._db_failed()
                if time.monotonic() + delay > deadline:
                    log.exception("%s failed for %.0f s; giving up", what, budget)
                    return False
                log.warning("%s failed; retrying in %.2f s", what, delay, exc_info=log.isEnabledFor(logging.DEBUG))
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _cost(self, generation: Generation) -> float:
        usage = generation.usage
        return pricing.cost_of(self.settings, generation.model, usage.prompt_tokens, usage.completion_tokens)

    def _account(self, generation: Generation, outcome: str, *, stored: bool) -> None:
        """Usage for the budgets, metrics, and one log line per stream (never its text)."""
        usage = generation.usage
        cost = self._cost(generation)
        try:
            storage.record_usage(
                self.engine,
                generation.owner,
                generation.conversation_id,
                generation.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                cost,
            )
        except Exception:
            log.exception("recording usage of %s failed", generation.key)
        metrics.record_end(
            outcome,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
            generation.ttft_ms,
            generation.duration_ms,
            generation.upstream_status,
        )
        log.info(
            "stream kind=%s id=%s conversation=%s model=%s outcome=%s tokens_in=%d tokens_out=%d "
            "cost_usd=%.6f ttft_ms=%s duration_ms=%s",
            "page" if stored else "api",
            generation.key,
            generation.conversation_id,
            generation.model,
            outcome,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
            generation.ttft_ms,
            generation.duration_ms,
        )

    def stop(self, message_id: int) -> None:
        """Stop an answer wherever it is being written."""
        generation = self.live.get(message_id)
        if generation is not None:
            generation.cancel(Status.STOPPED, None)
            return
        if self.bus is not None and not self._redis.failing:
            try:  # at once, through the owner's reader; the database flag below is the fallback
                self.bus.publish_stop(message_id)
            except Exception:
                self._redis.failed()
        storage.request_stop(self.engine, message_id)

    # -- answers owned by other workers ------------------------------------
    def follow(self, message_id: int, text: str) -> RemoteGeneration:
        remote = self.remote.get(message_id)
        if remote is None:
            remote = self.remote[message_id] = RemoteGeneration(message_id, text)
            self._ensure_monitor()
            if self.bus is not None:
                self._ensure_bus_greenlets()
                if not self._redis.failing:  # else the reader asks once Redis is back
                    gevent.spawn(self._watch, message_id)  # not in the request: no waiting on Redis there
        return remote

    def _watch(self, message_id: int) -> None:
        try:
            self.bus.watch([message_id])  # the owner publishes it; the entry wakes our reader too
        except Exception:
            self._redis.failed()

    # -- the monitor --------------------------------------------------------
    def _ensure_monitor(self) -> None:
        if self._monitor is None or self._monitor.dead:
            self._monitor = gevent.spawn(self._monitor_loop)

    def watch_orphans(self) -> gevent.Greenlet:
        """Sweep now and then for good: a worker killed a moment ago looks alive until STALE_AFTER."""

        def loop():
            while True:
                try:
                    self.sweep()
                except Exception:
                    self._db_failed()
                    log.debug("sweep failed", exc_info=True)
                gevent.sleep(SWEEP_INTERVAL)

        return gevent.spawn(loop)

    def _monitor_loop(self) -> None:
        last_save = last_poll = time.monotonic()
        while self.live or self.remote:
            gevent.sleep(FOLLOW_INTERVAL)
            now = time.monotonic()
            try:
                # Through Redis, followers get the text live: the database poll (which also tells the
                # owner that someone watches) is needed only every SAVE_INTERVAL_S.
                if self.remote and (not self._reading or now - last_poll >= self.settings.save_interval):
                    last_poll = now
                    self._poll_remote()
                if now - last_save >= self.settings.save_interval:
                    last_save = now
                    self._save_and_signal()
                self._check_deadlines(time.monotonic())
            except Exception:  # the database may be away for a moment; try again next tick
                self._db_failed()

    def _db_ok(self) -> None:
        if self._db_reachable_since is None:
            self._db_reachable_since = time.monotonic()
        self._db.ok()

    def _db_failed(self) -> None:
        self._db_reachable_since = None
        self._db.failed()

    def _may_judge_heartbeats(self) -> bool:
        """An owner cut off from the database could not write its heartbeats: judge them stale only
        once the database has been reachable (from here) for longer than STALE_AFTER."""
        since = self._db_reachable_since
        return since is not None and time.monotonic() - since >= STALE_AFTER

    def _check_deadlines(self, now: float, watched: set | None = None) -> None:
        settings = self.settings
        for generation in list(self.live.values()):
            generation.check(
                now,
                watched_elsewhere=bool(watched and generation.key in watched),
                first_token_timeout=settings.first_token_timeout,
                idle_timeout=settings.idle_timeout,
                stream_max=settings.stream_max,
            )

    def _save_and_signal(self) -> None:
        stored = [g for g in self.live.values() if self._saved_length.get(g.key, -1) >= 0 and not g.finished]
        if not stored:
            return
        changed = [g for g in stored if g.length != self._saved_length[g.key]]
        storage.save_progress(self.engine, [(g.key, g.text()) for g in changed])
        storage.touch_heartbeats(self.engine, [g.key for g in stored if g not in changed])
        for g in changed:
            self._saved_length[g.key] = g.length
        signals = storage.read_signals(self.engine, [g.key for g in stored])
        wall = time.time()
        # Followers touch `watched_at` at every poll: every 0.1 s, or every SAVE_INTERVAL_S through Redis.
        fresh = max(2.0, 2 * self.settings.save_interval + 0.5) if self.bus is not None else 2.0
        watched = set()
        for key, (stop_requested, watched_at) in signals.items():
            generation = self.live.get(key)
            if generation is None:
                continue
            if stop_requested:
                generation.cancel(Status.STOPPED, None)
            elif watched_at is not None and wall - watched_at < fresh:
                watched.add(key)
        self._db_ok()
        if watched:
            self._check_deadlines(time.monotonic(), watched)

    def _poll_remote(self) -> None:
        now = time.monotonic()
        for key, remote in list(self.remote.items()):
            if not remote.followed(now):
                del self.remote[key]
        asked = dict(self.remote)
        # The query yields to other greenlets: answers followed meanwhile are not in its rows (not deleted).
        rows = storage.read_remote_progress(self.engine, {key: remote.length for key, remote in asked.items()})
        stale = time.time() - STALE_AFTER
        for key, remote in asked.items():
            row = rows.get(key)
            if row is None:  # deleted meanwhile
                remote.update(remote.text(), Status.FAILED, "This conversation was deleted.")
            elif (
                row.status == Status.STREAMING
                and (row.heartbeat_at or 0) < stale
                and key not in self.live
                and self._may_judge_heartbeats()
            ):
                storage.mark_interrupted(self.engine, stale, [key])
            else:
                remote.update(row.content, row.status, row.error)
        if rows:
            self._db_ok()

    def sweep(self) -> int:
        """Mark answers whose worker died as interrupted (none of ours: ours have fresh heartbeats)."""
        if not self._may_judge_heartbeats():
            storage.ping(self.engine)
            self._db_ok()
            return 0
        count = storage.mark_interrupted(self.engine, time.time() - STALE_AFTER)
        self._db_ok()
        if count:
            log.warning("marked %d orphaned answer(s) as interrupted", count)
        return count

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
                if generation is None:  # ended: `_finished` publishes the rest with the outcome
                    continue
                parts = generation.parts
                count = len(parts)
                notice = generation.notice
                if count == state.index and notice == state.notice and not state.fresh:
                    continue
                text = "".join(parts[state.index : count]) if count > state.index else ""
                batch.append((key, state, count, text, notice))
            if not batch:
                continue
            try:
                lost = self.bus.publish(
                    (key, state.offset, text, None if notice == state.notice else notice or "", state.fresh)
                    for key, state, _, text, notice in batch
                )
            except Exception:
                failures += 1
                self._redis.failed()
                continue
            failures = 0
            self._redis.ok()
            for key, state, count, text, notice in batch:
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
                self._reading = False  # followers poll the database every 0.1 s meanwhile
                self._redis.failed()
                control_id = None
                for remote in self.remote.values():  # Redis may have restarted empty: read every stream
                    remote.cursor = "0-0"  # from its start again (offsets drop what is known)
                failures += 1
                gevent.sleep(min(0.25 * 2**failures, 2.0))
                continue
            failures = 0
            self._reading = True
            self._redis.ok()
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
                        int(fields.get("o", 0)), fields.get("t", ""), fields.get("n"), fields.get("s"), fields.get("e")
                    )
                remote._signal()
        self._reading = False

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

    # -- shutdown -----------------------------------------------------------
    def drain(self, timeout: float) -> None:
        """Take no new generations, let running ones finish for up to `timeout` s, then save the rest."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.live and time.monotonic() < deadline:
            gevent.sleep(0.1)
        for generation in list(self.live.values()):
            generation.cancel(Status.INTERRUPTED, "The server restarted while this answer was being written.")
        for generation in list(self.live.values()):
            generation.done.wait(5)
        for remote in self.remote.values():  # their listeners reconnect to a worker that stays
            remote.abandoned = True
            remote._signal()
