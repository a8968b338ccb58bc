"""The generations of this worker: starting them, their accounting, the monitor, sweeping and drain.

One monitor greenlet per worker does the periodic work for all of them at once:
deadlines, saving progress in one transaction, Stop requests made on another
worker, polling the answers followed from other workers (`followers.py`), and
closing answers whose worker died. Nothing of that costs anything per token.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import gevent

from . import context_store, database, ledger, live_rows, metrics, pricing
from .followers import Followers
from .generation import Generation
from .outage import STALE_AFTER, DatabaseOutage
from .settings import Settings
from .status import Status

log = logging.getLogger("trickle.registry")

FOLLOW_INTERVAL = 0.1  # how often answers owned by other workers are polled
SWEEP_INTERVAL = 10.0
FINISH_RETRY_S = 30.0  # how long the end of an answer is retried while the database is away


class Draining(Exception):
    """The worker is shutting down and takes no new generations."""


class Registry:
    def __init__(self, engine, settings: Settings, bus=None):
        self.engine = engine
        self.settings = settings
        self.bus = bus  # a live.Bus with REDIS_URL, else None: other workers are followed through the database
        self.live: dict[object, Generation] = {}
        self.draining = False
        self.database = DatabaseOutage()
        self.followers = Followers(engine, settings, bus, self.live, self.database, self._ensure_monitor)
        self._monitor: gevent.Greenlet | None = None
        self._saved_length: dict[object, int] = {}  # of the stored generations: how much is in the database
        self._unstored: Counter[str | None] = Counter()  # per owner: a limit check must not walk every answer

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
        extra_body: dict | None = None,
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
            on_finish=self._finished,
            on_context=self._context_added if stored else None,
            stored=stored,
            owner=owner,
            conversation_id=conversation_id,
            extra_body=extra_body,
        )
        metrics.ACTIVE_STREAMS.inc()
        self.live[key] = generation
        if not stored:
            self._unstored[owner] += 1
        if stored:
            self._saved_length[key] = 0
            self.followers.publishing(key)
        self._ensure_monitor()
        return generation.start()

    def get(self, key) -> Generation | None:
        return self.live.get(key)

    def count_unstored(self, owner: str) -> int:
        """Answers of this owner streaming through the API in this worker (stored ones are in the database)."""
        return self._unstored[owner]

    def _forget(self, generation: Generation) -> None:
        if self.live.pop(generation.key, None) is not None and not generation.stored:
            self._unstored[generation.owner] -= 1
            if not self._unstored[generation.owner]:
                del self._unstored[generation.owner]
        self._saved_length.pop(generation.key, None)
        metrics.ACTIVE_STREAMS.dec()

    def _finished(self, generation: Generation, outcome: str, error: str | None) -> None:
        self._forget(generation)
        # Usage before the end: whoever shows the end, on any worker, finds it in the totals.
        counted = self._record_usage(generation)
        if generation.stored:
            self._save_end(generation, outcome, error)
        if not counted and not self._record_usage(generation):  # again, after the end's retries
            log.error("recording usage of %s failed", generation.key)
        self._account(generation, outcome)

    def _context_added(self, generation: Generation, text: str, at: int) -> None:
        """Context added to a stored answer is stored before the request that carries it is made."""
        context_store.add(self.engine, generation.key, at, text)

    def _save_end(self, generation: Generation, outcome: str, error: str | None) -> None:
        usage = generation.usage
        cost = self._cost(generation)
        # The answer must reach the database, even through a restart of it: retried with backoff for
        # up to FINISH_RETRY_S. Listeners see the end only after this (`Generation._finish`).
        saved = self._retrying(
            f"saving message {generation.key}",
            lambda: live_rows.finish_message(
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
                thoughts=generation.thought(),
                thought_ms=generation.thought_ms,
            ),
        )
        self.followers.published_end(generation, outcome, error, saved)

    def _retrying(self, what: str, action, budget: float = FINISH_RETRY_S) -> bool:
        deadline = time.monotonic() + budget
        delay = 0.25
        while True:
            try:
                action()
                self.database.ok()
                return True
            except Exception:
                self.database.failed()
                if time.monotonic() + delay > deadline:
                    log.exception("%s failed for %.0f s; giving up", what, budget)
                    return False
                log.warning("%s failed; retrying in %.2f s", what, delay, exc_info=log.isEnabledFor(logging.DEBUG))
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _cost(self, generation: Generation) -> float:
        usage = generation.usage
        return pricing.cost_of(self.settings, generation.model, usage.prompt_tokens, usage.completion_tokens)

    def _record_usage(self, generation: Generation) -> bool:
        """The usage row of the budgets and the page's totals; False if the database refused it."""
        usage = generation.usage
        try:
            ledger.record_usage(
                self.engine,
                generation.owner,
                generation.conversation_id,
                generation.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                self._cost(generation),
            )
            return True
        except Exception:
            log.warning("recording usage of %s failed", generation.key, exc_info=log.isEnabledFor(logging.DEBUG))
            return False

    def _account(self, generation: Generation, outcome: str) -> None:
        """Metrics, and one log line per stream (never its text)."""
        usage = generation.usage
        cost = self._cost(generation)
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
            "page" if generation.stored else "api",
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
        self.followers.stop_elsewhere(message_id)

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
                    self.database.failed()
                    log.debug("sweep failed", exc_info=True)
                gevent.sleep(SWEEP_INTERVAL)

        return gevent.spawn(loop)

    def _monitor_loop(self) -> None:
        last_save = last_poll = time.monotonic()
        followers = self.followers
        while self.live or followers.remote:
            gevent.sleep(FOLLOW_INTERVAL)
            now = time.monotonic()
            try:
                # Through Redis, followers get the text live: the database poll (which also tells the
                # owner that someone watches) is needed only every SAVE_INTERVAL_S.
                if followers.remote and (not followers.reading or now - last_poll >= self.settings.save_interval):
                    last_poll = now
                    followers.poll()
                if now - last_save >= self.settings.save_interval:
                    last_save = now
                    self._save_and_signal()
                self._check_deadlines(time.monotonic())
            except Exception:  # the database may be away for a moment; try again next tick
                self.database.failed()

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
        stored = [g for g in self.live.values() if g.stored and not g.finished]
        if not stored:
            return
        changed = [g for g in stored if g.length != self._saved_length[g.key]]
        live_rows.save_progress(self.engine, [(g.key, g.text(), g.thought(), g.thought_ms) for g in changed])
        live_rows.touch_heartbeats(self.engine, [g.key for g in stored if g not in changed])
        for g in changed:
            self._saved_length[g.key] = g.length
        signals = live_rows.read_signals(self.engine, [g.key for g in stored])
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
        self.database.ok()
        if watched:
            self._check_deadlines(time.monotonic(), watched)

    def sweep(self) -> int:
        """Mark answers whose worker died as interrupted (none of ours: ours have fresh heartbeats)."""
        if not self.database.may_judge_heartbeats():
            database.ping(self.engine)
            self.database.ok()
            return 0
        count = live_rows.mark_interrupted(self.engine, time.time() - STALE_AFTER)
        self.database.ok()
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
            generation.cancel(Status.INTERRUPTED, "The server restarted while this answer was being written.")
        for generation in list(self.live.values()):
            generation.done.wait(5)
        self.followers.abandon()
