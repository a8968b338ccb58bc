"""Share links, as people use them in Chromium: a read-only snapshot for whoever has the link (no
cookie needed), later messages only after sharing again, revoke → 404 at once on every instance,
SHARING=off, SHARED_LINKS_PUBLIC with APP_PASSWORD, and model output that never runs there."""

from __future__ import annotations

import re

import requests
from playwright.sync_api import expect

from tests.conftest import client, screenshot
from tests.fake_upstream import Script
from tests.test_xss_browser import INJECTED, PAYLOADS, guard, split_randomly

HTMX = {"HX-Request": "true"}


def send(page, text: str) -> None:
    page.locator("#content").fill(text)
    page.locator("#content").press("Enter")
    expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done", timeout=30000)


def share(page) -> str:
    """Click Share in the conversation's Options; the newest link's address."""
    tools = page.locator("details.tools")
    if tools.get_attribute("open") is None:
        tools.locator("summary").click()
    count = page.locator("#share .shared-link").count()
    page.get_by_role("button", name="Share a read-only link").click()
    expect(page.locator("#share .shared-link")).to_have_count(count + 1)
    return page.locator("#share .shared-link a").first.get_attribute("href")


def test_a_shared_link_shows_a_read_only_snapshot_to_a_fresh_browser_until_revoked(
    shared_server, upstream, page, browser, console_errors
):
    upstream.push(Script(text="Not for sharing."), Script(text="Shared **answer**."), Script(text="Said later."))
    page.goto(shared_server.url("/"))
    send(page, "Another conversation of mine")
    page.get_by_role("link", name="+ New chat").click()
    send(page, "Shared question")
    first_link = share(page)
    assert re.fullmatch(rf"{re.escape(shared_server.url('/s/'))}[A-Za-z0-9_-]{{20,}}", first_link)
    conversation_id = re.search(r"/c/(\d+)", page.url).group(1)
    token = first_link.rsplit("/", 1)[1]
    assert token != conversation_id and not token.isdigit()  # not the conversation's id, nor any id

    stranger = browser.new_context()  # no cookie: not the owner, not logged in
    visitor = stranger.new_page()
    response = visitor.goto(first_link)
    assert response.status == 200 and "noindex" in response.headers["x-robots-tag"]
    expect(visitor.locator('meta[name="robots"]')).to_have_attribute("content", "noindex, nofollow")
    expect(visitor.locator("#chat-title")).to_have_text("Shared question")
    expect(visitor.locator("article.message.user .body")).to_have_text(["Shared question"])
    expect(visitor.locator("article.message.assistant strong")).to_have_text("answer")  # the same rendering
    expect(visitor.locator("#composer, #content, .new-chat, #conversations, #history-tools")).to_have_count(0)
    expect(visitor.get_by_role("button", name="Regenerate")).to_have_count(0)
    expect(visitor.locator("details.edit, details.tools")).to_have_count(0)
    assert "Another conversation of mine" not in visitor.content()
    assert stranger.cookies() == []  # looking at a shared page makes no owner
    screenshot(visitor, "shared-snapshot")

    send(page, "A later question")
    visitor.reload()
    expect(visitor.locator("article.message")).to_have_count(2)
    assert "A later question" not in visitor.content()  # the snapshot is as it was when shared
    second_link = share(page)
    assert second_link != first_link
    screenshot(page, "share-links-in-options")
    visitor.goto(second_link)
    expect(visitor.locator("article.message")).to_have_count(4)
    expect(visitor.locator("#messages")).to_contain_text("Said later.")

    page.locator("#share .shared-link", has=page.locator(f'a[href="{first_link}"]')).get_by_role(
        "button", name="Revoke"
    ).click()
    expect(page.locator("#share .shared-link")).to_have_count(1)
    response = visitor.goto(first_link)
    assert response.status == 404
    expect(visitor.locator("body")).to_contain_text("revoked")
    assert visitor.goto(second_link).status == 200
    page.reload()  # the owner's list survives a reload
    page.locator("details.tools summary").click()
    expect(page.locator("#share .shared-link a")).to_have_attribute("href", second_link)
    page.locator("#history-tools summary").click()  # and the sidebar lists every link of the owner
    in_sidebar = page.locator("#history-tools .shared-link")
    expect(in_sidebar).to_have_count(1)
    expect(in_sidebar).to_contain_text("Shared question")
    in_sidebar.get_by_role("button", name="Revoke").click()  # a plain form: back to the conversation
    page.wait_for_url(re.compile(r"/c/\d+#share$"))
    assert visitor.goto(second_link).status == 404
    expect(page.locator("#history-tools .shared-link")).to_have_count(0)
    stranger.close()
    assert not console_errors, console_errors


