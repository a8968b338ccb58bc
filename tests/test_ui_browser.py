"""The chat as a person sees it in Chromium, on a phone (360×740) and a desktop (1280×800), light and
dark: the drawer, the Options panel, message actions, dialogs, shortcuts, installability."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import screenshot
from tests.fake_upstream import Script

PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
REPLY = "Here is **some** code:\n\n```python\nprint('hi')\n```\n\nAnd a closing line."
CSP_WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.sample));"""


def send(page, text: str) -> None:
    page.locator("#content").fill(text)
    page.locator("#content").press("Enter")


def last_answer(page):
    return page.locator("article.message.assistant").last


def answered(page, upstream, question: str = "Show me code", reply: str = REPLY) -> None:
    upstream.push(Script(text=reply))
    send(page, question)
    expect(last_answer(page)).to_have_attribute("data-status", "done")


def box(page, selector: str) -> dict:
    return page.locator(selector).bounding_box()


def opacity(locator) -> float:
    return float(locator.evaluate("e => getComputedStyle(e).opacity"))


def shows(locator, value: str) -> None:
    """The element's opacity becomes `value` (a hover or focus takes effect at the next style pass)."""
    expect(locator).to_have_css("opacity", value, timeout=5000)


def open_chat(page, server, size: str, scheme: str = "light") -> None:
    page.set_viewport_size(SIZES[size])
    page.emulate_media(color_scheme=scheme)
    page.add_init_script(CSP_WATCH)
    page.goto(server.url("/"))


def assert_no_csp_violation(page, console_errors) -> None:
    assert page.evaluate("window.__csp") == []
    assert not console_errors, console_errors


# -- the phone layout, the Options panel and the help dialog, in every size and theme --------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_layout_drawer_options_and_help(shared_server, upstream, page, console_errors, size, scheme):
    open_chat(page, shared_server, size, scheme)
    answered(page, upstream)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(21, 23, 26)") == (scheme == "dark")
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    head = box(page, ".chat-head")
    assert head["height"] < 60, "the header is one line"
    menu = page.locator("button.menu-button")
    sidebar = page.locator("#sidebar")
    if size == "phone":
        assert box(page, "#messages")["height"] > 0.7 * PHONE["height"], "the messages get most of the screen"
        expect(sidebar).to_be_hidden()
        expect(menu).to_have_attribute("aria-expanded", "false")
        expect(menu).to_have_attribute("aria-controls", "sidebar")
        screenshot(page, f"ui-phone-{scheme}-drawer-closed")
        menu.click()
        expect(menu).to_have_attribute("aria-expanded", "true")
        expect(sidebar).to_be_visible()
        expect(page.locator("#conversations .conversation-row")).not_to_have_count(0)
        assert page.evaluate("document.getElementById('sidebar').contains(document.activeElement)")
        assert page.evaluate("document.getElementById('chat').inert")
        page.wait_for_timeout(250)  # the slide-in
        screenshot(page, f"ui-phone-{scheme}-drawer-open")
        page.keyboard.press("Escape")
        expect(sidebar).to_be_hidden()
        expect(menu).to_have_attribute("aria-expanded", "false")
        expect(menu).to_be_focused()
        assert not page.evaluate("document.getElementById('chat').inert")
        menu.click()
        page.mouse.click(345, 400)  # the backdrop beside the drawer
        expect(sidebar).to_be_hidden()
        expect(menu).to_be_focused()
        menu.click()
        page.locator("#conversations .conversation-row a").first.click()  # choosing one closes it
        expect(sidebar).to_be_hidden()
        expect(page.locator("article.message.assistant")).to_have_count(1)
    else:
        expect(menu).to_be_hidden()
        expect(sidebar).to_be_visible()
        screenshot(page, f"ui-desktop-{scheme}")

    # Options: a panel over the chat that does not move it, nor show "Jump to latest".
    before = box(page, "#messages")
    page.locator("details.tools summary").click()
    panel = page.locator(".tools-panel")
    expect(panel).to_be_visible()
    assert box(page, "#messages") == before
    expect(page.locator("#jump-latest")).to_be_hidden()
    shape = box(page, ".tools-panel")
    assert shape["x"] >= 0 and shape["x"] + shape["width"] <= SIZES[size]["width"]
    screenshot(page, f"ui-{size}-{scheme}-options")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # The code block's Copy button wears the theme, not the browser's default button.
    copy = last_answer(page).locator(".code .copy")
    expect(copy).to_be_visible()
    colors = copy.evaluate(
        "e => [getComputedStyle(e).backgroundColor, getComputedStyle(document.body).backgroundColor]"
    )
    assert colors[0] == colors[1]

    page.locator("#chat-title").click()  # not in a text field
    page.keyboard.press("?")
    help_dialog = page.locator("#shortcuts")
    expect(help_dialog).to_be_visible()
    expect(help_dialog).to_contain_text("New chat")
    screenshot(page, f"ui-{size}-{scheme}-help")
    page.keyboard.press("Escape")
    expect(help_dialog).to_be_hidden()
    assert_no_csp_violation(page, console_errors)


