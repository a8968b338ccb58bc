"""The storage functions, and the migrations that build their tables, on SQLite and on PostgreSQL.

Every test runs twice: on a SQLite file (the embedded default) and on a real PostgreSQL started by
`scripts/services` (a fresh database per test), through the same `storage` functions the app uses.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT
from tests.services import Services, shared
from trickle import database, ledger, live_rows, storage
from trickle.settings import SettingsError


@pytest.fixture(scope="session")
def services() -> Services:
    """PostgreSQL and Redis, started once for the whole run (see tests/services.py)."""
    return shared()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/trickle.db"
    return request.getfixturevalue("services").new_database()


@pytest.fixture
def engine(database_url):
    engine = database.make_engine(database_url)
    database.migrate(engine)
    yield engine
    engine.dispose()


def schema_differences(engine) -> list:
    """What Alembic's autogenerate would change to make the database equal `storage.metadata`."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as db:
        return compare_metadata(MigrationContext.configure(db), storage.metadata)


# -- engines and migrations ---------------------------------------------------------------------------


def test_postgres_urls_run_on_psycopg_3_with_a_pool_sized_by_the_environment(services):
    url = services.database_url
    for spelling in (url.replace("postgresql://", "postgres://"), url):
        engine = database.make_engine(spelling, {"DB_POOL_SIZE": "3", "DB_MAX_OVERFLOW": "2", "DB_POOL_TIMEOUT": "4"})
        assert engine.dialect.driver == "psycopg"
        assert (engine.pool.size(), engine.pool._max_overflow, engine.pool._timeout) == (3, 2, 4)
        assert engine.pool._pre_ping
        database.ping(engine)
        engine.dispose()
    default = database.make_engine(url, {})
    assert (default.pool.size(), default.pool._max_overflow) == (5, 10)
    default.dispose()
    with pytest.raises(SettingsError, match="DB_POOL_SIZE"):
        database.make_engine(url, {"DB_POOL_SIZE": "many"})
    with pytest.raises(SettingsError, match="DB_MAX_OVERFLOW"):
        database.make_engine(url, {"DB_MAX_OVERFLOW": "-1"})


def test_schema_revision_names_the_newest_migration():
    assert storage.SCHEMA_REVISION == database.head_revision()


def test_migrations_build_exactly_the_tables_of_storage_and_are_idempotent(engine):
    assert database.current_revision(engine) == storage.SCHEMA_REVISION
    assert schema_differences(engine) == []
    conversation = storage.create_conversation(engine, "kept", owner="o")

    assert database.migrate(engine) is False  # applied twice: nothing to do
    from alembic import command  # even forcing Alembic through it again changes nothing

    with engine.begin() as db:
        command.upgrade(database._alembic_config(db), "head")
    assert database.current_revision(engine) == storage.SCHEMA_REVISION
    assert storage.get_conversation(engine, conversation).title == "kept"
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    indexes = {index["name"] for index in sa.inspect(engine).get_indexes("messages")}
    assert "ix_messages_conversation_id" in indexes


def test_init_db_command_migrates_and_is_idempotent(database_url):
    env = {
        "PATH": f"{ROOT}/.venv/bin:/usr/bin:/bin",
        "DATABASE_URL": database_url.replace("postgresql://", "postgres://"),
    }
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "init-db"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"(schema {storage.SCHEMA_REVISION})" in result.stdout
    engine = database.make_engine(database_url)
    assert database.current_revision(engine) == storage.SCHEMA_REVISION
    engine.dispose()


MIGRATE = """
import sys
from trickle import database
engine = database.make_engine(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all of them at once
print(database.migrate(engine))
"""


