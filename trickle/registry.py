"""The generations live in this worker, and the answers it follows from other workers.

One monitor greenlet per worker does the periodic work for all of them at once:
deadlines, saving progress in one transaction, Stop requests made on another
worker, following other workers' answers from the database, and closing
answers whose worker died. Nothing of that costs anything per token.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.event import Event

from . import limits, metrics, storage
from .generation import STREAMING, Generation
from .settings import Settings

log = logging.getLogger("trickle.registry")

FOLLOW_INTERVAL = 0.1  # how often answers owned by other workers are polled
STALE_AFTER = 15.0  # an answer whose heartbeat is older than this has lost its worker
SWEEP_INTERVAL = 10.0


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
        self.status = STREAMING
        self.error: str | None = None
        self.notice: str | None = None
        self.listeners = 0
        self.idle_waiters = 0
        self.wakeup = Event()
        self.abandoned = False  # this worker stops following; listeners end without a final event

    finished = Generation.finished
    text = Generation.text
    locate = Generation.locate
    _signal = Generation._signal

    def attach(self) -> None:
        self.listeners += 1

    def detach(self) -> None:
        self.listeners -= 1

    def update(self, content: str, status: str, error: str | None) -> None:
        if len(content) > self.length:
            self.parts.append(content[self.length:])
            self.length = len(content)
        if status != STREAMING:
            self.status, self.error = status, error
        self._signal()


class Registry:
    def __init__(self, engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.live: dict[object, Generation] = {}
        self.remote: dict[int, RemoteGeneration] = {}
        self.draining = False
        self._monitor: gevent.Greenlet | None = None
        self._saved_length: dict[object, int] = {}

    # -- local generations ---------------------------------------------------
    def start(self, key, provider, messages: list[dict], model: str, *, stored: bool = True,
              owner: str | None = None, conversation_id: int | None = None) -> Generation:
        """Start a generation; `stored` ones save progress and outcome under message id `key`."""
        if self.draining:
            raise Draining("The server is restarting; send your message again in a moment.")
        settings = self.settings
        generation = Generation(
            key, provider, messages, model,
            fallback_models=settings.fallback_models, retry_attempts=settings.retry_attempts,
            retry_max_wait=settings.retry_max_wait,
            grace=settings.disconnect_grace if stored else 0.0,
            attach_timeout=settings.attach_timeout, flush_chars=settings.flush_chars,
            on_finish=self._finished if stored else self._finished_unstored,
        )
        generation.owner, generation.conversation_id = owner, conversation_id
        metrics.ACTIVE_STREAMS.inc()
        self.live[key] = generation
        self._saved_length[key] = 0 if stored else -1
        self._ensure_monitor()
        return generation.start()

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
        for attempt in range(5):  # the answer must reach the database, even through a hiccup
            try:
                storage.finish_message(
                    self.engine, generation.key, generation.text(), outcome, error,
                    tokens_in=usage.prompt_tokens, tokens_out=usage.completion_tokens,
                    ttft_ms=generation.ttft_ms, duration_ms=generation.duration_ms, cost=cost,
                    model=generation.model)
                break
            except Exception:
                log.exception("saving message %s failed (attempt %d)", generation.key, attempt + 1)
                gevent.sleep(0.2 * 2 ** attempt)
        self._account(generation, outcome, stored=True)

    def _cost(self, generation: Generation) -> float:
        usage = generation.usage
        return limits.cost_of(self.settings, generation.model, usage.prompt_tokens, usage.completion_tokens)

    def _account(self, generation: Generation, outcome: str, *, stored: bool) -> None:
        """Usage for the budgets, metrics, and one log line per stream (never its text)."""
        usage = generation.usage
        cost = self._cost(generation)
        try:
            storage.record_usage(self.engine, generation.owner, generation.conversation_id, generation.model,
                                 usage.prompt_tokens, usage.completion_tokens, cost)
        except Exception:
            log.exception("recording usage of %s failed", generation.key)
        metrics.record_end(outcome, usage.prompt_tokens, usage.completion_tokens, cost, generation.ttft_ms,
                           generation.duration_ms, generation.upstream_status)
        log.info("stream kind=%s id=%s conversation=%s model=%s outcome=%s tokens_in=%d tokens_out=%d "
                 "cost_usd=%.6f ttft_ms=%s duration_ms=%s", "page" if stored else "api", generation.key,
                 generation.conversation_id, generation.model, outcome, usage.prompt_tokens,
                 usage.completion_tokens, cost, generation.ttft_ms, generation.duration_ms)

    def stop(self, message_id: int) -> None:
        """Stop an answer wherever it is being written."""
        generation = self.live.get(message_id)
        if generation is not None:
            generation.cancel("stopped", None)
        else:
            storage.request_stop(self.engine, message_id)

    # -- answers owned by other workers ------------------------------------
    def follow(self, message_id: int, text: str) -> RemoteGeneration:
        remote = self.remote.get(message_id)
        if remote is None:
            remote = self.remote[message_id] = RemoteGeneration(message_id, text)
            self._ensure_monitor()
        return remote

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
                    log.exception("sweep failed")
                gevent.sleep(SWEEP_INTERVAL)

        return gevent.spawn(loop)

    def _monitor_loop(self) -> None:
        last_save = time.monotonic()
        while self.live or self.remote:
            gevent.sleep(FOLLOW_INTERVAL)
            now = time.monotonic()
            try:
                if self.remote:
                    self._poll_remote()
                if now - last_save >= self.settings.save_interval:
                    last_save = now
                    self._save_and_signal()
                self._check_deadlines(time.monotonic())
            except Exception:  # the database may be away for a moment; try again next tick
                log.exception("monitor tick failed")

    def _check_deadlines(self, now: float, watched: set | None = None) -> None:
        settings = self.settings
        for generation in list(self.live.values()):
            generation.check(now, watched_elsewhere=bool(watched and generation.key in watched),
                             first_token_timeout=settings.first_token_timeout,
                             idle_timeout=settings.idle_timeout, stream_max=settings.stream_max)

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
        watched = set()
        for key, (stop_requested, watched_at) in signals.items():
            generation = self.live.get(key)
            if generation is None:
                continue
            if stop_requested:
                generation.cancel("stopped", None)
            elif watched_at is not None and wall - watched_at < 2.0:
                watched.add(key)
        if watched:
            self._check_deadlines(time.monotonic(), watched)

    def _poll_remote(self) -> None:
        for key, remote in list(self.remote.items()):
            if remote.listeners <= 0 or remote.finished:
                del self.remote[key]
        rows = storage.read_remote_progress(self.engine, {key: r.length for key, r in self.remote.items()})
        stale = time.time() - STALE_AFTER
        for key, remote in list(self.remote.items()):
            row = rows.get(key)
            if row is None:  # deleted meanwhile
                remote.update(remote.text(), "failed", "This conversation was deleted.")
            elif row.status == STREAMING and (row.heartbeat_at or 0) < stale and key not in self.live:
                storage.mark_interrupted(self.engine, stale, [key])
            else:
                remote.update(row.content, row.status, row.error)

    def sweep(self) -> int:
        """Mark answers whose worker died as interrupted (none of ours: ours have fresh heartbeats)."""
        count = storage.mark_interrupted(self.engine, time.time() - STALE_AFTER)
        if count:
            log.warning("marked %d orphaned answer(s) as interrupted", count)
        return count

    # -- shutdown -----------------------------------------------------------
    def drain(self, timeout: float) -> None:
        """Take no new generations, let running ones finish for up to `timeout` s, then save the rest."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.live and time.monotonic() < deadline:
            gevent.sleep(0.1)
        for generation in list(self.live.values()):
            generation.cancel("interrupted", "The server restarted while this answer was being written.")
        for generation in list(self.live.values()):
            generation.done.wait(5)
        for remote in self.remote.values():  # their listeners reconnect to a worker that stays
            remote.abandoned = True
            remote._signal()