def test_composer_stays_above_the_on_screen_keyboard(shared_server, upstream, page, console_errors):
    open_chat(page, shared_server, "phone")
    answered(page, upstream)
    viewport = page.evaluate("document.querySelector('meta[name=viewport]').content")
    assert "interactive-widget=resizes-content" in viewport
    page.set_viewport_size({"width": 360, "height": 420})  # what the keyboard leaves of the screen
    composer = box(page, "#composer")
    assert composer["y"] + composer["height"] <= 420
    assert box(page, "#messages")["height"] > 150
    assert_no_csp_violation(page, console_errors)


def test_drawer_and_page_work_without_javascript(shared_server, upstream, browser):
    upstream.push(Script(text=REPLY))
    context = browser.new_context(java_script_enabled=False, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(shared_server.url("/"))
        page.locator("#content").fill("No scripts here")
        page.locator("#composer button.send").click()
        expect(last_answer(page)).to_have_attribute("data-status", "done")
        expect(page.locator("button.menu-button")).to_be_hidden()
        expect(last_answer(page).locator(".copy-answer")).to_be_hidden()  # they need JavaScript
        expect(last_answer(page).locator(".code .copy")).to_be_hidden()
        expect(page.locator("#sidebar")).to_be_hidden()
        page.locator("a.menu-button").click()
        expect(page.locator("#sidebar")).to_be_visible()
        row = page.locator("#conversations .conversation-row a").first
        expect(row).to_be_visible()
        page.locator("#sidebar .drawer-close").click()
        expect(page.locator("#sidebar")).to_be_hidden()
        page.locator("a.menu-button").click()
        row.click()  # choosing a conversation
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(page.locator("article.message.user")).to_contain_text("No scripts here")
        page.locator("a.menu-button").click()
        page.locator("#conversations .conversation-row button.delete").first.click()  # posts, unconfirmed
        expect(page).to_have_url(shared_server.url("/"))
        expect(page.locator("#conversations")).not_to_contain_text("No scripts here")
    finally:
        context.close()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_options_panel_stays_put_whatever_the_title(shared_server, upstream, page, console_errors, size):
    open_chat(page, shared_server, size)
    answered(page, upstream, question="Hi")
    for _ in range(3):  # a conversation longer than the screen, read at its bottom
        answered(page, upstream, question="More", reply="".join(f"Line {i}.\n\n" for i in range(12)))
    page.locator("details.tools summary").click()
    short = box(page, ".tools-panel")
    page.locator("#title").fill("A much, much longer title that goes on and on for quite a while")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator("#chat-title")).to_contain_text("A much, much longer title")
    if not page.locator(".tools-panel").is_visible():
        page.locator("details.tools summary").click()
    assert box(page, ".tools-panel") == short
    expect(page.locator("#jump-latest")).to_be_hidden()
    assert page.locator("#messages").evaluate("m => m.scrollHeight - m.scrollTop - m.clientHeight") < 80
    if size == "desktop":  # labels in one column, fields in the next, in both forms
        labels = [box(page, f"label[for={name}]")["x"] for name in ("title", "model", "system-prompt")]
        fields = [box(page, f"#{name}")["x"] for name in ("title", "model", "system-prompt")]
        assert len(set(labels)) == 1 and len(set(fields)) == 1
        assert fields[0] > labels[0]
    assert_no_csp_violation(page, console_errors)


