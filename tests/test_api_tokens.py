"""API tokens are identities: each named token is one owner for limits, budgets and usage."""

from __future__ import annotations

import requests

from tests.fake_upstream import Script


def chat(server, text: str, token: str, **kwargs) -> requests.Response:
    return requests.post(
        server.url("/api/chat"),
        json={"messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=20,
        **kwargs,
    )


def test_each_named_token_is_its_own_owner_for_the_limits(make_server, upstream):
    server = make_server(API_TOKENS="alice:tok-a,bob:tok-b,plain-token", MAX_CONCURRENT_PER_OWNER="1")
    upstream.push(Script(text="slow " * 40, delay=0.05))
    running = chat(server, "first", "tok-a")
    assert running.status_code == 200
    next(running.iter_lines())  # alice's answer is streaming now
    second = chat(server, "second", "tok-a")
    assert second.status_code == 429, second.text  # the same token: the same owner, over its limit
    assert "MAX_CONCURRENT_PER_OWNER" in second.json()["error"]
    for token in ("tok-b", "plain-token"):  # other tokens are other owners
        other = chat(server, "other", token)
        assert other.status_code == 200
        assert b"[DONE]" in other.content
    assert "Set-Cookie" not in running.headers  # a token needs no cookie
    running.close()


def test_a_token_holding_a_colon_after_a_name_is_that_name_s(make_server):
    server = make_server(API_TOKENS="ci:abc:def")
    assert chat(server, "hi", "abc:def").status_code == 200
    assert chat(server, "hi", "ci:abc:def").status_code == 401
