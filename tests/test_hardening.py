"""Safe on the internet, round two: requests built to be expensive or to break something, against the
real app (gunicorn, gevent) and the fake upstream. Cheap checks come first (message count, size, JSON
depth, ids, model names), `/ws` spends the same rates as `/api/chat`, and a client can hold only so
many event streams open; each refusal is a readable 4xx and the app stays quick for everyone else.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest
import requests
import websocket

from tests.conftest import client
from tests.fake_upstream import Script
from tests.test_faults import send, words
from tests.test_security import assert_readable, wait_for
from tests.test_ws import connect, read_answer, receive

HX = {"HX-Request": "true"}
JSON = {"Content-Type": "application/json"}
HI = [{"role": "user", "content": "hi"}]
HUGE_ID = "7" * 5000  # more digits than Python's int() reads (4,300)
DEEP = "[" * 100_000 + "]" * 100_000  # 200 KB, far deeper than any parser recursion


def healthz_seconds(server) -> float:
    started = time.perf_counter()
    response = requests.get(server.url("/healthz"), timeout=60)
    assert response.status_code == 200
    return time.perf_counter() - started


def thirty_thousand_messages() -> bytes:
    body = json.dumps({"messages": [{"role": "user", "content": "x"}] * 30_000}).encode()
    assert 900_000 < len(body) < 1024 * 1024  # under the default body limit: read and parsed
    return body


# -- 2: one request may not stall the worker --------------------------------------------------------


def test_thirty_thousand_tiny_messages_are_a_413_and_healthz_stays_quick(make_server, upstream):
    """The issue's request: 30,000 messages (990 KB) once cost ~7 s of the event loop (the openai
    client's transform); every concurrent request waited. Compared with this run's idle latency."""
    server = make_server()
    body = thirty_thousand_messages()
    for _ in range(5):
        healthz_seconds(server)  # warm: connections, caches
    idle = [healthz_seconds(server) for _ in range(30)]
    statuses: list[int] = []
    done = threading.Event()

    def attack():
        try:
            for _ in range(6):
                response = requests.post(server.url("/api/chat"), data=body, headers=JSON, timeout=60)
                statuses.append(response.status_code)
                if response.status_code < 400:
                    response.close()
        finally:
            done.set()

    attacker = threading.Thread(target=attack)
    attacker.start()
    under_attack = []
    while not done.is_set():
        under_attack.append(healthz_seconds(server))
    attacker.join()
    assert statuses == [413] * 6, statuses
    assert upstream.requests == []
    # A multiple of this run's idle median, nothing absolute: the slowest probe waited ~3,000 times it
    # before (the whole transform); now at most one parse of the body (~15 times it on a quiet machine).
    baseline = statistics.median(idle)
    assert max(under_attack) <= 100 * baseline, (baseline, sorted(under_attack)[-5:])


def test_a_body_of_many_small_containers_parses_without_a_garbage_collection():
    """300,000 empty lists (990 KB) made the cyclic collector run dozens of full passes over the
    server's heap mid-parse: 1.5 s of the event loop, ten times the parse itself."""
    import gc

    from trickle.chat_requests import parse_json

    body = '{"messages": [{"role": "user", "content": "x"}], "pad": [' + ",".join(["[]"] * 300_000) + "]}"
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        parsed = parse_json(body.encode())
    finally:
        gc.callbacks.remove(count)
    assert len(parsed["pad"]) == 300_000
    assert collections == []
    assert gc.isenabled()


def test_too_many_messages_is_a_413_naming_the_setting_in_every_protocol(make_server, upstream):
    server = make_server(MAX_REQUEST_MESSAGES="3")
    plain = [{"role": "user", "content": "x"}] * 4
    parts = [{"role": "user", "parts": [{"type": "text", "text": "x"}]}] * 4
    for body in ({"messages": plain}, {"messages": parts}):
        response = requests.post(server.url("/api/chat"), json=body, timeout=10)
        assert_readable(response, 413, "MAX_REQUEST_MESSAGES")
    ws = connect(server)
    try:
        ws.send(json.dumps({"messages": plain}))
        event = receive(ws)
        assert event["type"] == "error" and "MAX_REQUEST_MESSAGES" in event["message"]
        ws.send(json.dumps({"messages": plain[:3]}))  # at the limit: answered
        text, events = read_answer(ws)
        assert events[-1]["type"] == "done"
    finally:
        ws.close()
    assert len(upstream.requests) == 1


