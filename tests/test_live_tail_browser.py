"""The unfinished block, formatted while it streams, as a person sees it in Chromium (#17).

The fake upstream holds the answer while a bold paragraph, a list, a table and a code block are each
still open, so what the page shows is checked before the block ends; then the answer ends, and the
bubble equals what a reload renders. On a phone and a desktop, light and dark; no CSP violation.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import screenshot
from tests.fake_upstream import Script
from tests.test_ui_browser import CSP_WATCH, SIZES, assert_no_csp_violation

TOKENS = [
    "Here is ",  # 0
    "the plan",
    ".\n\nSome ",
    "**bold",
    " words**",
    " so far",
    "\n\n- first",  # 6: the paragraph was open until here
    "\n- second **item**",
    "\n\n| Option | Cost |",  # 8: the list was open
    "\n|---|---|",
    "\n| Cache | low |",
    "\n| Index",
    " | high |",
    "\n\n```python\n",  # 13: the table was open
    "def measure(option):\n",
    "    return len(option)\n",
    "total = measure",
    "('x')",
    "\n```\n\nThat is all.",  # 18: the code block was open
]
HOLDS = (6, 8, 13, 18)
TAIL = "article.streaming .tail"

# The message as the DOM holds it, with the streamed blocks' wrapper (kept by the final swap) unwrapped.
MESSAGE_HTML = """id => {
  const copy = document.getElementById(id).cloneNode(true);
  for (const blocks of copy.querySelectorAll('.blocks')) blocks.replaceWith(...blocks.childNodes);
  for (const el of copy.querySelectorAll('[class=""]')) el.removeAttribute('class');
  return copy.outerHTML;
}"""


def normalized(html: str) -> str:
    """Whitespace between tags aside, and the classes htmx sets while content settles."""
    html = re.sub(r' class="htmx-[a-z]+"', "", html)
    return re.sub(r">\s+<", "><", html.strip())


def tail_text(page) -> str:
    return page.locator(TAIL).inner_text()


def held(upstream) -> None:
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].holding, timeout=20)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_unfinished_block_shows_formatted_while_it_streams(
    shared_server, upstream, page, console_errors, size, scheme
):
    page.set_viewport_size(SIZES[size])
    page.emulate_media(color_scheme=scheme)
    page.add_init_script(CSP_WATCH)
    upstream.push(Script(tokens=TOKENS, delay=0.005, holds=HOLDS))
    page.goto(shared_server.url("/"))
    page.locator("#content").fill("Plan it out.")
    page.locator("#content").press("Enter")

    held(upstream)  # a paragraph with bold text, still open
    expect(page.locator(f"{TAIL} strong")).to_have_text("bold words")
    expect(page.locator(TAIL)).to_contain_text("so far")  # the held block's last token, maybe a flush later
    assert "**" not in tail_text(page)
    upstream.release()

    held(upstream)  # a list, still open
    expect(page.locator(f"{TAIL} li")).to_have_count(2)
    expect(page.locator(f"{TAIL} li strong")).to_have_text("item")
    assert "**" not in tail_text(page) and "- " not in tail_text(page)
    upstream.release()

    held(upstream)  # a table, still open
    expect(page.locator(f"{TAIL} table tbody tr")).to_have_count(2)
    expect(page.locator(f"{TAIL} table td").last).to_have_text("high")
    assert "|---" not in tail_text(page) and "|" not in tail_text(page)
    upstream.release()

    held(upstream)  # a code block, still open: its lines highlighted, the open one as it is
    code = page.locator(f"{TAIL} .code pre code")
    expect(code).to_contain_text("def measure(option):")
    expect(code).to_contain_text("total = measure('x')")
    expect(code.locator(".hl-k").first).to_have_text("def")
    expect(page.locator(f"{TAIL} .code .code-lang")).to_have_text("python")
    assert "```" not in tail_text(page)
    screenshot(page, f"live-tail-code-{size}-{scheme}")
    upstream.release()

    answer = page.locator("#messages article.message.assistant").last
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    expect(answer).to_have_class("message assistant done")  # settled: htmx copies classes over for a moment
    expect(answer.locator("table")).to_have_count(1)
    expect(answer).to_contain_text("That is all.")
    answer_id = answer.get_attribute("id")
    live = page.evaluate(MESSAGE_HTML, answer_id)
    assert_no_csp_violation(page, console_errors)
    page.reload()
    expect(page.locator(f"#{answer_id}")).to_have_attribute("data-status", "done")
    assert normalized(page.evaluate(MESSAGE_HTML, answer_id)) == normalized(live)
    assert_no_csp_violation(page, console_errors)


def test_a_reload_mid_block_shows_the_same_formatted_tail_and_streams_on(shared_server, upstream, page, console_errors):
    """A listener attaching mid-answer (the reload's) computes the tail the stream had made."""
    page.add_init_script(CSP_WATCH)
    upstream.push(Script(tokens=TOKENS, delay=0.005, holds=HOLDS))
    page.goto(shared_server.url("/"))
    page.locator("#content").fill("Plan it out.")
    page.locator("#content").press("Enter")
    held(upstream)
    upstream.release()
    held(upstream)
    upstream.release()
    held(upstream)  # the table is open
    expect(page.locator(f"{TAIL} table tbody tr")).to_have_count(2)
    expect(page.locator(f"{TAIL} table td").last).to_have_text("high")  # all that was sent before the hold
    streamed = normalized(page.locator(TAIL).inner_html())
    page.reload()
    expect(page.locator(f"{TAIL} table tbody tr")).to_have_count(2)
    assert normalized(page.locator(TAIL).inner_html()) == streamed
    upstream.release()
    held(upstream)
    expect(page.locator(f"{TAIL} .code pre code")).to_contain_text("total = measure('x')")
    upstream.release()
    expect(page.locator("#messages article.message.assistant").last).to_have_attribute("data-status", "done")
    assert_no_csp_violation(page, console_errors)
