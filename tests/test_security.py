"""Safe on the internet: owners, the session cookie, CSRF, the password gate, API tokens, the production
secret, security headers, limits and budgets, usage and cost, metrics and the log.

Requests and their answers are checked on the app in process (`create_app` and Flask's test client,
one app per module for each set of settings; the tests of one limit get an app with just that limit),
against the scripted fake upstream; the database is read to check what was (and was not) written.
Metrics over several workers and the server's log run under gunicorn, as in production.
"""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests import sse
from tests.conftest import ROOT, AppServer, InProcessApp, client, upstream_env, wait_for
from tests.fake_upstream import Script
from tests.sse import read_api_stream
from tests.test_faults import Sent, ended, final, words
from tests.test_faults import send as send_over_http
from trickle import create_app, storage
from trickle.settings import SettingsError

HX = {"HX-Request": "true"}
API_KEY = "sk-test-" + uuid.uuid4().hex  # only this module's apps know it: it must never reach the log
PRICES = "fake-model=1000000/2000000"  # USD per 1M tokens: 1 $ a token in, 2 $ a token out


# -- helpers -----------------------------------------------------------------------------------


def module_env(upstream, **env) -> dict[str, str]:
    return {**upstream_env(upstream), "OPENAI_API_KEY": API_KEY, "STREAM_FLUSH_MS": "30", **env}


class Servers:
    """Start module servers (gunicorn) on the fake upstream; stop them (and close their clients) at the end."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.servers: list[AppServer] = []
        self.sessions: list[requests.Session] = []

    def start(self, workers: int = 1, **env) -> AppServer:
        settings = module_env(self.upstream, **{k: str(v) for k, v in env.items()})
        server = AppServer(settings, workers=workers).start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for session in self.sessions:
            session.close()  # idle keep-alive connections would hold up the graceful stop
        for server in self.servers:  # all stop at once (as `AppServer.stop` does), then each is waited for
            if server.process and server.process.poll() is None:
                server.process.send_signal(signal.SIGQUIT)
        for server in self.servers:
            server.stop()


_registry: list[Servers] = []


@pytest.fixture(scope="module")
def servers(upstream):
    started = Servers(upstream)
    _registry.append(started)
    yield started
    started.close()
    _registry.remove(started)


class Apps:
    """Build this module's in-process apps on the fake upstream; close them at the end."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.apps: list[InProcessApp] = []

    def start(self, **env) -> InProcessApp:
        built = InProcessApp(module_env(self.upstream, **{k: str(v) for k, v in env.items()}))
        self.apps.append(built)
        return built

    def close(self) -> None:
        for built in reversed(self.apps):
            built.close()


@pytest.fixture(scope="module")
def apps(upstream):
    built = Apps(upstream)
    yield built
    built.close()


def owner(server: AppServer | InProcessApp):
    """A new person: the owner cookie of a first visit and the page's CSRF token in the htmx header."""
    if isinstance(server, InProcessApp):
        return server.client()
    session = client(server)
    for started in _registry:
        started.sessions.append(session)
    return session


def stranger(app: InProcessApp):
    """A browser on its first request: no cookie, no token."""
    return app.app.test_client()


def post_message(session, content: str, conversation_id: int | None = None, headers: dict | None = None, **extra):
    """`POST /messages` on the test client: htmx's by default, `headers={}` for the no-JavaScript form."""
    data = {"content": content, **extra}
    if conversation_id is not None:
        data["conversation_id"] = str(conversation_id)
    return session.post("/messages", data=data, headers=HX if headers is None else headers)


def json_body(response) -> dict:
    """The JSON of a `requests` response or of a test-client one."""
    return response.json() if callable(response.json) else response.json


def error_message(response) -> str:
    """The sentence an error page or fragment shows (`<p class="error-message">`), or the JSON error."""
    if response.headers.get("Content-Type", "").startswith("application/json"):
        return json_body(response)["error"]
    found = re.search(r'<p class="error-message"[^>]*>(.*?)</p>', response.text, re.S)
    assert found, f"no error message in: {response.text[:500]}"
    return html.unescape(found.group(1)).strip()


def assert_readable(response, status: int, *phrases: str) -> str:
    """`status`, a message in words (naming each phrase), and nothing of a traceback."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    message = error_message(response)
    assert len(message) > 10 and " " in message, message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert "Traceback" not in response.text and 'File "' not in response.text
    return message


def answer_id_of(response) -> int:
    return int(re.search(r'id="message-(\d+)"[^>]*sse-connect', response.text).group(1))


def wait_ended(server: AppServer | InProcessApp, message_id: int, timeout: float = 20.0):
    if isinstance(server, AppServer):
        row = ended(server, message_id, timeout)
    else:

        def ended_row():
            row = storage.get_message(engine(server), message_id)
            return row if row.status != "streaming" else None

        row = wait_for(ended_row, timeout) or storage.get_message(engine(server), message_id)
    assert row.status != "streaming", f"answer {message_id} still streaming after {timeout} s"
    return row


def send(server: AppServer | InProcessApp, content: str, conversation_id: int | None = None, session=None) -> Sent:
    """`POST /messages` as htmx sends it: returns at once with the two bubbles."""
    if isinstance(server, AppServer):
        return send_over_http(server, content, conversation_id, session=session)
    response = post_message(session, content, conversation_id)
    assert response.status_code == 200, response.text
    found = re.search(r'<article class="message assistant[^"]*" id="message-(\d+)"', response.text)
    assert found, response.text
    answer_id = int(found.group(1))
    return Sent(answer_id, storage.get_message(engine(server), answer_id).conversation_id, response.text)


def exchange(server: AppServer | InProcessApp, session, content: str, conversation_id: int | None = None):
    """Send a message, wait for its answer to end; return (sent, answer row)."""
    sent = send(server, content, conversation_id, session=session)
    return sent, wait_ended(server, sent.answer_id)


def done_event(session, message_id: int, timeout: float = 30.0) -> sse.Event:
    """Follow the answer's event stream on the test client up to its `done` event."""
    response = session.get(f"/messages/{message_id}/events", buffered=False)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    deadline = time.monotonic() + timeout
    try:
        for event in sse.events(response):
            if event.event == "done":
                return event
            assert time.monotonic() < deadline, f"no done event within {timeout} s"
    finally:
        response.close()
    pytest.fail("the event stream ended without a done event")


