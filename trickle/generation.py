"""An answer being written is a Generation, owned by the server, not by a request.

It runs in its own greenlet, pulls deltas from a provider into an append-only
log (every position is an offset), and ends with an outcome. HTTP responses are
only listeners (see `listen.py`): they attach at a cursor, replay, follow, and
detach. So a reload or an EventSource reconnect is just another attach, Stop is
`cancel()` from any request, and a client leaving is a listener detaching. Context added
while it runs (`add_context`, see `continuation.py`) cuts the request and continues the
same log with a new one: listeners see one answer.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import closing

import gevent
from gevent import get_hub
from gevent.event import Event

from .continuation import SEPARATOR, AddedContext, Additions, Continue, interleaved, summed
from .providers import ProviderError, Usage, counted_usage
from .status import Status
from .textlog import TextLog
from .thoughts import Rethink, Thought

log = logging.getLogger("trickle.generation")


class Interrupt(BaseException):
    """Ends a generation from outside (Stop, a deadline, nobody watching, shutdown).

    A BaseException, so that no library's `except Exception` swallows it
    on its way out of a blocking read.
    """

    def __init__(self, outcome: str, message: str | None = None):
        super().__init__(message or outcome)
        self.outcome = outcome
        self.message = message


class Generation(TextLog):
    """One answer: its text log, its outcome, and the listeners following it.

    `stored` ones are saved under message id `key`; the others (`/api/chat`, `/ws`) are not.
    """

    def __init__(
        self,
        key,
        provider,
        messages: list[dict],
        model: str,
        *,
        fallback_models=(),
        retry_attempts: int = 2,
        retry_max_wait: float = 20.0,
        grace: float = 30.0,
        attach_timeout: float = 15.0,
        flush_chars: int = 2048,
        on_finish: Callable[[Generation, str, str | None], None] | None = None,
        on_context: Callable[[Generation, str, int], None] | None = None,
        stored: bool = True,
        owner: str | None = None,
        conversation_id: int | None = None,
        extra_body: dict | None = None,
    ):
        super().__init__()
        # Request fields for the provider (a reasoning effort), only for one that takes them.
        self.stream_options = {"extra_body": extra_body} if extra_body else {}
        self.key = key
        self.stored = stored
        self.owner = owner
        self.conversation_id = conversation_id
        self.provider = provider
        self.history = messages  # what the answer replies to
        self.messages = messages  # what the request being made sends: the history and any additions
        self.model = model
        self.fallback_models = [m for m in fallback_models if m != model]
        self.retry_attempts = retry_attempts
        self.retry_max_wait = retry_max_wait
        self.grace = grace
        self.attach_timeout = attach_timeout
        self.flush_chars = flush_chars
        self.on_finish = on_finish
        self.on_context = on_context  # stores an addition before it goes upstream (raises: not stored)
        self.additions = Additions()

        self.usage: Usage | None = None
        self.upstream_status: int | None = None  # the HTTP status of a provider failure, for metrics
        self.started_at = time.monotonic()
        self.request_started_at = self.started_at  # a continuation is a new request
        self.attempt_started_at = self.started_at
        self.waiting = False  # sleeping before a retry: no first-token deadline
        self.first_token_at: float | None = None  # of a thought or the answer: the deadlines' activity
        self.first_thought_at: float | None = None
        self.first_text_at: float | None = None
        self.last_token_at: float | None = None
        self.finished_at: float | None = None

        self.ever_attached = False
        self.unwatched_since: float | None = self.started_at
        self.done = Event()
        self._urgent_mark = 0
        self._greenlet: gevent.Greenlet | None = None
        self._ending = False  # set once the outcome is decided; cancel() is then a no-op
        self._running = False
        self._cancel_first: Interrupt | None = None  # a cancel that came before the greenlet ran
        self._interruptible = False  # a request is being made: an addition may cut it
        self._request_start = 0  # where in the log the request being made began writing
        self._spent: Usage | None = None  # of the requests cut for additions
        self._requests = 0
        self._model_in_use = model

    # -- the log (`TextLog` has the listener side) ----------------------------
    def _append(self, delta: str) -> None:
        if "\x00" in delta:  # PostgreSQL cannot store it: the answer would never be saved
            delta = delta.replace("\x00", "")
            if not delta:
                return
        # The hot path: no allocation beyond the list slot, and a wake-up only when
        # someone waits idle or enough text piled up; otherwise listeners pick it
        # up at their next flush.
        now = time.monotonic()
        if self.first_text_at is None:
            self._answer_begins(now)
        self.last_token_at = now
        self.parts.append(delta)
        self.length += len(delta)
        if self.idle_waiters or self.length - self._urgent_mark >= self.flush_chars:
            self._urgent_mark = self.length
            self.signal()

    def _answer_begins(self, now: float) -> None:
        self.first_text_at = now
        if self.first_token_at is None:
            self.first_token_at = now
            self.notice = None
        if self.thought_length and self.thought_ms is None:
            self.thought_ms = round((now - self.first_thought_at) * 1000)
            self.signal()  # the page closes the thought at once

    def _append_thought(self, delta: str) -> None:
        """A thought is activity for the deadlines; it joins the log only before the answer began
        (one thought per answer: the log is the thought, then the answer)."""
        delta = delta.replace("\x00", "")
        now = time.monotonic()
        self.last_token_at = now
        if self.first_token_at is None:
            self.first_token_at = now
            self.notice = None
        if self.first_thought_at is None:
            self.first_thought_at = now
        if not delta or self.thought_length != self.length:
            return
        self.parts.append(delta)
        self.length += len(delta)
        self.thought_length = self.length
        if self.idle_waiters or self.length - self._urgent_mark >= self.flush_chars:
            self._urgent_mark = self.length
            self.signal()

    def _rethink(self) -> None:
        """The answer so far was a thought (the template opened the tag): the boundary moves past it."""
        if self.first_text_at is not None:
            self.first_thought_at = min(self.first_thought_at or self.first_text_at, self.first_text_at)
        self.first_text_at = None
        self.thought_ms = None
        self.thought_length = self.length
        self.signal()

    def _set_notice(self, notice: str | None) -> None:
        self.notice = notice
        self.signal()

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Generation:
        self._greenlet = gevent.spawn(self._run)
        return self

    def cancel(self, outcome: Status = Status.STOPPED, message: str | None = None) -> None:
        """End the generation now, keeping the text so far. Safe to call from any greenlet."""
        if not self._running:  # gevent would drop a greenlet killed before it ran: it would never finish
            self._cancel_first = self._cancel_first or Interrupt(outcome, message)
        elif not self._ending and not self._greenlet.dead:
            self._greenlet.kill(Interrupt(outcome, message), block=False)

    def add_context(self, text: str) -> AddedContext | None:
        """Add a user turn to the answer being written; None when it has ended (or is ending).

        The request being made is cut at once (from the hub, only if it still is one), or, if the
        greenlet is between requests, the addition is taken before it makes the next one."""
        if self._ending or self.finished:
            return None
        added = self.additions.add(text)
        if self._running:
            get_hub().loop.run_callback(self._cut_for_context)
        return added

    def _cut_for_context(self) -> None:
        # In the hub, while the generation's greenlet is switched out: its flag says where it is.
        if self._interruptible and self.additions.waiting and not self._greenlet.dead:
            try:
                self._greenlet.throw(Continue())
            except BaseException:
                get_hub().handle_error(self._greenlet, *sys.exc_info())

    def attach(self) -> None:
        super().attach()
        self.ever_attached = True
        self.unwatched_since = None

    def detach(self) -> None:
        super().detach()
        if self.listeners == 0 and not self.finished:
            self.unwatched_since = time.monotonic()
            if self.grace <= 0:
                self.cancel(Status.STOPPED, "Stopped: the page was closed.")

    def check(
        self, now: float, *, watched_elsewhere: bool, first_token_timeout: float, idle_timeout: float, stream_max: float
    ) -> None:
        """Apply the deadlines and the nobody-watching policy; called by the registry's monitor."""
        if self.finished:
            return
        if watched_elsewhere and self.listeners == 0:
            self.unwatched_since = now
        if self.unwatched_since is not None:
            allowed = self.grace if self.ever_attached else max(self.grace, self.attach_timeout)
            if now - self.unwatched_since >= allowed:
                return self.cancel(Status.STOPPED, "Stopped: nobody was watching this answer.")
        if now - self.started_at >= stream_max:
            return self.cancel(
                Status.FAILED, f"The answer took longer than STREAM_MAX_S ({stream_max:g} s) and was cut there."
            )
        if self.first_token_at is None or self.last_token_at <= self.request_started_at:  # none in this request
            if now - self.attempt_started_at >= first_token_timeout and not self.waiting:
                self.cancel(Status.FAILED, f"{self.provider.label} sent nothing for {first_token_timeout:g} s.")
        elif now - self.last_token_at >= idle_timeout:
            self.cancel(Status.FAILED, f"{self.provider.label} stalled: nothing new for {idle_timeout:g} s.")

    def _run(self) -> None:
        self._running = True
        outcome, error = Status.DONE, None
        try:
            if self._cancel_first is not None:
                raise self._cancel_first
            self._produce()
        except Interrupt as interrupt:
            outcome, error = interrupt.outcome, interrupt.message
        except ProviderError as err:
            outcome, error = Status.FAILED, err.message
            self.upstream_status = err.status or 0
        except Exception:  # a bug must end the answer cleanly, not leave it streaming
            log.exception("generation %s crashed", self.key)
            outcome, error = Status.FAILED, "Something went wrong on the server while writing this answer."
        self._finish(outcome, error)

    def _produce(self) -> None:
        """Requests until the answer is written: a first one, then one per batch of additions."""
        model = self.model
        while True:
            while self.additions.waiting:  # one may come while another is stored
                self._take_additions()
            try:  # no switch between the last look and the flag: a later addition cuts the request
                self._interruptible = True
                self._request(model)
                return
            except Continue:
                model = self._model_in_use
            finally:
                self._interruptible = False

    def _request(self, first: str) -> None:
        """One request for `self.messages`, with its retries and fallback models; raises `Continue` when cut."""
        self._requests += 1
        models = [first, *(m for m in [self.model, *self.fallback_models] if m != first)]
        for position, model in enumerate(models):
            self._model_in_use = model
            attempt = 0
            while True:
                self.attempt_started_at = time.monotonic()
                try:
                    with closing(self.provider.stream(self.messages, model, **self.stream_options)) as deltas:
                        for delta in deltas:
                            if isinstance(delta, str):
                                self._append(delta)
                            elif isinstance(delta, Thought):
                                self._append_thought(delta.text)
                            elif isinstance(delta, Rethink):
                                if not self.additions.placed:  # else the text before is an answer, not a thought
                                    self._rethink()
                            elif isinstance(delta, Usage):
                                self.usage = delta
                            else:  # a Notice: waiting for something, shown in the bubble
                                self.waiting = delta.text is not None
                                self._set_notice(delta.text)
                    if self.additions.waiting:  # came as it ended: the answer goes on with it
                        raise Continue()
                    self.model = model
                    return
                except ProviderError as err:
                    if self.length > self._request_start or not err.retryable:
                        raise
                    if attempt < self.retry_attempts:
                        wait = err.retry_after if err.retry_after is not None else 0.5 * 2**attempt
                        wait = min(wait, self.retry_max_wait)
                        attempt += 1
                        self._set_notice(f"{err.message} Retrying in {math.ceil(wait)} s…")
                        self.waiting = True
                        try:
                            gevent.sleep(wait)
                        finally:
                            self.waiting = False
                        continue
                    if position + 1 < len(models):
                        self._set_notice(f"{err.message} Trying {models[position + 1]} instead…")
                        break
                    raise

    def _take_additions(self) -> None:
        """Place the waiting additions at the end of the answer so far (each stored first, when the
        answer is) and make the next request: the history, then the answer with its additions."""
        taken = self.additions.take()
        if not taken:
            return
        if self._requests:  # the one cut: its usage as far as it went
            self._spent = summed(self._spent, self._request_usage())
            self.usage = None
        answer = self.text()
        broken = not answer or answer.endswith(SEPARATOR)
        at = len(answer) + (0 if broken else len(SEPARATOR))  # where the text after it begins
        for added in taken:
            if self.on_context is not None:
                try:
                    self.on_context(self, added.text, at)
                except Exception as err:
                    log.exception("could not store context added to generation %s", self.key)
                    added.result.set_exception(err)
                    raise Interrupt(
                        Status.FAILED, "What you added could not be saved, so the answer stopped there."
                    ) from err
            self.additions.placed.append((at, added.text))
            added.result.set(at)
        if not broken:
            self.parts.append(SEPARATOR)  # not a token: no deadline counts it
            self.length += len(SEPARATOR)
            self.signal()
        self.messages = [*self.history, *interleaved(self.text(), self.additions.placed)]
        self.notice = None
        self._request_start = self.length
        self.request_started_at = time.monotonic()

    def _request_usage(self) -> Usage:
        """The usage of the request being made (counted when the provider gave none, as for a cut one)."""
        return self.usage or counted_usage(self.messages, self.logged()[self._request_start :])

    def _finish(self, outcome: str, error: str | None) -> None:
        self._ending = True
        self.additions.refuse_waiting()
        self.finished_at = time.monotonic()
        self.notice = None
        self.usage = summed(self._spent, self._request_usage())
        if self.on_finish is not None:  # saved before any listener can see the end
            try:
                self.on_finish(self, outcome, error)
            except Exception:
                log.exception("could not record the end of generation %s", self.key)
        self.status = outcome
        self.error = error
        self.done.set()
        self.signal()

    # -- figures for the footnote and the log -------------------------------
    @property
    def ttft_ms(self) -> int | None:
        """Time to the answer's first token (a thought's length is `thought_ms` before it)."""
        return None if self.first_text_at is None else round((self.first_text_at - self.started_at) * 1000)

    @property
    def duration_ms(self) -> int | None:
        end = self.finished_at or time.monotonic()
        return round((end - self.started_at) * 1000)
