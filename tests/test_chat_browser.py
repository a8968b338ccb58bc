"""The chat page in a real browser: what a person sees while an answer streams, stops, and ends.

Chromium (Playwright) drives the app under gunicorn against the fake upstream.
Every wait is bounded (Playwright's `expect` or `wait_for_function` with a
timeout); nothing asserts on elapsed time.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from playwright.sync_api import expect

from tests.conftest import browser_session, screenshot
from tests.fake_upstream import Script
from tests.sse import events_until_done
from trickle import storage

ANSWER_TIMEOUT = 30_000  # ms: a whole answer on a busy two-core machine
STREAMING = "article.message.assistant.streaming"
LAST_ANSWER = "#messages article.message.assistant >> nth=-1"

MARKDOWN_REPLY = """\
Here is a short overview of the **three** options, written in several paragraphs so that
the answer takes a little while to arrive.

The first paragraph explains the context. It is long enough to be seen while the rest is
still being written, one word at a time, the way a real model sends its tokens.

1. Start with the smallest change
2. Measure before and after
3. Keep whatever made a difference

| Option | Cost | Speed |
|---|---|---|
| Cache | low | fast |
| Index | medium | faster |
| Rewrite | high | fastest |

```python
def measure(option: str) -> float:
    return len(option) * 1.5
```

That is all: pick the cheapest option that is fast enough, and stop there."""


# -- helpers -----------------------------------------------------------------


def send(page, text: str) -> None:
    """Type a message in the composer and press Enter, as a person would; wait for its bubble."""
    users = page.locator("#messages article.message.user")
    before = users.count()
    box = page.locator("textarea#content")
    box.click()
    box.fill(text)
    box.press("Enter")
    expect(users).to_have_count(before + 1)
    expect_shown_as_typed(users.last, text)


def expect_shown_as_typed(bubble, text: str) -> None:
    """The question's bubble shows exactly the text: its own line breaks kept, no blank lines around it."""
    expect(bubble.locator(".body")).to_have_js_property("innerText", text)
    assert bubble.evaluate("(el, text) => el.innerText.startsWith(text)", text), bubble.inner_text()


def wait_for_answer(page, timeout: int = ANSWER_TIMEOUT):
    """The last assistant bubble once it has ended (no longer streaming)."""
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-status", re.compile(r".+"), timeout=timeout)
    expect(page.locator(STREAMING)).to_have_count(0, timeout=timeout)
    return answer


LIVE_TEXT_LENGTH = """() => {
  const body = document.querySelector('article.message.assistant.streaming .body');
  return body ? body.innerText.trim().length : -1;
}"""


def wait_for_streamed_text_beyond(page, length: int, timeout: int = ANSWER_TIMEOUT) -> int:
    """Wait until the bubble still being written shows more than `length` characters; return how many."""
    page.wait_for_function(f"n => ({LIVE_TEXT_LENGTH})() > n", arg=length, timeout=timeout)
    return page.evaluate(LIVE_TEXT_LENGTH)


def message_id(answer) -> int:
    return int(answer.get_attribute("id").removeprefix("message-"))


def query(server, statement):
    """Run one SELECT on the server's database; all rows."""
    engine = server.engine()
    try:
        with engine.connect() as db:
            return db.execute(statement).all()
    finally:
        engine.dispose()


def message_row(server, mid: int):
    return query(server, sa.select(storage.messages).where(storage.messages.c.id == mid))[0]


def conversation_id(page) -> int:
    match = re.search(r"/c/(\d+)$", page.url)
    assert match, f"the address should be /c/<id> after the first message, got {page.url}"
    return int(match.group(1))


def read_events(server, page, mid: int, headers: dict | None = None) -> list[tuple[str, str]]:
    """GET the message's event stream, as the page's owner, and read (event, data) pairs up to `done`."""
    url = server.url(f"/messages/{mid}/events")
    with browser_session(page).get(url, headers=headers or {}, stream=True, timeout=(5, 10)) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return events_until_done(response)


