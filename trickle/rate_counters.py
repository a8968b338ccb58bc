"""The rate-limit counters of one worker (no REDIS_URL): limits' memory storage, swept inline once a second.

limits' `MemoryStorage` keeps its counters bounded with a timer thread: every hit asks whether the
timer is alive and starts one 10 ms later when it is not, and that thread walks every key. Under
gevent that thread is a greenlet, and asking whether it is alive is a non-blocking lock acquire,
which gevent turns into a yield to the hub: each request's limit check sent its handler to the
back of the run queue. Its reads already drop a key whose window ended, so the sweep only keeps memory
bounded; here the first hit after a second has passed does it, with no thread and no yield.
"""

from __future__ import annotations

import time

from limits.storage import MemoryStorage

SWEEP_S = 1.0
SCHEME = "trickle-memory"


class SweptMemoryStorage(MemoryStorage):
    """`memory://` with its expiry sweep run by the first hit after `SWEEP_S` (`trickle-memory://`)."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.next_sweep = time.monotonic() + SWEEP_S

    def _MemoryStorage__schedule_expiry(self) -> None:  # the parent's private hook, called by every hit
        now = time.monotonic()
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_S
            self._MemoryStorage__expire_events()
