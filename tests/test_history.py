"""A whole history in and out: imports from ChatGPT, Open WebUI and Trickle exports (only the current
branch, titles and times kept, owned by the importer), malformed files refused with nothing stored,
export all as the format the import reads (a lossless round trip), and delete all."""

from __future__ import annotations

import html
import json

import pytest
import sqlalchemy as sa

from tests.conftest import client, screenshot
from tests.history_files import as_bytes, chatgpt_export, open_webui_export
from trickle import history_store, storage

HTMX = {"HX-Request": "true"}


@pytest.fixture
def server(make_server):
    return make_server(IMPORT_MAX_MB="2")


def upload(session, server, data: bytes, name: str = "conversations.json"):
    files = {"file": (name, data, "application/json")}
    return session.post(server.url("/history/import"), files=files, headers=HTMX, timeout=60)


def stored(server) -> list[dict]:
    """Every conversation in the database, with its shown messages, oldest first."""
    engine = server.engine()
    try:
        rows = storage.list_conversations(engine)
        found = []
        for row in sorted(rows, key=lambda row: row.id):
            shown = storage.list_messages(engine, row.id)
            found.append({"row": row, "messages": [(m.role, m.content, m.model) for m in shown], "shown": shown})
        return found
    finally:
        engine.dispose()


def owner_of(server, title: str) -> str:
    return next(c["row"].owner for c in stored(server) if c["row"].title == title)


def test_a_chatgpt_export_imports_only_the_current_branch_with_titles_and_times(server):
    alice, bob = client(server), client(server)
    answer = upload(alice, server, as_bytes(chatgpt_export()))
    assert answer.status_code == 200, answer.text
    assert "Imported 2 conversations from a ChatGPT export." in answer.text
    assert "Branches of a plan" in answer.text  # the sidebar rows come along (hx-swap-oob)
    branched, plain = stored(server)
    assert branched["row"].title == "Branches of a plan"
    assert (branched["row"].created_at, branched["row"].updated_at) == (1700000000.25, 1700000900.5)
    assert branched["messages"] == [
        ("user", "Plan a trip to Lisbon", None),
        ("assistant", "Day 1: **Alfama**.", "gpt-4o"),
        ("user", "And day 2?", None),
        ("assistant", "Day 2: Belém.", "gpt-4o"),
    ]
    assert [m.created_at for m in branched["shown"]] == [1700000001.0, 1700000003.0, 1700000006.0, 1700000008.0]
    assert [m.reply_to for m in branched["shown"]][1::2] == [m.id for m in branched["shown"]][0::2]
    assert plain["messages"] == [("user", "Hello <b>there</b>", None), ("assistant", "Hi!", "gpt-4o-mini")]
    assert plain["row"].owner == branched["row"].owner
    page = alice.get(server.url(f"/c/{branched['row'].id}"), timeout=10)
    assert "Day 2: Belém." in page.text and "OLD ANSWER" not in page.text and "FIRST VERSION" not in page.text
    assert bob.get(server.url(f"/c/{branched['row'].id}"), timeout=10).status_code == 404  # the importer's own


def test_an_open_webui_export_imports_its_current_branch_and_legacy_chats(server):
    alice = client(server)
    answer = upload(alice, server, as_bytes(open_webui_export()), "chat-export-1720000000.json")
    assert answer.status_code == 200 and "Imported 2 conversations from an Open WebUI export." in answer.text
    tree, legacy = stored(server)
    assert (tree["row"].title, tree["row"].model, tree["row"].created_at) == (
        "Open WebUI chat",
        "llama3.2:latest",
        1720000000,
    )
    assert tree["row"].updated_at == 1720000600
    assert tree["messages"] == [
        ("user", "What is htmx?", None),
        ("assistant", "A library for *hypermedia*.", "llama3.2:latest"),
        ("user", "Thanks", None),
    ]
    assert legacy["messages"] == [("user", "Old question", None), ("assistant", "Old answer", "mistral")]
    assert legacy["row"].created_at == 1721000000