# -- 6: 4xx, never 5xx -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["", "?protocol=ai-sdk"])
def test_deeply_nested_json_is_a_400_on_api_chat(shared_server, upstream, protocol):
    for body in (DEEP, '{"messages": ' + DEEP + "}", '{"messages": [{"role": "user", "content": "hi"}], "x": ' + DEEP):
        response = requests.post(shared_server.url("/api/chat" + protocol), data=body, headers=JSON, timeout=10)
        assert_readable(response, 400, "nested too deeply")
    assert upstream.requests == []
    assert "RecursionError" not in shared_server.read_log()


def test_deeply_nested_json_on_the_socket_is_an_error_and_the_socket_stays_open(shared_server, upstream):
    ws = connect(shared_server)
    try:
        for raw in (DEEP, '{"type": ' + DEEP + "}", '{"messages": ' + DEEP + "}"):
            ws.send(raw)
            event = receive(ws)
            assert event["type"] == "error" and "nested too deeply" in event["message"], event
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws) == {"type": "pong"}
        ws.send(json.dumps({"messages": [{"role": "user", "content": "still here"}]}))
        text, events = read_answer(ws)
        assert text == "Echo: still here" and events[-1]["type"] == "done"
    finally:
        ws.close()


def test_an_id_of_five_thousand_digits_is_a_4xx_everywhere(shared_server, upstream):
    person = client(shared_server)
    for headers in (HX, {}):
        response = person.post(
            shared_server.url("/messages"),
            data={"content": "hi", "conversation_id": HUGE_ID},
            headers=headers,
            allow_redirects=False,
            timeout=10,
        )
        assert_readable(response, 404)
    # In a URL gunicorn refuses 5,000 digits itself (414: its request line holds 4,094 bytes); 4,000 reach the app.
    assert person.get(shared_server.url(f"/c/{HUGE_ID}"), timeout=10).status_code == 414
    long_id = HUGE_ID[:4000]
    for path in (f"/c/{long_id}", f"/c/{long_id}/export.md", f"/messages/{long_id}/events"):
        assert_readable(person.get(shared_server.url(path), timeout=10), 404)
    for path in (f"/messages/{long_id}/retry", f"/c/{long_id}/rename", f"/c/{long_id}/delete"):
        assert_readable(person.post(shared_server.url(path), data={"title": "x"}, headers=HX, timeout=10), 404)
    assert upstream.requests == []
    assert "Traceback" not in shared_server.read_log()


def test_a_huge_id_in_the_pages_url_leaves_the_sidebar_search_working(shared_server):
    """HX-Current-URL only says which row to highlight: an id no database holds highlights none."""
    person = client(shared_server)
    sent = send(shared_server, "find me please", session=person)
    for current in (f"/c/{HUGE_ID}", f"/c/{sent.conversation_id}{HUGE_ID}"):
        response = person.get(
            shared_server.url("/conversations?q=find"),
            headers={**HX, "HX-Current-URL": shared_server.url(current)},
            timeout=10,
        )
        assert response.status_code == 200, response.text[:300]
        assert f"/c/{sent.conversation_id}" in response.text and 'aria-current="page"' not in response.text
    current = shared_server.url(f"/c/{sent.conversation_id}")
    response = person.get(
        shared_server.url("/conversations?q=find"), headers={**HX, "HX-Current-URL": current}, timeout=10
    )
    assert response.status_code == 200 and 'aria-current="page"' in response.text


def test_a_huge_cursor_or_last_event_id_still_ends_with_done(shared_server):
    person = client(shared_server)
    sent = send(shared_server, "cursor me", session=person)
    wait_for(lambda: b"event: done" in person.get(shared_server.url(f"/messages/{sent.answer_id}/events")).content)
    for query, headers in ((f"?cursor={HUGE_ID[:4000]}", {}), ("", {"Last-Event-ID": HUGE_ID})):
        response = person.get(
            shared_server.url(f"/messages/{sent.answer_id}/events{query}"), headers=headers, timeout=10
        )
        assert response.status_code == 200 and b"event: done" in response.content


