"""Attachments in the page (Chromium against the app): attached by the button, by paste and by drop,
shown and removable in the composer, shown as thumbnails in the conversation (also after a reload),
resent on regenerate, private to their owner, and posted by the form without JavaScript too."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image
from playwright.sync_api import expect

from tests.fake_upstream import Script
from tests.test_attachments import last_user_content, png
from tests.test_chat_browser import send, wait_for_answer, wait_for_streamed_text_beyond

CHIPS = "#composer-files .composer-file"
USERS = "#messages article.message.user"


def sent_image(upstream) -> Image.Image:
    part = next(p for p in last_user_content(upstream) if p["type"] == "image_url")
    url = part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def thumbnail_loaded(bubble) -> None:
    image = bubble.locator("img.thumbnail")
    expect(image).to_have_count(1)
    image.scroll_into_view_if_needed()
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") > 0, "the thumbnail's image loaded"


def test_attach_by_button_remove_one_send_reload_regenerate_and_stay_private(
    shared_server, upstream, page, browser, console_errors
):
    page.goto(shared_server.url("/"))
    page.set_input_files(
        "#files",
        files=[
            {"name": "wide.png", "mimeType": "image/png", "buffer": png(3200, 800)},
            {"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Notes\nremember the milk"},
            {"name": "oops.txt", "mimeType": "text/plain", "buffer": b"not this one"},
        ],
    )
    chips = page.locator(CHIPS)
    expect(chips).to_have_count(3)
    expect(chips.first.locator("canvas.preview")).to_be_visible()  # a thumbnail before sending
    page.get_by_role("button", name="Remove oops.txt").click()
    expect(chips).to_have_count(2)
    assert page.evaluate("document.getElementById('files').files.length") == 2

    upstream.push(Script(text="A wide red picture and your notes."))
    send(page, "What are these?")
    wait_for_answer(page)
    expect(chips).to_have_count(0)  # the composer is empty again
    bubble = page.locator(USERS).last
    thumbnail_loaded(bubble)
    expect(bubble.locator(".files .chip")).to_have_text(re.compile(r"notes\.md"))
    assert sent_image(upstream).size == (1568, 392), "the upstream got the resized image"
    texts = [p["text"] for p in last_user_content(upstream) if p["type"] == "text"]
    assert texts == ["What are these?", '<file name="notes.md">\n# Notes\nremember the milk\n</file>']
    assert "oops" not in str(upstream.requests[-1]["body"])

    page.reload()
    bubble = page.locator(USERS).last
    thumbnail_loaded(bubble)
    link = bubble.locator(".files a").first
    expect(link).to_have_attribute("target", "_blank")
    full = page.request.get(shared_server.url(link.get_attribute("href")))
    assert full.status == 200 and full.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(full.body())).size == (1568, 392), "the thumbnail opens the full-size image"

    before = len(upstream.requests)
    upstream.push(Script(text="Again: a wide picture."))
    page.locator("#messages article.message.assistant").last.get_by_role("button", name="Regenerate").click()
    expect(page.locator(".alternatives .position")).to_have_text("2/2", timeout=15000)
    wait_for_answer(page)
    assert len(upstream.requests) == before + 1
    assert sent_image(upstream).size == (1568, 392), "regenerate resends the image"

    stranger = browser.new_context()
    try:
        response = stranger.new_page().goto(shared_server.url(link.get_attribute("href")))
        assert response.status == 404
    finally:
        stranger.close()
    assert not console_errors


def test_attach_by_paste_and_by_drop(shared_server, upstream, page, console_errors):
    page.goto(shared_server.url("/"))
    dot = base64.b64encode(png(40, 30, (0, 160, 0))).decode()
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
            const paste = new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
            document.getElementById("content").dispatchEvent(paste);
        }""",
        dot,
    )
    expect(page.locator(CHIPS)).to_have_count(1)
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped words"], "dropped.txt", { type: "text/plain" }));
            const target = document.getElementById("messages") || document.body;
            target.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
            target.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }"""
    )
    expect(page.locator(CHIPS)).to_have_count(2)
    expect(page.locator(CHIPS).nth(1)).to_contain_text("dropped.txt")

    upstream.push(Script(text="Green, and your words."))
    send(page, "Pasted and dropped")
    wait_for_answer(page)
    thumbnail_loaded(page.locator(USERS).last)
    assert sent_image(upstream).size == (40, 30)
    assert {"type": "text", "text": '<file name="dropped.txt">\ndropped words\n</file>'} in last_user_content(upstream)
    assert not console_errors


def test_a_file_queued_behind_a_streaming_answer_goes_out_with_its_message(
    shared_server, upstream, page, console_errors
):
    page.goto(shared_server.url("/"))
    upstream.push(Script(text="word " * 250, delay=0.03), Script(text="Got the queued file."))
    send(page, "First, a long answer")
    wait_for_streamed_text_beyond(page, 0)
    page.set_input_files("#files", files=[{"name": "later.txt", "mimeType": "text/plain", "buffer": b"queued text"}])
    send(page, "Then this, with a file")
    assert not console_errors
    expect(page.locator("#messages article.message.queued")).to_have_count(1)
    expect(page.locator(CHIPS)).to_have_count(0)  # the composer is free for the next message
    expect(page.locator("#messages article.message.assistant")).to_have_count(2, timeout=30000)
    wait_for_answer(page, timeout=30000)
    assert {"type": "text", "text": '<file name="later.txt">\nqueued text\n</file>'} in last_user_content(upstream)
    expect(page.locator(USERS).last.locator(".files .chip")).to_contain_text("later.txt")


def test_the_form_uploads_without_javascript(shared_server, upstream, browser):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(shared_server.url("/"))
        page.set_input_files("#files", files=[{"name": "plain.png", "mimeType": "image/png", "buffer": png(900, 1800)}])
        page.fill("#content", "No script here")
        upstream.push(Script(text="Tall picture, no JavaScript."))
        page.get_by_role("button", name="Send").click()
        page.wait_for_url(re.compile(r"/c/\d+"))
        expect(page.locator("#messages article.message.assistant .body")).to_contain_text("Tall picture")
        image = page.locator(f"{USERS} img.thumbnail")
        expect(image).to_have_count(1)
        assert image.evaluate("img => img.naturalHeight") == 1568
        assert sent_image(upstream).size == (784, 1568)
    finally:
        context.close()


def test_files_alone_are_a_message(shared_server, upstream, page, console_errors):
    page.goto(shared_server.url("/"))
    page.set_input_files("#files", files=[{"name": "only.png", "mimeType": "image/png", "buffer": png(30, 30)}])
    upstream.push(Script(text="Just a picture."))
    page.locator("textarea#content").press("Enter")
    expect(page.locator(USERS)).to_have_count(1)
    wait_for_answer(page)
    thumbnail_loaded(page.locator(USERS).last)
    assert [part["type"] for part in last_user_content(upstream)] == ["image_url"]
    expect(page.locator("textarea#content")).to_have_js_property("required", True)  # text again, once sent
    assert not console_errors
