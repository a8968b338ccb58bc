"""Pinning conversations as a person does it in Chromium: on a desktop and in the phone's drawer,
by mouse and keyboard, with and without JavaScript."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import screenshot
from tests.fake_upstream import Script
from tests.test_ui_browser import PHONE, answered, assert_no_csp_violation, open_chat


def rows(page):
    return page.locator("#conversations .conversation-row")


def titles(page) -> list[str]:
    return [title.strip() for title in rows(page).locator("a").all_inner_texts()]


def show_list(page, size: str) -> None:
    """The sidebar, opened on a phone (it is a drawer there)."""
    if size == "phone":
        page.locator("button.menu-button").click()
    expect(page.locator("#sidebar")).to_be_visible()


def start_chat(page, server, upstream, title: str) -> None:
    page.goto(server.url("/"))
    answered(page, upstream, question=title, reply=f"About {title}.")
    expect(page.locator("#chat-title")).to_have_text(title)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_pinned_conversation_moves_to_the_top_and_stays_there(
    shared_server, upstream, page, console_errors, size, scheme
):
    open_chat(page, shared_server, size, scheme)
    for title in ("Apples", "Bananas", "Cherries"):
        start_chat(page, shared_server, upstream, title)
    show_list(page, size)
    assert titles(page)[:3] == ["Cherries", "Bananas", "Apples"]

    apples = page.locator("#conversations .conversation-row", has_text="Apples")
    apples.locator("a").focus()
    page.keyboard.press("Tab")  # the row's link, then its Pin button
    pin = page.get_by_role("button", name="Pin conversation Apples", exact=True)
    expect(pin).to_be_focused()
    page.keyboard.press("Enter")
    unpin = page.get_by_role("button", name="Unpin conversation Apples", exact=True)
    expect(unpin).to_be_visible()
    assert titles(page)[:3] == ["Apples", "Cherries", "Bananas"]
    expect(rows(page).first).to_have_class(re.compile(r"\bpinned\b"))
    expect(unpin).to_be_focused()  # focus follows the button to the row's new place
    expect(page.locator("#sidebar")).to_be_visible()  # the drawer stays open on a phone
    expect(rows(page).first.locator("a")).not_to_have_attribute("aria-current", "page")
    expect(page.locator("#conversations a[aria-current=page]")).to_have_text("Cherries")  # the page's, still
    marker = unpin.locator("svg").evaluate("e => getComputedStyle(e).fill")
    others = page.get_by_role("button", name="Pin conversation Bananas", exact=True).locator("svg")
    assert marker != "none" and others.evaluate("e => getComputedStyle(e).fill") == "none"  # visibly pinned
    shape = rows(page).first.bounding_box()
    sidebar = page.locator("#sidebar").bounding_box()
    assert shape["x"] + shape["width"] <= sidebar["x"] + sidebar["width"]  # the buttons fit in the row
    screenshot(page, f"pins-{size}-{scheme}")

    page.reload()
    show_list(page, size)
    assert titles(page)[:3] == ["Apples", "Cherries", "Bananas"]
    expect(page.get_by_role("button", name="Unpin conversation Apples", exact=True)).to_be_visible()

    start_chat(page, shared_server, upstream, "Dates")  # a new chat goes in below the pinned one, at once
    show_list(page, size)
    assert titles(page)[:4] == ["Apples", "Dates", "Cherries", "Bananas"]
    page.reload()
    show_list(page, size)
    assert titles(page)[:4] == ["Apples", "Dates", "Cherries", "Bananas"]

    page.get_by_role("button", name="Unpin conversation Apples", exact=True).click()
    expect(page.get_by_role("button", name="Pin conversation Apples", exact=True)).to_be_visible()
    assert titles(page)[:4] == ["Dates", "Cherries", "Bananas", "Apples"]  # back among the rest, by activity
    expect(page.locator("#conversations .conversation-row.pinned")).to_have_count(0)
    page.reload()
    show_list(page, size)
    assert titles(page)[:4] == ["Dates", "Cherries", "Bananas", "Apples"]
    assert_no_csp_violation(page, console_errors)


def test_pin_works_without_javascript_in_the_phone_drawer(shared_server, upstream, browser):
    context = browser.new_context(java_script_enabled=False, viewport=PHONE)
    try:
        page = context.new_page()
        for title in ("First plain", "Second plain"):
            upstream.push(Script(text="Plain."))
            page.goto(shared_server.url("/"))
            page.locator("#content").fill(title)
            page.locator("#composer button.send").click()  # the answer comes with the next page
            expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done")
        page.locator("a.menu-button").click()
        expect(page.locator("#sidebar")).to_be_visible()
        assert titles(page)[:2] == ["Second plain", "First plain"]
        page.get_by_role("button", name="Pin conversation First plain", exact=True).click()  # a plain form post
        expect(page).to_have_url(re.compile(r"/c/\d+#sidebar$"))
        expect(page.locator("#sidebar")).to_be_visible()  # back on the same page, the list open
        expect(page.locator("#chat-title")).to_have_text("Second plain")
        assert titles(page)[:2] == ["First plain", "Second plain"]
        page.get_by_role("button", name="Unpin conversation First plain", exact=True).click()
        expect(page.get_by_role("button", name="Pin conversation First plain", exact=True)).to_be_visible()
        assert titles(page)[:2] == ["Second plain", "First plain"]
    finally:
        context.close()