_engines: dict[str, sa.Engine] = {}


def engine(server: AppServer | InProcessApp):
    if isinstance(server, InProcessApp):
        return server.engine()
    if server.database_url not in _engines:
        _engines[server.database_url] = server.engine()
    return _engines[server.database_url]


def counts(server) -> dict[str, int]:
    with engine(server).connect() as db:
        return {
            table: db.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("conversations", "messages", "usage")
        }


def rows(server, sql: str, **params) -> list:
    with engine(server).connect() as db:
        return [tuple(row) for row in db.execute(sa.text(sql), params)]


def usage_rows(server, after_id: int = 0) -> list:
    with engine(server).connect() as db:
        return db.execute(sa.text("SELECT * FROM usage WHERE id > :after ORDER BY id"), {"after": after_id}).all()


def last_usage_id(server) -> int:
    return rows(server, "SELECT coalesce(max(id), 0) FROM usage")[0][0]


def api_chat(session, content: str, **headers):
    """`POST /api/chat` on a test client, its body left to stream."""
    body = {"messages": [{"role": "user", "content": content}]}
    return session.post("/api/chat", json=body, headers=headers, buffered=False)


def api_chat_over_http(server: AppServer, content: str, session: requests.Session | None = None, **headers):
    body = {"messages": [{"role": "user", "content": content}]}
    return (session or requests).post(server.url("/api/chat"), json=body, headers=headers, stream=True, timeout=30)


def set_cookies(response) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def session_cookie(response) -> str:
    found = [c for c in set_cookies(response) if c.startswith("trickle_session=")]
    assert found, set_cookies(response)
    return found[0]


def cookie_attributes(header: str) -> dict[str, str]:
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


def cookie_value(session, name: str = "trickle_session") -> str:
    return session.get_cookie(name).value


# -- the apps ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(apps):
    """Default limits, prices for the fake model, no upstream retries."""
    return apps.start(MODEL_PRICES=PRICES, UPSTREAM_RETRIES=0)


@pytest.fixture(scope="module")
def served(servers):
    """The same settings under gunicorn: metrics and the log as the server has them."""
    return servers.start(MODEL_PRICES=PRICES, UPSTREAM_RETRIES=0)


# -- owners: nobody sees or touches another person's conversations -----------------------------


def snapshot(server, conversation_id: int) -> tuple:
    return (
        rows(server, "SELECT * FROM conversations WHERE id = :c", c=conversation_id),
        rows(server, "SELECT * FROM messages WHERE conversation_id = :c ORDER BY id", c=conversation_id),
        rows(server, "SELECT * FROM usage ORDER BY id"),
    )


def test_another_owner_gets_404_for_every_url_of_a_conversation_and_changes_nothing(server, upstream):
    alice, bob = owner(server), owner(server)
    secret = "zebra-" + uuid.uuid4().hex[:8]
    reply = words(30)
    upstream.push(Script(text=reply, delay=0.05))
    sent = send(server, f"alice's private question {secret}", session=alice)
    cid, answer, question = sent.conversation_id, sent.answer_id, sent.answer_id - 1

    # While it streams, Bob can neither watch nor stop it.
    for path in (f"/messages/{answer}/events", f"/messages/{question}/events"):
        assert_readable(bob.get(path), 404)
    assert_readable(bob.post(f"/messages/{answer}/stop", headers=HX), 404)
    assert_readable(bob.post(f"/messages/{answer}/stop"), 404)
    assert storage.get_message(engine(server), answer).status == "streaming"
    row = wait_ended(server, answer)
    assert (row.status, row.content) == ("done", reply), "Bob's Stop reached Alice's answer"

    before = snapshot(server, cid)
    requests_before = len(upstream.requests)
    for path in (f"/c/{cid}", f"/c/{cid}/export.md", f"/c/{cid}/export.json", f"/messages/{answer}/events"):
        response = bob.get(path)
        assert_readable(response, 404)
        assert secret not in response.text
    posts = [
        (f"/messages/{answer}/stop", {}),
        (f"/messages/{answer}/retry", {}),
        (f"/messages/{answer}/regenerate", {}),
        (f"/messages/{answer}/activate", {}),
        (f"/messages/{question}/edit", {"content": "Bob was here"}),
        (f"/c/{cid}/rename", {"title": "Bob was here"}),
        (f"/c/{cid}/options", {"model": "fake-model-2", "system_prompt": "Bob was here"}),
        (f"/c/{cid}/pin", {}),
        (f"/c/{cid}/unpin", {}),
        (f"/c/{cid}/delete", {}),
        ("/messages", {"content": "Bob was here", "conversation_id": str(cid)}),
    ]
    for path, data in posts:
        for headers in (HX, {}):
            response = bob.post(path, data=data, headers=headers)
            assert_readable(response, 404)
            assert secret not in response.text, path

    # Nor does it show in his sidebar or his search, full page or htmx.
    for response in (bob.get("/"), bob.get(f"/?q={secret}")):
        assert response.status_code == 200
        sidebar = re.search(r'<ul id="conversations".*?</ul>', response.text, re.S).group(0)
        assert f'"/c/{cid}"' not in sidebar and secret not in sidebar
    for query in (secret, "alice", "private"):
        response = bob.get(f"/conversations?q={query}", headers=HX)
        assert response.status_code == 200
        assert f'"/c/{cid}"' not in response.text and secret not in response.text
    assert "No conversations found" in bob.get(f"/conversations?q={secret}", headers=HX).text

    # Nothing of Alice's changed, nothing was generated, and she still has it all.
    assert snapshot(server, cid) == before
    assert len(upstream.requests) == requests_before
    page = alice.get(f"/c/{cid}")
    assert page.status_code == 200 and secret in page.text and "Bob was here" not in page.text
    assert secret in alice.get(f"/conversations?q={secret}", headers=HX).text
    assert secret in alice.get(f"/c/{cid}/export.md").text
    assert final(answer, done_event(alice, answer).data).status == "done"


