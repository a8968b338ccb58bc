"""In the page, "Add to this answer" while an answer streams (Chromium against the app under gunicorn).

The composer's text is added to the answer being written: it is stored, shown in the bubble at
its place, the bubble goes on with what the model writes next, and the upstream's next request
carries it. A reload and later turns see the same exchange.
"""

from __future__ import annotations

import sqlalchemy as sa
from playwright.sync_api import expect

from tests.conftest import client, screenshot
from tests.fake_upstream import Script
from tests.test_chat_browser import (
    ANSWER_TIMEOUT,
    STREAMING,
    message_id,
    message_row,
    query,
    send,
    wait_for_answer,
    wait_for_streamed_text_beyond,
)
from trickle import context_store, storage

LONG_REPLY = "word " * 120  # about 3.5 s at 30 ms a token
AFTER = "Bravo, written after the addition."
ADDED = "Also mention bravo,\nplease."

# The answer's body as a person reads it: each part in order, an addition as ("added", its text).
BODY_PARTS = """article => Array.from(article.querySelector('.body').children)
  .filter(el => el.innerText.trim())
  .map(el => el.matches('.added-context') ? ['added', el.querySelector('.added-text').innerText]
                                          : ['text', el.innerText.trim()])"""


def add_to_answer(page, text: str) -> None:
    box = page.locator("textarea#content")
    box.fill(text)
    page.locator("button.add-context").click()


def expect_exchange(answer, partial: str) -> None:
    parts = answer.evaluate(BODY_PARTS)
    assert parts == [["text", partial], ["added", ADDED], ["text", AFTER]], parts


def test_add_to_this_answer_continues_the_bubble_and_a_reload_shows_it(shared_server, upstream, page, console_errors):
    upstream.push(Script(text=LONG_REPLY, delay=0.03), Script(text=AFTER, delay=0.2))
    page.goto(shared_server.url("/"))
    expect(page.locator("button.add-context")).to_be_hidden()  # nothing is being written
    send(page, "First question")
    wait_for_streamed_text_beyond(page, 0)
    expect(page.locator("button.add-context")).to_be_visible()

    add_to_answer(page, ADDED)
    streaming = page.locator(STREAMING)
    expect(streaming.locator(".added-context .added-text")).to_have_text(ADDED)  # shown while it goes on
    expect(page.locator("textarea#content")).to_have_value("")
    expect(page.locator("#messages article.message.queued")).to_have_count(0)  # added, not queued
    expect(streaming.locator(".tail")).to_contain_text("Bravo", timeout=ANSWER_TIMEOUT)  # the same bubble
    screenshot(page, "add-to-this-answer")

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    expect(page.locator("button.add-context")).to_be_hidden()
    assert len(upstream.requests) == 2
    sent = upstream.requests[1]["body"]["messages"]
    partial = sent[1]["content"]
    assert sent == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": ADDED},
    ]
    assert partial and LONG_REPLY.startswith(partial) and len(partial) < len(LONG_REPLY.strip())
    expect_exchange(answer, partial)

    mid = message_id(answer)  # stored once: one question, one answer, one addition at its place
    row = message_row(shared_server, mid)
    assert row.content.rstrip().startswith(partial) and row.content.endswith(" \n\n" + AFTER)  # the words as sent
    added = query(shared_server, sa.select(context_store.added_context))
    assert [(a.message_id, a.at, a.content) for a in added if a.message_id == mid] == [
        (mid, len(row.content) - len(AFTER), ADDED)
    ]
    rows = query(
        shared_server, sa.select(storage.messages).where(storage.messages.c.conversation_id == row.conversation_id)
    )
    assert [r.role for r in rows] == ["user", "assistant"]

    page.reload()
    expect_exchange(page.locator("#messages article.message.assistant"), partial)
    expect(page.locator("#messages article.message")).to_have_count(2)

    send(page, "Next question")  # later turns have the exchange as it happened in their history
    expect(wait_for_answer(page).locator(".body")).to_have_text("Echo: Next question")
    assert upstream.requests[-1]["body"]["messages"] == [
        *sent,
        {"role": "assistant", "content": AFTER},
        {"role": "user", "content": "Next question"},
    ]
    assert not console_errors


def test_an_ended_answer_takes_no_addition(shared_server, upstream):
    session = client(shared_server)
    sent = session.post(shared_server.url("/messages"), data={"content": "Hello"}, headers={"HX-Request": "true"})
    mid = int(sent.text.split('id="message-')[2].split('"')[0])  # the second bubble: the answer
    answer = shared_server.url(f"/messages/{mid}")
    assert "data-status" in session.get(answer + "/events", timeout=30).text  # the stream's end: its done
    refused = session.post(answer + "/context", data={"content": "Too late"}, headers={"HX-Request": "true"})
    assert refused.status_code == 409 and "has ended" in refused.text
    assert (
        query(
            shared_server, sa.select(context_store.added_context).where(context_store.added_context.c.message_id == mid)
        )
        == []
    )
    assert len(upstream.requests) == 1


def test_stop_during_the_continuation_keeps_both_parts(shared_server, upstream, page, console_errors):
    upstream.push(Script(text=LONG_REPLY, delay=0.03), Script(text="bravo " * 200, delay=0.03))
    page.goto(shared_server.url("/"))
    send(page, "First question")
    wait_for_streamed_text_beyond(page, 0)
    add_to_answer(page, ADDED)
    streaming = page.locator(STREAMING)
    expect(streaming.locator(".tail")).to_contain_text("bravo", timeout=ANSWER_TIMEOUT)
    streaming.locator("button.stop").click()

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "stopped")
    assert upstream.wait_for(lambda: len(upstream.streams) == 2 and upstream.streams[1].ended.is_set())
    assert upstream.streams[1].client_closed_early  # the continuation's request was closed
    parts = answer.evaluate(BODY_PARTS)
    assert [kind for kind, _ in parts] == ["text", "added", "text"] and parts[2][1].startswith("bravo")
    page.reload()
    assert page.locator("#messages article.message.assistant").evaluate(BODY_PARTS) == parts
    assert not console_errors
