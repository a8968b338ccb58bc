"""Checks the fake upstream against the real openai client, so app tests can trust it.

Also pins down how openai 3.57 surfaces each upstream failure (see comments).
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import httpx2
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Script

MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there"},
]


@pytest.fixture(scope="module")
def server():
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def upstream(server):
    server.reset()
    yield server
    server.reset()


def client(up: FakeUpstream, **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=up.base_url, api_key="x", timeout=5, **kw)


def stream(up: FakeUpstream, **kw):
    return client(up).chat.completions.create(model="fake-model", messages=MSGS, stream=True, **kw)


def contents(chunks) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def test_stream_complete_in_order_with_usage(upstream):
    upstream.push(Script(text="The quick brown fox jumps"))
    chunks = list(stream(upstream, stream_options={"include_usage": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    assert contents(chunks) == ["The ", "quick ", "brown ", "fox ", "jumps"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 4  # words in all messages
    assert chunks[-1].usage.total_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}

    rec = upstream.streams[-1]
    assert rec.ended.wait(2)
    assert (rec.model, rec.tokens_sent, rec.text_sent) == (
        "fake-model",
        5,
        "The quick brown fox jumps",
    )
    assert rec.finished and not rec.client_closed_early
    req = upstream.requests[-1]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["stream"] is True and req["body"]["messages"] == MSGS
    assert req["headers"]["authorization"] == "Bearer x"


def test_usage_chunk_only_when_requested(upstream):
    upstream.push(Script(text="a b"), Script(text="a b", usage=False))
    assert all(c.choices for c in stream(upstream))
    assert all(c.choices for c in stream(upstream, stream_options={"include_usage": True}))


def test_default_echo_and_explicit_tokens(upstream):
    assert "".join(contents(stream(upstream))) == "Echo: hello there"
    upstream.push(Script(tokens=["he", "llo", " wor", "ld"]))
    assert contents(stream(upstream)) == ["he", "llo", " wor", "ld"]


def test_non_streamed_completion(upstream):
    upstream.push(Script(text="Whole answer here"))
    r = client(upstream).chat.completions.create(model="fake-model-2", messages=MSGS)
    assert r.object == "chat.completion" and r.model == "fake-model-2"
    assert r.choices[0].message.content == "Whole answer here"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 3)
    assert upstream.streams == []


def test_first_token_arrives_before_last_is_sent(upstream):
    """What the fake has sent when the client sees the first token, not how long it took (no clock)."""
    upstream.push(Script(tokens=["a ", "b ", "c ", "d ", "e"], delay=0.3))
    s = stream(upstream)
    sent_at_first = None
    seen = []
    for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            if sent_at_first is None:
                rec = upstream.streams[-1]
                sent_at_first = (rec.tokens_sent, rec.finished)
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["a ", "b ", "c ", "d ", "e"]
    assert sent_at_first[0] < 5 and not sent_at_first[1], sent_at_first
    assert upstream.streams[-1].finished


def test_first_delay(upstream):
    upstream.push(Script(text="x", first_delay=0.2))
    t0 = time.monotonic()
    s = stream(upstream)  # returns once headers are in, before the delay
    assert upstream.streams[-1].tokens_sent == 0
    assert contents(s) == ["x"]
    assert time.monotonic() - t0 >= 0.2


def test_429_rate_limit_with_retry_after(upstream):
    # RateLimitError (an APIStatusError) from create() itself, before iteration;
    # str(e) is "Error code: 429 - <error.message>", e.body is the inner "error" object.
    upstream.push(Script(status=429, retry_after=7, error_message="slow down"))
    with pytest.raises(openai.RateLimitError) as ei:
        stream(upstream)
    e = ei.value
    assert e.status_code == 429
    assert str(e) == "Error code: 429 - slow down"
    assert e.response.headers["retry-after"] == "7"
    assert e.body["message"] == "slow down" and e.code == "rate_limit_exceeded"
    assert len(upstream.requests) == 1 and upstream.streams == []


def test_default_retries_honour_retry_after(upstream):
    # With the default max_retries=2, 429 and 5xx are retried; a Retry-After of
    # 0 < s <= 120 is used as the wait (instead of the 0.5 s * 2^n backoff).
    upstream.push(
        Script(status=429, retry_after=0.1),
        Script(status=503, retry_after=0.1),
        Script(text="ok"),
    )
    c = openai.OpenAI(base_url=upstream.base_url, api_key="x", timeout=5)
    t0 = time.monotonic()
    r = c.chat.completions.create(model="fake-model", messages=MSGS)
    elapsed = time.monotonic() - t0
    assert r.choices[0].message.content == "ok"
    assert elapsed >= 0.2  # both waits happened (a lower bound: no machine makes a sleep shorter)
    assert [q["headers"]["x-stainless-retry-count"] for q in upstream.requests] == [
        "0",
        "1",
        "2",
    ]


def test_500_internal_server_error(upstream):
    upstream.push(Script(status=500, error_message="boom"), Script(status=502))
    with pytest.raises(openai.InternalServerError, match=r"^Error code: 500 - boom$"):
        stream(upstream)
    with pytest.raises(openai.InternalServerError) as ei:  # every status >= 500
        stream(upstream)
    assert ei.value.status_code == 502


def test_401_and_404_are_not_retried(upstream):
    upstream.push(Script(status=401), Script(status=404))
    # Default max_retries (2): 4xx other than 408/409/429 are still not retried.
    c = openai.OpenAI(base_url=upstream.base_url, api_key="x", timeout=5)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided"):
        c.chat.completions.create(model="fake-model", messages=MSGS, stream=True)
    with pytest.raises(openai.NotFoundError, match=r"The model `nope` does not exist"):
        c.chat.completions.create(model="nope", messages=MSGS, stream=True)
    assert len(upstream.requests) == 2


def test_drop_after_raises_from_iterator(upstream):
    # The transport sees an incomplete chunked body (httpx2.RemoteProtocolError)
    # and openai wraps it as APIConnectionError("Connection error.") mid-iteration.
    upstream.push(Script(text="a b c d e", drop_after=2))
    got = []
    with pytest.raises(openai.APIConnectionError, match=r"^Connection error\.$") as ei:
        got.extend(stream(upstream))  # keeps the chunks that arrived before the error
    assert isinstance(ei.value.__cause__, httpx2.RemoteProtocolError)
    assert contents(got) == ["a ", "b "]
    rec = upstream.streams[-1]
    assert rec.ended.wait(2) and rec.tokens_sent == 2 and not rec.client_closed_early


def test_error_after_raises_api_error(upstream):
    # openai 3.57 _streaming.Stream.__stream__ (legacy mode, which chat uses):
    # any data event whose JSON has a truthy "error" raises the base APIError
    # (not an APIStatusError: the HTTP status was 200), with
    # message = error["message"], body = the "error" object, code = str(code).
    # The chunk's choices/finish_reason "error" are never seen by the caller.
    upstream.push(Script(text="a b c d", error_after=2, error_message="provider melted"))
    got = []
    with pytest.raises(openai.APIError) as ei:
        got.extend(stream(upstream))  # keeps the chunks that arrived before the error
    e = ei.value
    assert type(e) is openai.APIError
    assert str(e) == e.message == "provider melted"
    assert e.body == {"message": "provider melted", "code": 502} and e.code == "502"
    assert contents(got) == ["a ", "b "]
    assert all(c.choices[0].finish_reason is None for c in got)


def test_stall_then_end_without_done(upstream):
    # A body that simply ends without [DONE] is NOT an error for openai: iteration just stops.
    upstream.push(Script(text="a b c", stall_after=1, stall_seconds=0.3))
    t0 = time.monotonic()
    got = list(stream(upstream))
    assert time.monotonic() - t0 >= 0.3
    assert contents(got) == ["a "]
    assert all(c.choices[0].finish_reason is None for c in got)
    rec = upstream.streams[-1]
    assert rec.ended.wait(2) and rec.finished and rec.tokens_sent == 1


def test_client_closing_early_is_recorded(upstream):
    upstream.push(Script(text="a b c d e f g h", delay=0.05))
    s = stream(upstream)
    got = []
    for chunk in s:
        if chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
        if len(got) == 2:
            s.close()
            break
    rec = upstream.streams[-1]
    assert rec.ended.wait(2)
    assert rec.client_closed_early and not rec.finished
    assert 2 <= rec.tokens_sent < 8


def test_client_hangup_during_stall_is_seen_promptly(upstream):
    upstream.push(Script(text="a b c", stall_after=1, stall_seconds=30))
    s = stream(upstream)
    next(s), next(s)  # role chunk, first token
    s.close()
    rec = upstream.streams[-1]
    assert rec.ended.wait(1)
    assert rec.client_closed_early and not rec.finished


def test_models_list(upstream):
    assert [m.id for m in client(upstream).models.list()] == [
        "fake-model",
        "fake-model-2",
    ]
    with FakeUpstream(models=["m1", "m2", "m3"]) as other:
        page = client(other).models.list()
        assert [(m.id, m.owned_by) for m in page] == [
            ("m1", "fake"),
            ("m2", "fake"),
            ("m3", "fake"),
        ]


def test_stop_is_prompt_during_stall():
    up = FakeUpstream(default=Script(text="a b c", stall_after=1, stall_seconds=30)).start()
    s = stream(up)
    next(s), next(s)
    rec = up.streams[-1]
    up.stop()  # waits at most 2 s for its connections: the 30 s stall must have been cut short
    assert rec.ended.is_set() and not rec.finished and not rec.client_closed_early
    with pytest.raises(openai.APIConnectionError):
        list(s)
    assert not [t for t in threading.enumerate() if t.name == f"fake-upstream-{up.port}"]


def test_push_repeat_ordering_and_reset(upstream):
    c = client(upstream)

    def ask() -> str:
        return c.chat.completions.create(model="fake-model", messages=MSGS).choices[0].message.content

    upstream.push(Script(text="one", repeat=2), Script(text="two"))
    upstream.push(Script(text="three"))
    assert [ask() for _ in range(5)] == [
        "one",
        "one",
        "two",
        "three",
        "Echo: hello there",
    ]
    upstream.default = Script(text="changed")
    upstream.push(Script(text="queued"))
    assert ask() == "queued"
    assert ask() == "changed"
    upstream.push(Script(text="dropped"))
    upstream.reset()
    assert upstream.requests == [] and upstream.streams == []
    assert ask() == "Echo: hello there"


def test_bad_body_and_unknown_paths(upstream):
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=5)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    r = conn.getresponse()
    err = json.loads(r.read())["error"]
    assert r.status == 400 and err["type"] == "invalid_request_error" and err["code"] is None
    # Same keep-alive connection: the 400 left it usable.
    conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m"}))
    r = conn.getresponse()
    assert r.status == 400 and "messages" in json.loads(r.read())["error"]["message"]
    conn.request("GET", "/v1/nope")
    r = conn.getresponse()
    assert r.status == 404 and "error" in json.loads(r.read())
    conn.close()
    assert [q["body"] for q in upstream.requests] == [None, {"model": "m"}]
    # a bad request does not consume a queued script
    upstream.push(Script(text="kept"))
    assert "".join(contents(stream(upstream))) == "kept"


def test_concurrent_streams(upstream):
    upstream.default = Script(text="p q r s", delay=0.4)
    results: list[str] = []

    def run():
        results.append("".join(contents(stream(upstream))))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    # In parallel: all four streams open before any has finished (one after another, never).
    assert upstream.wait_for(lambda: len(upstream.streams) == 4 and not any(r.finished for r in upstream.streams))
    for t in threads:
        t.join(10)
    assert results == ["p q r s"] * 4
    assert len(upstream.streams) == 4 and all(r.ended.wait(2) and r.finished for r in upstream.streams)
