"""The conversation's totals in the header: the end of every answer (`done`) carries them out of band,
the same figures a reload shows, however the answer ended (in process)."""

from __future__ import annotations

import html
import re

import pytest
import sqlalchemy as sa

from tests.fake_upstream import Script
from tests.sse import events_until_done
from tests.test_faults import words

HX = {"HX-Request": "true"}
PRICES = "fake-model=1000000/2000000"  # 1 $ a token in, 2 $ a token out
TOTALS = re.compile(r'<span class="usage" id="conversation-usage"( hx-swap-oob="true")?>(.*?)</span>', re.S)


@pytest.fixture
def priced(make_app):
    return make_app(MODEL_PRICES=PRICES, UPSTREAM_RETRIES=0)


def ask(client, content: str, conversation_id: int | None = None) -> tuple[int, int]:
    data = {"content": content, **({"conversation_id": str(conversation_id)} if conversation_id else {})}
    response = client.post("/messages", data=data, headers=HX)
    assert response.status_code == 200, response.text
    answer = int(re.search(r'id="message-(\d+)"[^>]*sse-connect', response.text).group(1))
    conversation = conversation_id or int(re.search(r'name="conversation_id" value="(\d+)"', response.text).group(1))
    return conversation, answer


def done_totals(client, answer: str | int) -> str:
    """The totals the answer's `done` event swaps into the header, out of band."""
    event, data = events_until_done(client.get(f"/messages/{answer}/events", buffered=False))[-1]
    assert event == "done"
    found = [match for match in TOTALS.finditer(data) if match.group(1)]
    assert len(found) == 1, data
    return html.unescape(found[0].group(2))


def page_totals(client, conversation_id: int | None = None) -> str:
    found = TOTALS.search(client.get(f"/c/{conversation_id}" if conversation_id else "/").text)
    assert found and not found.group(1), "the page has no totals to swap into"
    return html.unescape(found.group(2))


def test_each_done_carries_the_conversations_new_totals(priced):
    person = priced.client()
    assert page_totals(person) == ""  # a new chat: present and empty, a target for the first answer
    conversation, answer = ask(person, "one two three")
    # The fake counts a token a word: 3 in; "Echo: one two three" is 4 out.
    assert done_totals(person, answer) == "3 in · 4 out · $11.0000"
    assert page_totals(person, conversation) == "3 in · 4 out · $11.0000"

    _, answer = ask(person, "four five", conversation)  # the history again: 3 + 4 + 2 in, 3 out
    assert done_totals(person, answer) == "12 in · 7 out · $26.0000"
    assert page_totals(person, conversation) == "12 in · 7 out · $26.0000"
    assert done_totals(person, answer) == "12 in · 7 out · $26.0000"  # an ended answer's `done` alike

    other, answer = ask(person, "elsewhere")  # another conversation counts apart
    assert done_totals(person, answer) == "1 in · 2 out · $5.0000"
    assert page_totals(person, conversation) == "12 in · 7 out · $26.0000"


def test_a_stopped_answer_and_a_failed_one_update_the_totals_too(priced, upstream):
    person = priced.client()
    conversation, answer = ask(person, "one two three")
    assert done_totals(person, answer) == "3 in · 4 out · $11.0000"

    _, answer = ask(person, "stop this", conversation)
    # Stopped before it sent anything upstream (nothing here has yielded to its greenlet yet): its
    # prompt is counted (estimated), no answer.
    assert person.post(f"/messages/{answer}/stop", headers=HX).status_code == 204
    stopped = done_totals(person, answer)
    assert status_of(priced, answer) == "stopped"
    assert figures(stopped)[0] > 3 and figures(stopped)[1] == 4
    assert stopped == page_totals(person, conversation)

    upstream.push(Script(text=words(50), error_after=5))
    _, answer = ask(person, "and then", conversation)
    failed = done_totals(person, answer)
    assert status_of(priced, answer) == "failed"
    assert figures(failed)[0] > figures(stopped)[0] and figures(failed)[1] > 4  # its words so far
    assert failed == page_totals(person, conversation)


def figures(totals: str) -> tuple[int, int, float]:
    tokens_in, tokens_out, cost = re.fullmatch(r"([\d,]+) in · ([\d,]+) out · \$([\d.]+)", totals).groups()
    return int(tokens_in.replace(",", "")), int(tokens_out.replace(",", "")), float(cost)


def status_of(app, message_id: int) -> str:
    with app.engine().connect() as db:
        return db.execute(sa.text("SELECT status FROM messages WHERE id = :m"), {"m": message_id}).scalar()
