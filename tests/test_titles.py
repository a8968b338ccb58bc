"""A real provider names each new conversation; the first message titles it until then, and after a failure."""

import pytest
from playwright.sync_api import expect

from tests.conftest import AppServer, upstream_env
from tests.fake_upstream import Script
from trickle import database, storage
from trickle.titles import PROMPT, clean


def send(page, text: str) -> None:
    page.locator("#content").fill(text)
    page.locator("#content").press("Enter")


@pytest.fixture(scope="module")
def titled(upstream):
    """One server whose model names conversations, for the tests of naming."""
    server = AppServer({**upstream_env(upstream), "MODEL_TITLES": "1", "TITLE_MODEL": "fake-titles"}).start()
    yield server
    server.stop()


def test_the_model_names_a_new_conversation_while_it_answers(titled, upstream, page, console_errors):
    server = titled
    upstream.by_model["fake-titles"] = Script(text='Title: "Packing for Lisbon in May".')
    upstream.default = Script(text="Light layers, good shoes and a raincoat. " * 8, delay=0.02)
    page.goto(server.url("/"))
    send(page, "what should I pack for a week in Lisbon in May?")
    answer = page.locator("article.message.assistant").last
    expect(answer).to_have_attribute("data-status", "done")
    expect(page.locator("#chat-title")).to_have_text("Packing for Lisbon in May")  # live, with the answer's end
    expect(page.locator("#conversations a").first).to_have_text("Packing for Lisbon in May")
    page.reload()
    expect(page.locator("#chat-title")).to_have_text("Packing for Lisbon in May")
    naming = [r["body"] for r in upstream.requests if r["body"]["model"] == "fake-titles"]
    assert len(naming) == 1 and not naming[0].get("stream")
    assert naming[0]["messages"] == [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": "what should I pack for a week in Lisbon in May?"},
    ]
    send(page, "and for June?")  # a conversation is named once
    expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done")
    assert len([r for r in upstream.requests if r["body"]["model"] == "fake-titles"]) == 1
    assert not console_errors


def test_a_failed_naming_keeps_the_first_message_title(titled, upstream, page):
    server = titled
    upstream.by_model["fake-titles"] = Script(status=500)
    page.goto(server.url("/"))
    send(page, "Plan a quiet weekend")
    expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done")
    assert upstream.wait_for(lambda: any(r["body"]["model"] == "fake-titles" for r in upstream.requests))
    page.reload()
    expect(page.locator("#chat-title")).to_have_text("Plan a quiet weekend")
    assert "Traceback" not in server.read_log()


def test_model_titles_off_asks_for_no_title(shared_server, upstream, page):
    server = shared_server  # MODEL_TITLES=0, as every test server has unless it asks
    page.goto(server.url("/"))
    send(page, "Name me")
    expect(page.locator("article.message.assistant").last).to_have_attribute("data-status", "done")
    assert all(r["body"].get("stream") for r in upstream.requests)
    expect(page.locator("#chat-title")).to_have_text("Name me")


def test_a_rename_by_hand_wins_over_a_late_suggestion(tmp_path):
    engine = database.make_engine(f"sqlite:///{tmp_path}/t.db")
    database.migrate(engine)
    conversation_id = storage.create_conversation(engine, "first words")
    storage.update_conversation(engine, conversation_id, title="My own title")
    assert not storage.retitle(engine, conversation_id, "first words", "Suggested")
    assert storage.get_conversation(engine, conversation_id).title == "My own title"
    assert storage.retitle(engine, conversation_id, "My own title", "Suggested")
    assert storage.get_conversation(engine, conversation_id).title == "Suggested"


def test_a_reply_is_cleaned_into_one_short_line():
    assert clean('Title: "Packing for Lisbon in May".') == "Packing for Lisbon in May"
    assert clean("\n**Trip ideas**\nHere is why…") == "Trip ideas"
    assert clean("« Recette de crêpes »") == "Recette de crêpes"
    assert clean(' "" ') is None and clean("") is None
    assert len(clean("word " * 40)) == 58 and clean("word " * 40).endswith("…")
