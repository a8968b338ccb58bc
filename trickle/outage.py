"""How the database and Redis stand, as this worker sees them: one log line when something
starts failing and one when it is back, not one per tick."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("trickle.registry")  # the name these lines always had: log filters keep working

STALE_AFTER = 15.0  # an answer whose heartbeat is older than this has lost its worker


class Outage:
    """Whether one service is failing, logged once on the way down and once on the way up."""

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


class DatabaseOutage(Outage):
    """The database's outage, and since when it has been reachable from here."""

    def __init__(self):
        super().__init__("the database")
        # None while the database fails; at start it was just reached (migrations), as if for long.
        self.reachable_since: float | None = time.monotonic() - STALE_AFTER

    def ok(self) -> None:
        if self.reachable_since is None:
            self.reachable_since = time.monotonic()
        super().ok()

    def failed(self) -> None:
        self.reachable_since = None
        super().failed()

    def may_judge_heartbeats(self) -> bool:
        """An owner cut off from the database could not write its heartbeats: judge them stale only
        once the database has been reachable (from here) for longer than STALE_AFTER."""
        since = self.reachable_since
        return since is not None and time.monotonic() - since >= STALE_AFTER