# -- 7: log forging ------------------------------------------------------------------------------------

FORGED = ["fake-model\r\n2026-01-01 00:00:00,000 INFO trickle: forged", "a\nb", "tab\there", "nul\x00", "bell\x07"]


@pytest.mark.parametrize("model", FORGED, ids=["crlf-line", "lf", "tab", "nul", "bell"])
def test_a_model_with_a_control_character_is_a_400_naming_the_field(shared_server, upstream, model):
    for protocol in ("", "?protocol=ai-sdk"):
        response = requests.post(
            shared_server.url("/api/chat" + protocol), json={"messages": HI, "model": model}, timeout=10
        )
        assert_readable(response, 400, '"model"')
    ws = connect(shared_server)
    try:
        ws.send(json.dumps({"messages": HI, "model": model}))
        event = receive(ws)
        assert event["type"] == "error" and '"model"' in event["message"]
    finally:
        ws.close()
    assert upstream.requests == []
    assert "forged" not in shared_server.read_log()


def test_an_overlong_model_name_is_a_400(shared_server, upstream):
    response = requests.post(shared_server.url("/api/chat"), json={"messages": HI, "model": "m" * 201}, timeout=10)
    assert_readable(response, 400, '"model"')
    assert upstream.requests == []


# -- 3: /ws spends the same rates as /api/chat -----------------------------------------------------------


def ws_with_cookie(server, session: requests.Session) -> websocket.WebSocket:
    """A socket that is the same owner as `session` (its cookie)."""
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    return websocket.create_connection("ws" + server.url("/ws")[4:], timeout=30, cookie=cookie)


def test_sixty_answers_in_a_second_over_the_socket_hit_the_rate_limit(make_server, upstream):
    server = make_server(RATE_LIMIT_PER_OWNER="10/minute", RATE_LIMIT_PER_IP="1000/minute")
    upstream.default = Script(text="ok", delay=0)
    ws = connect(server)
    answered, refused = 0, []
    started = time.monotonic()
    try:
        for number in range(60):
            ws.send(json.dumps({"messages": [{"role": "user", "content": f"question {number}"}]}))
            if number % 2:
                ws.send(json.dumps({"type": "cancel"}))  # start/cancel churn spends the same budget
            text, events = read_answer(ws)
            if events[-1]["type"] == "done":
                answered += 1
            else:
                refused.append(events[-1]["message"])
        elapsed = time.monotonic() - started
        assert answered == 10 and len(refused) == 50, (answered, refused[:3])
        assert all("Too many requests" in message and "10/minute" in message for message in refused), refused[0]
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws) == {"type": "pong"}  # the socket stays open
    finally:
        ws.close()
    assert elapsed < 30, elapsed  # not a timing assertion: the loop must not have waited the limit out
    assert len(upstream.requests) <= 10


def test_the_socket_and_api_chat_share_one_owners_rate(make_server, upstream):
    server = make_server(RATE_LIMIT_PER_OWNER="3/minute", RATE_LIMIT_PER_IP="1000/minute")
    person = client(server)
    for _ in range(3):
        response = person.post(server.url("/api/chat"), json={"messages": HI}, timeout=10)
        assert response.status_code == 200 and b"[DONE]" in response.content
    assert_readable(person.post(server.url("/api/chat"), json={"messages": HI}, timeout=10), 429)
    ws = ws_with_cookie(server, person)
    try:
        ws.send(json.dumps({"messages": HI}))
        event = receive(ws)
        assert event["type"] == "error" and "Too many requests" in event["message"]
    finally:
        ws.close()
    other = connect(server)  # another owner (no cookie): its own rate
    try:
        other.send(json.dumps({"messages": HI}))
        assert read_answer(other)[1][-1]["type"] == "done"
    finally:
        other.close()
    assert len(upstream.requests) == 4


