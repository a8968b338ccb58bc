"""The request an answer sends upstream, and the connection it goes on (the real openai client, a real socket)."""

from __future__ import annotations

import pytest

from tests.fake_upstream import Script
from trickle.openai_compatible import OpenAICompatible
from trickle.provider_choice import configured_endpoint
from trickle.providers import ProviderError, Usage
from trickle.settings import load_settings

from .conftest import upstream_env


def provider(upstream, **env: str) -> OpenAICompatible:
    settings = load_settings({**upstream_env(upstream), **env})
    return OpenAICompatible(configured_endpoint(settings), settings)


def answer(chat: OpenAICompatible, messages: list[dict], model: str = "fake-model", **options) -> tuple[str, list]:
    deltas = list(chat.stream(messages, model, **options))
    return "".join(d for d in deltas if isinstance(d, str)), [d for d in deltas if isinstance(d, Usage)]


def test_the_request_carries_what_the_typed_call_would_send(upstream):
    upstream.push(Script(text="Hello there"))
    chat = provider(upstream, MAX_TOKENS="64")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi — café"}]
    text, usage = answer(chat, messages, extra_body={"reasoning_effort": "low"})
    assert text == "Hello there"
    assert usage and usage[0].completion_tokens > 0
    request = upstream.requests[-1]
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["authorization"] == "Bearer test-key"
    body = request["body"]
    assert body["model"] == "fake-model"
    assert body["messages"] == messages
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64
    assert body["reasoning_effort"] == "low"


def test_answers_at_once_leave_no_connection_open_behind_them(upstream):
    """Each answer's connection ends with it: none pile up between the relay and the provider."""
    import gevent

    chat = provider(upstream)
    upstream.push(Script(text="one two three", repeat=60))
    answers = [gevent.spawn(answer, chat, [{"role": "user", "content": "hi"}]) for _ in range(30)]
    gevent.joinall(answers, timeout=30)
    assert [a.value[0] for a in answers] == ["one two three"] * 30
    assert upstream.wait_for(lambda: upstream.open_connections <= 1, timeout=5), upstream.open_connections


def test_a_refusal_keeps_its_status_and_the_next_answer_still_comes(upstream):
    chat = provider(upstream)
    upstream.push(Script(status=429, retry_after=3), Script(text="fine now"))
    with pytest.raises(ProviderError) as refused:
        answer(chat, [{"role": "user", "content": "hi"}])
    assert refused.value.status == 429 and refused.value.retryable and refused.value.retry_after == 3
    assert answer(chat, [{"role": "user", "content": "hi"}])[0] == "fine now"


def test_a_dropped_stream_is_an_error_not_a_short_answer(upstream):
    chat = provider(upstream)
    upstream.push(Script(text="one two three four", drop_after=2))
    with pytest.raises(ProviderError):
        answer(chat, [{"role": "user", "content": "hi"}])


def test_an_event_s_json_is_read_whole_or_refused():
    from trickle.openai_compatible import _json_object

    assert _json_object('{"choices": [{"delta": {"content": "café 🙂"}}]}'.encode()) == {
        "choices": [{"delta": {"content": "café 🙂"}}]
    }
    for garbled in (b'{"a": 1} trailing', b'{"a": 1', b'{"a": "\xff"}'):
        with pytest.raises(ValueError):
            _json_object(garbled)
