"""Make it yours: the two examples change what the browser shows, while streaming too."""

from playwright.sync_api import expect

from tests.conftest import ROOT, screenshot

ACME = ROOT / "examples" / "acme-support"
MIDNIGHT = ROOT / "examples" / "midnight"


def test_acme_support_example_brands_the_page_and_every_answer_live(make_server, page):
    server = make_server(
        provider="demo",
        DEMO_DELAY_MS="40",
        APP_NAME="Acme Support",
        WELCOME_MESSAGE="Hi! Ask me about your order.",
        SUGGESTED_PROMPTS="Where is my order?|How do I return an item?",
        TEMPLATES_DIR=str(ACME / "templates"),
        STATIC_DIR=str(ACME / "static"),
    )
    page.goto(server.url("/"))
    expect(page.locator(".brand")).to_contain_text("Acme Support")
    expect(page.locator(".brand img.logo")).to_have_attribute("src", "/static/acme-logo.svg")
    expect(page.locator(".welcome h2")).to_have_text("Hi! Ask me about your order.")
    expect(page.locator(".acme-footer")).to_be_visible()
    accent = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()")
    assert accent == "#d9480f"

    page.get_by_role("button", name="Where is my order?").click()
    streaming = page.locator("article.assistant.streaming")
    expect(streaming.locator(".acme-avatar")).to_be_visible()  # the override, live
    expect(streaming.locator(".tail, .blocks").first).not_to_be_empty()
    screenshot(page, "example-acme-streaming")
    done = page.locator("article.assistant.done")
    expect(done).to_be_visible(timeout=30000)
    expect(done.locator(".acme-avatar")).to_be_visible()  # and in the final fragment
    expect(done).to_contain_text("Where is my order?")
    screenshot(page, "example-acme-done")


def test_midnight_theme_is_one_css_file(make_server, page):
    server = make_server(provider="demo", DEMO_DELAY_MS="1", STATIC_DIR=str(MIDNIGHT / "static"))
    page.goto(server.url("/"))
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(11, 16, 33)"  # --bg from theme.css
    page.locator("#content").fill("Hello, midnight")
    page.locator("#content").press("Enter")
    expect(page.locator("article.assistant.done")).to_be_visible(timeout=30000)
    screenshot(page, "example-midnight")