def export_all(session, server) -> dict:
    answer = session.get(server.url("/history/export.json"), timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    assert "attachment" in answer.headers["Content-Disposition"]
    return answer.json()


def test_export_all_then_import_gives_the_same_history_back(server, upstream):
    from tests.fake_upstream import Script

    alice, bob = client(server), client(server)
    assert upload(alice, server, as_bytes(chatgpt_export())).status_code == 200
    upstream.push(Script(text="First answer."), Script(text="Second answer."))
    alice.post(server.url("/messages"), data={"content": "A question of my own"}, timeout=30)  # no-JS: waits
    answered = next(c for c in stored(server) if c["row"].title == "A question of my own")
    answer_id = answered["shown"][-1].id
    alice.post(server.url(f"/messages/{answer_id}/regenerate"), timeout=30)  # the first answer stays, hidden
    alice.post(server.url(f"/c/{answered['row'].id}/options"), data={"system_prompt": "Be brief."}, timeout=10)

    exported = export_all(alice, server)
    assert exported["format"] == "trickle" and exported["version"] == 1
    assert [c["title"] for c in exported["conversations"]] == [
        "Branches of a plan",
        "Second chat",
        "A question of my own",
    ]
    own = exported["conversations"][2]
    assert own["system_prompt"] == "Be brief."
    assert [(m["content"], m["active"], m["reply_to"]) for m in own["messages"]] == [
        ("A question of my own", True, None),
        ("First answer.", False, 0),
        ("Second answer.", True, 0),
    ]
    assert own["messages"][2]["tokens_out"] and own["messages"][2]["model"] == "fake-model"
    assert export_all(bob, server)["conversations"] == []  # another owner's history is not in it

    body = json.dumps(exported).encode()
    answer = upload(bob, server, body, "trickle-history.json")
    assert answer.status_code == 200 and "Imported 3 conversations from a Trickle export." in answer.text
    again = export_all(bob, server)
    assert again["conversations"] == exported["conversations"]  # equal but for ids and owner, which it has not
    assert owner_of(server, "Second chat") is not None


def count_rows(server) -> tuple[int, int]:
    engine = server.engine()
    try:
        with engine.connect() as db:
            conversations = db.execute(sa.select(sa.func.count()).select_from(storage.conversations)).scalar_one()
            messages = db.execute(sa.select(sa.func.count()).select_from(storage.messages)).scalar_one()
        return conversations, messages
    finally:
        engine.dispose()


def test_malformed_files_are_refused_readably_and_nothing_is_stored(server):
    alice = client(server)
    whole = as_bytes(chatgpt_export())
    second_at = whole.index(b'{"title": "Second chat"')
    bad_second = json.dumps({"format": "trickle", "version": 1, "conversations": [
        {"title": "fine", "messages": [{"role": "user", "content": "ok"}]},
        {"title": "broken", "messages": [{"role": "wizard", "content": "?"}]},
    ]}).encode()  # fmt: skip
    cases = [
        (whole[: second_at + 40], 400, "looks truncated"),  # the first conversation was complete: not kept either
        (b'{"conversations": []}', 400, "not a Trickle export"),
        (b'[{"name": "not a conversation"}]', 400, "not a known export"),
        (b"[1, 2]", 400, "not a known export"),
        (b'"just text"', 400, "not a list of conversations"),
        (b'[{"mapping": {}, "title": "x"}]', 400, "does not say which branch is current"),
        (b"not json at all", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (bad_second, 400, "Conversation 2, message 1, needs a role of 'user' or 'assistant'"),
        (b"[]", 400, "holds no conversations"),
        (
            json.dumps(
                {"format": "trickle", "conversations": [{"messages": [{"role": "user", "tokens_in": 2**40}]}]}
            ).encode(),
            400,
            "Conversation 1, message 1, has a 'tokens_in' too large to store",
        ),
    ]
    for data, status, words in cases:
        answer = upload(alice, server, data, "export.json")
        assert answer.status_code == status, (data[:60], answer.status_code, answer.text)
        shown = html.unescape(answer.text)
        assert words in shown, (data[:60], shown)
        assert "nothing was imported" in shown.lower()
        assert count_rows(server) == (0, 0), data[:60]
    answer = alice.post(server.url("/history/import"), headers=HTMX, data={}, timeout=10)
    assert answer.status_code == 400 and "Choose an export file" in answer.text
    answer = alice.post(server.url("/history/import"), data={}, timeout=10)  # no JavaScript: the error page
    assert answer.status_code == 400 and "Choose an export file" in answer.text and "<html" in answer.text


def test_a_file_over_the_import_limit_is_a_413_naming_the_limit(make_server):
    server = make_server()  # the default limit, 25 MB
    alice = client(server)
    padding = "x" * 1000
    big = ("[" + ",".join(json.dumps({"title": padding, "mapping": {}}) for _ in range(50 * 1024)) + "]").encode()
    assert len(big) > 50 * 1024 * 1024
    answer = upload(alice, server, big)
    assert answer.status_code == 413 and "over the import limit of 25 MB (IMPORT_MAX_MB)" in answer.text
    assert count_rows(server) == (0, 0)


def test_delete_all_needs_a_confirmation_and_removes_only_the_owners_history(server):
    alice, bob = client(server), client(server)
    assert upload(alice, server, as_bytes(chatgpt_export())).status_code == 200
    assert upload(bob, server, as_bytes(open_webui_export())).status_code == 200
    refused = alice.post(server.url("/history/delete-all"), headers=HTMX, timeout=10)
    assert refused.status_code == 400 and "confirm" in refused.text
    assert count_rows(server)[0] == 4
    done = alice.post(server.url("/history/delete-all"), data={"confirm": "delete"}, headers=HTMX, timeout=10)
    assert done.status_code == 200 and done.headers["HX-Redirect"] == "/"
    assert [c["row"].title for c in stored(server)] == ["Open WebUI chat", "Legacy chat"]
    assert export_all(alice, server)["conversations"] == []
    engine = server.engine()
    try:
        assert history_store.streaming_of(engine, owner_of(server, "Legacy chat")) == []
    finally:
        engine.dispose()


def test_a_file_larger_than_any_other_request_imports_with_or_without_javascript(server):
    """IMPORT_MAX_MB (2 here), not MAX_CONTENT_LENGTH (1 MB), bounds an import; the no-JS form works too."""
    alice = client(server)
    export = chatgpt_export()
    export[1]["mapping"]["b"]["message"]["content"]["parts"] = ["long answer " * 120_000]  # 1.4 MB
    data = as_bytes(export)
    assert 1024 * 1024 < len(data) < 2 * 1024 * 1024
    token = alice.headers.pop("X-CSRF-Token")  # a plain form: the token comes as a field
    answer = alice.post(
        server.url("/history/import"),
        data={"csrf_token": token},
        files={"file": ("conversations.json", data, "application/json")},
        allow_redirects=False,
        timeout=60,
    )
    assert answer.status_code == 303, answer.text
    assert len(stored(server)[1]["messages"][1][1]) == len("long answer " * 120_000)


def test_import_export_and_delete_all_from_the_sidebar_in_a_browser(server, page, console_errors):
    from playwright.sync_api import expect

    page.goto(server.url("/"))
    page.locator("#history-tools summary").click()
    chooser = page.locator("#import-file")
    chooser.set_input_files({"name": "export.json", "mimeType": "application/json", "buffer": b'[{"title": "x"'})
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#import-result .import-problem")).to_contain_text("looks truncated. Export it again.")
    expect(page.locator("#import-progress")).to_be_hidden()

    upload_progress = []
    page.expose_function("uploadProgress", lambda value: upload_progress.append(value))
    page.evaluate(
        "document.addEventListener('htmx:xhr:progress', () =>"
        " uploadProgress(document.getElementById('import-progress').value))"
    )
    chooser.set_input_files(
        {"name": "conversations.json", "mimeType": "application/json", "buffer": as_bytes(chatgpt_export())}
    )
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#import-result")).to_have_text("Imported 2 conversations from a ChatGPT export.")
    expect(page.locator("#conversations")).to_contain_text("Branches of a plan")  # the sidebar, at once
    assert upload_progress and upload_progress[-1] > 0  # the bar followed the upload
    screenshot(page, "history-tools-after-an-import")
    page.locator("#conversations").get_by_text("Branches of a plan").click()
    expect(page.locator("article.message.assistant").last).to_contain_text("Day 2: Belém.")

    with page.expect_download() as download:
        page.locator("#history-tools summary").click()
        page.get_by_role("link", name="Export all conversations (JSON)").click()
    exported = json.loads(open(download.value.path()).read())
    assert [c["title"] for c in exported["conversations"]] == ["Branches of a plan", "Second chat"]

    page.get_by_role("button", name="Delete all").click()  # not ticked: the browser refuses to send it
    assert count_rows(server)[0] == 2
    page.get_by_label("Yes, delete every conversation for good").check()
    page.get_by_role("button", name="Delete all").click()
    page.wait_for_url(server.url("/"))
    expect(page.locator("#conversations li")).to_have_count(0)
    assert count_rows(server) == (0, 0)
    unexpected = [error for error in console_errors if "400" not in error]  # the refused file's answer
    assert not unexpected, unexpected
