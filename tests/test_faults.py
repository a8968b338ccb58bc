"""Fault injection: what the person in the chat sees, and what the database keeps, when things break.

Every test drives the real app (gunicorn, gevent workers) over HTTP against the
scripted fake upstream, reads the page's SSE events (`delta`, `block`, `status`,
`done`) the way htmx does, and checks the database row of the answer: the
question is stored, the partial text is kept, the outcome is recorded, nothing
is duplicated.

Replies here contain no newline, so the stream has no `block` events and the
unescaped `delta` data, concatenated, is exactly the text the user sees.
"""

from __future__ import annotations

import html
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import AppServer, client, free_port
from tests.fake_upstream import Script
from tests.sse import Event, events

# -- helpers: the page's HTTP flow, its SSE events, the database ------------------------------


sse_events = events  # the one SSE reader of the tests (tests/sse.py)


class Listener:
    """One `GET /messages/<id>/events` response, read event by event."""

    def __init__(
        self,
        server: AppServer,
        message_id: int,
        cursor: int = 0,
        last_event_id: int | None = None,
        session: requests.Session | None = None,
        read_timeout: float = 40.0,
    ):
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.message_id = message_id
        self.response = (session or owner_client(server)).get(
            server.url(f"/messages/{message_id}/events?cursor={cursor}"),
            headers=headers,
            stream=True,
            timeout=(10, read_timeout),
        )
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[Event] = []
        self._events = sse_events(self.response)
        self.ended = False  # the server ended the response
        self.broken: Exception | None = None

    def next(self) -> Event | None:
        try:
            event = next(self._events)
        except StopIteration:
            self.ended = True
            return None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
            self.ended, self.broken = True, err  # the server went away mid-response
            return None
        self.events.append(event)
        return event

    def until(self, predicate, timeout: float = 60.0) -> Event | None:
        """Read until an event satisfies `predicate` (returned), the stream ends or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next()
            if event is None:
                return None
            if predicate(event):
                return event
        return None

    def until_done(self, timeout: float = 60.0) -> Event | None:
        return self.until(lambda e: e.event == "done", timeout)

    def close(self) -> None:
        self.response.close()

    @property
    def deltas(self) -> list[Event]:
        return [e for e in self.events if e.event == "delta"]

    @property
    def text(self) -> str:
        """The answer as the user saw it stream (replies without newlines or markdown: deltas only)."""
        assert not [e for e in self.events if e.event == "block"], "unexpected block event"
        return "".join(html.unescape(e.data) for e in self.deltas)

    @property
    def last_id(self) -> int:
        ids = [e.id for e in self.events if e.id is not None and e.event in ("delta", "block", "tail")]
        return ids[-1] if ids else 0

    @property
    def statuses(self) -> list[str]:
        return [html.unescape(e.data) for e in self.events if e.event == "status"]

    @property
    def done(self) -> Event | None:
        done = [e for e in self.events if e.event == "done"]
        assert len(done) <= 1, "more than one done event"
        return done[0] if done else None


@dataclass
class Final:
    """The final message fragment of a `done` event, as the page swaps it in."""

    html: str
    status: str
    outcome: str | None  # the error / stop line under the text
    body: str  # the rendered text, tags stripped
    retry: bool
    meta: str | None


def final(message_id: int, done_html: str) -> Final:
    status = re.search(r'data-status="(\w+)"', done_html)
    outcome = re.search(r'<p class="outcome"[^>]*>(.*?)</p>', done_html, re.S)
    body = re.search(r'<div class="body">(.*?)</div>', done_html, re.S)
    meta = re.search(r'<span class="meta">(.*?)</span>', done_html, re.S)
    return Final(
        html=done_html,
        status=status.group(1) if status else "",
        outcome=html.unescape(outcome.group(1)).strip() if outcome else None,
        body=html.unescape(re.sub(r"<[^>]+>", "", body.group(1))).strip() if body else "",
        retry=f'action="/messages/{message_id}/retry"' in done_html,
        meta=html.unescape(meta.group(1)) if meta else None,
    )


@dataclass
class Sent:
    answer_id: int
    conversation_id: int
    html: str


def send(
    server: AppServer, content: str, conversation_id: int | None = None, session: requests.Session | None = None
) -> Sent:
    """`POST /messages` as htmx sends it: returns at once with the two bubbles."""
    data = {"content": content}
    if conversation_id is not None:
        data["conversation_id"] = str(conversation_id)
    response = (session or owner_client(server)).post(
        server.url("/messages"), data=data, headers={"HX-Request": "true"}, timeout=30
    )
    assert response.status_code == 200, response.text
    found = re.search(r'<article class="message assistant[^"]*" id="message-(\d+)"', response.text)
    assert found, response.text
    answer_id = int(found.group(1))
    row = message(server, answer_id)
    return Sent(answer_id, row.conversation_id, response.text)


_clients: dict[str, requests.Session] = {}


def owner_client(server: AppServer) -> requests.Session:
    """The one browser-like owner of each server's conversations in these tests (cookie + CSRF token)."""
    if server.base_url not in _clients:
        _clients[server.base_url] = client(server)
    return _clients[server.base_url]