def test_a_conversation_is_its_owners_only_even_from_a_new_cookie(server):
    alice = owner(server)
    sent, _ = exchange(server, alice, "mine only")
    # no cookie at all: a new owner on its first request
    assert stranger(server).get(f"/c/{sent.conversation_id}").status_code == 404
    forged = stranger(server)
    forged.set_cookie("trickle_session", cookie_value(alice)[:-4] + "AAAA")
    assert forged.get(f"/c/{sent.conversation_id}").status_code == 404
    copied = stranger(server)  # the control: her cookie itself, in another client, is her
    copied.set_cookie("trickle_session", cookie_value(alice))
    assert copied.get(f"/c/{sent.conversation_id}").status_code == 200


# -- the session cookie ------------------------------------------------------------------------


def test_session_cookie_is_httponly_and_samesite_lax_and_not_secure_over_plain_http(server):
    response = stranger(server).get("/")
    attributes = cookie_attributes(session_cookie(response))
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"
    assert "secure" not in attributes, "a Secure cookie would never come back over plain http"


def test_session_cookie_is_secure_behind_a_trusted_https_proxy(apps):
    proxied = apps.start(TRUST_PROXY="true")
    response = stranger(proxied).get("/", headers={"X-Forwarded-Proto": "https"})
    attributes = cookie_attributes(session_cookie(response))
    assert "secure" in attributes and "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"


# -- CSRF --------------------------------------------------------------------------------------


def test_post_without_the_csrf_token_is_403_with_a_message_and_writes_nothing(server, upstream):
    person = owner(server)
    token, person.csrf_token = person.csrf_token, None
    before, requests_before = counts(server), len(upstream.requests)
    for headers in (HX, {}):
        response = post_message(person, "no token", headers=headers)
        message = assert_readable(response, 403)
        assert re.search(r"expired|reload|token", message, re.I), message
    response = post_message(person, "wrong token", headers={**HX, "X-CSRF-Token": token[:-2] + "xx"})
    assert_readable(response, 403)
    response = post_message(person, "wrong token", headers={}, csrf_token="not-the-token")
    assert_readable(response, 403)
    assert counts(server) == before and len(upstream.requests) == requests_before

    response = post_message(person, "right token", headers={**HX, "X-CSRF-Token": token})
    assert response.status_code == 200 and "sse-connect" in response.text
    wait_ended(server, answer_id_of(response))
    response = post_message(person, "right token in the form", headers={}, csrf_token=token)
    assert response.status_code == 303  # the no-JavaScript form: answered, then shown
    assert counts(server)["messages"] == before["messages"] + 4


def test_every_state_changing_control_checks_the_csrf_token(server):
    alice = owner(server)
    sent, _ = exchange(server, alice, "controls")
    cid, answer = sent.conversation_id, sent.answer_id
    before = snapshot(server, cid)
    alice.csrf_token = None  # the right owner, without the token
    for path, data in [
        (f"/messages/{answer}/stop", {}),
        (f"/messages/{answer}/retry", {}),
        (f"/messages/{answer}/regenerate", {}),
        (f"/messages/{answer}/activate", {}),
        (f"/messages/{answer - 1}/edit", {"content": "x"}),
        (f"/c/{cid}/rename", {"title": "x"}),
        (f"/c/{cid}/options", {"model": "fake-model-2"}),
        (f"/c/{cid}/pin", {}),
        (f"/c/{cid}/delete", {}),
    ]:
        assert_readable(alice.post(path, data=data, headers=HX), 403)
    assert snapshot(server, cid) == before


def test_a_cross_site_form_post_is_rejected(server):
    alice = owner(server)
    token = alice.csrf_token
    mallory = owner(server)  # the attacker's own, valid token: bound to her session, not Alice's
    cross_site = {
        "Origin": "https://evil.example",
        "Referer": "https://evil.example/page",
        "Sec-Fetch-Site": "cross-site",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    before = counts(server)
    # A SameSite=Lax browser sends no cookie with a cross-site POST…
    response = stranger(server).post("/messages", data={"content": "pwned", "csrf_token": token}, headers=cross_site)
    assert_readable(response, 403)
    # …and even a browser that did could not know the token of Alice's session.
    forged = stranger(server)
    forged.set_cookie("trickle_session", cookie_value(alice))
    for data in ({"content": "pwned"}, {"content": "pwned", "csrf_token": mallory.csrf_token}):
        assert_readable(forged.post("/messages", data=data, headers=cross_site), 403)
    assert counts(server) == before


def test_a_cross_site_simple_request_cannot_start_an_api_answer(server, upstream):
    """`fetch(..., {mode: "no-cors"})` can only send text/plain or a form: /api/chat must not answer either."""
    before, requests_before = counts(server), len(upstream.requests)
    body = '{"messages": [{"role": "user", "content": "spend their tokens"}]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = stranger(server).post(
            "/api/chat", data=body, headers={"Content-Type": content_type, "Origin": "https://evil.example"}
        )
        assert 400 <= response.status_code < 500, (content_type, response.status_code)
        assert response.json["error"]
        assert "Access-Control-Allow-Origin" not in response.headers
    assert counts(server) == before and len(upstream.requests) == requests_before


def test_state_changing_urls_refuse_get(server):
    alice = owner(server)
    sent, _ = exchange(server, alice, "get?")
    for path in (
        f"/c/{sent.conversation_id}/delete",
        f"/messages/{sent.answer_id}/stop",
        f"/messages/{sent.answer_id}/regenerate",
        "/messages",
    ):
        assert alice.get(path).status_code == 405, path
    assert alice.get(f"/c/{sent.conversation_id}").status_code == 200


