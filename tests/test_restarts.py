"""Restarts mid-answer: a graceful SIGTERM (a deploy) and a SIGKILLed worker (a crash, the OOM killer).

Either way the answer must not stay "streaming" forever: it ends `interrupted`,
keeps the text written (or saved) so far, and a listener gets a final `done`.
"""

from __future__ import annotations

import os
import signal
import time

import requests

from tests.fake_upstream import Script
from tests.test_faults import (
    Listener,
    assert_one_exchange,
    ended,
    final,
    healthy,
    message,
    owner_client,
    send,
    stream_ended,
    wait_for_row,
    words,
)
from trickle.registry import STALE_AFTER

RESTARTED = "The server restarted while this answer was being written."


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def restarted(server, dead_pid: int) -> bool:
    """gunicorn replaced the killed worker, and the new one answers."""
    if not wait_until(lambda: server.worker_pids() not in ([], [dead_pid]), timeout=30):
        return False

    def answers() -> bool:
        try:
            healthy(server)
            return True
        except (requests.ConnectionError, AssertionError):
            return False

    return wait_until(answers, timeout=30)


def test_sigterm_mid_answer_saves_it_as_interrupted_and_the_server_exits(make_server, upstream):
    server = make_server(GRACEFUL_TIMEOUT="6", STREAM_FLUSH_MS=30)
    reply = words(400)
    upstream.push(Script(text=reply, delay=0.05))  # about 20 s: longer than the graceful timeout
    question = "deploy now?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    assert listener.until(lambda e: len(listener.deltas) >= 3, timeout=30)

    server.signal(signal.SIGTERM)
    done = listener.until_done(timeout=40)

    assert done is not None, f"no done event before the server went away ({listener.broken!r})"
    shown = final(sent.answer_id, done.data)
    assert shown.status == "interrupted" and shown.outcome == RESTARTED and shown.retry
    assert server.process.wait(30) is not None  # the server exits (within the graceful timeout)
    row = message(server, sent.answer_id)
    assert (row.status, row.error) == ("interrupted", RESTARTED)
    assert row.content and reply.startswith(row.content) and len(row.content) < len(reply)
    assert listener.text == row.content, "the listener and the database disagree on the kept text"
    assert shown.body == row.content.strip()
    record = stream_ended(upstream)
    assert record.client_closed_early and record.text_sent.startswith(row.content)
    assert_one_exchange(server, sent, question)


def test_killed_worker_leaves_an_interrupted_answer_with_its_saved_text(make_server, upstream):
    server = make_server(STREAM_FLUSH_MS=30)
    reply = words(1500)
    upstream.push(Script(text=reply, delay=0.02))  # about 30 s
    question = "crash now?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    assert listener.until(lambda e: len(listener.deltas) >= 3, timeout=30)
    assert upstream.wait_for(lambda: len(upstream.streams) == 1, timeout=10)
    record = upstream.streams[0]

    # Let it run a while, noting what the upstream had sent some time ago: that much is surely saved
    # (progress is saved every SAVE_INTERVAL_S = 1 s; 2.5 s leaves room for a busy machine).
    samples: list[tuple[float, str]] = []
    started = time.monotonic()
    while time.monotonic() - started < 4.0:
        samples.append((time.monotonic(), record.text_sent))
        time.sleep(0.05)
    [worker] = server.worker_pids()
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    surely_saved = max((text for at, text in samples if at <= killed_at - 2.5), key=len)
    assert surely_saved, "nothing was streamed before the kill"

    assert record.ended.wait(15) and record.client_closed_early, "the dead worker's upstream request stayed open"
    assert restarted(server, worker), "gunicorn did not bring a working worker back"

    # A listener attached to the orphaned answer (a reload) follows it until it is declared dead.
    late = Listener(server, sent.answer_id)
    done = late.until_done(timeout=STALE_AFTER + 30)
    assert done is not None, "the orphaned answer never ended"
    noticed = time.time()
    shown = final(sent.answer_id, done.data)
    assert shown.status == "interrupted" and shown.outcome == RESTARTED and shown.retry

    row = ended(server, sent.answer_id, timeout=5)
    assert (row.status, row.error) == ("interrupted", RESTARTED)
    assert noticed >= row.heartbeat_at + STALE_AFTER - 0.5, "declared dead before the staleness window"
    assert reply.startswith(row.content), "the saved text is not a prefix of what was sent"
    assert len(row.content) >= len(surely_saved), (
        f"lost text: {len(row.content)} chars saved, {len(surely_saved)} were sent 2.5 s before the kill"
    )
    assert record.text_sent.startswith(row.content)
    assert shown.body == row.content.strip()
    assert len(upstream.requests) == 1, "nothing may restart the answer by itself"
    assert_one_exchange(server, sent, question)

    again = Listener(server, sent.answer_id)  # from now on: the final bubble at once
    assert again.until_done(timeout=15) is not None
    assert final(sent.answer_id, again.done.data).status == "interrupted"
    assert wait_for_row(server, sent.answer_id, lambda r: True).status == "interrupted"


def test_killed_worker_answer_is_closed_even_if_nobody_looks(make_server, upstream):
    """The restarted worker's start-up sweep runs while the dead worker's heartbeat is still fresh;
    the orphan must still end `interrupted` once STALE_AFTER has passed, without anyone attaching."""
    from trickle.registry import SWEEP_INTERVAL

    server = make_server(STREAM_FLUSH_MS=30)
    reply = words(1500)
    upstream.push(Script(text=reply, delay=0.02))
    question = "crash while nobody watches?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    assert listener.until(lambda e: len(listener.deltas) >= 3, timeout=30)
    saved = wait_for_row(server, sent.answer_id, lambda r: len(r.content) > 0, timeout=15)
    assert saved.content, "no progress was saved"
    [worker] = server.worker_pids()
    os.kill(worker, signal.SIGKILL)
    assert restarted(server, worker), "gunicorn did not bring a working worker back"

    row = wait_for_row(
        server, sent.answer_id, lambda r: r.status != "streaming", timeout=STALE_AFTER + SWEEP_INTERVAL + 15
    )
    assert row.status == "interrupted", "the dead worker's answer is still 'streaming' in the database"
    assert row.error == RESTARTED
    assert len(row.content) >= len(saved.content) and reply.startswith(row.content)
    response = owner_client(server).post(
        server.url(f"/messages/{sent.answer_id}/retry"), headers={"HX-Request": "true"}, timeout=30
    )
    assert response.status_code == 200, "Retry must be possible on the interrupted answer"
    assert_one_exchange(server, sent, question)
