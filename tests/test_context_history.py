"""An answer with context added while it was written, everywhere it goes after: the exports, a
shared snapshot, a history export imported elsewhere, Retry, regenerate (the app under gunicorn, the fake upstream)."""

from __future__ import annotations

import json
import re

import requests

from tests.conftest import client
from tests.fake_upstream import Script
from tests.test_history import export_all, upload

HTMX = {"HX-Request": "true"}
LONG = "alpha " * 300
AFTER = "Bravo after the addition."
ADDED = "Mention bravo."


def answer_with_an_addition(server, upstream, session) -> tuple[int, int]:
    """(conversation id, answer id) of a finished answer that had ADDED added while it streamed."""
    upstream.push(Script(text=LONG, delay=0.02), Script(text=AFTER))
    sent = session.post(server.url("/messages"), data={"content": "Tell me"}, headers=HTMX, timeout=30)
    answer_id = int(sent.text.split('id="message-')[2].split('"')[0])
    conversation_id = int(sent.text.split('name="conversation_id" value="')[1].split('"')[0])
    assert upstream.wait_for(lambda: upstream.streams and upstream.streams[0].tokens_sent >= 3)
    added = session.post(server.url(f"/messages/{answer_id}/context"), data={"content": ADDED}, headers=HTMX)
    assert added.status_code == 200 and ADDED in added.text and 'class="added-context"' in added.text
    assert "You added" in session.get(server.url(f"/messages/{answer_id}/events"), timeout=30).text  # its end
    return conversation_id, answer_id


def test_exports_and_a_history_round_trip_keep_the_addition_at_its_place(make_server, upstream):
    server = make_server(IMPORT_MAX_MB="2")
    alice, bob = client(server), client(server)
    conversation_id, _ = answer_with_an_addition(server, upstream, alice)
    partial = upstream.requests[1]["body"]["messages"][1]["content"]

    markdown = alice.get(server.url(f"/c/{conversation_id}/export.md"), timeout=10).text
    assert f"{partial}\n\n> **You added:** {ADDED}\n\n{AFTER}" in markdown
    shown = alice.get(server.url(f"/c/{conversation_id}/export.json"), timeout=10).json()["messages"]
    answer = shown[1]
    assert [m["role"] for m in shown] == ["user", "assistant"]  # the addition is the answer's, not a message
    assert answer["added"] == [{"at": len(answer["content"]) - len(AFTER), "content": ADDED}]

    widget = alice.post(server.url(f"/c/{conversation_id}/share"), headers=HTMX, timeout=10).text
    link = re.search(r'href="https?://[^/"]+(/s/[^"]+)"', widget).group(1)
    shared = requests.get(server.url(link), timeout=10).text  # a snapshot shows it at its place too
    assert shared.index(partial.split()[-1]) < shared.index(ADDED) < shared.index(AFTER)

    exported = export_all(alice, server)
    assert exported["conversations"][0]["messages"][1]["added"] == answer["added"]
    assert upload(bob, server, json.dumps(exported).encode(), "trickle-history.json").status_code == 200
    assert export_all(bob, server)["conversations"] == exported["conversations"]

    bad = json.loads(json.dumps(exported))
    bad["conversations"][0]["messages"][1]["added"] = [{"at": "here", "content": ADDED}]
    refused = upload(bob, server, json.dumps(bad).encode(), "trickle-history.json")
    assert refused.status_code == 400 and "an &#39;added&#39; that is not a list" in refused.text


def test_retry_keeps_the_addition_and_regenerate_answers_the_question_alone(shared_server, upstream):
    session = client(shared_server)
    conversation_id, answer_id = answer_with_an_addition(shared_server, upstream, session)

    upstream.push(Script(text="Written again."))
    session.post(shared_server.url(f"/messages/{answer_id}/retry"), headers=HTMX, timeout=30)
    shown = session.get(shared_server.url(f"/messages/{answer_id}/events"), timeout=30).text
    assert upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Tell me"},
        {"role": "user", "content": ADDED},
    ]
    final = shown[shown.index("event: done") :]  # the bubble as it ended: the addition before all of the new text
    assert final.index(ADDED) < final.index("Written again.")

    upstream.push(Script(text="Another answer."))
    session.post(shared_server.url(f"/messages/{answer_id}/regenerate"), headers=HTMX, timeout=30)
    assert upstream.wait_for(lambda: len(upstream.requests) == 4 and upstream.streams[-1].ended.is_set())
    assert upstream.requests[-1]["body"]["messages"] == [{"role": "user", "content": "Tell me"}]