# -- APP_PASSWORD ------------------------------------------------------------------------------

PASSWORD = "correct horse battery stäple"


@pytest.fixture(scope="module")
def gated(apps):
    return apps.start(APP_PASSWORD=PASSWORD, LOGIN_RATE_LIMIT="1000/minute")


def login(server: InProcessApp, password: str = PASSWORD, next_path: str | None = None):
    session = stranger(server)
    query = {"next": next_path} if next_path is not None else None
    form = session.get("/login").get_data(as_text=True)  # the login form carries a CSRF token
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    response = session.post("/login", query_string=query, data={"password": password, "csrf_token": token})
    return session, response


def test_without_the_password_every_page_redirects_to_login(gated):
    before = counts(gated)
    for path in ("/", "/c/1", "/c/1/export.md", "/conversations?q=x", "/messages/1/events", "/?q=a%20b"):
        response = stranger(gated).get(path)
        assert response.status_code in (302, 303), path
        location = urlsplit(response.headers["Location"])
        assert location.path == "/login" and parse_qs(location.query)["next"] == [path], response.headers["Location"]
    response = stranger(gated).post("/messages", data={"content": "let me in"})
    assert response.status_code in (302, 303, 401, 403)
    assert urlsplit(response.headers.get("Location", "/login")).path == "/login"
    page = stranger(gated).get("/c/1", follow_redirects=True)
    assert page.status_code == 200 and 'name="password"' in page.text and 'type="password"' in page.text
    assert counts(gated) == before


def test_without_the_password_htmx_gets_401_with_hx_redirect_and_the_api_a_json_401(gated, upstream):
    before, requests_before = counts(gated), len(upstream.requests)
    for method, path in (("get", "/conversations?q=x"), ("get", "/"), ("post", "/messages")):
        response = getattr(stranger(gated), method)(path, headers=HX, data={"content": "x"})
        assert response.status_code == 401, path
        assert response.headers.get("HX-Redirect", "").startswith("/login")
    response = api_chat(stranger(gated), "let me in")
    assert response.status_code == 401 and response.headers["Content-Type"].startswith("application/json")
    assert response.json["error"]
    assert stranger(gated).get("/healthz").json["status"] == "ok"
    assert stranger(gated).get("/static/trickle.css").status_code == 200
    assert counts(gated) == before and len(upstream.requests) == requests_before


def test_a_wrong_password_is_401_with_the_message(gated):
    for wrong in (
        "",
        "wrong",
        PASSWORD[:-1],
        PASSWORD + "!",
        PASSWORD.upper(),
        " " + PASSWORD,
        PASSWORD.replace("ä", "a"),
    ):
        session, response = login(gated, wrong)
        assert response.status_code == 401, repr(wrong)
        assert "That password is not right." in html.unescape(response.text)
        assert 'name="password"' in response.text
        assert session.get("/").status_code in (302, 303)


def test_the_right_password_opens_a_working_session(gated, upstream):
    session, response = login(gated, next_path="/?q=hello")
    assert response.status_code in (302, 303)
    assert response.headers["Location"] == "/?q=hello"
    attributes = cookie_attributes(session_cookie(response))
    assert "httponly" in attributes and attributes.get("samesite", "").lower() == "lax"
    page = session.get("/")
    assert page.status_code == 200
    session.csrf_token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)
    sent, row = exchange(gated, session, "behind the gate")
    assert row.status == "done" and row.content == "Echo: behind the gate"
    assert session.get(f"/c/{sent.conversation_id}").status_code == 200
    # Another visitor, even with a session of their own, still meets the gate.
    assert stranger(gated).get(f"/c/{sent.conversation_id}").status_code == 302


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/x",
        "/\\evil.example",
        "/\t/evil.example",
        "/\\/evil.example",
        "https://evil.example/",
        "/%09/evil.example",
        " //evil.example",
    ],
)
def test_login_never_redirects_to_another_site(gated, next_path):
    _, response = login(gated, next_path=next_path)
    assert response.status_code in (302, 303)
    location = response.headers["Location"]
    # As a browser reads a Location: tabs and newlines dropped, backslashes taken for slashes.
    seen = re.sub(r"[\t\n\r]", "", location).replace("\\", "/").strip()
    target = urlsplit(seen)
    assert target.netloc in ("", "localhost") and not seen.startswith("//"), location


def test_the_fourth_login_attempt_in_a_minute_is_429_with_a_readable_message(make_app):
    login_limited = make_app(OPENAI_API_KEY=API_KEY, APP_PASSWORD=PASSWORD, LOGIN_RATE_LIMIT="3/minute")
    for _ in range(3):
        assert login(login_limited, "guess")[1].status_code == 401
    _, response = login(login_limited, PASSWORD)  # even the right password must wait now
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    message = assert_readable(response, 429)
    assert re.search(r"3 per (1 )?minute|3/minute|LOGIN_RATE_LIMIT", message), message
    assert re.search(r"too many|try again|wait", message, re.I), f"not a sentence a person can act on: {message!r}"


# -- API_TOKENS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens(apps):
    return apps.start(API_TOKENS="a,b")


def test_api_without_or_with_a_wrong_bearer_token_is_a_json_401(tokens, upstream):
    requests_before = len(upstream.requests)
    for authorization in (
        None,
        "Bearer",
        "Bearer ",
        "Bearer c",
        "Bearer ab",
        "Bearer a,b",
        "Bearer bb",
        "Basic b",
        "b",
        "Token b",
    ):
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = api_chat(stranger(tokens), "hello", **headers)
        assert response.status_code == 401, authorization
        assert response.headers["Content-Type"].startswith("application/json")
        assert "Bearer" in response.json["error"]
    assert len(upstream.requests) == requests_before, "an unauthenticated request reached the provider"


