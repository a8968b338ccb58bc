"""The rate-limit counters of one worker (no REDIS_URL): limits' memory storage, swept once a second.

limits' `MemoryStorage` starts a timer thread 10 ms after a hit whenever none runs, and that
thread walks every key. Under load (a thousand people, a few limits each) that is a new thread
and a walk of thousands of keys a hundred times a second, on the loop that streams the answers.
Its reads already drop a key whose window ended, so the sweep only keeps memory bounded, and
once a second does that as well.
"""

from __future__ import annotations

import threading

from limits.storage import MemoryStorage

SWEEP_S = 1.0
SCHEME = "trickle-memory"


class SweptMemoryStorage(MemoryStorage):
    """`memory://` with its expiry sweep at most once a second (`trickle-memory://`)."""

    STORAGE_SCHEME = [SCHEME]

    def _MemoryStorage__schedule_expiry(self) -> None:  # the parent's private hook, called by every hit
        if not self.timer.is_alive():
            self.timer = threading.Timer(SWEEP_S, self._MemoryStorage__expire_events)
            self.timer.daemon = True
            self.timer.start()
