"""A thinking model's thought on the server: stored apart from the answer, saved while it streams,
exported, never matched by search, never sent back upstream."""

from __future__ import annotations

import json
import re

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import client
from tests.fake_upstream import Script
from tests.services import Services, shared
from tests.test_faults import Listener, final, message, send, words
from tests.test_scale_out import same_person, start_pair
from trickle import storage

THOUGHT = "Pondering zebrafish quietly, then more pondering."
ANSWER = "Plain visible answer."


def ask(person, server, content: str, conversation_id: int | None = None) -> int:
    """Send without JavaScript (the answer is complete when it returns): the conversation's id."""
    data = {"content": content, **({"conversation_id": conversation_id} if conversation_id else {})}
    response = person.post(server.url("/messages"), data=data, allow_redirects=False, timeout=30)
    assert response.status_code == 303, response.text[:300]
    return int(re.search(r"/c/(\d+)", response.headers["Location"]).group(1))


def answers(server, conversation_id: int):
    engine = server.engine()
    try:
        with engine.connect() as db:
            query = sa.select(storage.messages).where(
                storage.messages.c.conversation_id == conversation_id, storage.messages.c.role == "assistant"
            )
            return db.execute(query.order_by(storage.messages.c.id)).all()
    finally:
        engine.dispose()


def test_the_thought_is_stored_exported_unsearched_and_not_sent_back(shared_server, upstream):
    person = client(shared_server)
    upstream.push(Script(text=ANSWER, thought=THOUGHT, dialect="reasoning"))
    conversation_id = ask(person, shared_server, "Think about fish.")
    [row] = answers(shared_server, conversation_id)
    assert (row.thoughts, row.content, row.status) == (THOUGHT, ANSWER, "done")
    assert row.thought_ms is not None

    markdown = person.get(shared_server.url(f"/c/{conversation_id}/export.md"), timeout=10).text
    assert f"<details><summary>Thought for {max(1, round(row.thought_ms / 1000))} s</summary>\n\n{THOUGHT}" in markdown
    assert markdown.index(THOUGHT) < markdown.index(ANSWER)
    exported = json.loads(person.get(shared_server.url(f"/c/{conversation_id}/export.json"), timeout=10).text)
    assert exported["messages"][1]["thoughts"] == THOUGHT and exported["messages"][1]["content"] == ANSWER
    assert "thoughts" not in exported["messages"][0]  # the question has none

    def listed(query: str) -> bool:
        page = person.get(shared_server.url("/"), params={"q": query}, timeout=10).text
        return f"/c/{conversation_id}" in page

    assert listed("visible answer") and not listed("zebrafish")

    page = person.get(shared_server.url(f"/c/{conversation_id}"), timeout=10).text
    assert 'class="thought"' in page and "zebrafish" in page and "Thought for" in page

    upstream.push(Script(text="Second."))
    ask(person, shared_server, "And now?", conversation_id)
    sent = upstream.requests[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["Think about fish.", ANSWER, "And now?"]


def test_progress_saves_carry_the_thought_while_the_model_thinks(make_server, upstream):
    server = make_server(SAVE_INTERVAL_S="0.1")
    person = client(server)
    upstream.push(Script(text="Late answer.", thought=" ".join(f"w{i}" for i in range(40)), thought_delay=0.1))
    response = person.post(server.url("/messages"), data={"content": "Think."}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    answer_id = int(re.findall(r'id="message-(\d+)"', response.text)[-1])

    def saved_thought() -> str:
        engine = server.engine()
        try:
            with engine.connect() as db:
                query = sa.select(storage.messages.c.thoughts, storage.messages.c.content, storage.messages.c.status)
                return db.execute(query.where(storage.messages.c.id == answer_id)).one()
        finally:
            engine.dispose()

    assert upstream.wait_for(lambda: "w10" in (saved_thought().thoughts or ""), timeout=20)
    row = saved_thought()
    assert row.status == "streaming" and row.content == "" and row.thoughts.startswith("w0 w1 w2")


@pytest.fixture(scope="session")
def services() -> Services:
    """PostgreSQL and Redis, started once for the whole run (see tests/services.py)."""
    return shared()


def test_another_instance_streams_the_thought_through_redis_and_resumes_it(services, upstream):
    """Followers on other instances carry the thought exactly as the answer: live through Redis, and
    resumed from an event id mid-thought with nothing lost or repeated."""
    a, b = start_pair(services, upstream)
    try:
        owner = client(a)
        other = same_person(owner)
        thought = words(60, "t")
        upstream.push(Script(text=words(20, "a"), delay=0.02, thought=thought, thought_delay=0.05))
        sent = send(a, "think on A", session=owner)
        first = Listener(b, sent.answer_id, session=other)
        assert first.until(lambda e: e.event == "thought-delta" and "t10 " in e.data, timeout=30)
        shown = "".join(e.data for e in first.events if e.event == "thought-delta")
        cursor = first.events[-1].id
        assert shown == thought[:cursor] and not first.deltas  # the thought before any answer, in order
        first.close()

        second = Listener(b, sent.answer_id, last_event_id=cursor, session=other)
        done = second.until_done(timeout=30)
        assert done is not None
        rest = "".join(e.data for e in second.events if e.event == "thought-delta")
        assert shown + rest == thought, "thought lost or repeated on resume"
        closed = [e for e in second.events if e.event == "thought-state"]
        assert closed and "Thought for" in closed[0].data
        assert "".join(e.data for e in second.deltas) == words(20, "a")
        assert final(sent.answer_id, done.data).status == "done"
        row = message(a, sent.answer_id)
        assert (row.thoughts, row.content) == (thought, words(20, "a"))
    finally:
        a.stop()
        b.stop()


def test_a_conversations_reasoning_effort_is_sent_only_once_chosen(shared_server, upstream):
    person = client(shared_server)
    conversation_id = ask(person, shared_server, "Hello?")
    assert "reasoning_effort" not in upstream.requests[-1]["body"]  # unset: the provider's own

    options = shared_server.url(f"/c/{conversation_id}/options")
    refused = person.post(options, data={"model": "fake-model", "reasoning_effort": "extreme"}, timeout=10)
    assert refused.status_code == 400
    saved = person.post(options, data={"model": "fake-model", "reasoning_effort": "high"}, timeout=10)
    assert saved.status_code in (200, 303)
    page = person.get(shared_server.url(f"/c/{conversation_id}"), timeout=10).text
    assert '<option value="high" selected>High</option>' in page

    ask(person, shared_server, "Think hard.", conversation_id)
    assert upstream.requests[-1]["body"]["reasoning_effort"] == "high"


def test_the_reasoning_effort_setting_is_the_default(make_server, upstream):
    server = make_server(REASONING_EFFORT="low")
    person = client(server)
    ask(person, server, "Hi")
    assert upstream.requests[-1]["body"]["reasoning_effort"] == "low"
    response = requests.post(
        server.url("/api/chat"), json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30
    )
    assert response.status_code == 200 and upstream.requests[-1]["body"]["reasoning_effort"] == "low"
