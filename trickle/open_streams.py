"""A cap on the streams one client holds open (`/messages/<id>/events`, `/api/chat`, `/ws`).

A stream holds one of the worker's `WORKER_CONNECTIONS` for as long as it lasts, and a client
that never reads keeps it: without a cap, one client could take them all and every other
page load would wait. Counted per owner and per client address, in this worker (the
connections it protects are this worker's); a stream counts until the server closes it,
when it ends or its client left (noticed at the next write, a ping at the latest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from flask import abort, current_app, g
from flask_limiter.util import get_remote_address

EXTENSION = "trickle.open_streams"


class OpenStreams:
    """This worker's open streams, counted by owner and by client address."""

    def __init__(self, per_owner: int, per_ip: int):
        self.per_owner = per_owner
        self.per_ip = per_ip
        self.by_owner: Counter[str] = Counter()
        self.by_address: Counter[str] = Counter()

    def refusal(self, owner: str | None, address: str) -> str | None:
        """Why this client may not open another stream now, or None."""
        if owner is not None and self.by_owner[owner] >= self.per_owner:
            return (
                f"You already have {self.by_owner[owner]} answers streaming to you; close a tab or wait "
                f"for one to end (MAX_STREAMS_PER_OWNER={self.per_owner})."
            )
        if self.by_address[address] >= self.per_ip:
            return (
                f"Your address already has {self.by_address[address]} answers streaming to it; wait for "
                f"one to end (MAX_STREAMS_PER_IP={self.per_ip})."
            )
        return None

    def acquire(self, owner: str | None, address: str) -> None:
        if owner is not None:
            self.by_owner[owner] += 1
        self.by_address[address] += 1

    def release(self, owner: str | None, address: str) -> None:
        for counter, key in ((self.by_owner, owner), (self.by_address, address)):
            if key is not None:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]  # the counters hold only clients with a stream open


class _Held:
    """A response body that holds its place among the open streams until the server closes it.

    A class, not a generator: a generator closed before its first item never runs its `finally`.
    """

    def __init__(self, stream: Iterable[bytes], release: Callable[[], None]):
        self.stream = iter(stream)
        self.release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.stream)

    def close(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()


def _open_streams() -> OpenStreams:
    found = current_app.extensions.get(EXTENSION)
    if found is None:  # made on first use: a plain in-process counter, nothing to wire
        settings = current_app.extensions["trickle"].settings
        found = current_app.extensions[EXTENSION] = OpenStreams(
            settings.max_streams_per_owner, settings.max_streams_per_ip
        )
    return found


def refuse_if_full() -> None:
    """A 429 saying which cap was reached when this request's client may not open another stream."""
    refused = _open_streams().refusal(g.get("owner"), get_remote_address())
    if refused:
        abort(429, refused)


def held(stream: Iterable[bytes]) -> Iterable[bytes]:
    """`stream`, counted as open until the server closes it; a 429 when the client is at its cap."""
    return _Held(stream, hold())


def hold() -> Callable[[], None]:
    """Count one more stream for this request's client (a 429 when at its cap); returns its release."""
    refuse_if_full()
    streams, owner, address = _open_streams(), g.get("owner"), get_remote_address()
    streams.acquire(owner, address)
    return lambda: streams.release(owner, address)
