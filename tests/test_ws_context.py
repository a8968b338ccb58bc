"""`/ws`: context sent while an answer streams continues that answer (the app under gunicorn, the fake upstream).

The first request is cut, a second one continues the same answer on the history, the answer so
far and the context; the client reads one stream of tokens and one `done`.
"""

from __future__ import annotations

import pytest

from tests.fake_upstream import Script
from tests.test_ws import HI, MAX_EVENTS, connect, read_answer, receive, send

LONG = "alpha " * 300  # 6 s at 20 ms a token: it is still running when the context comes
AFTER = "Bravo, written after the context."


@pytest.fixture
def ws(shared_server):
    client = connect(shared_server)
    yield client
    client.close()


def tokens_until(ws, count: int) -> str:
    """Read `count` token events (nothing else may come first)."""
    text = ""
    for _ in range(count):
        event = receive(ws)
        assert event["type"] == "token", event
        text += event["content"]
    return text


def assert_socket_serves(ws, upstream) -> None:
    """Nothing else is pending (a ping is answered next), and the socket answers a new request."""
    send(ws, {"type": "ping"})
    assert receive(ws) == {"type": "pong"}
    send(ws, {"messages": [{"role": "user", "content": "next"}]})
    text, events = read_answer(ws)
    assert text == "Echo: next" and events[-1]["type"] == "done"


def test_context_mid_answer_continues_the_same_answer(ws, upstream):
    upstream.push(Script(text=LONG, delay=0.02), Script(text=AFTER, delay=0.005))
    send(ws, {"messages": HI})
    before = tokens_until(ws, 3)
    send(ws, {"type": "context", "content": "Also mention bravo."})
    rest, events = read_answer(ws)
    text = before + rest

    assert [e["type"] for e in events].count("done") == 1 and events[-1]["type"] == "done"
    assert "reason" not in events[-1] and {e["type"] for e in events} == {"token", "done"}
    partial, continued = text.split("\n\n")  # one stream: the answer so far, a paragraph break, the rest
    assert LONG.startswith(partial) and len(partial) < len(LONG) and continued == AFTER

    assert len(upstream.requests) == 2
    assert upstream.requests[1]["body"]["messages"] == [
        *HI,
        {"role": "assistant", "content": partial.strip()},
        {"role": "user", "content": "Also mention bravo."},
    ]
    first, second = upstream.streams
    assert upstream.wait_for(first.ended.is_set) and first.client_closed_early  # the first request was cut
    usage = events[-1]["usage"]  # both requests: the first counted here, the second as the upstream reported
    assert usage["completion_tokens"] > second.tokens_sent
    assert usage["prompt_tokens"] > upstream.requests[1]["body"]["messages"].__len__()
    assert_socket_serves(ws, upstream)


def test_several_contexts_in_a_row_each_continue_the_answer(ws, upstream):
    upstream.push(Script(text=LONG, delay=0.02), Script(text=LONG, delay=0.02), Script(text=AFTER))
    send(ws, {"messages": HI})
    text = tokens_until(ws, 2)
    send(ws, {"type": "context", "content": "First addition."})
    for _ in range(MAX_EVENTS):  # until the second request writes
        text += tokens_until(ws, 1)
        if len(upstream.streams) == 2 and "\n\n" in text and not text.endswith("\n\n"):
            break
    send(ws, {"type": "context", "content": "Second addition."})
    rest, events = read_answer(ws)
    text += rest
    assert events[-1]["type"] == "done"
    one, two, three = text.split("\n\n")
    assert three == AFTER and LONG.startswith(one) and LONG.startswith(two)
    assert upstream.requests[2]["body"]["messages"] == [
        *HI,
        {"role": "assistant", "content": one.strip()},
        {"role": "user", "content": "First addition."},
        {"role": "assistant", "content": two.strip()},
        {"role": "user", "content": "Second addition."},
    ]


