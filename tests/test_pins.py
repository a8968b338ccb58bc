"""Pinning a conversation to the top of the list, as htmx and a plain form post it (in process)."""

from __future__ import annotations

import json
import re

from trickle import storage

HX = {"HX-Request": "true"}


def conversations_of(app, client, *titles: str) -> list[int]:
    """Conversations of this person, the last one the most recently active."""
    ids = []
    for title in titles:
        response = client.post("/messages", data={"content": title}, headers=HX)
        assert response.status_code == 200, response.text
        ids.append(int(re.search(r'name="conversation_id" value="(\d+)"', response.text).group(1)))
    return ids


def sidebar_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<li class="conversation-row[^"]*" id="conversation-(\d+)"', html)]


def pinned_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<li class="conversation-row pinned" id="conversation-(\d+)"', html)]


def page_sidebar(client, path: str = "/") -> str:
    page = client.get(path).text
    return re.search(r'<ul id="conversations".*?</ul>\s*(?=<p|<details)', page, re.S).group(0)


def test_htmx_pin_answers_the_list_pinned_first_and_unpin_puts_it_back(app, client):
    first, second, third = conversations_of(app, client, "Alpha", "Beta", "Gamma")
    assert sidebar_ids(page_sidebar(client)) == [third, second, first]

    page_url = {"HX-Current-URL": f"http://localhost/c/{second}"}
    response = client.post(f"/c/{first}/pin", headers={**HX, **page_url})
    assert response.status_code == 200
    assert sidebar_ids(response.text) == [first, third, second]
    assert pinned_ids(response.text) == [first]
    assert 'aria-label="Unpin conversation Alpha"' in response.text
    assert 'aria-label="Pin conversation Beta"' in response.text
    assert re.search(rf'href="/c/{second}" aria-current="page"', response.text)  # the page's stays marked
    assert "<html" not in response.text  # a fragment: the rows only

    client.post(f"/c/{second}/pin", headers=HX)
    assert sidebar_ids(page_sidebar(client)) == [second, first, third]  # the latest pinned on top, for good

    response = client.post(f"/c/{second}/unpin", headers=HX)
    assert sidebar_ids(response.text) == [first, third, second]
    assert pinned_ids(response.text) == [first]


def test_htmx_pin_keeps_the_search_the_list_shows(app, client):
    first, second = conversations_of(app, client, "Zebra facts", "Other things")
    response = client.post(f"/c/{first}/pin", data={"q": "zebra"}, headers=HX)
    assert sidebar_ids(response.text) == [first]
    assert 'name="q" value="zebra"' in response.text  # the next pin keeps it too


def test_without_javascript_pin_redirects_to_the_page_it_was_on_with_the_list_open(app, client):
    first, second = conversations_of(app, client, "Alpha", "Beta")
    response = client.post(f"/c/{first}/pin", data={"current": str(second)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/c/{second}#sidebar")
    assert pinned_ids(page_sidebar(client, f"/c/{second}")) == [first]

    response = client.post(f"/c/{first}/unpin", data={"q": "alp"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/?q=alp#sidebar")
    assert pinned_ids(page_sidebar(client)) == []
    response = client.post(f"/c/{first}/pin", data={"current": "9" * 19})  # not an id: the new chat page
    assert response.status_code == 303 and response.headers["Location"].endswith("/#sidebar")


def test_the_page_forms_pin_without_javascript(app, client):
    (only,) = conversations_of(app, client, "Alpha")
    form = re.search(r'<form action="(/c/\d+/pin)" method="post".*?</form>', client.get(f"/c/{only}").text, re.S)
    assert form and form.group(1) == f"/c/{only}/pin"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
    assert fields["current"] == str(only) and fields["csrf_token"]
    client.csrf_token = None  # the form's own token, as a browser without JavaScript posts it
    assert client.post(form.group(1), data=fields).status_code == 303
    assert storage.get_conversation(app.engine(), only).pinned_at is not None


def test_another_owners_conversation_is_a_404_and_stays_as_it_was(app, client):
    (mine,) = conversations_of(app, client, "Alice's")
    stranger = app.client()
    for action in ("pin", "unpin"):
        for headers in (HX, {}):
            assert stranger.post(f"/c/{mine}/{action}", headers=headers).status_code == 404
    assert stranger.post(f"/c/{10**30}/pin", headers=HX).status_code == 404
    assert storage.get_conversation(app.engine(), mine).pinned_at is None
    assert mine not in sidebar_ids(page_sidebar(stranger))


def test_pin_without_the_csrf_token_is_refused(app, client):
    (mine,) = conversations_of(app, client, "Guarded")
    client.csrf_token = None
    for headers in (HX, {}):
        assert client.post(f"/c/{mine}/pin", headers=headers).status_code == 403
    assert storage.get_conversation(app.engine(), mine).pinned_at is None


def test_a_new_chat_row_goes_in_below_the_pinned_ones(app, client):
    (pinned,) = conversations_of(app, client, "Pinned one")
    client.post(f"/c/{pinned}/pin", headers=HX)
    assert '<template id="pinned-end"></template>' in page_sidebar(client)
    response = client.post("/messages", data={"content": "A new chat"}, headers=HX)
    assert '<ul hx-swap-oob="afterend:#pinned-end"><li class="conversation-row" id="conversation-' in response.text


def test_exports_say_whether_it_is_pinned(app, client):
    first, second = conversations_of(app, client, "Alpha", "Beta")
    client.post(f"/c/{first}/pin", headers=HX)
    assert json.loads(client.get(f"/c/{first}/export.json").data)["pinned"] is True
    assert json.loads(client.get(f"/c/{second}/export.json").data)["pinned"] is False
    history = json.loads(b"".join(client.get("/history/export.json").response))
    pinned_at = {c["title"]: c["pinned_at"] for c in history["conversations"]}
    assert pinned_at["Alpha"] == storage.get_conversation(app.engine(), first).pinned_at
    assert pinned_at["Beta"] is None
