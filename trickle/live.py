"""Live signals between instances over Redis (REDIS_URL): answers being written, and Stop.

Without Redis a worker follows another worker's answer by polling the database (see
`followers.py`), which is enough on one box. With several instances behind a load balancer,
each answer being written has a Redis Stream, `<prefix>answer:<message id>`, whose entries are
the answer's text in order, each with its character offset:

    {"o": "120", "t": "text from offset 120"}     text (and "n": the notice, e.g. "Retrying…")
    {"o": "340", "t": "the rest", "s": "done"}     the end: the outcome ("e": its error), written
                                                   only once the answer is saved in the database

A thinking model's thought is the text's first "h" characters (its log's `thought_length`, given
whenever it is not 0) and "d" how long it thought, once known: the text itself is carried alike.

A stream rather than pub/sub because a listener that attaches late (a reload, a reconnect with
Last-Event-ID, a second tab) reads the stream from its start and is caught up at once, and a
listener that lost its connection re-reads it; the offsets make every entry idempotent, so
nothing is shown twice. The owner publishes once per flush interval (a batch of tokens for all of
its answers in one pipeline), never per token, and only the answers that someone follows from
another worker; every answer's end is published; a stream expires a while after its answer ended.

`<prefix>control` carries the rest, read by every worker in the same blocking XREAD as the
answers it follows: {"stop": "<message id>"} (Stop; the database flag stays as the slower
fallback) and {"watch": "<id>,<id>…"} (someone follows these here: publish them; renewed every
WATCH_RENEW_S, forgotten after WATCH_TTL_S; the entry also wakes the follower's own reader).

redis-py is pure Python on sockets, so under gevent's monkey-patching its blocking reads yield.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

BLOCK_MS = 1000  # longest blocking read; a new follow wakes it at once (its watch entry)
LIVE_TTL = 3600  # an answer's stream lives at most this long after its last publish…
ENDED_TTL = 120  # …and this long once the answer has ended (late listeners read the database)
CONTROL_MAXLEN = 1000
WATCH_RENEW_S = 3.0  # a follower says again which answers it follows…
WATCH_TTL_S = 10.0  # …and an owner publishes an answer nobody renewed for this long no more


def namespace(database_url, override: str | None = None) -> str:
    """Keys are scoped to the database: instances that share it share signals, others never mix
    (message ids restart in every database). `REDIS_KEY_PREFIX` overrides it."""
    if override:
        return override if override.endswith(":") else override + ":"
    where = (
        f"{database_url.get_backend_name()}:{database_url.host or ''}:{database_url.port or ''}:"
        f"{database_url.database or ''}"
    )
    return "trickle:" + hashlib.sha1(where.encode()).hexdigest()[:10] + ":"


def _thought_fields(thought_length: int = 0, thought_ms: int | None = None) -> dict:
    fields = {"h": thought_length} if thought_length else {}
    if thought_ms is not None:
        fields["d"] = thought_ms
    return fields


class Bus:
    """The Redis side of live signals: publishing, and one blocking read per worker."""

    def __init__(self, url: str, prefix: str):
        import redis  # only with REDIS_URL: one instance on its own never loads it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry covers a pooled connection that a Redis restart closed; no longer
        # retries or backoff here: while Redis is away, callers fall back to the database.
        common = {
            "decode_responses": True,
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 1),
            "socket_keepalive": True,
            "client_name": "trickle",
        }
        # A burst of requests waits for one of a bounded number of connections (cooperatively)
        # rather than failing: redis-py's plain pool raises past its 100 connections.
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=50, timeout=5, socket_timeout=5, **common)
        self.client = redis.Redis(connection_pool=pool)
        # Blocking reads hold their connection for up to BLOCK_MS: a client (and pool) of their own.
        self.reader = redis.Redis.from_url(url, socket_timeout=BLOCK_MS / 1000 + 5, **common)
        self.prefix = prefix
        self.control = prefix + "control"

    def answer_key(self, message_id: int) -> str:
        return f"{self.prefix}answer:{message_id}"

    def message_id(self, key: str) -> int | None:
        prefix = self.prefix + "answer:"
        return int(key[len(prefix) :]) if key.startswith(prefix) else None

    # -- owner side --------------------------------------------------------
    def reset(self, message_id: int) -> None:
        """A new generation of this message (a Retry reuses the id): drop the old one's stream."""
        self.client.delete(self.answer_key(message_id))

    def publish(self, batch: Iterable[tuple]) -> set[int]:
        """Append (message id, offset, text, notice or None if unchanged, fresh[, thought length, thought
        ms]) in one round trip.

        A fresh answer's stream is (re)created from offset 0; the others are appended to only if
        their stream still exists (NOMKSTREAM): the ids returned lost theirs (Redis restarted or
        was flushed), and must be published again from the start.
        """
        pipe = self.client.pipeline(transaction=False)
        appended = []  # (message id, index of its XADD's result)
        for message_id, offset, text, notice, fresh, *thought in batch:
            key = self.answer_key(message_id)
            fields = {"o": offset, "t": text, **_thought_fields(*thought)}
            if notice is not None:
                fields["n"] = notice
            if fresh:
                pipe.delete(key)
                pipe.xadd(key, fields)
                pipe.expire(key, LIVE_TTL)
            else:
                appended.append((message_id, len(pipe)))
                pipe.xadd(key, fields, nomkstream=True)
        results = pipe.execute()
        return {message_id for message_id, index in appended if results[index] is None}

    def publish_end(
        self, message_id: int, offset: int, text: str, status: str, error: str | None, fresh: bool, *thought
    ) -> None:
        key = self.answer_key(message_id)
        pipe = self.client.pipeline(transaction=False)
        if fresh:
            pipe.delete(key)
        pipe.xadd(key, {"o": offset, "t": text, "s": status, "e": error or "", **_thought_fields(*thought)})
        pipe.expire(key, ENDED_TTL)
        pipe.execute()

    # -- anyone ----------------------------------------------------------------
    def publish_stop(self, message_id: int) -> None:
        self.client.xadd(self.control, {"stop": message_id}, maxlen=CONTROL_MAXLEN, approximate=True)

    def watch(self, message_ids: Iterable[int]) -> None:
        """Ask the owners of these answers to publish them: they are followed here."""
        self.client.xadd(
            self.control, {"watch": ",".join(str(m) for m in message_ids)}, maxlen=CONTROL_MAXLEN, approximate=True
        )

    # -- the reader ------------------------------------------------------------
    def last_id(self, key: str) -> str:
        """The id of the newest entry of a stream, so that a reader starts after it."""
        newest = self.reader.xrevrange(key, count=1)
        return newest[0][0] if newest else "0-0"

    def read(self, streams: dict[str, str], block_ms: int = BLOCK_MS):
        """Entries after each id, waiting up to `block_ms` for any: [(key, [(id, fields)…])…]."""
        return self.reader.xread(streams, block=block_ms) or []
