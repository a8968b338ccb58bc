"""Several instances on one PostgreSQL and one Redis, as behind a load balancer, tested for real.

Two gunicorn processes (instances A and B, one worker each, the same SECRET_KEY) share a
PostgreSQL database and a Redis started by `scripts/services`. One person (A's cookie and CSRF
token, copied to B) starts an answer on A and follows, reloads and stops it through B.

SAVE_INTERVAL_S is 5 here: the database path (polling, the stop flag) would take seconds, so
what arrives within a fraction of a second came through Redis.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import ROOT, AppServer, client
from tests.fake_upstream import Script
from tests.services import Services, shared
from tests.test_faults import Listener, final, message, send, stream_ended, words


@pytest.fixture(scope="session")
def services() -> Services:
    """PostgreSQL and Redis, started once for the whole run (see tests/services.py)."""
    return shared()


SECRET = "scale-out-tests-share-this-secret-key"


def start_pair(services, upstream, **extra):
    database_url = services.new_database()
    env = {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "test-key",
        "CHAT_MODEL": "fake-model",
        "STREAM_FLUSH_MS": "30",
        "SECRET_KEY": SECRET,
        "REDIS_URL": services.redis_url,
        "SAVE_INTERVAL_S": "5",
        **extra,
    }
    a = AppServer(env, workers=1, database_url=database_url).start()
    b = AppServer(env, workers=1, database_url=database_url).start()
    return a, b


@pytest.fixture(scope="module")
def pair(services, upstream):
    a, b = start_pair(services, upstream)
    yield a, b
    a.stop()
    b.stop()


def same_person(owner: requests.Session) -> requests.Session:
    """Another connection of the same person: the owner cookie and CSRF token of `owner`."""
    session = requests.Session()
    session.cookies.update(owner.cookies)
    session.headers["X-CSRF-Token"] = owner.headers["X-CSRF-Token"]
    return session


class Timed(Listener):
    """A listener that notes when each event arrived, and how much the upstream had sent by then."""

    def __init__(self, *args, record=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, int, int | None]] = []  # (time, chars shown, chars upstream had sent)
        self.record = record

    def next(self):
        event = super().next()
        if event is not None and event.event == "delta":
            sent = len(self.record.text_sent) if self.record is not None and not self.record.ended.is_set() else None
            self.arrivals.append((time.monotonic(), len(self.text), sent))
        return event


def in_thread(function, *args):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)), daemon=True)
    thread.start()
    return thread, result


def healthy_within(server: AppServer, seconds: float) -> float:
    started = time.monotonic()
    while True:
        try:
            response = requests.get(server.url("/healthz"), timeout=5)
            if response.status_code == 200 and response.json()["status"] == "ok":
                return time.monotonic() - started
        except requests.RequestException:
            pass
        if time.monotonic() - started > seconds:
            pytest.fail(
                f"{server.base_url} not healthy {seconds} s after the services came back:\n{server.read_log()[-3000:]}"
            )
        time.sleep(0.2)


# -- one answer, two instances -------------------------------------------------------------------------


def test_an_answer_written_on_a_streams_live_on_b_and_resumes_there_after_a_reload(pair, upstream):
    a, b = pair
    owner = client(a)
    other = same_person(owner)
    reply = words(250)
    upstream.push(Script(text=reply, delay=0.02))  # about 5 s
    sent = send(a, "follow me elsewhere", session=owner)
    assert upstream.wait_for(lambda: upstream.streams, 10)
    record = upstream.streams[-1]
    first = Timed(b, sent.answer_id, session=other, record=record)
    assert first.until(lambda e: len(first.deltas) >= 40, timeout=30)

    # Live: B's text grew while the upstream was still sending, close behind it (a token is ~7
    # characters every 20 ms; following through the database would lag up to SAVE_INTERVAL_S).
    live = [(at, shown, had) for at, shown, had in first.arrivals if had is not None]
    assert len(live) >= 30, "B's text did not grow while the upstream was still streaming"
    lags = [had - shown for _, shown, had in live[5:]]
    assert statistics.median(lags) < 60 and max(lags) < 300, lags
    gaps = [later - earlier for (earlier, *_), (later, *_) in zip(live, live[1:], strict=False)]
    assert statistics.median(gaps) < 0.15, gaps

    # A reload on B mid-answer: a new listener from the last event id, nothing lost or repeated.
    cursor, before = first.last_id, first.text
    first.close()
    assert before == reply[:cursor]
    second = Listener(b, sent.answer_id, last_event_id=cursor, session=other)
    done = second.until_done(timeout=30)
    assert done is not None
    ids = [e.id for e in second.deltas]
    assert ids and ids[0] > cursor and ids == sorted(ids)
    assert before + second.text == reply, "characters lost or repeated on resume"
    assert final(sent.answer_id, done.data).status == "done"
    assert record.finished and not record.client_closed_early
    row = message(a, sent.answer_id)
    assert (row.status, row.content) == ("done", reply)
    assert len(upstream.requests) == 1

    # A listener that comes late to B gets the whole answer, from any instance.
    late = Listener(b, sent.answer_id, session=other)
    assert late.until_done(timeout=15) is not None
    assert final(sent.answer_id, late.done.data).body == reply.strip()


def test_stop_on_b_ends_the_answer_written_on_a_at_once(services, upstream):
    # SAVE_INTERVAL_S=60: the database's stop flag is read once a minute, so a stop that arrives within the
    # listeners' 30 s came through Redis (no clock needed to tell the two paths apart).
    a, b = start_pair(services, upstream, SAVE_INTERVAL_S="60")
    try:
        _stop_on_b(a, b, upstream)
    finally:
        a.stop()
        b.stop()


def _stop_on_b(a, b, upstream):
    owner = client(a)
    other = same_person(owner)
    reply = words(400)
    upstream.push(Script(text=reply, delay=0.03))  # about 12 s
    sent = send(a, "stop me from elsewhere", session=owner)
    on_a = Listener(a, sent.answer_id, session=owner)
    on_b = Listener(b, sent.answer_id, session=other)
    assert on_b.until(lambda e: len(on_b.deltas) >= 3, timeout=30)
    assert on_a.until(lambda e: len(on_a.deltas) >= 3, timeout=30)

    response = other.post(b.url(f"/messages/{sent.answer_id}/stop"), headers={"HX-Request": "true"}, timeout=10)
    assert response.status_code == 204
    results = {}
    threads = [
        threading.Thread(target=lambda n=name, lis=lis: results.setdefault(n, lis.until_done(timeout=30)))
        for name, lis in (("a", on_a), ("b", on_b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    for name in ("a", "b"):
        done = results[name]
        assert done is not None, f"no done on {name} within 30 s: the stop did not come through Redis"
        assert final(sent.answer_id, done.data).status == "stopped"
    row = message(a, sent.answer_id)
    assert row.status == "stopped" and row.content and reply.startswith(row.content) and len(row.content) < len(reply)
    assert on_a.text == row.content and on_b.text == row.content
    record = stream_ended(upstream)
    assert record.client_closed_early and record.tokens_sent < 400


# -- the services go away mid-answer --------------------------------------------------------------------


def test_redis_and_postgres_restarting_mid_answer_lose_nothing_and_both_instances_recover(services, upstream):
    a, b = start_pair(services, upstream, SAVE_INTERVAL_S="1")
    try:
        owner = client(a)
        other = same_person(owner)
        reply = words(400)
        upstream.push(Script(text=reply, delay=0.02))  # about 8 s
        sent = send(a, "survive the outages", session=owner)
        assert upstream.wait_for(lambda: upstream.streams, 10)
        record = upstream.streams[-1]
        on_a = Listener(a, sent.answer_id, session=owner, read_timeout=60)
        on_b = Listener(b, sent.answer_id, session=other, read_timeout=60)
        assert on_b.until(lambda e: len(on_b.deltas) >= 5, timeout=30)
        read_a, done_a = in_thread(on_a.until_done, 90)
        read_b, done_b = in_thread(on_b.until_done, 90)

        services.stop("redis")  # B follows through the database meanwhile
        grown = len(on_b.text)
        time.sleep(1.5)
        assert len(on_b.text) > grown, "B stopped following while Redis was down"
        services.up("redis")
        grown = len(on_b.text)
        time.sleep(1)
        assert len(on_b.text) > grown, "B stopped following once Redis was back"

        services.stop("postgres")  # A cannot save; B follows through Redis
        page = requests.get(b.url("/"), timeout=15)  # an error, not a hang (a hang would time out)
        assert page.status_code >= 500
        grown = len(on_b.text)
        time.sleep(1)
        assert len(on_b.text) > grown, "B stopped following while PostgreSQL was down"
        # The answer ends while the database is still away: its end waits (and retries) for it.
        assert record.ended.wait(30) and record.finished
        time.sleep(1.5)
        assert "value" not in done_a and "value" not in done_b, "an end was shown before it was saved"
        services.up("postgres")

        read_a.join(90)
        read_b.join(90)
        assert done_a.get("value") is not None and done_b.get("value") is not None, (
            a.read_log()[-3000:],
            b.read_log()[-3000:],
        )
        for listener in (on_a, on_b):
            assert listener.text == reply, "characters lost or repeated across the restarts"
            assert final(sent.answer_id, listener.done.data).status == "done"
        row = message(a, sent.answer_id)
        assert (row.status, row.content) == ("done", reply)
        assert f"saving message {sent.answer_id} failed; retrying" in a.read_log()

        # Both instances serve again, by themselves, within seconds: a new answer started on B
        # streams to a listener on A.
        assert healthy_within(a, 15) < 15 and healthy_within(b, 15) < 15
        upstream.push(Script(text="Back to normal.", delay=0.1))
        again = send(b, "and now?", conversation_id=sent.conversation_id, session=other)
        listener = Listener(a, again.answer_id, session=owner)
        done = listener.until_done(timeout=30)
        assert done is not None
        shown = final(again.answer_id, done.data)
        assert (shown.status, shown.body) == ("done", "Back to normal.")
        assert message(a, again.answer_id).status == "done"
    finally:
        a.stop()
        b.stop()


# -- cooperative waits under gevent ------------------------------------------------------------------

COOPERATIVE = r"""
from gevent import monkey
monkey.patch_all()
import sys, time
import gevent, psycopg.waiting, requests, sqlalchemy as sa
from gevent.pywsgi import WSGIServer
from trickle import create_app

