"""`POST /api/chat`: the reference Express relay's protocol, against the real fake upstream."""

import json

import requests

from tests.fake_upstream import Script
from tests.sse import read_api_stream


def test_every_character_arrives_in_order_then_done(shared_server, upstream):
    reply = 'Streaming works: ünïcödé, emoji 🎉, quotes "x", newlines\n\nand <b>tags</b>. ' * 20
    upstream.push(Script(text=reply, delay=0.001))
    response = requests.post(
        shared_server.url("/api/chat"), json={"messages": [{"role": "user", "content": "hi"}]}, stream=True, timeout=30
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    text, raw = read_api_stream(response)
    assert text == reply
    assert raw[-1] == "[DONE]"
    assert raw.count("[DONE]") == 1


def test_messages_and_model_reach_the_upstream(shared_server, upstream):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping?"}]
    response = requests.post(
        shared_server.url("/api/chat"), json={"messages": messages, "model": "fake-model-2"}, stream=True, timeout=30
    )
    text, _ = read_api_stream(response)
    assert text == "Echo: Ping?"
    body = upstream.requests[-1]["body"]
    assert body["messages"] == messages
    assert body["model"] == "fake-model-2"
    assert body["stream"] is True


def test_upstream_error_mid_stream_is_an_error_event_then_done(shared_server, upstream):
    upstream.push(Script(text="one two three four five", drop_after=2))
    response = requests.post(
        shared_server.url("/api/chat"), json={"messages": [{"role": "user", "content": "x"}]}, stream=True, timeout=30
    )
    text, raw = read_api_stream(response)
    assert text == "one two "
    assert "error" in json.loads(raw[-2])
    assert raw[-1] == "[DONE]"


def test_bad_requests_are_400_with_a_json_error(shared_server):
    cases = [
        ("not json", {"Content-Type": "application/json"}),
        (json.dumps({"messages": []}), {"Content-Type": "application/json"}),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), {"Content-Type": "application/json"}),
        (json.dumps({"messages": [{"role": "user", "content": 5}]}), {"Content-Type": "application/json"}),
        (json.dumps([1, 2]), {"Content-Type": "application/json"}),
    ]
    for body, headers in cases:
        response = requests.post(shared_server.url("/api/chat"), data=body, headers=headers, timeout=10)
        assert response.status_code == 400, body
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]


def test_client_leaving_closes_the_upstream_request(shared_server, upstream):
    upstream.push(Script(text="word " * 400, delay=0.02))
    response = requests.post(
        shared_server.url("/api/chat"), json={"messages": [{"role": "user", "content": "x"}]}, stream=True, timeout=30
    )
    lines = response.iter_lines()
    for line in lines:
        if line.startswith(b"data: {"):
            break
    response.close()
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    record = upstream.streams[-1]
    assert record.client_closed_early
    assert record.tokens_sent < 400
