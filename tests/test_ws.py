"""`/ws`: chat over a WebSocket with cancel, against the app under gunicorn and the fake upstream."""

from __future__ import annotations

import json
import signal
import struct
import time

import pytest
import requests
import websocket

from tests.fake_upstream import Script
from trickle.listen import PING, Start, Update
from trickle.ws import SocketEvents

HI = [{"role": "user", "content": "hi"}]
MAX_EVENTS = 20000  # every read loop is bounded; the socket timeout bounds each read


def connect(server, timeout: float = 30):
    return websocket.create_connection("ws" + server.url("/ws")[4:], timeout=timeout)


def send(ws, payload) -> None:
    ws.send(payload if isinstance(payload, str) else json.dumps(payload))


def receive(ws, timeout: float = 30) -> dict:
    """The next event; fails after `timeout` s without one (the server's pings do not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, data = ws.recv_data(control_frame=True)  # answers pings as they come
        if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            return json.loads(data)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise AssertionError(f"the server closed the socket: {data!r}")
    raise AssertionError(f"no event in {timeout} s")


def read_answer(ws) -> tuple[str, list[dict]]:
    """Tokens until the answer's terminal event (done or error); returns the text and every event."""
    text, events = "", []
    for _ in range(MAX_EVENTS):
        event = receive(ws)
        events.append(event)
        if event["type"] == "token":
            text += event["content"]
        elif event["type"] in ("done", "error"):
            return text, events
    raise AssertionError(f"no done or error after {MAX_EVENTS} events")


def test_each_event_is_one_whole_json_message():
    encoder = SocketEvents()
    odd = "a line\u2028separator, a\x85next line, a\nnewline, \u2029 and 🎉"
    messages = encoder.encode(Start("", 0)) + encoder.encode(Update(10, odd, True, "Retrying in 2 s…"))
    assert [json.loads(m) for m in messages] == [
        {"type": "token", "content": odd},
        {"type": "status", "message": "Retrying in 2 s…"},
    ]
    assert encoder.encode(PING) == [] and encoder.encode(Update(10, "", True, None)) == []


@pytest.fixture
def ws(shared_server):
    client = connect(shared_server)
    yield client
    client.close()


def test_tokens_then_done_with_usage(ws, upstream):
    reply = 'WebSockets work: ünïcödé, emoji 🎉, quotes "x", newlines\n\nand <b>tags</b>. ' * 10
    upstream.push(Script(text=reply, delay=0.001))
    send(ws, {"messages": HI})
    text, events = read_answer(ws)
    assert text == reply
    done = events[-1]
    assert done["type"] == "done" and "reason" not in done
    assert done["usage"]["completion_tokens"] == upstream.streams[-1].tokens_sent  # the provider's own count
    assert done["usage"]["prompt_tokens"] >= 1
    assert {e["type"] for e in events} == {"token", "done"}


def test_messages_and_model_reach_the_upstream(ws, upstream):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping?"}]
    send(ws, {"messages": messages, "model": "fake-model-2"})
    text, events = read_answer(ws)
    assert text == "Echo: Ping?"
    body = upstream.requests[-1]["body"]
    assert body["messages"] == messages
    assert body["model"] == "fake-model-2"


def test_cancel_mid_stream_closes_the_upstream_and_answers_cancelled(ws, upstream):
    upstream.push(Script(text="word " * 400, delay=0.02))
    send(ws, {"messages": HI})
    first = receive(ws)
    assert first["type"] == "token"
    send(ws, {"type": "cancel"})
    text, events = read_answer(ws)
    done = events[-1]
    assert done == {"type": "done", "reason": "cancelled", "usage": done["usage"]}
    assert done["usage"]["completion_tokens"] >= 1  # recorded (counted) for the part that was written
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    record = upstream.streams[-1]
    assert record.client_closed_early
    assert record.tokens_sent < 400
    assert (first["content"] + text).startswith("word")
    # and the socket goes on: a cancel with nothing running is ignored, the next request is answered
    send(ws, {"type": "cancel"})
    send(ws, {"messages": [{"role": "user", "content": "again"}]})
    text, events = read_answer(ws)
    assert text == "Echo: again" and events[-1]["type"] == "done"


def live_generations(server) -> int:
    return requests.get(server.url("/healthz"), timeout=10).json()["live_generations"]


def test_a_cancel_right_behind_its_request_stops_it(make_server, upstream):
    server = make_server()
    upstream.push(Script(text="word " * 100, delay=0.02))
    client = connect(server)
    try:
        client.send(json.dumps({"messages": HI}))
        client.send(json.dumps({"type": "cancel"}))  # read with the request, before its generation ran
        text, events = read_answer(client)
        assert events[-1]["type"] == "done" and events[-1]["reason"] == "cancelled"
        assert upstream.wait_for(lambda: live_generations(server) == 0, timeout=10)
        upstream.reset()  # the script may not have been asked for
        send(client, {"messages": [{"role": "user", "content": "next"}]})
        text, events = read_answer(client)
        assert text == "Echo: next" and events[-1]["type"] == "done"
    finally:
        client.close()