def test_workers_starting_at_once_migrate_once_and_all_start(database_url):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, database_url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    ran = [out.strip() for out, _ in outputs]
    assert sorted(ran) == ["False"] * 5 + ["True"], ran  # one migrated, the others found it done
    engine = database.make_engine(database_url)
    assert database.current_revision(engine) == storage.SCHEMA_REVISION
    assert schema_differences(engine) == []
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_rows(database_url):
    """The old `create_all`, by an older version without some columns: migrating keeps the rows and
    adds what is missing."""
    old = sa.MetaData()
    sa.Table(
        "conversations",
        old,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "messages",
        old,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
    )
    engine = database.make_engine(database_url)
    old.create_all(engine)
    with engine.begin() as db:
        conversation = db.execute(
            sa.text("INSERT INTO conversations (title, created_at, updated_at) VALUES ('old', 1, 1) RETURNING id")
        ).scalar()
        message = db.execute(
            sa.text(
                "INSERT INTO messages (conversation_id, role, content, status, created_at, "
                "stop_requested) VALUES (:c, 'user', 'hello', 'done', 1, false) RETURNING id"
            ),
            {"c": conversation},
        ).scalar()

    assert database.migrate(engine) is True
    assert database.migrate(engine) is False
    assert [d for d in schema_differences(engine) if d[0] != "modify_default"] == []
    row = storage.get_message(engine, message)
    assert (row.content, row.active, row.reply_to, row.cost) == ("hello", True, None, None)
    assert [m.id for m in storage.list_messages(engine, conversation)] == [message]
    storage.create_conversation(engine, "new", owner="o", system_prompt="be brief")  # the new columns work
    engine.dispose()


def test_migrating_from_0004_keeps_the_conversations_and_pins_none(database_url):
    """A database of an earlier release: 0005 adds `pinned_at` (0006 the context added to answers) and
    the rows stay as they were."""
    from alembic import command

    engine = database.make_engine(database_url)
    with engine.begin() as db:
        command.upgrade(database._alembic_config(db), "0004")
    with engine.begin() as db:
        db.execute(
            sa.text(
                "INSERT INTO conversations (id, owner, title, created_at, updated_at) "
                "VALUES (1, 'o', 'older', 1, 1), (2, 'o', 'newer', 2, 2)"
            )
        )
        db.execute(
            sa.text(
                "INSERT INTO messages (conversation_id, role, content, status, created_at, stop_requested, active) "
                "VALUES (1, 'user', 'kept words', 'done', 1, false, true)"
            )
        )
    assert database.current_revision(engine) == "0004"

    assert database.migrate(engine) is True
    assert database.current_revision(engine) == storage.SCHEMA_REVISION == "0006"
    assert schema_differences(engine) == []
    listed = storage.list_conversations(engine, owner="o")
    assert [(c.id, c.title, c.pinned_at) for c in listed] == [(2, "newer", None), (1, "older", None)]
    assert [m.content for m in storage.list_messages(engine, 1)] == ["kept words"]
    assert storage.pin_conversation(engine, 1, "o")  # the new column works
    assert [c.id for c in storage.list_conversations(engine, owner="o")] == [1, 2]
    engine.dispose()


# -- the storage functions --------------------------------------------------------------------------


def test_conversations_owners_titles_and_search(engine):
    mine = storage.create_conversation(engine, "Recipes 100%_real", model="m", owner="alice", system_prompt="sp")
    other = storage.create_conversation(engine, "Taxes", owner="bob")
    time.sleep(0.01)
    storage.append_exchange(engine, other, "what about VAT?", "m")

    assert storage.get_conversation(engine, mine, owner="alice").title == "Recipes 100%_real"
    assert storage.get_conversation(engine, mine, owner="bob") is None
    assert storage.get_conversation(engine, mine).system_prompt == "sp"
    assert [c.id for c in storage.list_conversations(engine, owner="alice")] == [mine]
    assert [c.id for c in storage.list_conversations(engine)] == [other, mine]  # newest first
    assert [c.id for c in storage.list_conversations(engine, search="100%_")] == [mine]
    assert storage.list_conversations(engine, search="100%x") == []  # % and _ are literal
    assert [c.id for c in storage.list_conversations(engine, search="vat")] == [other]  # message text, any case

    storage.update_conversation(engine, mine, title="Renamed", model=None, owner="mallory")  # owner not allowed
    row = storage.get_conversation(engine, mine)
    assert (row.title, row.model, row.owner) == ("Renamed", None, "alice")


