"""A thinking model in the page, for every dialect its thought can arrive in (Chromium).

While the model thinks, the bubble shows an open "Thinking…" disclosure streaming the thought;
when the answer begins it closes to "Thought for N s". The answer never holds thought text or
tags, a reload mid-thought resumes both parts, and a long thought is activity for the deadlines.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.fake_upstream import THOUGHT_DIALECTS, Script
from tests.test_chat_browser import ANSWER_TIMEOUT, STREAMING, message_id, message_row, send, wait_for_answer

THOUGHT_WORDS = [f"t{i:03d}" for i in range(60)]
THOUGHT = " ".join(THOUGHT_WORDS[:30]) + "\n\n" + " ".join(THOUGHT_WORDS[30:])
ANSWER = "The answer, **at last**.\n\n" + " ".join(f"a{i:03d}" for i in range(40))
LIVE = "article.message.assistant.streaming"

SEEN_WORDS = """() => {
  const a = document.querySelector('article.message.assistant.streaming');
  if (!a) return null;
  const parts = [...a.querySelectorAll('.thought-body, .body')].map(e => e.innerText);
  return parts.join(' ');
}"""


def thinking_script(dialect: str, thought_delay: float = 0.04, **more) -> Script:
    return Script(text=ANSWER, delay=0.04, thought=THOUGHT, dialect=dialect, thought_delay=thought_delay, **more)


def answer_body(answer) -> str:
    return answer.locator(".body").inner_text().strip()


@pytest.mark.parametrize("dialect", THOUGHT_DIALECTS)
def test_the_thought_streams_in_a_disclosure_that_closes_when_the_answer_begins(
    shared_server, upstream, page, console_errors, dialect
):
    upstream.push(thinking_script(dialect, thought_hold=4.0))  # thinking long enough to be seen under load
    page.goto(shared_server.url("/"))
    send(page, "Think first, then answer.")

    if dialect == "template":  # no tag opened it: shown as text until </think> says it was a thought
        expect(page.locator(f"{LIVE} .body")).to_contain_text("t005", timeout=ANSWER_TIMEOUT)
    else:
        thought = page.locator(f"{LIVE} details.thought[open]")
        expect(thought.locator("summary")).to_have_text("Thinking…", timeout=ANSWER_TIMEOUT)
        expect(thought).to_contain_text("t005")
        # Before the first answer token: the thought shows, the answer is empty.
        assert "a000" not in page.locator(LIVE).inner_text()
        assert page.locator(f"{LIVE} .body").inner_text().strip() == ""

    # The answer begins: the disclosure closes to "Thought for N s", while the answer streams on.
    expect(page.locator(f"{LIVE} .body")).to_contain_text("a003", timeout=ANSWER_TIMEOUT)
    closed = page.locator(f"{LIVE} details.thought:not([open])")
    expect(closed.locator("summary")).to_have_text(re.compile(r"^Thought for \d+ s$"))
    assert "t0" not in page.locator(f"{LIVE} .body").inner_text()

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    assert answer_body(answer) == "The answer, at last.\n\n" + " ".join(f"a{i:03d}" for i in range(40))
    disclosure = answer.locator("details.thought")
    expect(disclosure).not_to_have_attribute("open", re.compile(".*"))
    expect(disclosure.locator("summary")).to_have_text(re.compile(r"^Thought for \d+ s$"))
    disclosure.locator("summary").click()  # click to open: the whole thought, no tag
    expect(disclosure.locator(".thought-body")).to_be_visible()
    shown = disclosure.locator(".thought-body").inner_text()
    assert re.findall(r"t\d{3}", shown) == THOUGHT_WORDS and "think" not in shown.lower()

    row = message_row(shared_server, message_id(answer))
    assert row.content == ANSWER and row.thoughts.strip() == THOUGHT and row.thought_ms > 0
    page.reload()  # after a reload too: closed, and opens on a click
    disclosure = page.locator(f"#message-{row.id} details.thought")
    expect(disclosure.locator("summary")).to_have_text(re.compile(r"^Thought for \d+ s$"))
    expect(disclosure.locator(".thought-body")).to_be_hidden()
    assert console_errors == []


@pytest.mark.parametrize("dialect", THOUGHT_DIALECTS)
def test_a_reload_mid_thought_resumes_the_thought_and_the_answer_each_once(
    shared_server, upstream, page, console_errors, dialect
):
    upstream.push(thinking_script(dialect, thought_delay=0.06))
    page.goto(shared_server.url("/"))
    send(page, "Think at length.")
    page.wait_for_function(f"() => (({SEEN_WORDS})() || '').includes('t008')", timeout=ANSWER_TIMEOUT)

    page.reload()
    expect(page.locator(STREAMING)).to_have_count(1)
    page.wait_for_function(
        f"() => {{ const s = ({SEEN_WORDS})(); return s === null || s.includes('t040'); }}", timeout=ANSWER_TIMEOUT
    )
    live = page.evaluate(SEEN_WORDS)
    if live is not None:  # (on a very slow machine the answer may have ended meanwhile)
        seen = re.findall(r"t\d{3}", live)
        assert len(seen) >= 40 and seen == THOUGHT_WORDS[: len(seen)], live

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    assert answer_body(answer) == "The answer, at last.\n\n" + " ".join(f"a{i:03d}" for i in range(40))
    shown = answer.locator("details.thought .thought-body").evaluate("e => e.textContent")
    assert re.findall(r"t\d{3}", shown) == THOUGHT_WORDS
    assert console_errors == []


def test_a_thought_longer_than_the_idle_deadline_does_not_fail_the_answer(make_server, upstream, page):
    server = make_server(STREAM_IDLE_S="1", FIRST_TOKEN_TIMEOUT_S="1")
    # Thought chunks 0.3 s apart for about 6 s: each under the deadline, the whole far longer.
    upstream.push(Script(text="Done thinking.", thought=" ".join(THOUGHT_WORDS[:20]), thought_delay=0.3))
    page.goto(server.url("/"))
    send(page, "Think slowly.")
    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    assert answer_body(answer) == "Done thinking."
    expect(answer.locator("details.thought summary")).to_have_text(re.compile(r"^Thought for \d+ s$"))
    expect(answer.locator(".meta")).to_contain_text(re.compile(r"first thought \d+ ms · first token \d+ ms"))


def test_a_thought_is_sanitized_like_any_model_output(shared_server, upstream, page):
    from tests.test_xss_browser import INJECTED, PAYLOADS

    injected = INJECTED.replace("#messages .body *", "#messages .thought-body *").replace(
        "'.blocks, .tail, .notice'", "'.thought-blocks, .thought-tail'"
    )
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    upstream.push(Script(text="Safe.", thought="\n\n".join(PAYLOADS[:40]), dialect="reasoning", thought_delay=0.002))
    page.goto(shared_server.url("/"))
    send(page, "Think something nasty.")
    answer = wait_for_answer(page)
    answer.locator("details.thought summary").click()
    assert page.evaluate(injected) == [] and alerts == []
    assert answer_body(answer) == "Safe."