def test_bad_input_is_an_error_message_and_the_socket_stays_open(ws, upstream, shared_server):
    cases = [
        "not json",
        "[1, 2]",
        json.dumps({"messages": []}),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": 5}]}),
        json.dumps({"messages": HI, "model": 7}),
        json.dumps({"type": "launch"}),
        '{"messages": [{"role": "user", "content": "half a pair: \\ud800"}]}',  # no text holds a lone surrogate
        json.dumps({"messages": [{"role": "user", "content": "x" * (20000 * 4 + 1)}]}),  # the MAX_INPUT_CHARS limit
    ]
    for case in cases:
        ws.send(case)
        event = receive(ws)
        assert event["type"] == "error", case
        assert isinstance(event["message"], str) and event["message"], case
    assert "MAX_INPUT_CHARS" in event["message"]
    send(ws, {"type": "ping"})
    assert receive(ws) == {"type": "pong"}
    ws.send_binary(json.dumps({"messages": [{"role": "user", "content": "bytes"}]}).encode())
    text, events = read_answer(ws)
    assert text == "Echo: bytes" and events[-1]["type"] == "done"
    assert len(upstream.requests) == 1  # none of the bad ones went upstream


def test_a_message_over_the_post_body_limit_closes_with_1009(ws, upstream):
    ws.send(json.dumps({"messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}))
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", data[:2])[0] == 1009  # "message too big", as the WebSocket protocol says
    assert upstream.requests == []


def test_a_second_request_while_one_runs_is_refused_and_the_first_goes_on(ws, upstream):
    upstream.push(Script(text="one two three four five six seven eight", delay=0.05))
    send(ws, {"messages": HI})
    assert receive(ws)["type"] == "token"
    send(ws, {"messages": [{"role": "user", "content": "too soon"}]})
    send(ws, "{broken")
    errors = []
    tokens = ""
    for _ in range(MAX_EVENTS):
        event = receive(ws)
        if event["type"] == "error":
            errors.append(event["message"])
        elif event["type"] == "token":
            tokens += event["content"]
        else:
            break
    assert event["type"] == "done" and "reason" not in event
    assert len(errors) == 2 and "cancel" in errors[0]
    assert tokens.endswith("eight")
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "script",
    [
        Script(status=500, repeat=3),  # the first try and both retries fail
        Script(status=401),
        Script(text="one two three four five", drop_after=2),
        Script(text="one two three four five", error_after=2),
    ],
    ids=["500", "401", "drop", "error-event"],
)
def test_upstream_failure_is_an_error_message_then_the_socket_still_works(ws, upstream, script):
    upstream.push(script)
    send(ws, {"messages": HI})
    text, events = read_answer(ws)
    error = events[-1]
    assert error["type"] == "error"
    assert error["message"]
    assert "usage" in error
    if script.drop_after or script.error_after:
        assert text == "one two "
    if script.status == 500:  # the retries were announced while they happened
        assert any(e["type"] == "status" and "Retrying" in e["message"] for e in events)
    send(ws, {"messages": [{"role": "user", "content": "after"}]})
    text, events = read_answer(ws)
    assert text == "Echo: after" and events[-1]["type"] == "done"


def test_several_generations_one_after_another_on_one_socket(ws, upstream):
    for n in range(4):
        send(ws, {"messages": [{"role": "user", "content": f"question {n}"}]})
        text, events = read_answer(ws)
        assert text == f"Echo: question {n}"
        assert events[-1]["type"] == "done"
    assert len(upstream.streams) == 4
    assert all(record.finished for record in upstream.streams)


def test_closing_the_socket_mid_generation_closes_the_upstream(shared_server, upstream):
    upstream.push(Script(text="word " * 400, delay=0.02))
    client = connect(shared_server)
    send(client, {"messages": HI})
    assert receive(client)["type"] == "token"
    client.close()
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    record = upstream.streams[-1]
    assert record.client_closed_early
    assert record.tokens_sent < 400


def test_closing_the_socket_right_behind_a_request_leaves_nothing_running(make_server, upstream):
    server = make_server()
    upstream.push(Script(text="word " * 400, delay=0.02))
    client = connect(server)
    client.send(json.dumps({"messages": HI}))
    client.close()
    assert upstream.wait_for(lambda: live_generations(server) == 0, timeout=10)
    assert not any(record.finished for record in upstream.streams)


def test_dropping_the_connection_without_a_close_frame_closes_the_upstream(shared_server, upstream):
    upstream.push(Script(text="word " * 400, delay=0.02))
    client = connect(shared_server)
    send(client, {"messages": HI})
    assert receive(client)["type"] == "token"
    client.sock.close()  # a vanished client: no close handshake
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    assert upstream.streams[-1].client_closed_early


def test_protocol_pings_keep_the_socket_alive(make_server, upstream):
    server = make_server(SSE_PING_S="0.2")
    client = connect(server)
    try:
        pings = 0
        for _ in range(200):  # websocket-client answers each ping with a pong as it reads it
            opcode, _ = client.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PING:
                pings += 1
                if pings == 4:
                    break
        assert pings == 4  # four intervals later the socket is still open: the pongs were taken
        send(client, {"messages": HI})
        text, events = read_answer(client)
        assert text == "Echo: hi" and events[-1]["type"] == "done"
    finally:
        client.close()


def test_a_client_that_stops_answering_pings_is_closed_and_its_answer_stopped(make_server, upstream):
    server = make_server(SSE_PING_S="0.3")
    upstream.push(Script(text="word " * 400, delay=0.05))
    client = connect(server)
    try:
        send(client, {"messages": HI})
        # read nothing more: no pongs go back, so the server gives up on the socket
        assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=15)
        assert upstream.streams[-1].client_closed_early
    finally:
        client.sock.close()


def test_a_restarting_server_finishes_the_answer_then_says_going_away(make_server, upstream):
    server = make_server()
    upstream.push(Script(text="one two three four five six", delay=0.1))
    client = connect(server)
    try:
        send(client, {"messages": HI})
        assert receive(client)["type"] == "token"
        server.process.send_signal(signal.SIGTERM)
        text, events = read_answer(client)
        assert events[-1]["type"] == "done"
        opcode, data = client.recv_data()
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", data[:2])[0] == 1001
    finally:
        client.close()


BROWSER_CLIENT = """
async () => {
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const queue = []; let wake = null;
  ws.onmessage = (event) => { queue.push(JSON.parse(event.data)); if (wake) { wake(); wake = null; } };
  const next = async () => {
    while (!queue.length) await new Promise(resolve => { wake = resolve; });
    return queue.shift();
  };
  const answer = async () => {
    let text = '';
    for (let i = 0; i < 20000; i++) {
      const event = await next();
      if (event.type === 'token') text += event.content; else return { text, end: event };
    }
  };
  ws.send(JSON.stringify({ messages: [{ role: 'user', content: 'first' }] }));
  const first = await answer();
  ws.send(JSON.stringify({ messages: [{ role: 'user', content: 'second' }] }));
  const token = await next();
  ws.send(JSON.stringify({ type: 'cancel' }));
  const second = await answer();
  ws.close();
  return { first, token, second, extensions: ws.extensions };
}
"""


def test_a_browser_websocket_streams_and_cancels(page, shared_server, upstream):
    reply = 'Compressed frames, in order: ünïcödé 🎉 漢字 "q" <b>x</b>\n' * 200
    upstream.push(Script(text=reply, delay=0), Script(text="word " * 400, delay=0.02))
    page.goto(shared_server.url("/"))
    result = page.evaluate(BROWSER_CLIENT)
    assert "permessage-deflate" in result["extensions"]  # browsers compress: the frames' order matters
    assert result["first"]["text"] == reply
    assert result["first"]["end"]["type"] == "done"
    assert result["token"]["type"] == "token"
    assert result["second"]["end"]["reason"] == "cancelled"
    assert upstream.wait_for(lambda: len(upstream.streams) == 2 and upstream.streams[1].ended.is_set(), timeout=10)
    assert upstream.streams[1].client_closed_early and upstream.streams[1].tokens_sent < 400


def test_the_owner_limits_apply_to_the_socket_and_the_api_alike(make_server, upstream):
    server = make_server(DAILY_TOKEN_BUDGET="1")
    client = connect(server)
    try:
        send(client, {"messages": HI})
        text, events = read_answer(client)
        assert events[-1]["type"] == "done"  # its tokens are now counted against the budget
        send(client, {"messages": HI})
        refused = receive(client)
        assert refused["type"] == "error" and "DAILY_TOKEN_BUDGET" in refused["message"]
        send(client, {"type": "ping"})
        assert receive(client) == {"type": "pong"}  # still open
    finally:
        client.close()
    for body in ({"messages": HI}, {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}):
        response = requests.post(server.url("/api/chat"), json=body, timeout=10)
        assert response.status_code == 429
        assert "DAILY_TOKEN_BUDGET" in response.json()["error"]
    assert len(upstream.requests) == 1
