"""A thinking model through the other protocols: `/api/chat` byte-identical unless the client asks
(`"reasoning": true`), `/ws` likewise, and the AI SDK's own client showing reasoning parts."""

from __future__ import annotations

import json

import pytest
import requests

from tests.fake_upstream import THOUGHT_DIALECTS, Script
from tests.test_aisdk import ai_sdk  # noqa: F401 (a fixture)
from tests.test_api_chat import read_api_stream
from tests.test_ws import connect, read_answer, send

THOUGHT = "First I weigh it. Then I decide."
REPLY = 'A plain reply: ünïcödé, "quotes", newlines\n\nand <b>tags</b>.'
HI = [{"role": "user", "content": "hi"}]


def api_bytes(server, body: dict) -> bytes:
    response = requests.post(server.url("/api/chat"), json=body, timeout=30)
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize("dialect", THOUGHT_DIALECTS)
def test_the_reference_protocol_is_byte_identical_with_a_thinking_upstream(shared_server, upstream, dialect):
    upstream.push(Script(text=REPLY))
    plain = api_bytes(shared_server, {"messages": HI})
    upstream.push(Script(text=REPLY, thought=THOUGHT, dialect=dialect))
    thinking = api_bytes(shared_server, {"messages": HI})
    assert read_api_stream_text(thinking) == read_api_stream_text(plain) == REPLY
    assert b"reasoning" not in thinking and b"undefined" not in thinking and b"think" not in thinking.lower()
    # No event of another kind (how tokens are batched into events depends on timing alone).
    events = [line[6:] for line in thinking.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and all(list(json.loads(e)) == ["content"] for e in events[:-1])


def read_api_stream_text(body: bytes) -> str:
    class Body:  # what tests.sse reads: the body as byte chunks
        response = [body]

    return read_api_stream(Body())[0]


def test_the_reference_protocol_sends_the_thought_when_asked(shared_server, upstream):
    upstream.push(Script(text=REPLY, thought=THOUGHT, dialect="reasoning_content"))
    events = [
        json.loads(line[6:])
        for line in api_bytes(shared_server, {"messages": HI, "reasoning": True}).decode().split("\n")
        if line.startswith("data: {")
    ]
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "reasoning" and set(kinds) == {"reasoning", "content"}
    assert kinds.index("content") > max(i for i, kind in enumerate(kinds) if kind == "reasoning")
    assert "".join(e["reasoning"] for e in events if "reasoning" in e) == THOUGHT
    assert "".join(e["content"] for e in events if "content" in e) == REPLY


def test_the_socket_sends_reasoning_messages_only_when_asked(shared_server, upstream):
    ws = connect(shared_server)
    try:
        upstream.push(Script(text=REPLY, thought=THOUGHT, dialect="reasoning"))
        send(ws, {"messages": HI})
        text, events = read_answer(ws)
        assert text == REPLY and {e["type"] for e in events} == {"token", "done"}

        upstream.push(Script(text=REPLY, thought=THOUGHT, dialect="tags"))
        send(ws, {"messages": HI, "reasoning": True})
        text, events = read_answer(ws)
        kinds = [e["type"] for e in events]
        assert text == REPLY and kinds[0] == "reasoning" and kinds[-1] == "done"
        assert kinds.index("token") > max(i for i, kind in enumerate(kinds) if kind == "reasoning")
        assert "".join(e["content"] for e in events if e["type"] == "reasoning") == THOUGHT
    finally:
        ws.close()


def test_the_ai_sdk_client_shows_the_reasoning_part_and_sends_none_back(ai_sdk, shared_server, upstream):  # noqa: F811
    upstream.push(Script(text=REPLY, thought=THOUGHT, dialect="reasoning_details"))
    result = ai_sdk("chat", shared_server.url("/api/chat"), ["Think, then answer", "Again?"])
    assert result["errors"] == []
    answer = result["messages"][1]
    assert [part["type"] for part in answer["parts"]] == ["reasoning", "text"]
    assert answer["parts"][0]["text"] == THOUGHT and answer["parts"][0]["state"] == "done"
    assert answer["text"] == REPLY
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Think, then answer"},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "Again?"},
    ]


def test_the_ai_sdk_4_data_stream_sends_the_thought_as_reasoning_lines(shared_server, upstream):
    upstream.push(Script(text=REPLY, thought=THOUGHT, dialect="reasoning_content"))
    response = requests.post(
        shared_server.url("/api/chat?protocol=ai-sdk-data"), json={"id": "c1", "messages": HI}, timeout=30
    )
    lines = [line for line in response.text.split("\n") if line]
    codes = [line.split(":", 1)[0] for line in lines]
    assert "".join(json.loads(line[2:]) for line in lines if line.startswith("g:")) == THOUGHT
    assert "".join(json.loads(line[2:]) for line in lines if line.startswith("0:")) == REPLY
    assert codes.index("0") > max(i for i, code in enumerate(codes) if code == "g")  # the thought comes first