def test_api_with_a_valid_bearer_token_streams(tokens):
    for token in ("b", "a"):
        response = api_chat(stranger(tokens), "with a token", Authorization=f"Bearer {token}")
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        text, raw = read_api_stream(response)
        assert text == "Echo: with a token" and raw[-1] == "[DONE]"


def test_api_tokens_leave_healthz_and_the_pages_open_and_guard_the_websocket(tokens):
    health = stranger(tokens).get("/healthz")
    assert health.status_code == 200 and health.json["status"] == "ok"
    assert stranger(tokens).get("/").status_code == 200
    assert stranger(tokens).get("/ws").status_code == 401


# -- production needs SECRET_KEY ---------------------------------------------------------------


def import_app(**env: str) -> subprocess.CompletedProcess:
    tmp = tempfile.mkdtemp(prefix="trickle-secret-")
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "APP_ENV", "DYNO", "CHAT_PROVIDER")
        and not k.startswith(("OPENAI_", "OPENROUTER_", "OLLAMA_"))
    }
    return subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "DATABASE_URL": f"sqlite:///{tmp}/t.db", "CHAT_PROVIDER": "demo", **env},
    )


PRODUCTION_WITHOUT_SECRET = [
    {"APP_ENV": "production"},
    {"DYNO": "web.1"},
    {"APP_ENV": "production", "SECRET_KEY": "   "},
]


@pytest.mark.parametrize("env", PRODUCTION_WITHOUT_SECRET)
def test_production_without_secret_key_refuses_to_build_the_app_naming_it(env, tmp_path):
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/t.db", "CHAT_PROVIDER": "demo", **env})


def test_production_without_secret_key_stops_the_app_module_naming_it():
    result = import_app(**PRODUCTION_WITHOUT_SECRET[0])
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_production_with_secret_key_starts():
    built = InProcessApp({"CHAT_PROVIDER": "demo", "APP_ENV": "production", "SECRET_KEY": uuid.uuid4().hex * 2})
    try:
        assert built.trickle.settings.production
        assert stranger(built).get("/healthz").status_code == 200
    finally:
        built.close()


# -- headers and the page's HTML ---------------------------------------------------------------