def test_a_thought_is_not_sent_back_as_the_answer(ws, upstream):
    thought = "Let me think about this carefully first. " * 3
    upstream.push(Script(thought=thought, text=LONG, delay=0.02, thought_delay=0.001), Script(text=AFTER, delay=0.005))
    send(ws, {"messages": HI, "reasoning": True})
    kinds, answer = [], ""
    for _ in range(MAX_EVENTS):
        event = receive(ws)
        kinds.append(event["type"])
        answer += event.get("content", "") if event["type"] == "token" else ""
        if kinds.count("token") == 3:
            break
    assert "reasoning" in kinds
    send(ws, {"type": "context", "content": "Shorter, please."})
    rest, events = read_answer(ws)
    assert events[-1]["type"] == "done"
    partial, continued = (answer + rest).split("\n\n")
    assert continued == AFTER
    sent = upstream.requests[1]["body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": partial.strip()}
    assert "think" not in sent[1]["content"]


def test_cancel_during_the_continuation_answers_cancelled(ws, upstream):
    upstream.push(Script(text=LONG, delay=0.02), Script(text="bravo " * 300, delay=0.02))
    send(ws, {"messages": HI})
    tokens_until(ws, 2)
    send(ws, {"type": "context", "content": "Go on with bravo."})
    text = ""
    for _ in range(MAX_EVENTS):  # until the continuation writes
        text += tokens_until(ws, 1)
        if "bravo" in text:
            break
    send(ws, {"type": "cancel"})
    rest, events = read_answer(ws)
    assert events[-1]["type"] == "done" and events[-1]["reason"] == "cancelled"
    assert [e["type"] for e in events].count("done") == 1
    assert upstream.wait_for(lambda: len(upstream.streams) == 2 and upstream.streams[1].ended.is_set())
    assert upstream.streams[1].client_closed_early and upstream.streams[1].tokens_sent < 300
    assert_socket_serves(ws, upstream)


def test_context_with_nothing_running_is_a_readable_error(ws, upstream):
    send(ws, {"type": "context", "content": "Anything?"})
    event = receive(ws)
    assert event["type"] == "error" and "No answer is being written" in event["message"]
    send(ws, {"messages": HI})
    text, events = read_answer(ws)  # the answer ended: a context after its done is refused the same way
    assert events[-1]["type"] == "done"
    send(ws, {"type": "context", "content": "Too late"})
    assert "No answer is being written" in receive(ws)["message"]
    assert_socket_serves(ws, upstream)
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("content", "said"),
    [("", "Type a message first."), ("   ", "Type a message first."), ("x" * 20001, "MAX_INPUT_CHARS"), (7, "string")],
)
def test_bad_context_is_refused_and_the_answer_goes_on(ws, upstream, content, said):
    upstream.push(Script(text="one two three four five six seven eight", delay=0.05))
    send(ws, {"messages": HI})
    text = tokens_until(ws, 1)
    send(ws, {"type": "context", "content": content})
    errors = []
    for _ in range(MAX_EVENTS):
        event = receive(ws)
        if event["type"] == "error":
            errors.append(event["message"])
        elif event["type"] == "token":
            text += event["content"]
        else:
            break
    assert event["type"] == "done" and len(errors) == 1 and said in errors[0]
    assert text == "one two three four five six seven eight"
    assert len(upstream.requests) == 1


def test_the_continuation_is_retried_like_a_first_request(ws, upstream):
    upstream.push(Script(text=LONG, delay=0.02), Script(status=500), Script(text=AFTER))
    send(ws, {"messages": HI})
    before = tokens_until(ws, 2)
    send(ws, {"type": "context", "content": "Add this."})
    rest, events = read_answer(ws)
    assert events[-1]["type"] == "done"
    assert (before + rest).endswith("\n\n" + AFTER)
    assert len(upstream.requests) == 3  # the continuation failed once, before its first token, and was retried
    assert upstream.requests[2]["body"]["messages"] == upstream.requests[1]["body"]["messages"]
    assert upstream.requests[2]["body"]["messages"][-1] == {"role": "user", "content": "Add this."}


def test_the_continuation_has_its_own_first_token_deadline(make_server, upstream):
    server = make_server(FIRST_TOKEN_TIMEOUT_S="1", STREAM_IDLE_S="60", UPSTREAM_RETRIES="0")
    upstream.push(Script(text=LONG, delay=0.02), Script(text=AFTER, first_delay=20))
    client = connect(server)
    try:
        send(client, {"messages": HI})
        tokens_until(client, 2)
        send(client, {"type": "context", "content": "Add this."})
        text, events = read_answer(client)
        assert events[-1]["type"] == "error" and "sent nothing for 1 s" in events[-1]["message"]
        assert AFTER not in text
    finally:
        client.close()