# -- message actions -----------------------------------------------------------------------------


def test_message_actions_show_on_hover_and_focus(shared_server, upstream, page, console_errors):
    open_chat(page, shared_server, "desktop")
    page.emulate_media(reduced_motion="reduce")  # no fade: the opacity is final at once
    answered(page, upstream, question="One")
    answered(page, upstream, question="Two")
    first = page.locator("article.message.assistant").first
    regenerate = first.locator("button.regenerate")
    page.mouse.move(5, 5)
    shows(regenerate, "0")
    first.hover()
    shows(regenerate, "1")
    page.mouse.move(5, 5)
    first.locator(".copy-answer").focus()
    shows(regenerate, "1")  # keyboard users see them too
    page.locator("#content").focus()
    shows(last_answer(page).locator("button.regenerate"), "1")  # the last answer: always
    shows(page.locator("article.message.user").first.locator(".edit summary"), "0")
    assert_no_csp_violation(page, console_errors)


def test_message_actions_stay_visible_on_touch_screens(shared_server, upstream, browser):
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(shared_server.url("/"))
        answered(page, upstream, question="One")
        answered(page, upstream, question="Two")
        assert page.evaluate("matchMedia('(hover: none)').matches")
        first = page.locator("article.message.assistant").first
        assert opacity(first.locator("button.regenerate")) == 1
        assert opacity(page.locator("article.message.user").first.locator(".edit summary")) == 1
    finally:
        context.close()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_edit_can_be_cancelled(shared_server, upstream, page, console_errors, size):
    open_chat(page, shared_server, size)
    answered(page, upstream, question="Original question")
    question = page.locator("article.message.user").first
    question.locator(".edit summary").click()
    box_ = question.locator("textarea")
    expect(box_).to_be_focused()
    expect(question.locator(".body")).to_be_hidden()  # the editor takes the bubble's place
    box_.fill("Changed my mind")
    question.get_by_role("button", name="Cancel").click()
    expect(box_).to_be_hidden()
    expect(question.locator(".edit summary")).to_be_focused()  # back where the edit began
    expect(question.locator(".body")).to_have_text("Original question")
    assert box_.input_value() == "Original question"
    question.locator(".edit summary").click()
    box_.press("Escape")  # Esc cancels too
    expect(box_).to_be_hidden()
    assert len(upstream.requests) == 1
    assert_no_csp_violation(page, console_errors)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_delete_asks_in_a_styled_dialog(shared_server, upstream, page, console_errors, scheme):
    native: list[str] = []
    page.on("dialog", lambda dialog: (native.append(dialog.message), dialog.dismiss()))
    open_chat(page, shared_server, "desktop", scheme)
    answered(page, upstream, question="Delete me later")
    row = page.locator("#conversations .conversation-row").first
    row.locator("button.delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete this conversation?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice first
    screenshot(page, f"ui-delete-dialog-{scheme}")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(row).to_be_visible()
    row.locator("button.delete").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#conversations .conversation-row")).to_have_count(0)
    expect(page).to_have_url(shared_server.url("/"))
    assert native == []
    assert_no_csp_violation(page, console_errors)


def test_alternatives_control_keeps_its_width(shared_server, upstream, page, console_errors):
    open_chat(page, shared_server, "desktop")
    answered(page, upstream, question="Pick one", reply="First.")
    upstream.push(Script(text="Second."))
    last_answer(page).get_by_role("button", name="Regenerate").click()
    alternatives = last_answer(page).locator(".alternatives")
    expect(alternatives.locator(".position")).to_have_text("2/2")
    at_end = alternatives.bounding_box()["width"]
    last_answer(page).get_by_role("button", name="Previous answer").click()
    expect(last_answer(page).locator(".alternatives .position")).to_have_text("1/2")
    assert last_answer(page).locator(".alternatives").bounding_box()["width"] == at_end
    expect(last_answer(page).get_by_role("button", name="Previous answer")).to_be_disabled()
    assert_no_csp_violation(page, console_errors)


# -- keyboard shortcuts ----------------------------------------------------------------------------


def test_keyboard_shortcuts(shared_server, upstream, browser):
    context = browser.new_context(viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.goto(shared_server.url("/"))
        answered(page, upstream, question="Question to edit", reply="Answer to **copy**.")
        page.locator("#content").press("?")  # typing a question mark is typing
        expect(page.locator("#shortcuts")).to_be_hidden()
        expect(page.locator("#content")).to_have_value("?")
        page.keyboard.press("Control+K")
        expect(page.locator("#search")).to_be_focused()
        page.keyboard.press("Shift+Escape")
        expect(page.locator("#content")).to_be_focused()
        page.keyboard.press("Control+Shift+C")
        expect(last_answer(page).get_by_role("button", name="Copy answer")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == "Answer to copy."
        page.keyboard.press("Control+Shift+E")
        editor = page.locator("article.message.user").last.locator("textarea")
        expect(editor).to_be_focused()
        expect(editor).to_have_value("Question to edit")
        page.keyboard.press("Escape")
        expect(editor).to_be_hidden()
        page.keyboard.press("Control+Shift+O")
        expect(page).to_have_url(shared_server.url("/"))
        expect(page.locator("#welcome")).to_be_visible()
    finally:
        context.close()


def test_search_shortcut_opens_the_drawer_on_a_phone(shared_server, upstream, page, console_errors):
    open_chat(page, shared_server, "phone")
    answered(page, upstream)
    page.locator("#chat-title").click()
    page.keyboard.press("Control+K")
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#search")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).to_be_hidden()
    assert_no_csp_violation(page, console_errors)


# -- installable -----------------------------------------------------------------------------------


def test_manifest_icons_and_theme_colours(shared_server, page, console_errors):
    open_chat(page, shared_server, "desktop")
    link = page.locator("link[rel=manifest]")
    href = link.get_attribute("href")
    assert href == "/manifest.webmanifest"
    themes = page.locator("meta[name=theme-color]")
    assert [themes.nth(i).get_attribute("media") for i in range(2)] == [
        "(prefers-color-scheme: light)",
        "(prefers-color-scheme: dark)",
    ]
    manifest = requests.get(shared_server.url(href), timeout=10)
    assert manifest.headers["Content-Type"].startswith("application/manifest+json")
    data = manifest.json()
    assert data["name"] == "Trickle" and data["short_name"] == "Trickle"
    assert data["display"] == "standalone" and data["start_url"] == "/"
    assert data["theme_color"] and data["background_color"]
    for icon in data["icons"]:
        fetched = requests.get(shared_server.url(icon["src"]), timeout=10)
        assert fetched.status_code == 200 and fetched.headers["Content-Type"].startswith(icon["type"])
    assert {icon["sizes"] for icon in data["icons"]} >= {"192x192", "512x512"}
    page.wait_for_timeout(300)  # the browser reads the manifest: no CSP or parse error
    assert_no_csp_violation(page, console_errors)


def test_manifest_uses_the_site_name_and_logo(make_server):
    server = make_server(provider="demo", APP_NAME="Acme Support Desk", APP_LOGO="/static/acme-logo.svg")
    data = requests.get(server.url("/manifest.webmanifest"), timeout=10).json()
    assert data["name"] == "Acme Support Desk" and data["short_name"] == "Acme"
    assert data["icons"] == [{"src": "/static/acme-logo.svg", "sizes": "any", "type": "image/svg+xml"}]


# -- the CSP -----------------------------------------------------------------------------------------


def test_first_send_in_a_new_chat_applies_no_inline_style(shared_server, upstream, page, console_errors):
    """htmx's settle step copied an old element's style attribute onto its replacement with
    setAttribute, which `style-src 'self'` refuses. Elements the first send replaces carry a style
    (as a resized field or a browser extension leaves one): nothing may be refused."""
    open_chat(page, shared_server, "desktop")
    page.evaluate("document.querySelectorAll('[id]').forEach(e => e.style.outlineOffset = '1px')")
    answered(page, upstream, question="First message")
    expect(page.locator("#chat-title")).to_have_text("First message")
    assert_no_csp_violation(page, console_errors)