# -- streaming -----------------------------------------------------------------


def test_answer_streams_token_by_token_then_renders(shared_server, upstream, page, console_errors):
    """The answer appears word by word while it is written, then becomes a rendered list, table and code."""
    upstream.push(Script(text=MARKDOWN_REPLY, delay=0.02))
    page.goto(shared_server.url("/"))
    send(page, "Which option should I pick?")

    streaming = page.locator(STREAMING)
    expect(streaming).to_have_count(1)
    first = wait_for_streamed_text_beyond(page, 0)
    later = wait_for_streamed_text_beyond(page, first)
    record = upstream.streams[-1]
    assert not record.finished, "part of the answer should show before the upstream has sent all of it"
    assert later > first, "the bubble should grow while the answer is written"
    screenshot(page, "chat-streaming")

    answer = wait_for_answer(page)
    expect(answer).to_have_class(re.compile(r"\bdone\b"))
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator("ol li")).to_have_count(3)
    expect(answer.locator("table tbody tr")).to_have_count(3)
    expect(answer.locator("table th").first).to_have_text("Option")
    expect(answer.locator("pre code")).to_contain_text("def measure(option: str) -> float:")
    expect(answer.locator("strong")).to_have_text("three")
    expect(answer).to_contain_text("pick the cheapest option that is fast enough, and stop there.")
    expect(answer.locator(".tail, .notice")).to_have_count(0)
    expect(page.locator(".streaming")).to_have_count(0)
    assert record.finished
    assert message_row(shared_server, message_id(answer)).content == MARKDOWN_REPLY
    screenshot(page, "chat-done")
    assert not console_errors


def test_the_end_of_an_answer_keeps_the_blocks_already_shown(shared_server, upstream, page, console_errors):
    """`done` keeps the finished blocks on the page (the same nodes: nothing re-parsed or re-laid out)
    and renders only the tail; the result is exactly what a reload shows."""
    upstream.push(Script(text=MARKDOWN_REPLY * 3, delay=0.01))
    page.goto(shared_server.url("/"))
    send(page, "Three times, please.")
    expect(page.locator(f"{STREAMING} .blocks table")).not_to_have_count(0, timeout=ANSWER_TIMEOUT)
    page.evaluate("() => { document.querySelector('.streaming .blocks').dataset.mark = 'seen'; }")
    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".blocks[data-mark=seen]")).to_have_count(1)  # the very node that streamed
    expect(answer.locator("table")).to_have_count(3)
    live = answer.locator(".body").inner_text()
    answer_id = message_id(answer)
    page.reload()
    assert page.locator(f"#message-{answer_id} .body").inner_text() == live
    assert not console_errors


def test_stop_keeps_partial_answer_after_reload(shared_server, upstream, page, console_errors):
    """Stop ends the answer where it is; the partial text stays, also after a reload."""
    words = [f"w{i:03d} " for i in range(400)]
    reply = "".join(words).rstrip()
    upstream.push(Script(text=reply, delay=0.03))
    page.goto(shared_server.url("/"))
    send(page, "Count slowly, please.")

    wait_for_streamed_text_beyond(page, 30)
    page.locator(f"{STREAMING} button.stop").click()

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(answer).to_have_class(re.compile(r"\bstopped\b"))
    expect(answer.locator(".outcome")).to_have_text("Stopped.")
    expect(answer.locator("button.retry")).to_be_visible()
    shown = answer.locator(".body").inner_text().strip()
    assert shown.startswith("w000 w001"), shown[:40]
    assert 0 < len(shown) < len(reply)

    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].ended.is_set(), timeout=10)
    record = upstream.streams[-1]
    assert record.client_closed_early, "Stop should close the request to the model"
    assert not record.finished

    mid = message_id(answer)
    row = message_row(shared_server, mid)
    assert row.status == "stopped"
    assert row.content.strip() == shown
    assert reply.startswith(row.content)
    assert record.text_sent.startswith(row.content)

    page.reload()
    again = page.locator(f"#message-{mid}")
    expect(again).to_have_attribute("data-status", "stopped")
    expect(again.locator(".outcome")).to_have_text("Stopped.")
    assert again.locator(".body").inner_text().strip() == shown
    expect(page.locator(STREAMING)).to_have_count(0)
    assert not console_errors


