"""In the page, a message sent while an answer streams waits its turn (Chromium against the app).

It is shown queued, with a Cancel button, and is sent once the running answer has
ended, so that answer is in its history (the fake upstream records what it got).
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.fake_upstream import Script
from tests.test_chat_browser import (
    ANSWER_TIMEOUT,
    STREAMING,
    send,
    wait_for_answer,
    wait_for_streamed_text_beyond,
)

QUEUED = "#messages article.message.queued"
LONG_REPLY = "word " * 80  # about 2.5 s at 30 ms a token: time to queue a message behind it


def start_a_long_answer(page, upstream, question: str) -> None:
    upstream.push(Script(text=LONG_REPLY, delay=0.03))
    send(page, question)
    wait_for_streamed_text_beyond(page, 0)


def test_a_message_sent_while_an_answer_streams_waits_and_has_that_answer_in_its_history(
    shared_server, upstream, page, console_errors
):
    page.goto(shared_server.url("/"))
    start_a_long_answer(page, upstream, "First question")

    send(page, "Second question")
    queued = page.locator(QUEUED)
    expect(queued).to_have_count(1)
    expect(queued.locator(".queued-note")).to_be_visible()
    expect(page.locator("textarea#content")).to_have_value("")  # the composer is free for more
    expect(page.locator(STREAMING)).to_have_count(1)  # the first answer still runs…
    assert len(upstream.requests) == 1  # …and nothing else went out
    # the queued bubble stays last, below the answer being written
    assert page.locator("#messages article.message").last.get_attribute("class").split()[-1] == "queued"

    expect(queued).to_have_count(0, timeout=ANSWER_TIMEOUT)
    expect(page.locator("#messages article.message.assistant")).to_have_count(2, timeout=ANSWER_TIMEOUT)
    expect(wait_for_answer(page).locator(".body")).to_have_text("Echo: Second question")
    first = page.locator("#messages article.message.assistant").first
    expect(first).to_have_attribute("data-status", "done")

    assert len(upstream.requests) == 2
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": LONG_REPLY},
        {"role": "user", "content": "Second question"},
    ]
    roles = page.locator("#messages article.message").evaluate_all(
        "all => all.map(m => m.classList.contains('user') ? 'user' : 'assistant')"
    )
    assert roles == ["user", "assistant", "user", "assistant"]
    page.reload()
    expect(page.locator("#messages article.message")).to_have_count(4)
    assert not console_errors


def test_cancelling_a_queued_message_sends_nothing(shared_server, upstream, page, console_errors):
    page.goto(shared_server.url("/"))
    start_a_long_answer(page, upstream, "Only question")

    send(page, "Never sent")
    queued = page.locator(QUEUED)
    expect(queued).to_have_count(1)
    queued.locator("button.cancel-queued").click()
    expect(queued).to_have_count(0)

    wait_for_answer(page)
    page.wait_for_timeout(1000)  # a send that was going to happen after the answer would have happened by now
    assert len(upstream.requests) == 1
    expect(page.locator("#messages article.message.user")).to_have_count(1)
    page.reload()
    expect(page.locator("#messages article.message")).to_have_count(2)
    assert not console_errors


def test_stop_ends_the_answer_and_the_queued_message_goes_with_the_partial_answer(
    shared_server, upstream, page, console_errors
):
    page.goto(shared_server.url("/"))
    start_a_long_answer(page, upstream, "First question")
    send(page, "Never mind that: this instead")
    expect(page.locator(QUEUED)).to_have_count(1)

    page.locator(f"{STREAMING} button.stop").click()
    expect(page.locator(QUEUED)).to_have_count(0, timeout=ANSWER_TIMEOUT)
    expect(wait_for_answer(page).locator(".body")).to_have_text("Echo: Never mind that: this instead")
    expect(page.locator("#messages article.message.assistant").first).to_have_attribute("data-status", "stopped")

    history = upstream.requests[-1]["body"]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert LONG_REPLY.startswith(history[1]["content"]) and history[1]["content"]  # the partial answer
    assert not console_errors
