"""The controls people expect around an answer, as a person uses them in Chromium."""

import re

from playwright.sync_api import expect

from tests.conftest import screenshot
from tests.fake_upstream import Script


def send(page, text: str) -> None:
    page.locator("#content").fill(text)
    page.locator("#content").press("Enter")


def last_answer(page):
    return page.locator("article.message.assistant").last


def test_regenerate_keeps_the_previous_answer_as_an_alternative(shared_server, upstream, page):
    upstream.push(Script(text="First answer."), Script(text="Second answer."))
    page.goto(shared_server.url("/"))
    send(page, "Tell me something")
    expect(last_answer(page)).to_have_attribute("data-status", "done")
    expect(last_answer(page)).to_contain_text("First answer.")
    last_answer(page).get_by_role("button", name="Regenerate").click()
    expect(last_answer(page)).to_contain_text("Second answer.")
    expect(last_answer(page).locator(".position")).to_have_text("2/2")
    last_answer(page).get_by_role("button", name="Previous answer").click()
    expect(last_answer(page)).to_contain_text("First answer.")
    expect(last_answer(page).locator(".position")).to_have_text("1/2")
    page.reload()  # the choice is stored: the page shows the chosen one
    expect(last_answer(page)).to_contain_text("First answer.")
    expect(page.locator("article.message.assistant")).to_have_count(1)
    upstream.push(Script(text="Third."))
    send(page, "And next?")  # the history sent upstream holds the chosen alternative only
    expect(last_answer(page)).to_contain_text("Third.")
    contents = [m["content"] for m in upstream.requests[-1]["body"]["messages"]]
    assert contents == ["Tell me something", "First answer.", "And next?"]


def test_edit_and_resend_replaces_later_turns(shared_server, upstream, page):
    upstream.push(Script(text="Answer one."), Script(text="Answer two."), Script(text="Answer edited."))
    page.goto(shared_server.url("/"))
    send(page, "Question one")
    expect(last_answer(page)).to_contain_text("Answer one.")
    send(page, "Question two")
    expect(last_answer(page)).to_contain_text("Answer two.")
    first_question = page.locator("article.message.user").first
    first_question.locator("summary").click()
    first_question.locator("textarea").fill("Question one, edited")
    first_question.get_by_role("button", name="Send edited").click()
    expect(last_answer(page)).to_contain_text("Answer edited.")
    expect(page.locator("article.message")).to_have_count(2)
    expect(page.locator("#messages")).not_to_contain_text("Question two")
    assert [m["content"] for m in upstream.requests[-1]["body"]["messages"]] == ["Question one, edited"]
    page.reload()
    expect(page.locator("article.message")).to_have_count(2)


def test_rename_search_and_export(shared_server, upstream, page):
    upstream.push(Script(text="A table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"))
    page.goto(shared_server.url("/"))
    send(page, "Zebra facts please")
    expect(last_answer(page)).to_have_attribute("data-status", "done")
    expect(page.locator("#chat-title")).to_have_text("Zebra facts please")
    page.locator("details.tools summary").click()
    page.locator("#title").fill("Striped horses")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator("#chat-title")).to_have_text("Striped horses")
    expect(page.locator("#conversations")).to_contain_text("Striped horses")

    page.locator("#search").fill("Zebra")  # message text matches too
    expect(page.locator("#conversations li.conversation-row")).to_have_count(1)
    page.locator("#search").fill("no-such-words-anywhere")
    expect(page.locator("#conversations")).to_contain_text("No conversations found.")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Markdown").click()
    download = download_info.value
    assert download.suggested_filename == "Striped-horses.md"
    text = open(download.path(), encoding="utf-8").read()
    assert "# Striped horses" in text and "Zebra facts please" in text and "| a | b |" in text
    with page.expect_download() as download_info:
        page.get_by_role("link", name="JSON").click()
    assert download_info.value.suggested_filename == "Striped-horses.json"