def as_owner(session: requests.Session, server: AppServer) -> requests.Session:
    """Give another connection the owner's cookie and token (same person, another worker)."""
    owner = owner_client(server)
    session.cookies.update(owner.cookies)
    session.headers["X-CSRF-Token"] = owner.headers["X-CSRF-Token"]
    return session


_engines: dict[str, object] = {}


def engine(server: AppServer):
    if server.database_url not in _engines:
        _engines[server.database_url] = server.engine()
    return _engines[server.database_url]


def message(server: AppServer, message_id: int):
    from trickle import storage

    return storage.get_message(engine(server), message_id)


def conversation_rows(server: AppServer, conversation_id: int):
    """Every message row of the conversation, shown or not (replaced alternatives included), in order."""
    from trickle import storage

    query = storage.messages.select().where(storage.messages.c.conversation_id == conversation_id)
    with engine(server).connect() as db:
        return db.execute(query.order_by(storage.messages.c.id)).all()


def wait_for_row(server: AppServer, message_id: int, predicate, timeout: float = 20.0):
    """Poll the answer's row until `predicate(row)`; returns the last row read either way."""
    deadline = time.monotonic() + timeout
    while True:
        row = message(server, message_id)
        if predicate(row) or time.monotonic() >= deadline:
            return row
        time.sleep(0.05)


def ended(server: AppServer, message_id: int, timeout: float = 20.0):
    return wait_for_row(server, message_id, lambda row: row.status != "streaming", timeout)


def assert_one_exchange(server: AppServer, sent: Sent, question: str):
    """The conversation holds the question once and this one answer once: nothing lost, nothing doubled."""
    rows = conversation_rows(server, sent.conversation_id)
    assert [(r.role, r.id) for r in rows] == [("user", sent.answer_id - 1), ("assistant", sent.answer_id)]
    assert rows[0].content == question and rows[0].status == "done"


def record_request_times(upstream, monkeypatch) -> list[float]:
    """Arrival time (monotonic) of every chat request the fake receives from now on."""
    times: list[float] = []
    original = upstream._record

    def record(body, headers, path, raw, consume):
        if consume:
            times.append(time.monotonic())
        return original(body, headers, path, raw, consume)

    monkeypatch.setattr(upstream, "_record", record)
    return times


def stream_ended(upstream, index: int = -1, timeout: float = 15.0):
    """The fake's record of a streamed response, once that response is over."""
    assert upstream.wait_for(lambda: len(upstream.streams) >= (index + 1 if index >= 0 else -index), timeout)
    record = upstream.streams[index]
    assert record.ended.wait(timeout), "the upstream response never ended"
    return record


