"""The conversation's totals in the header follow every answer sent with htmx, without a reload, as
a person sees them in Chromium: the same figures a reload shows, a stopped answer's too."""

from __future__ import annotations

import html
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import browser_session, screenshot
from tests.fake_upstream import Script
from tests.test_faults import words
from tests.test_ui_browser import assert_no_csp_violation, last_answer, open_chat, send


def reloaded_totals(page) -> str:
    """What a reload of this page shows as its totals (fetched beside the page, which stays as it is)."""
    text = browser_session(page).get(page.url, timeout=10).text
    found = re.search(r'<span class="usage" id="conversation-usage">(.*?)</span>', text, re.S)
    assert found, "the page has no totals"
    return html.unescape(found.group(1))


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_totals_change_after_each_answer_to_what_a_reload_shows(shared_server, upstream, page, console_errors, scheme):
    open_chat(page, shared_server, "desktop", scheme)
    totals = page.locator(".chat-head #conversation-usage")
    expect(totals).to_have_text("")
    expect(totals).to_be_hidden()  # nothing counted yet: no empty gap in the header
    page.evaluate("window.__same_page = true")

    # A new chat, then a second question. The fake upstream counts a token a word: 3 in, "Echo: one
    # two three" 4 out; then the history goes upstream again.
    for question, shown in (("one two three", "3 in · 4 out"), ("four five", "12 in · 7 out")):
        send(page, question)
        expect(last_answer(page)).to_have_attribute("data-status", "done")
        expect(totals).to_have_text(shown)
        assert reloaded_totals(page) == shown
    expect(totals).to_be_visible()

    upstream.push(Script(text=words(400), delay=0.05))
    send(page, "go on and on")
    expect(last_answer(page).locator(".tail")).to_contain_text("word3")
    last_answer(page).get_by_role("button", name="Stop").click()
    expect(last_answer(page)).to_have_attribute("data-status", "stopped")
    expect(totals).not_to_have_text("12 in · 7 out")
    stopped = totals.inner_text()
    assert re.fullmatch(r"\d+ in · \d+ out", stopped), stopped
    assert stopped == reloaded_totals(page)
    assert page.evaluate("window.__same_page")  # all of it without a reload
    screenshot(page, f"totals-desktop-{scheme}")

    page.reload()
    expect(totals).to_have_text(stopped)
    assert_no_csp_violation(page, console_errors)