def test_exchanges_alternatives_and_edits(engine):
    conversation = storage.create_conversation(engine, "c", owner="o", system_prompt="Be brief.")
    question, answer = storage.append_exchange(engine, conversation, "Hi?", "m1")
    row = storage.get_message(engine, answer)
    assert (row.role, row.status, row.content, row.reply_to) == ("assistant", "streaming", "", question)
    assert row.active
    assert storage.get_message(engine, answer, owner="o").id == answer
    assert storage.get_message(engine, answer, owner="x") is None
    assert storage.count_streaming(engine, "o") == 1 and storage.count_streaming(engine, "x") == 0

    live_rows.finish_message(
        engine, answer, "Hello.", "done", tokens_in=3, tokens_out=2, ttft_ms=10, duration_ms=20, cost=0.5, model="m1b"
    )
    row = storage.get_message(engine, answer)
    assert (row.content, row.status, row.tokens_out, row.cost, row.model) == ("Hello.", "done", 2, 0.5, "m1b")
    assert storage.prompt_messages(engine, storage.get_conversation(engine, conversation), answer + 1) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]

    second = storage.regenerate(engine, answer, "m2")
    assert storage.alternatives(engine, storage.get_message(engine, second)) == [answer, second]
    assert storage.alternatives_by_question(engine, conversation) == {question: [answer, second]}
    assert [m.id for m in storage.list_messages(engine, conversation)] == [question, second]
    storage.activate(engine, storage.get_message(engine, answer))
    assert [m.id for m in storage.list_messages(engine, conversation)] == [question, answer]
    assert storage.count_messages(engine, conversation) == 2

    new_question, new_answer = storage.edit_and_resend(engine, storage.get_message(engine, question), "Hey?", "m1")
    assert [m.id for m in storage.list_messages(engine, conversation)] == [new_question, new_answer]
    assert storage.prompt_messages(engine, storage.get_conversation(engine, conversation), new_answer) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hey?"},
    ]

    live_rows.finish_message(engine, new_answer, "partial", "stopped")
    storage.restart_message(engine, new_answer, "m3")
    row = storage.get_message(engine, new_answer)
    assert (row.content, row.status, row.model, row.error, row.stop_requested) == ("", "streaming", "m3", None, False)


def test_live_progress_signals_and_orphans(engine):
    conversation = storage.create_conversation(engine, "c", owner="o")
    _, first = storage.append_exchange(engine, conversation, "one", "m")
    _, second = storage.append_exchange(engine, conversation, "two", "m")

    live_rows.save_progress(engine, [(first, "Hel"), (second, "Wor")])
    live_rows.save_progress(engine, [])
    assert storage.get_message(engine, first).content == "Hel"
    before = storage.get_message(engine, second).heartbeat_at
    time.sleep(0.01)
    live_rows.touch_heartbeats(engine, [second])
    assert storage.get_message(engine, second).heartbeat_at > before

    assert live_rows.read_signals(engine, [first, second]) == {first: (False, None), second: (False, None)}
    live_rows.request_stop(engine, first)
    polled_from = time.time()
    progress = live_rows.read_remote_progress(engine, {second: 0})
    assert progress[second].content == "Wor" and progress[second].status == "streaming"
    signals = live_rows.read_signals(engine, [first, second])
    assert signals[first] == (True, None)
    assert signals[second][0] is False and signals[second][1] >= polled_from  # a remote listener was seen

    live_rows.finish_message(engine, first, "Hello", "stopped")
    live_rows.request_stop(engine, second)  # only a streaming answer can be asked to stop
    assert live_rows.mark_interrupted(engine, time.time() - 60) == 0  # fresh heartbeats: not orphans
    assert live_rows.mark_interrupted(engine, time.time() + 1, [first]) == 0  # ended: never interrupted
    assert live_rows.mark_interrupted(engine, time.time() + 1) == 1
    row = storage.get_message(engine, second)
    assert (row.status, row.content) == ("interrupted", "Wor") and "restarted" in row.error


def test_a_late_progress_save_never_overwrites_the_final_answer(engine):
    """A save of the text so far can wait for a pooled connection while its answer ends (found under
    load by the bench's 2i rows: a finished answer kept 41 of its 978 characters)."""
    conversation = storage.create_conversation(engine, "c")
    _, answer = storage.append_exchange(engine, conversation, "q", "m")
    snapshot = [(answer, "The answer so")]  # taken by the monitor before the answer ended
    live_rows.finish_message(engine, answer, "The answer so far, and its end.", "done")
    live_rows.save_progress(engine, snapshot)  # …and written after
    row = storage.get_message(engine, answer)
    assert (row.content, row.status) == ("The answer so far, and its end.", "done")


