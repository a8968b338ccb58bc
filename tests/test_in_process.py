"""The in-process app of the tests (conftest's `app` and `client`) leaves nothing running behind it."""

from __future__ import annotations

import re

from tests.conftest import InProcessApp, live_greenlets, upstream_env
from tests.fake_upstream import Script
from tests.sse import events_until_done
from tests.test_faults import words


def test_the_client_is_a_person_with_a_cookie_and_the_csrf_token(app, client, upstream):
    response = client.post("/messages", data={"content": "hello there"}, headers={"HX-Request": "true"})
    assert response.status_code == 200, response.text
    answer = re.search(r'id="message-(\d+)"[^>]*sse-connect', response.text).group(1)
    found = events_until_done(client.get(f"/messages/{answer}/events", buffered=False))
    assert found[-1][0] == "done" and "Echo: hello there" in found[-1][1]
    assert app.app.test_client().post("/messages", data={"content": "no token"}).status_code == 403


def test_closing_the_app_ends_its_greenlets_and_its_answers(upstream):
    before = live_greenlets()
    built = InProcessApp(upstream_env(upstream))
    person = built.client()
    upstream.push(Script(text=words(50), delay=0.05))
    response = person.post("/messages", data={"content": "a long one"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    registry = built.trickle.registry
    assert registry.live  # being written when the test ends
    built.close()
    assert not registry.live
    assert live_greenlets() - before == set(), "a greenlet of the closed app still runs"