def test_every_socket_message_counts_against_rate_limit_ws_messages(make_server, upstream):
    server = make_server(RATE_LIMIT_WS_MESSAGES="5/minute")
    ws = connect(server)
    try:
        for _ in range(5):
            ws.send(json.dumps({"type": "ping"}))
            assert receive(ws) == {"type": "pong"}
        for raw in (json.dumps({"type": "ping"}), "not json", json.dumps({"messages": HI})):
            ws.send(raw)
            event = receive(ws)
            assert event["type"] == "error" and "RATE_LIMIT_WS_MESSAGES" in event["message"], event
    finally:
        ws.close()
    assert upstream.requests == []


# -- 4: a cap on open event streams ----------------------------------------------------------------------


def open_stream(server, session: requests.Session, answer_id: int) -> requests.Response:
    """An events stream whose body is never read (the status and headers only)."""
    return session.get(server.url(f"/messages/{answer_id}/events"), stream=True, timeout=10)


def test_one_client_at_its_stream_cap_is_refused_and_others_still_load(make_server, upstream):
    server = make_server(MAX_STREAMS_PER_OWNER="3", MAX_STREAMS_PER_IP="5", SSE_PING_S="0.2")
    upstream.push(Script(text=words(3000), delay=0.02))  # a minute of answer: the streams stay open
    hog = client(server)
    sent = send(server, "a long one", session=hog)
    held = []
    for _ in range(3):
        streaming = requests.Session()
        streaming.cookies.update(hog.cookies)
        response = open_stream(server, streaming, sent.answer_id)
        assert response.status_code == 200
        held.append(response)
    refused = hog.get(server.url(f"/messages/{sent.answer_id}/events"), timeout=10)
    assert_readable(refused, 429, "MAX_STREAMS_PER_OWNER")
    refused = hog.post(server.url("/api/chat"), json={"messages": HI}, timeout=10)
    assert_readable(refused, 429, "MAX_STREAMS_PER_OWNER")

    other = client(server)  # someone else: pages and streams work
    assert other.get(server.url("/"), timeout=10).status_code == 200
    upstream.push(Script(text="for the other one", delay=0))
    theirs = send(server, "my own question", session=other)
    body = other.get(server.url(f"/messages/{theirs.answer_id}/events"), timeout=20).content
    assert b"event: done" in body and b"for the other one" in body

    # The address cap counts every owner behind it: 3 held + 2 more, then the next is refused.
    upstream.push(Script(text=words(3000), delay=0.02))
    second = send(server, "another long one", session=other)
    extra = [open_stream(server, other, second.answer_id) for _ in range(2)]
    assert [r.status_code for r in extra] == [200, 200]
    assert_readable(
        other.get(server.url(f"/messages/{second.answer_id}/events"), timeout=10), 429, "MAX_STREAMS_PER_IP"
    )

    # A client that leaves gives its place back (noticed at the next ping).
    held.pop().close()
    reopened = wait_for(lambda: _opened(server, hog, sent.answer_id), timeout=10)
    assert reopened is not None and reopened.status_code == 200
    for response in (*held, *extra, reopened):
        response.close()


def _opened(server, session, answer_id) -> requests.Response | None:
    response = open_stream(server, session, answer_id)
    if response.status_code == 200:
        return response
    response.close()
    return None


def test_websockets_count_against_the_same_caps(make_server, upstream):
    server = make_server(MAX_STREAMS_PER_IP="2")
    first, second = connect(server), connect(server)
    try:
        third = connect(server)
        event = receive(third)
        assert event["type"] == "error" and "MAX_STREAMS_PER_IP" in event["message"]
        opcode, data = third.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1013
        third.close()
        first.send(json.dumps({"messages": HI}))  # the sockets within the cap work
        assert read_answer(first)[1][-1]["type"] == "done"
        first.close()
        fourth = wait_for(lambda: _socket_in_cap(server), timeout=10)  # a closed one gives its place back
        assert fourth is not None
        fourth.send(json.dumps({"type": "ping"}))
        assert receive(fourth) == {"type": "pong"}
        fourth.close()
    finally:
        first.close()
        second.close()


def _socket_in_cap(server) -> websocket.WebSocket | None:
    ws = connect(server)
    ws.send(json.dumps({"type": "ping"}))
    opcode, data = ws.recv_data()
    if opcode == websocket.ABNF.OPCODE_TEXT and json.loads(data) == {"type": "pong"}:
        return ws
    ws.close()
    return None