def test_usage_budgets_survive_deleting_the_conversation(engine):
    conversation = storage.create_conversation(engine, "c", owner="o")
    ledger.record_usage(engine, "o", conversation, "m", 10, 5, 0.25)
    ledger.record_usage(engine, "p", None, "m", 1, 1, 0.0)
    assert ledger.tokens_used(engine, time.time() - 60) == 17
    assert ledger.tokens_used(engine, time.time() - 60, owner="o") == 15
    assert ledger.tokens_used(engine, time.time() + 60) == 0
    assert ledger.usage_totals(engine, "o") == {"tokens_in": 10, "tokens_out": 5, "cost": 0.25}
    assert ledger.usage_totals(engine, "o", conversation)["tokens_in"] == 10
    assert ledger.usage_totals(engine, "nobody") == {"tokens_in": 0, "tokens_out": 0, "cost": 0.0}

    storage.append_exchange(engine, conversation, "q", "m")
    storage.delete_conversation(engine, conversation)
    assert storage.get_conversation(engine, conversation) is None
    assert storage.list_messages(engine, conversation) == []
    assert ledger.tokens_used(engine, time.time() - 60, owner="o") == 15
    database.ping(engine)


def test_an_answer_followed_while_the_poll_is_in_flight_is_not_taken_for_deleted(engine, monkeypatch):
    """The poll's query yields to other requests under gevent; one of them may follow a new answer
    meanwhile. That answer is not in the rows the query read, and must not be judged deleted (it was:
    a follower on another instance got `done` after a few words, found by `python -m bench`'s 2i rows)."""
    from trickle.registry import Registry
    from trickle.settings import load_settings

    conversation = storage.create_conversation(engine, "t")
    first = storage.append_exchange(engine, conversation, "q1", "m")[1]
    second = storage.append_exchange(engine, conversation, "q2", "m")[1]
    followers = Registry(engine, load_settings({})).followers
    followers.track(first, "")
    read = live_rows.read_remote_progress

    def read_while_a_request_follows_another(engine_, cursors):
        rows = read(engine_, cursors)
        followers.track(second, "")  # what a request does while the query waits for the database
        return rows

    monkeypatch.setattr(live_rows, "read_remote_progress", read_while_a_request_follows_another)
    try:
        followers.poll()
        assert not followers.remote[first].finished and not followers.remote[second].finished
        storage.delete_conversation(engine, conversation)  # deleted for real: both are told so
        monkeypatch.setattr(live_rows, "read_remote_progress", read)
        followers.poll()
        assert followers.remote[first].error == followers.remote[second].error == "This conversation was deleted."
    finally:
        followers.remote.clear()  # the monitor greenlet, if it ever runs here, ends at once


def test_pinned_conversations_come_first_latest_pin_on_top_and_only_for_their_owner(engine):
    first, second, third = (storage.create_conversation(engine, name, owner="alice") for name in "abc")
    theirs = storage.create_conversation(engine, "theirs", owner="bob")
    for conversation in (first, second, third):  # distinct times, oldest first
        time.sleep(0.01)
        storage.append_exchange(engine, conversation, "q", "m")

    def listed() -> list[int]:
        return [c.id for c in storage.list_conversations(engine, owner="alice")]

    assert listed() == [third, second, first]

    assert storage.pin_conversation(engine, first, "alice")
    time.sleep(0.01)
    assert storage.pin_conversation(engine, second, "alice")
    assert listed() == [second, first, third]  # the latest pinned on top, then the rest by activity
    time.sleep(0.01)
    storage.append_exchange(engine, third, "again", "m")  # activity does not pass a pin
    assert listed() == [second, first, third]
    time.sleep(0.01)
    assert storage.pin_conversation(engine, first, "alice")  # pinning again brings it to the top
    assert listed() == [first, second, third]
    assert storage.get_conversation(engine, first).pinned_at > storage.get_conversation(engine, second).pinned_at
    assert [c.id for c in storage.list_conversations(engine, owner="alice", search="again")] == [third]

    assert not storage.pin_conversation(engine, theirs, "alice")  # another owner's: untouched
    assert not storage.pin_conversation(engine, first, "bob")
    assert storage.get_conversation(engine, theirs).pinned_at is None
    assert not storage.pin_conversation(engine, 10**9, "alice")

    assert storage.pin_conversation(engine, first, "alice", pinned=False)
    assert storage.get_conversation(engine, first).pinned_at is None
    assert listed() == [second, third, first]  # back among the rest, by activity
