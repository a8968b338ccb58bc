"""Content arrays in the JSON protocols (`/api/chat`, `/ws`, the AI SDK's `file` parts), and models that
cannot see images: the demo model, and an upstream that refuses them, each say so with what to do."""

from __future__ import annotations

import base64
import re

import pytest
import requests

from tests.conftest import AppServer, client
from tests.fake_upstream import Script
from tests.test_api_chat import read_api_stream
from tests.test_attachments import decoded, last_user_content, png, post
from tests.test_faults import ended
from tests.test_security import HX
from tests.test_ws import connect, read_answer, send


@pytest.fixture(scope="module")
def server(upstream):
    env = {"CHAT_MODEL": "fake-model", "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": upstream.base_url}
    started = AppServer(env).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def demo(upstream):
    started = AppServer({"CHAT_PROVIDER": "demo", "DEMO_DELAY_MS": "0"}).start()
    yield started
    started.stop()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def with_image(text: str = "Describe it", image: bytes | None = None) -> list[dict]:
    image = png(2400, 600) if image is None else image
    return [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url(image)}}]


def api_chat(server, messages, **extra):
    body = {"messages": messages, **extra}
    return requests.post(server.url("/api/chat"), json=body, stream=True, timeout=30)


def test_api_chat_sends_an_image_part_on_resized_and_a_text_file_part_inlined(server, upstream):
    upstream.push(Script(text="A wide picture."))
    file_part = {"type": "file", "file": {"filename": "todo.txt", "file_data": data_url(b"buy milk", "text/plain")}}
    content = [*with_image(), file_part]
    response = api_chat(server, [{"role": "user", "content": content}])
    assert response.status_code == 200, response.text[:300]
    text, _ = read_api_stream(response)
    assert text == "A wide picture."
    sent = last_user_content(upstream)
    assert sent[0] == {"type": "text", "text": "Describe it"}
    assert decoded(sent[1]).size == (1568, 392)
    assert sent[2] == {"type": "text", "text": '<file name="todo.txt">\nbuy milk\n</file>'}


def test_ws_accepts_a_content_array(server, upstream):
    upstream.push(Script(text="Seen over the socket."))
    ws = connect(server)
    try:
        send(ws, {"messages": [{"role": "user", "content": with_image("Over ws")}]})
        text, events = read_answer(ws)
    finally:
        ws.close()
    assert text == "Seen over the socket.", events
    sent = last_user_content(upstream)
    assert sent[0] == {"type": "text", "text": "Over ws"} and decoded(sent[1]).size == (1568, 392)


def test_the_ai_sdk_file_parts_reach_the_upstream_as_content_parts(server, upstream):
    upstream.push(Script(text="From the SDK."))
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "file", "mediaType": "image/png", "filename": "shot.png", "url": data_url(png(100, 50))},
    ]
    body = {"id": "chat-1", "messages": [{"id": "m1", "role": "user", "parts": parts}], "trigger": "submit-message"}
    response = requests.post(server.url("/api/chat"), json=body, stream=True, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert "From the SDK." in "".join(response.iter_content(decode_unicode=True))
    sent = last_user_content(upstream)
    assert sent[0] == {"type": "text", "text": "What is this?"} and decoded(sent[1]).size == (100, 50)


BAD_PARTS = {
    "a remote URL": ([{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}], 400, "data: URL"),
    "bad base64": ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], 400, "base64"),
    "an SVG": (
        [{"type": "image_url", "image_url": {"url": data_url(b"<svg onload='alert(1)'/>", "image/svg+xml")}}],
        415,
        "SVG",
    ),
    "a corrupt PNG": (with_image(image=b"\x89PNG\r\n\x1a\n" + b"\0" * 100)[1:], 400, "corrupt"),
    "text that is no image": (
        [{"type": "image_url", "image_url": {"url": data_url(b"plain words", "image/png")}}],
        415,
        "not a PNG",
    ),
    "an unknown part": ([{"type": "audio", "audio": {}}], 400, '"text", "image_url" or "file"'),
    "a text part without text": ([{"type": "text", "text": 3}], 400, "text must be a string"),
}


@pytest.mark.parametrize("content, status, phrase", BAD_PARTS.values(), ids=BAD_PARTS.keys())
def test_bad_content_parts_are_a_json_4xx_and_nothing_goes_upstream(server, upstream, content, status, phrase):
    before = len(upstream.requests)
    response = api_chat(server, [{"role": "user", "content": content}])
    assert response.status_code == status, response.text[:300]
    assert phrase in response.json()["error"], response.json()
    assert len(upstream.requests) == before


def test_an_image_in_an_assistant_message_is_refused(server):
    response = api_chat(server, [{"role": "assistant", "content": with_image()}, {"role": "user", "content": "hi"}])
    assert response.status_code == 400 and "only user messages" in response.json()["error"]


def test_the_demo_model_quotes_a_text_part_and_says_it_cannot_see_images(demo):
    response = api_chat(demo, [{"role": "user", "content": [{"type": "text", "text": "parts please"}]}])
    text, _ = read_api_stream(response)
    assert "parts please" in text
    person = client(demo)
    answer = post(demo, person, "What is this?", [("dot.png", png(8, 8))])
    assert answer.status_code == 200
    answer_id = int(re.search(r'<article class="message assistant[^"]*" id="message-(\d+)"', answer.text).group(1))
    row = ended(demo, answer_id)
    assert row.status == "failed" and "demo model cannot see images" in row.error and "vision model" in row.error
    shown = person.get(demo.url(f"/c/{row.conversation_id}"), timeout=10).text
    assert "demo model cannot see images" in shown, "the bubble says why, and what to do"


def test_an_upstream_that_refuses_images_says_to_pick_a_vision_model(server, upstream):
    upstream.push(Script(status=400, error_message="image input is not supported by this model"))
    person = client(server)
    response = post(server, person, "Look", [("dot.png", png(8, 8))])
    answer_id = int(re.search(r'<article class="message assistant[^"]*" id="message-(\d+)"', response.text).group(1))
    row = ended(server, answer_id)
    assert row.status == "failed"
    assert "image input is not supported" in row.error, "the upstream's own words"
    assert "Pick a vision model" in row.error
    page = person.get(server.url(f"/c/{row.conversation_id}"), headers=HX, timeout=10).text
    assert "Pick a vision model" in page


def test_more_images_than_max_attachments_in_one_message_is_a_413(server, upstream):
    before = len(upstream.requests)
    content = [{"type": "text", "text": "many"}] + [with_image(image=png(2, 2))[1] for _ in range(9)]  # default 8
    response = api_chat(server, [{"role": "user", "content": content}])
    assert response.status_code == 413 and "MAX_ATTACHMENTS" in response.json()["error"]
    assert len(upstream.requests) == before
