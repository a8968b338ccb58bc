"""The SQL of sharing and history, on SQLite and on PostgreSQL (the fixtures of test_storage.py):
imports in one transaction, exports that give them back, links that end with their conversation."""

from __future__ import annotations

import pytest

from tests.test_storage import database_url, engine, services  # noqa: F401  (fixtures)
from trickle import history_store, sharing_store, storage
from trickle.importers import ImportProblem

CONVERSATION = {
    "title": "Kept as it was",
    "model": "m-1",
    "system_prompt": "Be brief.",
    "created_at": 1700000000.5,
    "updated_at": 1700000100.25,
    "pinned_at": 1700000200.75,
    "messages": [
        {"role": "user", "content": "Question", "status": "done", "error": None, "model": None, "tokens_in": None,
         "tokens_out": None, "ttft_ms": None, "duration_ms": None, "cost": None, "created_at": 1700000001.0,
         "active": True, "reply_to": None},
        {"role": "assistant", "content": "Replaced", "status": "stopped", "error": "Stopped.", "model": "m-1",
         "tokens_in": 3, "tokens_out": 1, "ttft_ms": 12, "duration_ms": 40, "cost": 0.5, "created_at": 1700000002.0,
         "active": False, "reply_to": 0},
        {"role": "assistant", "content": "Answer", "status": "done", "error": None, "model": "m-2", "tokens_in": 3,
         "tokens_out": 2, "ttft_ms": 10, "duration_ms": 30, "cost": 0.25, "created_at": 1700000003.0,
         "active": True, "reply_to": 0},
    ],
}  # fmt: skip


def test_an_import_exports_back_unchanged_and_a_failed_one_leaves_nothing(engine):  # noqa: F811
    assert history_store.import_conversations(engine, "alice", [CONVERSATION]) == 1
    assert list(history_store.export_conversations(engine, "alice")) == [CONVERSATION]
    assert list(history_store.export_conversations(engine, "bob")) == []

    def broken():
        yield CONVERSATION
        raise ImportProblem("Conversation 2 is not an object.")

    with pytest.raises(ImportProblem):
        history_store.import_conversations(engine, "bob", broken())
    assert storage.list_conversations(engine, "bob") == []
    streaming = {
        **CONVERSATION,
        "messages": [{**CONVERSATION["messages"][0], "status": "streaming", "content": "a\x00b"}],
    }
    history_store.import_conversations(engine, "carol", [streaming])
    (row,) = storage.list_conversations(engine, "carol")
    (message,) = storage.list_messages(engine, row.id)
    assert message.status == "interrupted"  # nothing will ever write it
    assert message.content == "ab"  # PostgreSQL refuses NUL in text


def test_links_show_a_snapshot_until_revoked_and_go_with_their_conversation(engine):  # noqa: F811
    failed = {**CONVERSATION["messages"][2], "status": "failed", "error": "http://10.1.2.3:8000 refused the key"}
    second = {**CONVERSATION, "title": "Second", "messages": [CONVERSATION["messages"][0], failed]}
    history_store.import_conversations(engine, "alice", [CONVERSATION, second])
    first, second = sorted(storage.list_conversations(engine, "alice"), key=lambda row: row.id)
    token = sharing_store.create_share(engine, "alice", first)
    snapshot = sharing_store.shared_snapshot(engine, token)
    assert snapshot["title"] == "Kept as it was" and snapshot["version"] == 1
    assert [m["content"] for m in snapshot["messages"]] == ["Question", "Answer"]  # as shown: active messages
    assert "owner" not in str(snapshot) and "alice" not in str(snapshot)
    storage.append_exchange(engine, first.id, "Later", "m-1")  # a later question, and its answer being written
    assert len(sharing_store.shared_snapshot(engine, token)["messages"]) == 2
    assert sharing_store.revoke_share(engine, "bob", token) is None  # only the owner revokes
    assert sharing_store.revoke_share(engine, "alice", token) == first.id
    assert sharing_store.shared_snapshot(engine, token) is None

    kept = sharing_store.create_share(engine, "alice", first)
    assert [m["content"] for m in sharing_store.shared_snapshot(engine, kept)["messages"]] == [
        "Question",
        "Answer",
        "Later",
    ]  # the answer still being written is left out
    gone = sharing_store.create_share(engine, "alice", second)
    shown = sharing_store.shared_snapshot(engine, gone)["messages"]
    assert shown[1]["status"] == "failed" and "10.1.2.3" not in str(shown)  # an error may name the upstream
    storage.delete_conversation(engine, second.id)
    assert sharing_store.shared_snapshot(engine, gone) is None
    assert [row.token for row in sharing_store.list_shares(engine, "alice")] == [kept]
    history_store.import_conversations(engine, "bob", [CONVERSATION])
    assert history_store.delete_all(engine, "alice") == 1
    assert sharing_store.list_shares(engine, "alice") == [] and sharing_store.shared_snapshot(engine, kept) is None
    assert len(storage.list_conversations(engine, "bob")) == 1
