"""The pure parts: settings validation, SSE framing, markdown rendering and the block splitter."""

import random
import re

import pytest

from trickle import sse
from trickle.provider_choice import configured_endpoint
from trickle.providers import DemoModel
from trickle.render import Splitter, render_markdown
from trickle.settings import SettingsError, load_settings


def endpoint_of(env: dict):
    return configured_endpoint(load_settings(env))


def test_no_configuration_names_no_endpoint_and_no_model():
    settings = load_settings({})
    assert endpoint_of({}) is None
    assert settings.chat_model is None and settings.forced_provider is None  # the provider's default comes in


def test_provider_presets_from_their_own_variables():
    assert endpoint_of({"OPENAI_API_KEY": "sk"}).base_url == "https://api.openai.com/v1"
    custom = endpoint_of({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"})
    assert custom.base_url == "http://127.0.0.1:9/v1" and custom.name == "custom"
    assert endpoint_of({"OPENROUTER_API_KEY": "k"}).base_url == "https://openrouter.ai/api/v1"
    ollama = endpoint_of({"OLLAMA_HOST": "http://127.0.0.1:11434"})
    assert ollama.base_url == "http://127.0.0.1:11434/v1"
    assert endpoint_of({"CHAT_PROVIDER": "ollama"}).base_url == "http://127.0.0.1:11434/v1"
    assert endpoint_of({"CHAT_PROVIDER": "demo", "OPENAI_API_KEY": "sk"}) is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"STREAM_FLUSH_MS": "fast"}, "STREAM_FLUSH_MS"),
        ({"DISCONNECT_GRACE_S": "-1"}, "DISCONNECT_GRACE_S"),
        ({"OPENAI_BASE_URL": "localhost:8080"}, "OPENAI_BASE_URL"),
        ({"CHAT_PROVIDER": "gemini"}, "CHAT_PROVIDER"),
        ({"CHAT_PROVIDER": "openrouter"}, "OPENROUTER_API_KEY"),
        ({"MAX_INPUT_CHARS": "0"}, "MAX_INPUT_CHARS"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(env, name):
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_sse_event_splits_multiline_data():
    frame = sse.event("a\nb\r\nc", "delta", 7)
    assert frame == "event: delta\nid: 7\ndata: a\ndata: b\ndata: c\n\n"


def test_markdown_is_rendered_and_sanitized():
    html = str(render_markdown("# Hi\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](https://e.org)"))
    assert "<h1>Hi</h1>" in html
    assert "<script" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html  # shown as text, never run
    assert 'rel="noopener noreferrer"' in html


def test_code_fences_get_highlighting_language_and_copy_button():
    html = str(render_markdown("```python\ndef f():\n    return 1\n```\n"))
    assert 'class="code-lang">python<' in html
    assert 'class="copy"' in html and "hl-k" in html


def test_splitter_agrees_with_itself_however_the_text_is_cut():
    text = DemoModel(0).answer([{"role": "user", "content": "a question"}])
    whole = Splitter()
    whole_blocks = whole.feed(text)
    for seed in range(30):
        rng = random.Random(seed)
        splitter, blocks, position = Splitter(), [], 0
        while position < len(text):
            step = rng.randint(1, 15)
            blocks += splitter.feed(text[position : position + step])
            position += step
        assert blocks == whole_blocks
        assert splitter.tail == whole.tail


def test_splitter_never_finishes_an_open_code_fence():
    splitter = Splitter()
    assert splitter.feed("Intro\n\n```python\nx = 1\n\ny = 2\n") == ["<p>Intro</p>\n"]
    assert splitter.tail.startswith("```python")
    assert splitter.feed("```\n\nAfter\n")[0].startswith('<div class="code">')


def test_redis_keys_are_scoped_to_the_database_unless_a_prefix_is_set():
    from sqlalchemy.engine import make_url

    from trickle.live import namespace

    one, same, other = (
        make_url(u) for u in ("postgresql://h:5432/chat", "postgresql://h:5432/chat", "postgresql://h:5432/other")
    )
    assert namespace(one) == namespace(same) != namespace(other)
    prefix = load_settings({"REDIS_KEY_PREFIX": " team-a "}).redis_key_prefix
    assert namespace(one, prefix) == namespace(other, prefix) == "team-a:"
    assert load_settings({}).redis_key_prefix is None


TRICKY_MARKDOWN = [
    "Para one\nlazy line\n\n- a\n- b\n\n- c\n\n1. x\n2. y\n\nTitle\n===\n\n> quote\ncontinued\n\n    indented code\n\n"
    "```\nfence\n\nwith blank\n```\ntext after\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n***\n\nend",
    "1. one\n\n   inner para\n\n2. two\n   - nested\n   - more\n\n3. three\n\nfinal *para*",
    "<div>raw html</div>\n\ntext\n\n  - item\n\n    continued\n\nx\n",
    DemoModel(0).answer([{"role": "user", "content": "a *table* please"}]),
]


@pytest.mark.parametrize("text", TRICKY_MARKDOWN)
def test_finished_blocks_and_the_rendered_tail_are_the_whole_render(text):
    """Why the page may keep its streamed blocks when an answer ends (see pages._kept_blocks)."""
    from trickle.render import renders_by_blocks

    def tags_only(html: str) -> str:  # whitespace between block tags renders as nothing
        return re.sub(r">\s+<", "><", html.strip())

    assert renders_by_blocks(text)
    rng = random.Random(7)
    for _ in range(25):
        splitter, blocks, at = Splitter(), [], 0
        while at < len(text):
            step = rng.randint(1, 12)
            blocks += splitter.feed(text[at : at + step])
            at += step
        pieced = "".join(blocks) + str(render_markdown(splitter.tail))
        assert tags_only(pieced) == tags_only(str(render_markdown(text)))


def test_link_reference_definitions_render_whole():
    from trickle.render import renders_by_blocks

    assert not renders_by_blocks("See [the docs][d].\n\n[d]: https://example.org\n")
    assert renders_by_blocks("A [plain](https://example.org) link and a [bracket] in text.\n")


def test_generations_remote_answers_and_ended_messages_all_give_listeners_one_face():
    from trickle.followers import RemoteAnswer
    from trickle.generation import Generation
    from trickle.textlog import EndedMessage, Followed

    for followed in (Generation(1, DemoModel(0), [], "demo"), RemoteAnswer(1, "Hi"), EndedMessage("Hi", "done")):
        assert isinstance(followed, Followed) and followed.abandoned is False


def test_follow_yields_text_events_that_each_encoder_writes_in_its_own_form():
    from trickle.followers import RemoteAnswer
    from trickle.listen import PING, ApiEvents, Start, Update, follow, sse_stream
    from trickle.textlog import EndedMessage

    remote = RemoteAnswer(1, "Hello, ")
    remote.feed(7, "world")
    remote.update("Hello, world", "done", None)
    intervals = {"flush_interval": 0.01, "ping_interval": 1.0}
    assert list(follow(remote, 0, **intervals)) == [Start("", 0), Update(12, "Hello, world", ended=remote)]
    # One write for the whole batch; a first byte at once even when the start has nothing to say.
    assert list(sse_stream(remote, 0, ApiEvents(), **intervals)) == [
        sse.PING,
        b'data: {"content":"Hello, world"}\n\ndata: [DONE]\n\n',  # byte for byte what the reference relay writes
    ]
    ended = EndedMessage("Hello", "failed", "It broke.")
    assert list(follow(ended, 2, **intervals)) == [Start("", 2), Update(2, ended=ended)]  # only its end
    assert ApiEvents().encode(PING) == []

    abandoned = RemoteAnswer(2, "Half an ans")
    abandoned.abandoned = True  # this worker shuts down: the listener ends without a final event
    assert list(follow(abandoned, 0, **intervals)) == [Start("", 0)]


def test_the_registry_counts_each_owner_s_unstored_answers_while_they_run():
    import gevent.event
    import sqlalchemy as sa

    from trickle import database
    from trickle.registry import Registry

    class Held(DemoModel):
        """Answers once the test lets it."""

        def __init__(self):
            super().__init__(0)
            self.gate = gevent.event.Event()

        def stream(self, messages, model):
            self.gate.wait(10)
            yield from super().stream(messages, model)

    engine = sa.create_engine("sqlite://")
    database.migrate(engine)
    registry = Registry(engine, load_settings({}))
    question = [{"role": "user", "content": "hi"}]
    quick, held = DemoModel(0), Held()
    alice = [registry.start(f"a{n}", quick, question, "demo", stored=False, owner="alice") for n in range(2)]
    bob = registry.start("b", held, question, "demo", stored=False, owner="bob")
    counts = registry.count_unstored
    assert (counts("alice"), counts("bob"), counts("eve")) == (2, 1, 0)
    for generation in alice:
        assert generation.done.wait(10)
    assert (counts("alice"), counts("bob")) == (0, 1)
    held.gate.set()
    assert bob.done.wait(10) and registry.count_unstored("bob") == 0
