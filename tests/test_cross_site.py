"""Another site's page cannot cut a person off from their conversations, and model output loads nothing.

The attacker's page is served from `localhost` while the app is on `127.0.0.1`: two different sites
for the browser, so its SameSite=Lax cookie stays home on a cross-site form post, as in real life.
"""

from __future__ import annotations

import html
import http.server
import threading

import pytest
from playwright.sync_api import expect

from tests.conftest import free_port, screenshot
from tests.fake_upstream import Script
from tests.test_chat_browser import ANSWER_TIMEOUT, LAST_ANSWER, send

PASSWORD = "open sesame"


class AttackerSite:
    """A page on another site that submits a form to the app as soon as it loads."""

    def __init__(self):
        self.port = free_port()
        self.pages: dict[str, bytes] = {}
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = site.pages.get(self.path, b"not found")
                self.send_response(200 if self.path in site.pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def form(self, path: str, action: str, fields: dict[str, str]) -> str:
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
        )
        self.pages[path] = (
            f'<form id="f" method="post" action="{html.escape(action)}">{inputs}</form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        return f"http://localhost:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker():
    site = AttackerSite()
    yield site
    site.close()


def _submit_from_attacker(page, url: str, action: str):
    """Open the attacker's page; the app's answer to the form it submits."""
    with page.expect_response(lambda response: response.url.split("?")[0] == action) as answer:
        page.goto(url)
    return answer.value


def _refused_without_a_cookie(response) -> None:
    assert response.status == 403
    assert response.header_value("set-cookie") is None  # no new cookie to replace the owner


def test_a_cross_site_form_leaves_the_victims_conversations_visible(make_server, upstream, page, attacker):
    server = make_server()
    upstream.push(Script(text="Kept safe."))
    page.goto(server.url("/"))
    send(page, "my private question")
    expect(page.locator(LAST_ANSWER)).to_contain_text("Kept safe.", timeout=ANSWER_TIMEOUT)
    row = page.locator("#conversations a", has_text="my private question")
    expect(row).to_have_count(1)

    target = attacker.form("/send", server.url("/messages"), {"content": "from the attacker"})
    _refused_without_a_cookie(_submit_from_attacker(page, target, server.url("/messages")))

    page.goto(server.url("/"))
    expect(page.locator("#conversations a", has_text="my private question")).to_have_count(1)
    screenshot(page, "cross-site-form-refused")


def test_a_cross_site_login_form_does_not_log_the_victim_out(make_server, page, attacker):
    server = make_server(APP_PASSWORD=PASSWORD)
    page.goto(server.url("/login"))
    page.fill("input#password", PASSWORD)
    page.click("form.login button[type=submit]")
    expect(page.locator("textarea#content")).to_be_visible()

    target = attacker.form("/login", server.url("/login"), {"password": "wrong"})
    _refused_without_a_cookie(_submit_from_attacker(page, target, server.url("/login")))

    page.goto(server.url("/"))
    expect(page.locator("textarea#content")).to_be_visible()  # still logged in: no login page


def test_logging_in_keeps_the_conversations_of_this_browser(make_server, upstream, page):
    server = make_server(APP_PASSWORD=PASSWORD)
    page.goto(server.url("/login"))
    page.fill("input#password", PASSWORD)
    page.click("form.login button[type=submit]")
    upstream.push(Script(text="Noted."))
    send(page, "remember me")
    expect(page.locator(LAST_ANSWER)).to_contain_text("Noted.", timeout=ANSWER_TIMEOUT)
    page.goto(server.url("/login"))  # logging in again (a second tab, an expired gate…)
    page.fill("input#password", PASSWORD)
    page.click("form.login button[type=submit]")
    expect(page.locator("#conversations a", has_text="remember me")).to_have_count(1)


def test_an_image_in_model_output_is_a_link_the_browser_never_loads(make_server, upstream, page):
    server = make_server()
    leak = server.url("/static/favicon.svg?leak=my-private-question")  # allowed by any img-src 'self'
    upstream.push(Script(text=f"Here: ![a chart]({leak})\n\nand more.", delay=0.01))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url("/"))
    send(page, "my private question")
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_contain_text("and more.", timeout=ANSWER_TIMEOUT)
    link = answer.locator("a.image-link")
    expect(link).to_have_text("a chart")
    assert link.get_attribute("href") == leak
    assert answer.locator("img").count() == 0
    page.reload()
    expect(page.locator(LAST_ANSWER).locator("a.image-link")).to_have_text("a chart")
    assert not [url for url in requested if "leak=" in url], requested
    policy = page.request.get(server.url("/")).headers["content-security-policy"]
    images = next(part for part in policy.split(";") if part.strip().startswith("img-src"))
    assert images.split() == ["img-src", "'self'"], policy