def test_no_duplicate_answer_after_stream_ends(shared_server, upstream, page, console_errors):
    """Once an answer is complete it stays single: no second bubble, no second request to the model."""
    reply = "One answer, exactly once. It ends here."
    upstream.push(Script(text=reply, delay=0.01))
    event_requests: list[str] = []
    page.on("request", lambda r: event_requests.append(r.url) if "/events" in r.url else None)
    page.goto(shared_server.url("/"))
    send(page, "Say it once.")
    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")

    # An EventSource whose server ended the response reconnects after ~1-3 s unless it was closed.
    page.wait_for_timeout(2500)

    expect(page.locator("#messages article.message.assistant")).to_have_count(1)
    expect(page.locator("#messages article.message.user")).to_have_count(1)
    assert page.locator("#messages").inner_text().count(reply) == 1
    assert len(upstream.requests) == 1
    assert len(event_requests) == 1, f"the ended stream should not be opened again: {event_requests}"

    mid = message_id(answer)
    row = message_row(shared_server, mid)
    assert (row.status, row.content) == ("done", reply)
    # What a reconnecting browser gets: `done` at once, nothing replayed.
    events = read_events(shared_server, page, mid, headers={"Last-Event-ID": str(len(reply))})
    assert [name for name, _ in events] == ["done"]
    assert 'data-status="done"' in events[0][1] and reply in events[0][1]
    assert len(upstream.requests) == 1, "re-attaching must never start a new generation"
    assert not console_errors


def test_reload_mid_answer_resumes_without_repeating(shared_server, upstream, page, console_errors):
    """Reloading while an answer is written shows what is there so far, then the rest, each part once."""
    paragraphs = [f"Paragraph {i:02d} " + " ".join(f"word{i:02d}x{j}" for j in range(9)) for i in range(30)]
    reply = "\n\n".join(paragraphs)
    upstream.push(Script(text=reply, delay=0.03))
    page.goto(shared_server.url("/"))
    send(page, "Write thirty paragraphs.")
    expect(page.locator(f"{STREAMING} .blocks p")).not_to_have_count(0, timeout=ANSWER_TIMEOUT)

    page.reload()
    expect(page.locator(STREAMING)).to_have_count(1)  # the server shows the answer still being written
    expect(page.locator(f"{STREAMING} .blocks p").first).to_contain_text("Paragraph 00")
    # Where the server-rendered part meets the resumed stream, nothing is repeated or skipped
    # (checked live: the final `done` re-renders the whole bubble and would hide it).
    page.wait_for_function(
        "() => { const a = document.querySelector('article.message.assistant.streaming');"
        " return !a || a.innerText.includes('Paragraph 12'); }",
        timeout=ANSWER_TIMEOUT,
    )
    live = page.evaluate(
        "() => { const a = document.querySelector('article.message.assistant.streaming .body');"
        " return a ? a.innerText : null; }"
    )
    if live is not None:  # (on a very slow machine the answer may have ended meanwhile)
        seen = re.findall(r"word\d\dx\d", live)
        expected = re.findall(r"word\d\dx\d", reply)
        assert len(seen) >= 12 * 9 and seen == expected[: len(seen)], live

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".body p")).to_have_count(30)
    text = answer.locator(".body").inner_text()
    for paragraph in paragraphs:
        assert text.count(paragraph) == 1, paragraph
    assert len(upstream.requests) == 1
    assert message_row(shared_server, message_id(answer)).content == reply
    assert not console_errors