def _shared_link(server) -> tuple[requests.Session, str, str]:
    """A conversation and a link to it, made over HTTP; (owner's session, link path, token)."""
    owner = client(server)
    owner.post(server.url("/messages"), data={"content": "Across instances"}, timeout=30)  # no-JS: waits
    conversation = re.search(r'href="/c/(\d+)"', owner.get(server.url("/"), timeout=10).text).group(1)
    widget = owner.post(server.url(f"/c/{conversation}/share"), headers=HTMX, timeout=10)
    assert widget.status_code == 200, widget.text
    path = re.search(r'href="https?://[^/"]+(/s/[^"]+)"', widget.text).group(1)
    return owner, path, path.rsplit("/", 1)[1]


def test_a_link_revoked_on_one_instance_is_a_404_on_every_other_at_once(make_server, tmp_path):
    database = f"sqlite:///{tmp_path}/shared.db"
    first, second = make_server(DATABASE_URL=database), make_server(DATABASE_URL=database)
    owner, path, token = _shared_link(first)
    assert requests.get(second.url(path), timeout=10).status_code == 200
    assert owner.post(first.url(f"/s/{token}/revoke"), headers=HTMX, timeout=10).status_code == 200
    gone = requests.get(second.url(path), timeout=10)  # no cache anywhere: the database says so
    assert gone.status_code == 404 and "revoked" in gone.text
    stranger = client(first)
    assert stranger.post(first.url(f"/s/{token}/revoke"), headers=HTMX, timeout=10).status_code == 404


def test_with_sharing_off_there_is_no_share_button_and_every_link_is_a_404(make_server, tmp_path, page):
    database = f"sqlite:///{tmp_path}/shared.db"
    _, path, _ = _shared_link(make_server(DATABASE_URL=database))
    off = make_server(DATABASE_URL=database, SHARING="off")
    assert page.goto(off.url(path)).status == 404
    expect(page.locator("body")).to_contain_text("Sharing is turned off")
    page.goto(off.url("/"))
    send(page, "Nothing to share")
    page.locator("details.tools summary").click()
    expect(page.locator("details.tools")).to_contain_text("Export")
    expect(page.get_by_role("button", name=re.compile("Share"))).to_have_count(0)
    conversation = re.search(r"/c/(\d+)", page.url).group(1)
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    refused = page.request.post(off.url(f"/c/{conversation}/share"), headers={"X-CSRF-Token": token, **HTMX})
    assert refused.status == 404


def test_shared_links_public_decides_whether_app_password_guards_them(make_server, tmp_path):
    database = f"sqlite:///{tmp_path}/shared.db"
    public = make_server(DATABASE_URL=database, APP_PASSWORD="pw", LOGIN_RATE_LIMIT="1000/minute")
    owner = requests.Session()
    form = owner.get(public.url("/login"), timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    owner.post(public.url("/login"), data={"password": "pw", "csrf_token": csrf}, timeout=10)
    page = owner.get(public.url("/"), timeout=10).text
    owner.headers["X-CSRF-Token"] = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    owner.post(public.url("/messages"), data={"content": "Behind a password"}, timeout=30)
    conversation = re.search(r'href="/c/(\d+)"', owner.get(public.url("/"), timeout=10).text).group(1)
    widget = owner.post(public.url(f"/c/{conversation}/share"), headers=HTMX, timeout=10).text
    path = re.search(r'href="https?://[^/"]+(/s/[^"]+)"', widget).group(1)

    seen = requests.get(public.url(path), allow_redirects=False, timeout=10)  # the default: public
    assert seen.status_code == 200 and "Behind a password" in seen.text
    assert "Set-Cookie" not in seen.headers
    assert requests.get(public.url("/"), allow_redirects=False, timeout=10).status_code == 302  # the rest stays shut

    guarded = make_server(DATABASE_URL=database, APP_PASSWORD="pw", SHARED_LINKS_PUBLIC="false")
    asked = requests.get(guarded.url(path), allow_redirects=False, timeout=10)
    assert asked.status_code == 302 and "/login" in asked.headers["Location"]


def test_model_output_on_a_shared_page_never_runs(shared_server, upstream, page, browser):
    block_text = "\n\n".join(PAYLOADS)
    upstream.push(Script(tokens=split_randomly(block_text, 3), delay=0.001))
    page.goto(shared_server.url("/"))
    page.locator("#content").fill(" ".join(PAYLOADS))  # the question carries the payloads too
    page.locator("#content").press("Enter")
    expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done", timeout=60000)
    link = share(page)

    stranger = browser.new_context()
    visitor = stranger.new_page()
    dialogs = guard(visitor)
    errors: list[str] = []
    visitor.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    visitor.on("pageerror", lambda err: errors.append(str(err)))
    visitor.goto(link)
    expect(visitor.locator("article.message.assistant")).to_contain_text("<script>alert('xss1')</script>")
    assert visitor.evaluate(INJECTED) == []
    visitor.wait_for_timeout(500)  # let any deferred handler (onload, ontoggle, meta refresh) fire
    assert visitor.evaluate("window.__xss") is None
    assert dialogs == []
    assert visitor.url == link  # no meta refresh or base hijack moved the page
    assert not errors, errors  # includes Content-Security-Policy violations
    stranger.close()
