"""Untrusted text never runs: 70+ XSS vectors typed by the user and streamed by the model,
split across token boundaries, in Chromium with the app's real Content-Security-Policy."""

import random
from pathlib import Path

from playwright.sync_api import expect

from tests.conftest import screenshot
from tests.fake_upstream import Script

PAYLOADS = (Path(__file__).parent / "data" / "xss_payloads.txt").read_text().strip().splitlines()

FORBIDDEN = (
    "script, iframe, frame, frameset, object, embed, base, meta, link, style, svg, math, form, input, "
    "video, audio, source, marquee, details, template, noscript, isindex, bgsound, x, body"
)

INJECTED = f"""() => {{
    const found = [];
    for (const el of document.querySelectorAll('#messages .body *')) {{
        if (el.matches('.blocks, .tail, .notice')) continue;  // the stream's own containers
        const tag = el.tagName.toLowerCase();
        if (el.matches('{FORBIDDEN}')) found.push('element ' + tag);
        for (const attr of el.attributes) {{
            const name = attr.name.toLowerCase();
            if (name.startsWith('on')) found.push(tag + '[' + name + ']');
            if (name === 'style') found.push(tag + '[style]');
            if (name.startsWith('hx-') || name.startsWith('sse-')) found.push(tag + '[' + name + ']');
            if (['href', 'src', 'action', 'formaction', 'data', 'background'].includes(name) &&
                /^\\s*(javascript|vbscript|data):/i.test(attr.value))
                found.push(tag + '[' + name + '=' + attr.value + ']');
        }}
    }}
    return found;
}}"""


def split_randomly(text: str, seed: int) -> list[str]:
    """Cut the text into 1–4 character tokens, so that every tag is split somewhere."""
    rng, tokens, position = random.Random(seed), [], 0
    while position < len(text):
        step = rng.randint(1, 4)
        tokens.append(text[position : position + step])
        position += step
    return tokens


def guard(page) -> list[str]:
    """Fail on any dialog: an alert, confirm or prompt means a payload ran."""
    dialogs: list[str] = []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def test_xss_payloads_typed_and_streamed_never_run(shared_server, upstream, page, console_errors):
    dialogs = guard(page)
    block_text = "\n\n".join(PAYLOADS)  # each payload its own markdown block: rendered as HTML blocks
    inline_text = " ".join(PAYLOADS)  # one long paragraph: streamed as escaped tail text
    upstream.push(
        Script(tokens=split_randomly(block_text, 1), delay=0.002),
        Script(tokens=split_randomly(inline_text, 2), delay=0.002),
    )
    page.goto(shared_server.url("/"))

    for typed in (block_text, inline_text):
        page.locator("#content").fill(typed)  # the user's own message carries the payloads too
        page.locator("#content").press("Enter")
        answer = page.locator("article.message.assistant").last
        page.wait_for_function(
            "() => { const a = [...document.querySelectorAll('article.assistant')].pop();"
            " return a && a.classList.contains('streaming') && a.textContent.length > 300 }"
        )
        assert page.evaluate(INJECTED) == []  # mid-stream: blocks and tail
        expect(answer).to_have_attribute("data-status", "done", timeout=30000)
        assert page.evaluate(INJECTED) == []
        assert page.locator("article.message.user .body").last.inner_text().strip() == typed.strip()

    page.reload()  # the stored messages, rendered by the server
    expect(page.locator("article.message.assistant")).to_have_count(2)
    assert page.evaluate(INJECTED) == []
    for payload in ("<script>alert('xss1')</script>", "<img src=x onerror=alert('xss3')>"):
        expect(page.locator("article.message.assistant").first).to_contain_text(payload)
    page.wait_for_timeout(500)  # let any deferred handler (onload, ontoggle, meta refresh) fire
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.url.startswith(shared_server.url("/c/"))  # no meta refresh or base hijack moved the page
    assert not console_errors, console_errors  # includes Content-Security-Policy violations
    screenshot(page, "xss-payloads-shown-as-text")


def test_payloads_in_an_unfinished_block_never_run(shared_server, upstream, page, console_errors):
    """The formatted tail is model output like any block: checked while each block is still open."""
    dialogs = guard(page)
    payloads = " ".join(PAYLOADS[:30])
    sections = [
        split_randomly("A paragraph: **" + payloads, 3),
        split_randomly("\n\n- item " + payloads, 4),
        split_randomly("\n\n| a | b |\n|---|---|\n| " + payloads.replace("|", "\\|") + " | x", 5),
        split_randomly("\n\n```html\n" + "\n".join(PAYLOADS[:30]) + "\n<img src=x onerror=alert(1)>", 6),
        ["\n```\n"],
    ]
    tokens, starts = [], []  # each section begins once the one before was checked, still open
    for section in sections:
        starts.append(len(tokens))
        tokens += section
    starts = starts[1:]
    upstream.push(Script(tokens=tokens, delay=0.001, holds=tuple(starts)))
    page.goto(shared_server.url("/"))
    page.locator("#content").fill("Say the nasty things slowly.")
    page.locator("#content").press("Enter")
    tail = page.locator("article.streaming .tail")
    for shown in ("p", "li", "td", ".code"):
        assert upstream.wait_for(lambda: upstream.streams and upstream.streams[-1].holding, timeout=20)
        expect(tail.locator(shown).first).to_contain_text("alert")
        assert page.evaluate(INJECTED) == []
        upstream.release()
    expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done", timeout=30000)
    assert page.evaluate(INJECTED) == []
    page.wait_for_timeout(300)  # let any deferred handler fire
    assert page.evaluate("window.__xss") is None and dialogs == []
    assert not console_errors, console_errors
