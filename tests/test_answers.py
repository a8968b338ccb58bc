"""Every way of starting an answer goes through one service, so a draining worker refuses them all alike:
the stored answer is recorded `interrupted` (Retry can write it later) and the request gets a 503.

In-process with Flask's test client: nothing here needs a generation to run, only the refusal.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from trickle import create_app, live_rows, storage

DRAINING = "The server is restarting; send your message again in a moment."
HX = {"HX-Request": "true"}


@pytest.fixture
def app(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/trickle.db", "SECRET_KEY": "x", "CHAT_PROVIDER": "demo"})
    app.config["TESTING"] = True
    return app


@pytest.fixture
def person(app):
    """A browser's session: the owner cookie of a first visit and its CSRF token."""
    client = app.test_client()
    page = client.get("/")
    client.environ_base["HTTP_X_CSRF_TOKEN"] = re.search(r'name="csrf-token" content="([^"]+)"', page.text)[1]
    with client.session_transaction() as session:
        client.owner = session["owner"]
    return client


def finished_exchange(app, owner: str) -> tuple[int, int, int]:
    """A conversation with one answered question, written straight to the database."""
    engine = app.extensions["trickle"].engine
    conversation_id = storage.create_conversation(engine, "Hello", owner=owner)
    question_id, answer_id = storage.append_exchange(engine, conversation_id, "Hello", "demo")
    live_rows.finish_message(engine, answer_id, "Hi there.", "done")
    return conversation_id, question_id, answer_id


def test_while_draining_every_way_to_start_an_answer_records_it_interrupted_and_answers_503(app, person):
    conversation_id, question_id, answer_id = finished_exchange(app, person.owner)
    engine = app.extensions["trickle"].engine
    app.extensions["trickle"].registry.draining = True

    def refused(response, answer: int | None = None):
        """A 503 that says why, and the answer it was to write (the newest one by default) interrupted."""
        assert response.status_code == 503, response.text[:500]
        assert DRAINING in response.text
        if answer is None:
            with engine.connect() as db:
                answer = db.execute(sa.select(sa.func.max(storage.messages.c.id))).scalar()
        row = storage.get_message(engine, answer)
        assert (row.role, row.status, row.error) == ("assistant", "interrupted", DRAINING)

    sent = person.post("/messages", data={"content": "More?", "conversation_id": conversation_id}, headers=HX)
    refused(sent)
    assert sent.headers["HX-Retarget"] == "#composer-error"
    refused(person.post("/messages", data={"content": "More?", "conversation_id": conversation_id}))
    refused(person.post(f"/messages/{answer_id}/retry", headers=HX), answer_id)
    refused(person.post(f"/messages/{answer_id}/regenerate", headers=HX))
    refused(person.post(f"/messages/{question_id}/edit", data={"content": "Hello again"}, headers=HX))
    api = person.post("/api/chat", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert (api.status_code, api.json) == (503, {"error": DRAINING})