app = create_app({"DATABASE_URL": sys.argv[1], "REDIS_URL": sys.argv[2], "SECRET_KEY": "x"})
assert psycopg.waiting.wait is not getattr(psycopg.waiting, "wait_c", None), "psycopg would block gevent"
server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
url = f"http://127.0.0.1:{server.server_port}/healthz"
assert requests.get(url, timeout=5).status_code == 200
trickle = app.extensions["trickle"]

def pg_sleep():
    with trickle.engine.connect() as db:
        db.execute(sa.text("SELECT pg_sleep(1)"))

def redis_block():
    trickle.registry.bus.reader.xread({"nothing-ever": "0-0"}, block=1000)

for name, slow in (("postgres", pg_sleep), ("redis", redis_block)):
    started = time.monotonic()
    greenlet = gevent.spawn(slow)
    gevent.sleep(0.2)
    assert not greenlet.dead
    asked = time.monotonic()
    status = requests.get(url, timeout=5).status_code
    served = time.monotonic() - asked
    greenlet.get()
    print(name, status, f"{served:.3f}", f"{time.monotonic() - started:.3f}", flush=True)
"""


def test_a_slow_query_or_a_blocking_redis_read_does_not_block_other_requests(services):
    result = subprocess.run(
        [sys.executable, "-c", COOPERATIVE, services.new_database(), services.redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict((line.split()[0], line.split()[1:]) for line in result.stdout.splitlines())
    for name in ("postgres", "redis"):
        status, served, total = lines[name]
        # The request was served while the other greenlet still waited on its socket.
        assert status == "200" and float(served) < 0.5 and float(total) >= 1.0, (name, lines[name])


def test_a_database_too_busy_to_lend_a_connection_is_a_readable_503(services, upstream):
    """When every pooled connection is taken for DB_POOL_TIMEOUT, a request gets a 503 that says so (and
    the log a warning), not a 500 with a trace; the requests holding the connections still finish."""
    import psycopg

    database_url = services.new_database()
    server = AppServer(
        {
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "test-key",
            "CHAT_MODEL": "fake-model",
            "DB_POOL_SIZE": "1",
            "DB_MAX_OVERFLOW": "0",
            "DB_POOL_TIMEOUT": "1",
        },
        workers=1,
        database_url=database_url,
    ).start()
    try:
        person = client(server)
        with psycopg.connect(database_url) as lock:
            lock.execute("LOCK TABLE conversations, messages IN ACCESS EXCLUSIVE MODE")
            holder, held = in_thread(lambda: person.get(server.url("/"), timeout=60))

            def waiting_on_the_lock():
                return (
                    lock.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchone()[0]
                    > 0
                )

            deadline = time.monotonic() + 20
            while not waiting_on_the_lock():  # the first request holds the only connection, blocked
                assert time.monotonic() < deadline, server.read_log()
                time.sleep(0.05)
            busy = person.get(server.url("/"), timeout=30)
            lock.rollback()
        assert busy.status_code == 503, busy.text[:500]
        assert "too busy to reach its database" in busy.text and "Traceback" not in busy.text
        holder.join(30)
        assert held["value"].status_code == 200
        log = server.read_log()
        assert "no database connection free" in log and "unhandled error" not in log
    finally:
        server.stop()