def csp_directives(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        words_ = part.split()
        if words_:
            directives[words_[0].lower()] = words_[1:]
    return directives


def assert_security_headers(response) -> None:
    directives = csp_directives(response)
    assert directives["script-src"] == ["'self'"], directives
    policy = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives.get("object-src") == ["'none'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in (
        "same-origin",
        "no-referrer",
        "strict-origin",
        "strict-origin-when-cross-origin",
    )
    assert response.headers["X-Frame-Options"] == "DENY"


class _Tags(HTMLParser):
    """Every start tag with its attributes, as a browser parses them (text and attribute values are data)."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag


def assert_no_inline_code(page: str) -> None:
    """No inline script, style or event handler: the CSP (no 'unsafe-inline') would block each of them."""
    for tag, attrs in _Tags(page).tags:
        names = {name.lower() for name, _ in attrs}
        shown = f"<{tag} {' '.join(f'{n}={v!r}' for n, v in attrs)}>"
        assert tag != "script" or "src" in names, f"an inline <script>: {shown}"
        assert tag != "style", "a <style> element"
        assert "style" not in names, f"a style= attribute (blocked by the CSP): {shown}"
        assert not [n for n in names if n.startswith("on")], f"an inline event handler: {shown}"
        urls = [v for _, v in attrs if v and v.strip().lower().startswith("javascript:")]
        assert not urls, f"a javascript: URL: {shown}"


# An answer with what markdown can render: an aligned table, code, a link, an image, a list.
RICH = (
    "# Title\n\n| left | right | centre |\n|:---|---:|:---:|\n| 1 | 2 | 3 |\n\n```python\nprint('hi')\n```\n\n"
    "- [a link](https://example.org) and ![img](https://example.org/i.png)\n- `code`\n"
)


def test_pages_send_strict_security_headers(server):
    person = owner(server)
    api = api_chat(stranger(server), "headers?")
    read_api_stream(api)
    for response in (person.get("/"), person.get("/c/999999"), person.get("/healthz"), api):
        assert_security_headers(response)


def test_new_chat_page_has_no_inline_script_or_style(server):
    page = owner(server).get("/")
    assert page.status_code == 200 and "<script" in page.text
    assert_no_inline_code(page.text)


def test_conversation_page_has_no_inline_script_or_style(server, upstream):
    person = owner(server)
    upstream.push(Script(text=RICH))
    sent, row = exchange(server, person, "show me <b>markdown</b> style=x onclick=y")
    assert row.status == "done"
    page = person.get(f"/c/{sent.conversation_id}")
    assert page.status_code == 200 and "<table>" in page.text and "<pre>" in page.text
    assert_security_headers(page)
    assert_no_inline_code(page.text)
    # The streamed events carry the same HTML.
    assert_no_inline_code(done_event(person, sent.answer_id).data)


# -- limits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(apps):
    return apps.start(MAX_INPUT_CHARS=50, MAX_MESSAGES_PER_CONVERSATION=4, MAX_CONCURRENT_PER_OWNER=1)


def test_a_message_over_max_input_chars_is_413_naming_the_limit(limited, upstream):
    person = owner(limited)
    before, requests_before = counts(limited), len(upstream.requests)
    for headers in (HX, {}):
        response = post_message(person, "x" * 51, headers=headers)
        assert_readable(response, 413, "50")
    assert counts(limited) == before and len(upstream.requests) == requests_before
    sent, _ = exchange(limited, person, "short")  # the edit form has the same limit
    before, requests_before = counts(limited), len(upstream.requests)
    response = person.post(f"/messages/{sent.answer_id - 1}/edit", data={"content": "y" * 51}, headers=HX)
    assert_readable(response, 413, "50")
    response = stranger(limited).post("/api/chat", json={"messages": [{"role": "user", "content": "z" * 1000}]})
    assert response.status_code == 413 and "MAX_INPUT_CHARS" in response.json["error"]
    assert counts(limited) == before and len(upstream.requests) == requests_before
    _, row = exchange(limited, person, "x" * 50)  # exactly the limit is fine
    assert row.status == "done"


def test_the_third_exchange_over_max_messages_per_conversation_is_refused(limited):
    person = owner(limited)
    first, _ = exchange(limited, person, "one")
    exchange(limited, person, "two", first.conversation_id)
    before = counts(limited)
    response = post_message(person, "three", first.conversation_id)
    assert_readable(response, 429, "MAX_MESSAGES_PER_CONVERSATION")
    assert counts(limited) == before
    _, row = exchange(limited, person, "a new chat is fine")
    assert row.status == "done"


def test_a_second_answer_while_the_first_streams_is_refused_then_accepted(limited, upstream):
    alice, bob = owner(limited), owner(limited)
    upstream.push(Script(text=words(20), delay=0.1))
    first = send(limited, "slow one", session=alice)
    before = counts(limited)
    assert storage.get_message(engine(limited), first.answer_id).status == "streaming"
    response = post_message(alice, "meanwhile")
    assert_readable(response, 429, "MAX_CONCURRENT_PER_OWNER")
    assert counts(limited) == before
    response = alice.post(f"/messages/{first.answer_id}/retry", headers=HX)
    assert response.status_code in (409, 429)  # it is still being written either way
    _, row = exchange(limited, bob, "someone else may")  # the limit is per owner
    assert row.status == "done"
    assert wait_ended(limited, first.answer_id).status == "done"
    _, row = exchange(limited, alice, "now it is my turn", first.conversation_id)
    assert row.status == "done"


def test_the_third_send_in_a_minute_is_429_for_that_owner_only(make_app):
    owner_rate = make_app(RATE_LIMIT_PER_OWNER="2/minute")
    alice, bob = owner(owner_rate), owner(owner_rate)
    exchange(owner_rate, alice, "one")
    exchange(owner_rate, alice, "two")
    before = counts(owner_rate)
    response = post_message(alice, "three")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    message = assert_readable(response, 429)
    assert counts(owner_rate) == before
    _, row = exchange(owner_rate, bob, "another person on the same address")
    assert row.status == "done"
    assert re.search(r"2 per (1 )?minute|2/minute|RATE_LIMIT_PER_OWNER", message), message
    assert re.search(r"too many|try again|wait", message, re.I), f"not a sentence a person can act on: {message!r}"


def test_the_fourth_send_from_one_address_is_429_whoever_sends_it(make_app):
    ip_rate = make_app(RATE_LIMIT_PER_IP="3/minute")
    for n in range(3):
        exchange(ip_rate, owner(ip_rate), f"person {n}")
    before = counts(ip_rate)
    response = post_message(owner(ip_rate), "a fourth person")
    assert response.status_code == 429
    # Without TRUST_PROXY a forged X-Forwarded-For is not another address.
    forged = post_message(owner(ip_rate), "forged", headers={**HX, "X-Forwarded-For": "203.0.113.9"})
    assert forged.status_code == 429
    assert counts(ip_rate) == before
    message = assert_readable(response, 429)
    assert re.search(r"3 per (1 )?minute|3/minute|RATE_LIMIT_PER_IP", message), message
    assert re.search(r"too many|try again|wait", message, re.I), f"not a sentence a person can act on: {message!r}"


@pytest.fixture(scope="module")
def owner_budget(apps):
    return apps.start(OWNER_DAILY_TOKEN_BUDGET=5)


def test_after_the_owner_budget_is_spent_the_next_send_is_refused_naming_it(owner_budget):
    alice, bob = owner(owner_budget), owner(owner_budget)
    sent, row = exchange(owner_budget, alice, "spend it")  # 2 tokens in, 3 out
    assert row.tokens_in + row.tokens_out >= 5
    before = counts(owner_budget)
    response = post_message(alice, "more please")
    assert_readable(response, 429, "OWNER_DAILY_TOKEN_BUDGET")
    response = alice.post(f"/messages/{sent.answer_id}/regenerate", headers=HX)
    assert_readable(response, 429, "OWNER_DAILY_TOKEN_BUDGET")
    assert counts(owner_budget) == before
    _, row = exchange(owner_budget, bob, "my own budget")
    assert row.status == "done"


def test_api_chat_obeys_the_owner_budget_with_a_json_429(owner_budget, upstream):
    alice = owner(owner_budget)
    exchange(owner_budget, alice, "spend it")
    requests_before = len(upstream.requests)
    response = api_chat(alice, "and through the API?")
    assert response.status_code == 429, "the API ignores OWNER_DAILY_TOKEN_BUDGET"
    assert response.headers["Content-Type"].startswith("application/json")
    assert "OWNER_DAILY_TOKEN_BUDGET" in response.json["error"]
    assert len(upstream.requests) == requests_before


def test_api_answers_count_toward_the_owner_budget(owner_budget):
    carol = owner(owner_budget)
    after = last_usage_id(owner_budget)
    text, _ = read_api_stream(api_chat(carol, "spend it through the API"))
    assert text == "Echo: spend it through the API"
    assert wait_for(lambda: usage_rows(owner_budget, after))  # written as the stream ends
    response = post_message(carol, "and now on the page")
    assert_readable(response, 429, "OWNER_DAILY_TOKEN_BUDGET")


@pytest.fixture(scope="module")
def daily_budget(apps):
    return apps.start(DAILY_TOKEN_BUDGET=8)


def test_the_daily_budget_counts_every_owner_and_the_api(daily_budget):
    alice, bob = owner(daily_budget), owner(daily_budget)
    _, row = exchange(daily_budget, alice, "one two")  # 2 in + 3 out: 5 of 8
    assert row.tokens_in + row.tokens_out == 5
    text, _ = read_api_stream(api_chat(stranger(daily_budget), "one two three"))  # 3 + 4 more: over the budget
    assert text == "Echo: one two three"
    assert wait_for(lambda: rows(daily_budget, "SELECT sum(tokens_in + tokens_out) FROM usage")[0][0] == 12)
    before = counts(daily_budget)
    response = post_message(bob, "anything left?")
    assert_readable(response, 429, "DAILY_TOKEN_BUDGET")
    assert counts(daily_budget) == before


def test_api_chat_is_refused_with_a_json_429_once_the_daily_budget_is_spent(daily_budget, upstream):
    person = owner(daily_budget)
    for _ in range(3):  # spend whatever is left
        response = post_message(person, "spend")
        if response.status_code == 429:
            break
        assert response.status_code == 200
        wait_ended(daily_budget, answer_id_of(response))
    requests_before = len(upstream.requests)
    response = api_chat(stranger(daily_budget), "and through the API?")
    assert response.status_code == 429, "the API ignores DAILY_TOKEN_BUDGET"
    assert "DAILY_TOKEN_BUDGET" in response.json["error"]
    assert len(upstream.requests) == requests_before


# -- usage and cost ----------------------------------------------------------------------------


def test_an_answer_stores_the_providers_token_counts_and_its_cost(server):
    person = owner(server)
    after = last_usage_id(server)
    first, row = exchange(server, person, "one two three")
    # The fake counts one token a word: 3 in; "Echo: one two three" is 4 out. 1 $ a token in, 2 $ out.
    assert (row.status, row.tokens_in, row.tokens_out) == ("done", 3, 4)
    assert row.cost == pytest.approx(3 + 2 * 4)
    second, row = exchange(server, person, "four five", first.conversation_id)
    # The history goes upstream again: 3 + 4 + 2 words in, "Echo: four five" 3 out.
    assert (row.tokens_in, row.tokens_out) == (9, 3) and row.cost == pytest.approx(9 + 2 * 3)

    usage = wait_for(lambda: len(usage_rows(server, after)) >= 2 and usage_rows(server, after))
    assert [(u.conversation_id, u.model, u.tokens_in, u.tokens_out) for u in usage] == [
        (first.conversation_id, "fake-model", 3, 4),
        (first.conversation_id, "fake-model", 9, 3),
    ]
    assert [u.cost for u in usage] == [pytest.approx(11), pytest.approx(15)]
    owners = rows(server, "SELECT owner FROM conversations WHERE id = :c", c=first.conversation_id)
    assert {u.owner for u in usage} == {owners[0][0]}

    page = person.get(f"/c/{first.conversation_id}").text
    totals = re.search(r'id="conversation-usage">(.*?)</span>', page, re.S)
    assert totals, "the conversation page shows no usage"
    shown = html.unescape(totals.group(1))
    assert "12 in" in shown and "7 out" in shown and "$26.0000" in shown, shown
    mine = re.search(r'id="owner-usage">(.*?)</p>', page, re.S)
    assert mine and "19 tokens" in mine.group(1) and "$26.0000" in mine.group(1), mine and mine.group(1)
    meta = final(second.answer_id, done_event(person, second.answer_id).data).meta
    assert "9 in" in meta and "3 out" in meta, meta


def test_api_answers_get_a_usage_row_and_nothing_else(server):
    before = counts(server)
    after = last_usage_id(server)
    text, raw = read_api_stream(api_chat(stranger(server), "api words here"))
    assert text == "Echo: api words here" and raw[-1] == "[DONE]"
    usage = wait_for(lambda: usage_rows(server, after))
    assert len(usage) == 1
    assert (usage[0].conversation_id, usage[0].model, usage[0].tokens_in, usage[0].tokens_out) == (
        None,
        "fake-model",
        3,
        4,
    )
    assert usage[0].cost == pytest.approx(3 + 2 * 4)
    now = counts(server)
    assert (now["conversations"], now["messages"]) == (before["conversations"], before["messages"])
    assert now["usage"] == before["usage"] + 1


def test_a_provider_without_usage_gives_a_counted_estimate(server, upstream):
    person = owner(server)
    reply = "An answer from a provider that reports no usage at all."
    upstream.push(Script(text=reply, usage=False))
    after = last_usage_id(server)
    question = "How many tokens is this question?"
    _, row = exchange(server, person, question)

    def estimate(text: str) -> int:
        return max(1, (len(text) + 3) // 4)  # about four characters a token

    assert row.status == "done" and row.content == reply
    assert (row.tokens_in, row.tokens_out) == (estimate(question), estimate(reply))
    assert row.cost == pytest.approx(row.tokens_in + 2 * row.tokens_out)
    usage = wait_for(lambda: usage_rows(server, after))
    assert [(u.tokens_in, u.tokens_out) for u in usage] == [(row.tokens_in, row.tokens_out)]


# -- observability (under gunicorn: the workers' metrics and the server's log) ------------------


def scrape(server: AppServer) -> dict:
    response = requests.get(server.url("/metrics"), timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid")))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def metric(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_reports_ok_as_json(server):
    response = stranger(server).get("/healthz")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    body = response.json
    assert body["status"] == "ok" and body["database_ms"] >= 0 and body["live_generations"] >= 0


def test_metrics_count_streams_tokens_latency_errors_and_live_answers(served, upstream):
    person = owner(served)
    before = scrape(served)
    for n in range(3):
        _, row = exchange(served, person, f"metrics {n}")
        assert row.status == "done"
    upstream.push(Script(status=500))
    _, row = exchange(served, person, "upstream breaks")
    assert row.status == "failed"
    upstream.push(Script(text=words(30), delay=0.05))
    slow = send(served, "a slow one", session=person)
    assert wait_for(lambda: metric(scrape(served), "trickle_active_streams") >= 1, timeout=5), "no live answer counted"
    wait_ended(served, slow.answer_id)

    def recorded():  # the row is written just before the metrics of its end
        samples = scrape(served)
        count = "trickle_stream_duration_seconds_count"
        ended_all = metric(samples, count) - metric(before, count) >= 5
        return samples if ended_all and metric(samples, "trickle_active_streams") == 0 else None

    after = wait_for(recorded, timeout=5) or scrape(served)

    def grew(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("trickle_streams_total", outcome="done") == 4
    assert grew("trickle_streams_total", outcome="failed") == 1
    assert grew("trickle_upstream_errors_total", status="500") == 1
    assert grew("trickle_tokens_total", direction="in") > 0 and grew("trickle_tokens_total", direction="out") >= 3 * 3
    assert grew("trickle_cost_usd_total") > 0
    assert grew("trickle_time_to_first_token_seconds_count") == 4  # the failed one never had a first token
    assert grew("trickle_stream_duration_seconds_count") == 5
    assert grew("trickle_stream_duration_seconds_bucket", le="+Inf") == 5
    assert metric(after, "trickle_active_streams") == 0


def streams_per_worker(folder: str) -> dict[str, float]:
    """`trickle_streams_total` as each worker process wrote it to the multiprocess folder."""
    from prometheus_client.mmap_dict import MmapedDict

    found = {}
    for name in os.listdir(folder):
        if name.startswith("counter_"):
            pid = name.removesuffix(".db").rsplit("_", 1)[-1]
            for key, value, *_ in MmapedDict.read_all_values_from_file(os.path.join(folder, name)):
                if '"trickle_streams_total"' in key:
                    found[pid] = found.get(pid, 0.0) + value
    return found


def test_metrics_token_closes_metrics_to_everyone_else(apps):
    guarded = apps.start(METRICS_TOKEN="scrape-me", APP_PASSWORD="pw")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
        response = stranger(guarded).get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert "METRICS_TOKEN" in response.text and response.headers["WWW-Authenticate"].startswith("Bearer")
    response = stranger(guarded).get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert response.status_code == 200 and "trickle_active_streams" in response.text
    assert stranger(guarded).get("/healthz").status_code == 200  # liveness stays open


def test_metrics_add_up_over_several_workers(servers):
    folder = tempfile.mkdtemp(prefix="trickle-metrics-")
    two = servers.start(workers=2, PROMETHEUS_MULTIPROC_DIR=folder)

    def ask(n):
        response = requests.post(
            two.url("/api/chat"),
            json={"messages": [{"role": "user", "content": f"n {n}"}]},
            headers={"Connection": "close"},
            stream=True,
            timeout=30,
        )
        answers.append(read_api_stream(response)[0])

    sent, answers = 0, []
    for _ in range(25):  # until both workers have answered some (the kernel picks who accepts)
        threads = [threading.Thread(target=ask, args=(sent + n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        sent += len(threads)
        if len([v for v in streams_per_worker(folder).values() if v > 0]) >= 2:
            break
    assert sorted(answers) == sorted(f"Echo: n {n}" for n in range(sent))
    assert len([v for v in streams_per_worker(folder).values() if v > 0]) >= 2, "one worker answered everything"
    for _ in range(6):  # whichever worker answers /metrics, it reports every worker's streams
        samples = scrape(two)
        assert metric(samples, "trickle_streams_total", outcome="done") == sent
        assert metric(samples, "trickle_stream_duration_seconds_count") == sent
        assert metric(samples, "trickle_tokens_total", direction="out") == sent * 3


STREAM_LINE = re.compile(
    r"trickle\.registry: stream kind=(?P<kind>\w+) id=(?P<id>\S+) conversation=(?P<conversation>\S+) "
    r"model=(?P<model>\S+) outcome=(?P<outcome>\w+) tokens_in=(?P<tokens_in>\d+) tokens_out=(?P<tokens_out>\d+) "
    r"cost_usd=(?P<cost>[\d.]+) ttft_ms=(?P<ttft>\S+) duration_ms=(?P<duration>\S+)$",
    re.M,
)


def test_the_log_has_one_stream_line_per_answer_and_no_secrets(served, upstream):
    person = owner(served)
    secret_question = "canary-question-" + uuid.uuid4().hex
    secret_answer = "canary-answer-" + uuid.uuid4().hex
    api_secret = "canary-api-" + uuid.uuid4().hex
    api_before = len([m for m in STREAM_LINE.finditer(served.read_log()) if m["kind"] == "api"])
    upstream.push(Script(text=f"{secret_answer} is the answer"))
    sent, row = exchange(served, person, secret_question)
    upstream.push(Script(status=500))
    failed, _ = exchange(served, person, secret_question + " again", sent.conversation_id)
    read_api_stream(api_chat_over_http(served, api_secret, session=person))

    def lines():
        return [m for m in STREAM_LINE.finditer(served.read_log())]

    assert wait_for(lambda: len([m for m in lines() if m["kind"] == "api"]) >= api_before + 1)
    time.sleep(0.3)
    found = lines()
    mine = [m for m in found if m["kind"] == "page" and m["id"] == str(sent.answer_id)]
    assert len(mine) == 1, [m.group(0) for m in found]
    line = mine[0]
    assert (line["outcome"], int(line["tokens_in"]), int(line["tokens_out"])) == ("done", row.tokens_in, row.tokens_out)
    assert float(line["cost"]) == pytest.approx(row.cost) and int(line["ttft"]) >= 0
    assert line["conversation"] == str(sent.conversation_id) and line["model"] == "fake-model"
    broken = [m for m in found if m["kind"] == "page" and m["id"] == str(failed.answer_id)]
    assert len(broken) == 1 and broken[0]["outcome"] == "failed" and broken[0]["ttft"] == "None"
    assert len([m for m in found if m["kind"] == "api"]) == api_before + 1

    log = served.read_log()
    for secret in (
        secret_question,
        secret_answer,
        api_secret,
        API_KEY,
        person.cookies["trickle_session"],
        person.headers["X-CSRF-Token"],
    ):
        assert secret not in log, f"the log holds {secret[:20]}…"
    assert "Traceback" not in log
