"""`POST /api/chat` in the Vercel AI SDK's UI message stream protocol.

The SDK itself (the `ai` packages pinned in tests/js, 6 and 5, installed with
`npm ci`) reads Trickle's stream in Node; the Python tests pin down the wire format.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.fake_upstream import Script
from tests.node_clients import JS, node_client


@pytest.fixture(scope="session")
def ai_sdk():
    """Run tests/js/aisdk_chat.mjs with the pinned `ai` 6 (and 5, as `ai5`: pass AI_PACKAGE="ai5")."""
    return node_client(JS, "aisdk_chat.mjs", ("ai", "ai5", "zod"))


def ui_parts(response) -> list:
    """The data of each SSE event, parsed (the final "[DONE]" kept as a string)."""
    parts = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line[6:]
            parts.append(data if data == "[DONE]" else json.loads(data))
            if data == "[DONE]":
                break
        else:
            assert line == "" or line.startswith(":"), line  # blank separators and comments only
    return parts


def ai_sdk_body(*texts: str) -> dict:
    """What `DefaultChatTransport` posts for a conversation of alternating user/assistant texts."""
    messages = [
        {"id": f"m{n}", "role": "user" if n % 2 == 0 else "assistant", "parts": [{"type": "text", "text": text}]}
        for n, text in enumerate(texts)
    ]
    return {"id": "chat-1", "messages": messages, "trigger": "submit-message", "messageId": None}


# -- the SDK's own client, in Node ------------------------------------------------


SDKS = pytest.mark.parametrize("package", ["ai", "ai5"])  # 6, and 5 (an npm alias)


@SDKS
def test_use_chat_engine_streams_every_answer_and_sends_the_history(ai_sdk, shared_server, upstream, package):
    reply = 'The AI SDK reads this: ünïcödé, emoji 🎉, quotes "x", newlines\n\nand <b>tags</b>. ' * 20
    upstream.push(Script(text=reply, delay=0.001))
    result = ai_sdk("chat", shared_server.url("/api/chat"), ["Hello there", "And again?"], AI_PACKAGE=package)
    assert result["errors"] == []
    assert [turn["status"] for turn in result["turns"]] == ["ready", "ready"]
    messages = result["messages"]
    assert [(m["role"], m["text"]) for m in messages] == [
        ("user", "Hello there"),
        ("assistant", reply),
        ("user", "And again?"),
        ("assistant", "Echo: And again?"),
    ]
    assert messages[1]["id"].startswith("msg-")  # the id from the start part
    assert [p["type"] for p in messages[1]["parts"]] == ["text"]
    assert messages[1]["parts"][0]["state"] == "done"
    assert len(result["finished"]) == 2
    # the second request carried the whole conversation, parts turned into plain content
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And again?"},
    ]


def test_use_chat_stop_closes_the_upstream(ai_sdk, shared_server, upstream):
    upstream.push(Script(text="word " * 400, delay=0.02))
    result = ai_sdk("stop", shared_server.url("/api/chat"), "go")
    assert result["seen"].startswith("word")
    assert result["status"] == "ready"
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    assert upstream.streams[-1].client_closed_early
    assert upstream.streams[-1].tokens_sent < 400


@SDKS
def test_transport_chunks_pass_the_sdk_schema_in_order(ai_sdk, shared_server, upstream, package):
    upstream.push(Script(text="one two three four five six", delay=0.01))
    result = ai_sdk("stream", shared_server.url("/api/chat"), "count", AI_PACKAGE=package)
    types = [chunk["type"] for chunk in result["chunks"]]
    assert types[:2] == ["start", "text-start"]
    assert types[-2:] == ["text-end", "finish"]
    assert set(types[2:-2]) == {"text-delta"}
    assert "".join(c["delta"] for c in result["chunks"] if c["type"] == "text-delta") == "one two three four five six"
    assert result["message"]["text"] == "one two three four five six"
    assert result["errors"] == []


@SDKS
def test_upstream_failure_reaches_use_chat_as_its_error(ai_sdk, shared_server, upstream, package):
    upstream.push(Script(status=401))
    result = ai_sdk("chat", shared_server.url("/api/chat"), ["Hi"], AI_PACKAGE=package)
    assert result["turns"] == [{"status": "error", "error": result["turns"][0]["error"]}]
    assert "API key" in result["turns"][0]["error"]
    assert result["errors"] and "API key" in result["errors"][0]


@SDKS
def test_a_failure_mid_answer_reaches_use_chat_as_its_error_after_the_text(ai_sdk, shared_server, upstream, package):
    upstream.push(Script(text="one two three four five", error_after=2, error_message="The model is overloaded"))
    result = ai_sdk("chat", shared_server.url("/api/chat"), ["Hi"], AI_PACKAGE=package)
    assert result["turns"][0]["status"] == "error"
    assert "The model is overloaded" in result["turns"][0]["error"]
    assert [(m["role"], m["text"]) for m in result["messages"]] == [("user", "Hi"), ("assistant", "one two ")]


@SDKS
def test_text_stream_transport_reads_the_plain_text(ai_sdk, shared_server, upstream, package):
    reply = "Plain text: ünïcödé 🎉\n\nno parts, no JSON. " * 10
    upstream.push(Script(text=reply, delay=0.001))
    url = shared_server.url("/api/chat?protocol=text")
    result = ai_sdk("chat", url, ["Hello", "Again"], AI_PACKAGE=package, AI_TRANSPORT="text")
    assert result["errors"] == []
    assert [turn["status"] for turn in result["turns"]] == ["ready", "ready"]
    assert [(m["role"], m["text"]) for m in result["messages"]] == [
        ("user", "Hello"),
        ("assistant", reply),
        ("user", "Again"),
        ("assistant", "Echo: Again"),
    ]
    assert len(result["finished"]) == 2
    assert upstream.requests[-1]["body"]["messages"][1] == {"role": "assistant", "content": reply}


@SDKS
def test_text_stream_transport_gets_a_failure_before_any_text_as_its_error(ai_sdk, shared_server, upstream, package):
    upstream.push(Script(status=401))
    url = shared_server.url("/api/chat?protocol=text")
    result = ai_sdk("chat", url, ["Hi"], AI_PACKAGE=package, AI_TRANSPORT="text")
    assert result["turns"][0]["status"] == "error"
    assert "API key" in result["turns"][0]["error"]


@SDKS
def test_text_stream_transport_cut_mid_answer_is_an_error_not_a_whole_answer(ai_sdk, shared_server, upstream, package):
    upstream.push(Script(text="one two three four five", error_after=2))
    url = shared_server.url("/api/chat?protocol=text")
    result = ai_sdk("chat", url, ["Hi"], AI_PACKAGE=package, AI_TRANSPORT="text")
    assert result["turns"][0]["status"] == "error"  # (6 still calls onFinish, flagged as an error)


def test_a_rejected_request_reaches_use_chat_as_its_error(ai_sdk, shared_server):
    result = ai_sdk("chat", shared_server.url("/api/chat"), ["x" * (20000 * 4 + 1)])
    assert result["turns"][0]["status"] == "error"
    assert "MAX_INPUT_CHARS" in result["turns"][0]["error"]


# -- the wire format --------------------------------------------------------------


def test_wire_format_header_and_parts(shared_server, upstream):
    upstream.push(Script(text="Hello, wörld!", delay=0.001))
    response = requests.post(shared_server.url("/api/chat"), json=ai_sdk_body("Hi"), stream=True, timeout=30)
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    parts = ui_parts(response)
    start, text_start, *deltas, text_end, finish, done = parts
    assert start == {"type": "start", "messageId": start["messageId"]} and start["messageId"].startswith("msg-")
    text_id = text_start["id"]
    assert text_start == {"type": "text-start", "id": text_id}
    assert all(d == {"type": "text-delta", "id": text_id, "delta": d["delta"]} for d in deltas)
    assert "".join(d["delta"] for d in deltas) == "Hello, wörld!"
    assert text_end == {"type": "text-end", "id": text_id}
    assert finish == {"type": "finish"}  # AI SDK 5 validates strictly: no extra keys
    assert done == "[DONE]"


def test_each_event_is_one_line_of_compact_json(shared_server, upstream):
    upstream.push(Script(text="a\nb", delay=0.001))
    raw = requests.post(
        shared_server.url("/api/chat?protocol=ai-sdk"),
        json={"messages": [{"role": "user", "content": "plain content works too with ?protocol=ai-sdk"}]},
        timeout=30,
    ).text
    events = [e for e in raw.split("\n\n") if e]
    assert events[0].startswith('data: {"type":"start","messageId":"msg-')
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") and "\n" not in e for e in events)  # the newline travels escaped
    deltas = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(d["delta"] for d in deltas if d["type"] == "text-delta") == "a\nb"
    compact = [json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in deltas]
    assert [e[6:] for e in events[:-1]] == compact  # as the SDK's own JSON.stringify writes them


def test_parts_become_plain_content_and_other_parts_are_left_out(shared_server, upstream):
    body = {
        "id": "c",
        "trigger": "submit-message",
        "messages": [
            {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
            {
                "id": "u1",
                "role": "user",
                "parts": [
                    {"type": "text", "text": "Look "},
                    {"type": "file", "url": "x"},
                    {"type": "text", "text": "here"},
                ],
            },
            {
                "id": "a1",
                "role": "assistant",
                "parts": [
                    {"type": "step-start"},
                    {"type": "reasoning", "text": "hm"},
                    {"type": "text", "text": "Seen."},
                ],
            },
            {"id": "a2", "role": "assistant", "parts": [{"type": "tool-search", "toolCallId": "t", "state": "x"}]},
            {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Now?"}], "metadata": {"k": 1}},
        ],
    }
    parts = ui_parts(requests.post(shared_server.url("/api/chat"), json=body, stream=True, timeout=30))
    assert parts[-2:] == [{"type": "finish"}, "[DONE]"]
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Look here"},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": "Now?"},
    ]


def test_failure_mid_answer_closes_the_text_then_error_then_finish(shared_server, upstream):
    upstream.push(Script(text="one two three four five", drop_after=2))
    parts = ui_parts(requests.post(shared_server.url("/api/chat"), json=ai_sdk_body("x"), stream=True, timeout=30))
    types = [p if isinstance(p, str) else p["type"] for p in parts]
    assert types[:2] == ["start", "text-start"]
    assert types[-4:] == ["text-end", "error", "finish", "[DONE]"]
    assert "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta") == "one two "
    assert parts[-3]["errorText"] and set(parts[-3]) == {"type", "errorText"}


def test_failure_before_any_text_sends_no_empty_text_part(shared_server, upstream):
    upstream.push(Script(status=404))
    parts = ui_parts(requests.post(shared_server.url("/api/chat"), json=ai_sdk_body("x"), stream=True, timeout=30))
    assert [p if isinstance(p, str) else p["type"] for p in parts] == ["start", "error", "finish", "[DONE]"]


def test_bad_ai_sdk_requests_are_400_with_a_json_error(shared_server, upstream):
    cases = [
        ("/api/chat", {"messages": [{"role": "user", "parts": [{"type": "text", "text": 5}]}]}),
        ("/api/chat", {"messages": [{"role": "wizard", "parts": [{"type": "text", "text": "x"}]}]}),
        ("/api/chat", {"messages": [{"role": "user", "parts": [{"type": "file", "url": "x"}]}]}),  # no text left
        ("/api/chat?protocol=ai-sdk", {"messages": [{"role": "user", "parts": "hi"}]}),
        ("/api/chat?protocol=smoke-signals", {"messages": [{"role": "user", "content": "x"}]}),
    ]
    for path, body in cases:
        response = requests.post(shared_server.url(path), json=body, timeout=10)
        assert response.status_code == 400, body
        assert response.json()["error"], body
    assert upstream.requests == []


def test_the_reference_protocol_is_unchanged_for_content_messages(shared_server, upstream):
    upstream.push(Script(text="plain", delay=0.001))
    response = requests.post(
        shared_server.url("/api/chat"), json={"messages": [{"role": "user", "content": "x"}]}, stream=True, timeout=30
    )
    assert "x-vercel-ai-ui-message-stream" not in response.headers
    data = [line[6:] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(d)["content"] for d in data[:-1]) == "plain"