def test_demo_model_works_with_zero_configuration(make_server, page, console_errors):
    """With no provider configured, the demo model answers offline and says how to connect a real one."""
    server = make_server(provider="demo", DEMO_DELAY_MS="5")
    page.goto(server.url("/"))
    expect(page.locator("#provider")).to_contain_text("demo model — set OPENAI_API_KEY or OLLAMA_HOST")

    question = "How do tables and code look here?"
    send(page, question)
    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator("em").first).to_have_text(question)
    expect(answer.locator("table tbody tr")).to_have_count(3)
    expect(answer.locator("table")).to_contain_text("OPENAI_API_KEY")
    expect(answer.locator("ol li")).to_have_count(3)
    expect(answer.locator("pre code")).to_contain_text("def greet(name: str) -> str:")
    expect(answer.locator(".code-lang")).to_have_text("python")
    expect(answer.locator(".meta")).to_contain_text("demo")
    # The first conversation of a fresh install is listed, and the empty-list note is gone.
    expect(page.locator("#conversations .conversation-row")).to_have_count(1)
    expect(page.locator("#conversations .conversation-row a")).to_have_text(question)
    expect(page.get_by_text("No conversations found")).to_be_hidden()
    assert not console_errors


def test_user_text_and_model_output_never_run_script(shared_server, upstream, page, console_errors):
    """Markup typed by the person or written by the model is shown as text, never run."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tokens = [
        "Watch this: <scr",
        "ipt>alert(3)</scr",
        "ipt> and <img sr",
        "c=x onerr",
        "or=alert(4)> and ",
        "[a link](java",
        'script:alert(5)) and <a href="javascript:',
        'alert(6)">another</a>.\n\n',
        "<script>alert(7)</script>\n\n",
        '<img src="x" onerror="alert(8)">\n\n',
        "<svg onload=alert(9)>",
        " last line <b>bold?</b>",
    ]
    upstream.push(Script(tokens=tokens, delay=0.02))
    typed = "<img src=x onerror=alert(1)> <script>alert(2)</script>"
    page.goto(shared_server.url("/"))
    send(page, typed)

    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer).to_contain_text("Watch this: <script>alert(3)</script> and <img src=x onerror=alert(4)>")
    expect(answer).to_contain_text("<script>alert(7)</script>")
    expect(answer).to_contain_text("last line <b>bold?</b>")

    def assert_inert():
        messages = page.locator("#messages")
        expect(messages.locator("script")).to_have_count(0)
        expect(messages.locator("img")).to_have_count(0)
        expect(messages.locator("svg, b, [onerror], [onload]")).to_have_count(0)
        expect(messages.locator('a[href^="javascript"]')).to_have_count(0)

    assert_inert()
    page.reload()  # the same messages, rendered by the server instead of the stream
    expect_shown_as_typed(page.locator("#messages article.message.user").last, typed)
    expect(page.locator(LAST_ANSWER)).to_contain_text("<script>alert(7)</script>")
    assert_inert()
    assert dialogs == []
    assert not console_errors


# -- the composer and the conversation --------------------------------------------


def test_shift_enter_adds_a_newline_and_enter_sends(shared_server, upstream, page, console_errors):
    """Shift+Enter starts a new line in the message; Enter sends it and empties the box."""
    page.goto(shared_server.url("/"))
    box = page.locator("textarea#content")
    box.click()
    box.type("first line")
    box.press("Shift+Enter")
    box.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    expect(page.locator("#messages article.message")).to_have_count(0)
    assert upstream.requests == []

    box.press("Enter")
    user = page.locator("#messages article.message.user")
    expect(user).to_have_count(1)
    expect_shown_as_typed(user, "first line\nsecond line")
    expect(box).to_have_value("")
    expect(box).to_be_focused()
    answer = wait_for_answer(page)
    expect(answer).to_have_attribute("data-status", "done")
    assert upstream.requests[-1]["body"]["messages"][-1] == {"role": "user", "content": "first line\nsecond line"}

    box.press("Enter")  # an empty box sends nothing
    expect(box).to_have_value("")
    expect(user).to_have_count(1)
    assert len(upstream.requests) == 1
    assert not console_errors


def test_second_message_continues_the_conversation(shared_server, upstream, page, console_errors):
    """A second message goes to the same conversation, and the model sees the first exchange."""
    page.goto(shared_server.url("/"))
    send(page, "What is the capital of France?")
    expect(wait_for_answer(page)).to_have_attribute("data-status", "done")
    expect(page).to_have_url(re.compile(r"/c/\d+$"))
    cid = conversation_id(page)
    expect(page.locator(f"#conversation-{cid} a")).to_have_attribute("aria-current", "page")

    send(page, "And of Italy?")
    expect(page.locator("#messages article.message.user")).to_have_count(2)
    expect(page.locator("#messages article.message.assistant")).to_have_count(2)
    expect(wait_for_answer(page).locator(".body")).to_have_text("Echo: And of Italy?")
    assert conversation_id(page) == cid
    expect(page.locator(f"#conversation-{cid}")).to_have_count(1)

    assert len(upstream.requests) == 2
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Echo: What is the capital of France?"},
        {"role": "user", "content": "And of Italy?"},
    ]
    page.reload()
    expect(page.locator("#messages article.message")).to_have_count(4)
    assert not console_errors


def test_delete_conversation_removes_it_from_sidebar(shared_server, upstream, page, console_errors):
    """Deleting a conversation (after confirming) removes it from the sidebar and from the server."""
    page.goto(shared_server.url("/"))
    send(page, "Please forget this one.")
    wait_for_answer(page)
    cid = conversation_id(page)
    row = page.locator(f"#conversation-{cid}")
    expect(row).to_have_count(1)

    native: list[str] = []  # the browser's own confirm() is not used: the page's <dialog> asks
    page.on("dialog", lambda dialog: (native.append(dialog.message), dialog.accept()))
    row.locator("button.delete").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm.locator("#confirm-text")).to_have_text("Delete this conversation?")
    expect(row).to_have_count(1)  # nothing is deleted before the answer
    confirm.get_by_role("button", name="Delete").click()

    expect(row).to_have_count(0)
    expect(page).to_have_url(shared_server.url("/"))  # it was the open conversation: back to a new chat
    expect(page.locator(f"#conversation-{cid}")).to_have_count(0)
    assert native == []
    assert browser_session(page).get(shared_server.url(f"/c/{cid}"), timeout=10).status_code == 404
    assert query(shared_server, sa.select(storage.messages.c.id).where(storage.messages.c.conversation_id == cid)) == []
    assert query(shared_server, sa.select(storage.conversations.c.id).where(storage.conversations.c.id == cid)) == []
    assert not console_errors


# -- without JavaScript ----------------------------------------------------------------


def test_without_javascript_the_form_posts_and_returns_the_full_answer(shared_server, upstream, browser):
    """With JavaScript off, Send posts the form and the next page shows the whole rendered answer."""
    upstream.push(Script(text=MARKDOWN_REPLY, delay=0.005))
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(ANSWER_TIMEOUT)
        page.goto(shared_server.url("/"))
        page.locator("textarea#content").fill("Which option, without scripts?")
        page.locator("#composer button.send").click()

        expect(page).to_have_url(re.compile(r"/c/\d+#message-\d+$"))
        expect_shown_as_typed(page.locator("#messages article.message.user"), "Which option, without scripts?")
        answer = page.locator(LAST_ANSWER)
        expect(answer).to_have_attribute("data-status", "done")
        expect(page.locator(".streaming")).to_have_count(0)
        expect(answer.locator("ol li")).to_have_count(3)
        expect(answer.locator("table tbody tr")).to_have_count(3)
        expect(answer.locator("pre code")).to_contain_text("def measure(option: str) -> float:")
        expect(answer).to_contain_text("pick the cheapest option that is fast enough, and stop there.")
        assert upstream.streams[-1].finished
        screenshot(page, "chat-no-javascript")
    finally:
        context.close()