def healthy(server: AppServer) -> None:
    response = requests.get(server.url("/healthz"), timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"


def words(n: int, word: str = "word") -> str:
    """A reply of n tokens and no newline (so the stream is `delta` events only)."""
    return "".join(f"{word}{i} " for i in range(n))


def start_server(upstream, workers: int = 1, **env) -> AppServer:
    base = {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "test-key",
        "CHAT_MODEL": "fake-model",
        "STREAM_FLUSH_MS": "30",
    }
    return AppServer({**base, **{k: str(v) for k, v in env.items()}}, workers=workers).start()


def sessions_on(server: AppServer, owner: bool, count: int, attempts: int = 80) -> list[requests.Session]:
    """Keep-alive sessions pinned to a worker that owns the (single) live answer, or to one that does not.

    A kept-alive connection stays on the worker that accepted it, and `/healthz`
    reports that worker's live generations; use the sessions within gunicorn's
    keep-alive (5 s).
    """
    found: list[requests.Session] = []
    for _ in range(attempts):
        session = requests.Session()
        response = session.get(server.url("/healthz"), timeout=10)
        assert response.headers.get("Connection", "keep-alive").lower() != "close"
        if (response.json()["live_generations"] > 0) == owner:
            found.append(as_owner(session, server))
            if len(found) == count:
                return found
        else:
            session.close()
    pytest.fail(f"no connection landed on {'the owning' if owner else 'another'} worker in {attempts} tries")


# -- servers shared by the tests whose settings match ------------------------------------------


@pytest.fixture(scope="module")
def server(upstream):
    """One worker, two retries, a fallback model; default timeouts."""
    server = start_server(upstream, UPSTREAM_RETRIES=2, FALLBACK_MODELS="fake-model-2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def timeouts_server(upstream):
    """Short deadlines: one second without a first token, or without a new one, fails the answer."""
    server = start_server(upstream, STREAM_IDLE_S=1, FIRST_TOKEN_TIMEOUT_S=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def grace_server(upstream):
    """An answer nobody watches goes on for 3 s (DISCONNECT_GRACE_S), then stops."""
    server = start_server(upstream, DISCONNECT_GRACE_S=3)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def three_workers(upstream):
    server = start_server(upstream, workers=3)
    yield server
    server.stop()


# -- upstream errors before the first token ---------------------------------------------------


def test_rate_limit_with_retry_after_shows_retrying_then_completes(server, upstream, monkeypatch):
    times = record_request_times(upstream, monkeypatch)
    reply = "Recovered after the rate limit."
    upstream.push(Script(status=429, retry_after=3), Script(text=reply))
    question = "rate limited?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    assert any("429" in s and "Retrying in 3 s" in s for s in listener.statuses), listener.statuses
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "done" and shown.outcome is None and not shown.retry
    assert shown.body == reply and listener.text == reply
    assert len(upstream.requests) == 2
    assert times[1] - times[0] >= 2.9, "Retry-After was not honoured"
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("done", reply, None)
    assert_one_exchange(server, sent, question)


def test_server_errors_retry_then_fall_back_to_the_next_model(server, upstream):
    reply = "Answer from the fallback model."
    upstream.push(Script(status=500, repeat=3), Script(text=reply))
    question = "server errors?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "done" and shown.body == reply and listener.text == reply
    # UPSTREAM_RETRIES=2: the configured model three times, then FALLBACK_MODELS' model.
    assert [r["body"]["model"] for r in upstream.requests] == ["fake-model"] * 3 + ["fake-model-2"]
    assert upstream.requests[-1]["body"]["model"] == "fake-model-2"
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("done", reply, None)
    assert_one_exchange(server, sent, question)
    # The footnote names the model that wrote the answer, not the one that failed.
    assert row.model == "fake-model-2"
    assert shown.meta and shown.meta.startswith("fake-model-2")


@pytest.mark.parametrize(
    "status, expected",
    [
        (401, r"rejected the API key \(401\)"),
        (404, r"does not know model 'fake-model' \(404\): check CHAT_MODEL"),
    ],
)
def test_auth_and_unknown_model_errors_say_what_to_fix_and_the_app_goes_on(server, upstream, status, expected):
    upstream.push(Script(status=status))
    question = f"error {status}?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "failed" and shown.retry
    assert re.search(expected, shown.outcome), shown.outcome
    assert len(upstream.requests) == 1, "a 401/404 must not be retried"
    row = message(server, sent.answer_id)
    assert row.status == "failed" and re.search(expected, row.error) and row.content == ""
    assert_one_exchange(server, sent, question)

    healthy(server)
    upstream.push(Script(text="Fine again."))
    after = send(server, "and now?", sent.conversation_id)
    listener = Listener(server, after.answer_id)
    assert listener.until_done() is not None
    assert final(after.answer_id, listener.done.data).status == "done"
    assert message(server, after.answer_id).content == "Fine again."


def test_unreachable_upstream_says_it_could_not_reach_it_and_the_app_goes_on(make_server, upstream):
    closed = free_port()
    server = make_server(OPENAI_BASE_URL=f"http://127.0.0.1:{closed}/v1", UPSTREAM_RETRIES=1, CONNECT_TIMEOUT_S=2)
    question = "anyone there?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "failed" and shown.retry
    assert "Could not reach" in shown.outcome and f"127.0.0.1:{closed}" in shown.outcome, shown.outcome
    row = message(server, sent.answer_id)
    assert row.status == "failed" and "Could not reach" in row.error and row.content == ""
    assert_one_exchange(server, sent, question)

    healthy(server)
    again = send(server, "still there?", sent.conversation_id)
    listener = Listener(server, again.answer_id)
    assert listener.until_done() is not None
    assert final(again.answer_id, listener.done.data).status == "failed"
    assert [r.role for r in conversation_rows(server, sent.conversation_id)] == ["user", "assistant"] * 2


# -- the stream breaks after some text ---------------------------------------------------------


def test_dropped_connection_keeps_the_partial_text_and_retry_writes_it_again(server, upstream):
    reply = words(8)
    upstream.push(Script(text=reply, drop_after=3, delay=0.05))
    question = "drop?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    partial = words(3)
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert partial.startswith(listener.text)  # live deltas, if it attached before the drop: never more
    assert shown.status == "failed" and shown.retry and shown.outcome
    assert shown.body == partial.strip()
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("failed", partial, shown.outcome)
    assert_one_exchange(server, sent, question)
    dropped = shown.outcome

    upstream.push(Script(text=reply))
    response = owner_client(server).post(
        server.url(f"/messages/{sent.answer_id}/retry"), headers={"HX-Request": "true"}, timeout=30
    )
    assert response.status_code == 200
    assert f'id="message-{sent.answer_id}"' in response.text and "sse-connect" in response.text
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "done" and shown.body == reply.strip() and reply.startswith(listener.text)
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("done", reply, None)
    assert_one_exchange(server, sent, question)
    assert upstream.requests[-1]["body"]["messages"] == [{"role": "user", "content": question}]

    # The message says what happened (the connection broke mid-answer), not that the server has a bug.
    assert "Something went wrong on the server" not in dropped, dropped
    assert re.search(r"connection .*broke", dropped, re.I), dropped


def test_error_event_mid_stream_keeps_the_partial_text_and_shows_the_providers_message(server, upstream):
    reply = words(8)
    upstream.push(Script(text=reply, error_after=3, error_message="The model is overloaded, try later", delay=0.05))
    question = "error event?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    partial = words(3)
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert partial.startswith(listener.text) and shown.body == partial.strip()  # a late listener gets done only
    assert shown.status == "failed" and shown.retry
    assert "The model is overloaded, try later" in shown.outcome, shown.outcome
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("failed", partial, shown.outcome)
    assert_one_exchange(server, sent, question)


# -- deadlines ---------------------------------------------------------------------------------


def test_stall_mid_stream_fails_naming_the_stall_and_closes_the_upstream(timeouts_server, upstream):
    server = timeouts_server
    reply = words(8)
    upstream.push(Script(text=reply, stall_after=3, stall_seconds=30))
    question = "stall?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    partial = words(3)
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert partial.startswith(listener.text) and shown.body == partial.strip()  # a late listener gets done only
    assert shown.status == "failed" and shown.retry
    assert re.search(r"stalled: nothing new for 1 s", shown.outcome), shown.outcome
    record = stream_ended(upstream)
    assert record.client_closed_early and not record.finished, "the stalled upstream request was left open"
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("failed", partial, shown.outcome)
    assert_one_exchange(server, sent, question)


def test_no_first_token_fails_with_a_clear_message(timeouts_server, upstream):
    server = timeouts_server
    upstream.push(Script(text=words(5), first_delay=30))
    question = "silence?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "failed" and shown.retry and shown.body == ""
    assert re.search(rf"127\.0\.0\.1:{upstream.port} sent nothing for 1 s", shown.outcome), shown.outcome
    record = stream_ended(upstream)
    assert record.client_closed_early and record.tokens_sent == 0
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("failed", "", shown.outcome)
    assert_one_exchange(server, sent, question)


def test_answer_longer_than_stream_max_is_cut_and_keeps_its_text(make_server, upstream):
    server = make_server(STREAM_MAX_S=1, STREAM_FLUSH_MS=30)
    reply = words(200)
    upstream.push(Script(text=reply, delay=0.05))  # about 10 s
    question = "long?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done()

    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "failed" and shown.retry
    assert "STREAM_MAX_S (1 s)" in shown.outcome, shown.outcome
    row = message(server, sent.answer_id)
    assert row.status == "failed" and row.error == shown.outcome
    assert row.content and reply.startswith(row.content) and len(row.content) < len(reply)
    assert listener.text == row.content and shown.body == row.content.strip()
    record = stream_ended(upstream)
    assert record.client_closed_early and record.tokens_sent < 200
    assert_one_exchange(server, sent, question)


# -- the listener goes away ---------------------------------------------------------------------


def test_without_grace_a_listener_leaving_closes_the_upstream_and_stops_the_answer(make_server, upstream):
    server = make_server(DISCONNECT_GRACE_S=0, STREAM_FLUSH_MS=30)
    reply = words(300)
    upstream.push(Script(text=reply, delay=0.02))  # about 6 s
    question = "leave?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    assert listener.until(lambda e: len(listener.deltas) >= 3, timeout=30)
    seen = listener.text
    listener.close()

    record = stream_ended(upstream, timeout=10)
    assert record.client_closed_early and not record.finished, "the upstream request outlived its last listener"
    assert record.tokens_sent < 300
    row = ended(server, sent.answer_id)
    assert row.status == "stopped"
    assert row.content.startswith(seen) and reply.startswith(row.content) and len(row.content) < len(reply)
    assert record.text_sent.startswith(row.content)
    assert_one_exchange(server, sent, question)

    late = Listener(server, sent.answer_id)  # coming back later shows the stopped answer at once
    done = late.until_done(timeout=15)
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "stopped" and shown.retry and shown.outcome
    assert len(upstream.requests) == 1


def test_reattaching_within_the_grace_resumes_without_losing_or_repeating_a_character(grace_server, upstream):
    server = grace_server
    # Escaping must round-trip too ("&amp" without ";" is text, not markdown's entity: no `tail` event).
    reply = "".join(f'w{i} <b>&amp</b> & "q" ' for i in range(120))
    upstream.push(Script(text=reply, delay=0.02))
    question = "resume?"
    sent = send(server, question)
    first = Listener(server, sent.answer_id)
    assert first.until(lambda e: len(first.deltas) >= 5, timeout=30)
    cursor, before = first.last_id, first.text
    first.close()
    assert before == reply[:cursor]
    time.sleep(0.5)

    second = Listener(server, sent.answer_id, last_event_id=cursor)
    done = second.until_done()
    assert done is not None
    ids = [e.id for e in second.deltas]
    assert ids and ids[0] > cursor and ids == sorted(ids)
    assert len(before) + len(second.text) == len(reply), "characters lost or repeated on resume"
    assert before + second.text == reply
    assert final(sent.answer_id, done.data).status == "done"
    assert len(upstream.requests) == 1
    record = stream_ended(upstream)
    assert record.finished and not record.client_closed_early
    row = message(server, sent.answer_id)
    assert (row.status, row.content) == ("done", reply)
    assert_one_exchange(server, sent, question)


def test_nobody_coming_back_within_the_grace_stops_the_answer(grace_server, upstream):
    server = grace_server
    reply = words(600)
    upstream.push(Script(text=reply, delay=0.02))  # about 12 s
    question = "gone for good?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    assert listener.until(lambda e: len(listener.deltas) >= 3, timeout=30)
    seen = listener.text
    listener.close()
    left = time.monotonic()

    row = ended(server, sent.answer_id, timeout=30)
    assert time.monotonic() - left >= 2.5, "stopped before the grace period was over"
    assert (row.status, row.error) == ("stopped", "Stopped: nobody was watching this answer.")
    assert row.content.startswith(seen) and reply.startswith(row.content) and len(row.content) < len(reply)
    record = stream_ended(upstream)
    assert record.client_closed_early and record.text_sent.startswith(row.content)
    assert_one_exchange(server, sent, question)
    done = Listener(server, sent.answer_id).until_done(timeout=15)
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "stopped" and shown.outcome == row.error and shown.retry


# -- several workers ------------------------------------------------------------------------------


def test_stop_reaches_the_answer_from_another_worker(three_workers, upstream):
    server = three_workers
    reply = words(400)
    upstream.push(Script(text=reply, delay=0.03))  # about 12 s
    question = "stop me"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    assert listener.until(lambda e: len(listener.deltas) >= 2, timeout=30)

    # Only connections pinned to the other workers first: the stop must travel through the database.
    others = sessions_on(server, owner=False, count=2)
    for session in others:
        response = session.post(
            server.url(f"/messages/{sent.answer_id}/stop"), headers={"HX-Request": "true"}, timeout=10
        )
        assert response.status_code == 204
    done = listener.until_done(timeout=30)
    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert shown.status == "stopped" and shown.retry
    record = stream_ended(upstream, timeout=15)
    assert record.client_closed_early and record.tokens_sent < 400
    row = ended(server, sent.answer_id)
    assert row.status == "stopped"
    assert row.content and reply.startswith(row.content) and len(row.content) < len(reply)
    assert listener.text == row.content
    assert_one_exchange(server, sent, question)
    assert len(upstream.requests) == 1
    for _ in range(3):  # stopping an ended answer again, from wherever, is harmless
        response = owner_client(server).post(
            server.url(f"/messages/{sent.answer_id}/stop"), headers={"HX-Request": "true"}, timeout=10
        )
        assert response.status_code == 204
    assert message(server, sent.answer_id).status == "stopped"


def _read_all(listener: Listener) -> Listener:
    listener.until_done(timeout=60)
    listener.close()
    return listener


def test_listeners_on_every_worker_each_get_the_whole_answer_once(three_workers, upstream):
    server = three_workers
    reply = "".join(f"part{i} <i>&</i> " for i in range(250))
    upstream.push(Script(text=reply, delay=0.02))  # about 5 s
    question = "many listeners"
    sent = send(server, question)
    time.sleep(0.3)
    sessions = sessions_on(server, owner=True, count=1) + sessions_on(server, owner=False, count=3)
    listeners = [Listener(server, sent.answer_id, session=s) for s in sessions]
    listeners += [Listener(server, sent.answer_id) for _ in range(2)]  # wherever they land
    with ThreadPoolExecutor(len(listeners)) as pool:
        results = list(pool.map(_read_all, listeners))

    for index, listener in enumerate(results):
        assert listener.done is not None, f"listener {index} got no done event"
        assert listener.text == reply, f"listener {index} saw {len(listener.text)} chars, not {len(reply)}"
        shown = final(sent.answer_id, listener.done.data)
        assert shown.status == "done" and shown.body == reply.strip()
        ids = [e.id for e in listener.deltas]
        assert ids == sorted(set(ids)), f"listener {index}: offsets not strictly increasing"
    row = message(server, sent.answer_id)
    assert (row.status, row.content) == ("done", reply)
    assert len(upstream.requests) == 1
    assert_one_exchange(server, sent, question)


def test_resuming_on_another_worker_with_last_event_id_repeats_nothing(three_workers, upstream):
    """EventSource reconnects with Last-Event-ID and may land on any worker, whose database copy can be
    up to SAVE_INTERVAL_S behind what the owner's listener already sent."""
    server = three_workers
    reply = "".join(f"t{i} " for i in range(250))
    upstream.push(Script(text=reply, delay=0.02))  # about 5 s
    question = "resume elsewhere"
    sent = send(server, question)
    [owner] = sessions_on(server, owner=True, count=1)
    first = Listener(server, sent.answer_id, session=owner)
    assert first.until(lambda e: first.last_id >= 200, timeout=30)
    [other] = sessions_on(server, owner=False, count=1)
    cursor, before = first.last_id, first.text
    first.close()
    assert before == reply[:cursor]

    second = Listener(server, sent.answer_id, last_event_id=cursor, session=other)
    done = second.until_done()
    assert done is not None
    assert second.deltas and second.deltas[0].id > cursor
    assert before + second.text == reply, (
        f"resumed at {cursor}: got {len(second.text)} more chars, expected {len(reply) - cursor}"
    )
    assert final(sent.answer_id, done.data).status == "done"
    row = message(server, sent.answer_id)
    assert (row.status, row.content) == ("done", reply)
    assert len(upstream.requests) == 1
    assert_one_exchange(server, sent, question)


def test_first_token_deadline_applies_again_after_a_retry(timeouts_server, upstream):
    """A 429 shows "Retrying…" and suspends the first-token deadline while waiting; the retried
    request must get its own FIRST_TOKEN_TIMEOUT_S, not wait forever under a stale notice."""
    server = timeouts_server
    upstream.push(Script(status=429, retry_after=1), Script(text=words(5), first_delay=30))
    question = "retry then silence?"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done(timeout=60)

    assert done is not None
    assert any("Retrying in 1 s" in s for s in listener.statuses), listener.statuses
    shown = final(sent.answer_id, done.data)
    assert shown.status == "failed" and shown.retry
    assert re.search(r"sent nothing for 1 s", shown.outcome), shown.outcome
    assert len(upstream.requests) == 2
    record = stream_ended(upstream)
    assert record.client_closed_early and record.tokens_sent == 0
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("failed", "", shown.outcome)
    assert_one_exchange(server, sent, question)


def test_slow_first_token_within_first_token_timeout_is_waited_for(make_server, upstream):
    """FIRST_TOKEN_TIMEOUT_S (10 s) is longer than STREAM_IDLE_S (0.5 s): a model that thinks 7 s
    before its first token must be waited for."""
    server = make_server(FIRST_TOKEN_TIMEOUT_S=10, STREAM_IDLE_S=0.5, STREAM_FLUSH_MS=30)
    reply = "Worth the wait."
    upstream.push(Script(text=reply, first_delay=7))
    question = "think hard"
    sent = send(server, question)
    listener = Listener(server, sent.answer_id)
    done = listener.until_done(timeout=60)

    assert done is not None
    shown = final(sent.answer_id, done.data)
    assert (shown.status, shown.outcome) == ("done", None), shown.outcome
    assert listener.text == reply
    row = message(server, sent.answer_id)
    assert (row.status, row.content, row.error) == ("done", reply, None)
    assert len(upstream.requests) == 1
    assert_one_exchange(server, sent, question)