def test_model_picker_and_system_prompt_apply_to_the_next_answer(shared_server, upstream, page):
    page.goto(shared_server.url("/"))
    send(page, "Hello")
    expect(last_answer(page)).to_have_attribute("data-status", "done")
    page.locator("details.tools summary").click()
    page.locator("#model").select_option("fake-model-2")
    page.locator("#system-prompt").fill("Answer like a pirate.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".saved")).to_contain_text("fake-model-2")
    send(page, "Again")
    expect(page.locator("article.message.assistant")).to_have_count(2)
    expect(last_answer(page)).to_have_attribute("data-status", "done")
    body = upstream.requests[-1]["body"]
    assert body["model"] == "fake-model-2"
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    expect(last_answer(page).locator(".meta")).to_contain_text("fake-model-2")


def test_footnote_shows_model_tokens_first_token_time_and_speed(shared_server, upstream, page):
    upstream.push(Script(text="word " * 30, delay=0.01))
    page.goto(shared_server.url("/"))
    send(page, "Count")
    meta = last_answer(page).locator(".meta")
    expect(meta).to_contain_text("fake-model")
    expect(meta).to_have_text(re.compile(r"\d+ in → 30 out · first token \d+ ms · [\d.]+ tokens/s"))


def test_layouts_light_dark_and_narrow(shared_server, upstream, browser):
    upstream.push(
        Script(text="Some **bold** text.\n\n```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    )
    for name, options in [
        ("chat-light", {"color_scheme": "light", "viewport": {"width": 1200, "height": 800}}),
        ("chat-dark", {"color_scheme": "dark", "viewport": {"width": 1200, "height": 800}}),
        ("chat-360px", {"color_scheme": "light", "viewport": {"width": 360, "height": 740}}),
    ]:
        context = browser.new_context(**options)
        page = context.new_page()
        page.goto(shared_server.url("/"))
        if name == "chat-light":
            send(page, "Show me everything")
            expect(last_answer(page)).to_have_attribute("data-status", "done")
            url = page.url
        else:
            page.goto(url)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert (background == "rgb(21, 23, 26)") == (name == "chat-dark")
        screenshot(page, name)
        context.close()


def test_escape_stops_the_answer(shared_server, upstream, page):
    upstream.push(Script(text="slow " * 400, delay=0.02))
    page.goto(shared_server.url("/"))
    send(page, "Go on and on")
    expect(last_answer(page).locator(".tail")).not_to_be_empty()
    page.keyboard.press("Escape")
    expect(last_answer(page)).to_have_attribute("data-status", "stopped")
    assert upstream.wait_for(lambda: upstream.streams[-1].ended.is_set())
    assert upstream.streams[-1].client_closed_early


def test_copy_answer_puts_its_text_on_the_clipboard(shared_server, upstream, browser):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    upstream.push(Script(text="Copy **this** answer."))
    page.goto(shared_server.url("/"))
    send(page, "Something to copy")
    expect(last_answer(page)).to_have_attribute("data-status", "done")
    last_answer(page).get_by_role("button", name="Copy answer").click()
    expect(last_answer(page).get_by_role("button", name="Copy answer")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "Copy this answer."
    context.close()


def test_view_follows_the_answer_until_the_reader_scrolls_up(shared_server, upstream, page):
    upstream.push(Script(text="".join(f"Line {i}.\n\n" for i in range(150)), delay=0.03))
    page.set_viewport_size({"width": 1000, "height": 600})
    page.goto(shared_server.url("/"))
    send(page, "Long please")
    at_bottom = (
        "() => { const m = document.getElementById('messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight < 80 && m.scrollHeight > m.clientHeight * 2 }"
    )
    page.wait_for_function(at_bottom)  # followed while it grew past two screens
    # A token lands before the browser has dispatched the reader's scroll event: it must not pull them back.
    page.locator("#messages").evaluate(
        "m => { m.scrollTo(0, 0); document.dispatchEvent(new CustomEvent('htmx:sseMessage')); }"
    )
    jump = page.locator("#jump-latest")
    expect(jump).to_be_visible()
    height = page.locator("#messages").evaluate("m => m.scrollHeight")
    page.wait_for_function(f"() => document.getElementById('messages').scrollHeight > {height} + 200")
    assert page.locator("#messages").evaluate("m => m.scrollTop") < 50  # it did not pull the reader down
    jump.click()
    page.wait_for_function(at_bottom)
    expect(jump).to_be_hidden()


def test_controls_are_labelled_and_reachable_by_keyboard(shared_server, upstream, page, console_errors):
    page.goto(shared_server.url("/"))
    send(page, "Hello")
    expect(last_answer(page)).to_have_attribute("data-status", "done")
    assert page.locator("#messages").get_attribute("aria-live") == "polite"
    unnamed = page.evaluate("""[...document.querySelectorAll('button, a, textarea, input:not([type=hidden]), select')]
        .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim() || (e.labels && e.labels.length)))
        .map(e => e.outerHTML)""")
    assert unnamed == []
    page.locator("#content").focus()
    page.keyboard.press("Shift+Tab")  # focus moves backwards through real controls, visibly
    outline = page.evaluate("getComputedStyle(document.activeElement, ':focus-visible').outlineStyle")
    assert page.evaluate("document.activeElement.tagName") in ("BUTTON", "A", "INPUT", "SUMMARY", "SELECT")
    assert outline != "none"
    assert not console_errors
