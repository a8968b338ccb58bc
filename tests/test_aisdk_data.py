"""`POST /api/chat` for AI SDK 3.x/4.x: the data stream protocol, the text stream, and which body gets which.

AI SDK 4's own client (`callChatApi` from `@ai-sdk/ui-utils`, as `useChat` calls it,
pinned in tests/js/ai4) reads Trickle's stream in Node; the Python tests pin down
the wire format and the detection rule of docs/protocols.md.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.fake_upstream import Script
from tests.node_clients import JS, node_client

REPLY = 'AI SDK 4 reads this: ünïcödé, emoji 🎉, quotes "x", a colon: here, newlines\n\nand <b>tags</b>. ' * 20


@pytest.fixture(scope="session")
def ai4():
    """Run tests/js/ai4/ai4_chat.mjs with the pinned `ai` 4 and its `@ai-sdk/ui-utils`."""
    return node_client(JS / "ai4", "ai4_chat.mjs", ("ai", "@ai-sdk/ui-utils", "zod"))


def v4_body(*texts: str) -> dict:
    """What AI SDK 4.2+ `useChat` posts for a conversation of alternating user/assistant texts."""
    messages = [
        {
            "role": "user" if n % 2 == 0 else "assistant",
            "content": text,
            "parts": [{"type": "text", "text": text}]
            if n % 2 == 0
            else [{"type": "step-start"}, {"type": "text", "text": text}],
        }
        for n, text in enumerate(texts)
    ]
    return {"id": "chat-1", "messages": messages}


def data_lines(response) -> list[tuple[str, object]]:
    """Each line of a data stream as (code, parsed value); empty lines (the keep-alive) skipped."""
    lines = []
    for line in response.iter_lines(decode_unicode=True):
        if line:
            code, _, value = line.partition(":")
            lines.append((code, json.loads(value)))
    return lines


# -- AI SDK 4's own client, in Node -----------------------------------------------


def test_call_chat_api_reads_the_data_stream_and_sends_the_history(ai4, shared_server, upstream):
    upstream.push(Script(text=REPLY, delay=0.001))
    result = ai4("chat", shared_server.url("/api/chat"), {"prompts": ["Hello there", "And again?"]})
    assert [turn["status"] for turn in result["turns"]] == ["ready", "ready"]
    assert [(m["role"], m["content"]) for m in result["messages"]] == [
        ("user", "Hello there"),
        ("assistant", REPLY),
        ("user", "And again?"),
        ("assistant", "Echo: And again?"),
    ]
    answer = result["messages"][1]
    assert answer["id"].startswith("msg-")  # from the step's start line
    assert answer["parts"] == [{"type": "step-start"}, {"type": "text", "text": REPLY}]
    finish = result["turns"][0]["finish"]
    assert finish["id"] == answer["id"] and finish["finishReason"] == "stop"
    usage = finish["usage"]
    assert usage["promptTokens"] > 0 and usage["completionTokens"] == upstream.streams[0].tokens_sent  # as reported
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    # the second request carried the whole conversation (content, not parts, is the text)
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "And again?"},
    ]


def test_call_chat_api_gets_a_failure_before_any_text_as_its_error(ai4, shared_server, upstream):
    upstream.push(Script(status=401))
    result = ai4("chat", shared_server.url("/api/chat"), {"prompts": ["Hi"]})
    (turn,) = result["turns"]
    assert turn["status"] == "error" and "API key" in turn["error"], turn
    assert turn["finish"] is None


def test_call_chat_api_gets_a_failure_mid_answer_as_its_error_after_the_text(ai4, shared_server, upstream):
    upstream.push(Script(text="one two three four five", error_after=2, error_message="The model is overloaded"))
    result = ai4("chat", shared_server.url("/api/chat"), {"prompts": ["Hi"]})
    (turn,) = result["turns"]
    assert turn["status"] == "error" and "The model is overloaded" in turn["error"], turn
    assert result["messages"][-1]["content"] == "one two "


def test_call_chat_api_rejected_request_is_its_error(ai4, shared_server):
    result = ai4("chat", shared_server.url("/api/chat"), {"prompts": ["x" * (20000 * 4 + 1)]})
    assert result["turns"][0]["status"] == "error"
    assert "MAX_INPUT_CHARS" in result["turns"][0]["error"]


def test_call_chat_api_stop_closes_the_upstream(ai4, shared_server, upstream):
    upstream.push(Script(text="word " * 400, delay=0.02))
    result = ai4("stop", shared_server.url("/api/chat"), {"prompt": "go"})
    assert result["seen"].startswith("word") and result["status"] == "ready"
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    assert upstream.streams[-1].client_closed_early
    assert upstream.streams[-1].tokens_sent < 400


def test_call_chat_api_text_protocol_reads_the_plain_text(ai4, shared_server, upstream):
    upstream.push(Script(text=REPLY, delay=0.001))
    url = shared_server.url("/api/chat?protocol=text")
    result = ai4("chat", url, {"prompts": ["Hello", "Again"], "streamProtocol": "text"})
    assert [turn["status"] for turn in result["turns"]] == ["ready", "ready"]
    assert [(m["role"], m["content"]) for m in result["messages"]] == [
        ("user", "Hello"),
        ("assistant", REPLY),
        ("user", "Again"),
        ("assistant", "Echo: Again"),
    ]
    assert result["turns"][0]["finish"]["finishReason"] == "unknown"  # the text protocol carries no finish
    assert upstream.requests[-1]["body"]["messages"][1] == {"role": "assistant", "content": REPLY}


def test_call_chat_api_text_protocol_gets_a_failure_before_any_text_as_its_error(ai4, shared_server, upstream):
    upstream.push(Script(status=401))
    result = ai4("chat", shared_server.url("/api/chat?protocol=text"), {"prompts": ["Hi"], "streamProtocol": "text"})
    (turn,) = result["turns"]
    assert turn["status"] == "error" and "API key" in turn["error"], turn


def test_call_chat_api_text_protocol_cut_mid_answer_is_an_error_not_a_whole_answer(ai4, shared_server, upstream):
    upstream.push(Script(text="one two three four five", error_after=2))
    result = ai4("chat", shared_server.url("/api/chat?protocol=text"), {"prompts": ["Hi"], "streamProtocol": "text"})
    (turn,) = result["turns"]
    assert turn["status"] == "error" and turn["finish"] is None, turn


# -- the wire format --------------------------------------------------------------


def test_data_stream_wire_format(shared_server, upstream):
    upstream.push(Script(text="Hello, wörld!", delay=0.001))
    response = requests.post(shared_server.url("/api/chat"), json=v4_body("Hi"), stream=True, timeout=30)
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-data-stream"] == "v1"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Accel-Buffering"] == "no"
    start, *texts, step, finish = data_lines(response)
    assert start[0] == "f" and set(start[1]) == {"messageId"} and start[1]["messageId"].startswith("msg-")
    assert {code for code, _ in texts} == {"0"}
    assert "".join(text for _, text in texts) == "Hello, wörld!"
    usage = {"promptTokens": step[1]["usage"]["promptTokens"], "completionTokens": step[1]["usage"]["completionTokens"]}
    assert step == ("e", {"finishReason": "stop", "usage": usage, "isContinued": False})
    assert finish == ("d", {"finishReason": "stop", "usage": usage})


def test_data_stream_lines_are_compact_json_and_a_newline_travels_escaped(shared_server, upstream):
    upstream.push(Script(text="a\nb", delay=0.001))
    raw = requests.post(shared_server.url("/api/chat"), json=v4_body("Hi"), timeout=30).text
    assert raw.endswith("\n")
    lines = [line for line in raw.split("\n") if line]
    assert all(line[0] in "0def" and line[1] == ":" for line in lines)
    values = [json.loads(line[2:]) for line in lines]
    assert [line[2:] for line in lines] == [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values]
    assert "".join(v for line, v in zip(lines, values, strict=True) if line[0] == "0") == "a\nb"


def test_data_stream_failure_is_an_error_line_then_the_finish(shared_server, upstream):
    upstream.push(Script(text="one two three four five", drop_after=2))
    lines = data_lines(requests.post(shared_server.url("/api/chat"), json=v4_body("x"), stream=True, timeout=30))
    assert [code for code, _ in lines][-3:] == ["3", "e", "d"]
    assert isinstance(lines[-3][1], str) and lines[-3][1]
    assert lines[-1][1]["finishReason"] == "error"
    assert "".join(v for code, v in lines if code == "0") == "one two "


def test_text_stream_is_the_answer_alone(shared_server, upstream):
    upstream.push(Script(text="Hello, wörld!\n", delay=0.001))
    response = requests.post(shared_server.url("/api/chat?protocol=text"), json=v4_body("Hi"), timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "x-vercel-ai-data-stream" not in response.headers
    assert response.text == "Hello, wörld!\n"


def test_text_stream_failure_before_any_text_is_a_502_with_the_message(shared_server, upstream):
    upstream.push(Script(status=404))
    response = requests.post(shared_server.url("/api/chat?protocol=text"), json=v4_body("Hi"), timeout=30)
    assert response.status_code == 502
    assert "fake-model" in response.text  # the provider's message names the model


# -- which body gets which protocol -----------------------------------------------

UI_STREAM, DATA_STREAM, REFERENCE = "x-vercel-ai-ui-message-stream", "x-vercel-ai-data-stream", None


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        # the reference client, and AI SDK 3.x / 4.0 (the same body): the reference JSON protocol
        ({"messages": [{"role": "user", "content": "x"}]}, "/api/chat", REFERENCE),
        ({"messages": [{"role": "user", "content": "x"}], "model": "fake-model"}, "/api/chat", REFERENCE),
        # 3.x / 4.0 name theirs in the URL
        ({"messages": [{"role": "user", "content": "x"}]}, "/api/chat?protocol=ai-sdk-data", DATA_STREAM),
        # 4.1.0 to 4.1.19: the chat's id beside content messages
        ({"id": "c", "messages": [{"role": "user", "content": "x"}]}, "/api/chat", DATA_STREAM),
        # 4.1.20+, 4.2, 4.3: content beside parts
        (v4_body("x"), "/api/chat", DATA_STREAM),
        (
            {"messages": [{"role": "user", "content": "x", "parts": [{"type": "text", "text": "x"}]}]},
            "/api/chat",
            DATA_STREAM,
        ),
        # 5 and 6: parts without content
        (
            {"id": "c", "messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "x"}]}]},
            "/api/chat",
            UI_STREAM,
        ),
        # named protocols win
        (v4_body("x"), "/api/chat?protocol=ai-sdk", UI_STREAM),
        (v4_body("x"), "/api/chat?protocol=json", REFERENCE),
    ],
)
def test_the_body_chooses_the_protocol(shared_server, upstream, body, path, expected):
    upstream.push(Script(text="ok", delay=0.001))
    response = requests.post(shared_server.url(path), json=body, timeout=30)
    assert response.status_code == 200, response.text
    headers = {name.lower() for name in response.headers}
    if expected is None:
        assert UI_STREAM not in headers and DATA_STREAM not in headers
        assert response.text.endswith("data: [DONE]\n\n") and '"content"' in response.text
    else:
        assert expected in headers and ({UI_STREAM, DATA_STREAM} - {expected}).isdisjoint(headers)
