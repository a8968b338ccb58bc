"""Thinking models in the engine: every dialect becomes thought deltas, the log keeps thought and
answer in one offset space, and listeners resume anywhere with neither lost nor repeated."""

from __future__ import annotations

import gevent
import pytest

from tests.fake_upstream import THOUGHT_DIALECTS, Script, thought_chunks
from trickle.followers import RemoteAnswer
from trickle.generation import Generation
from trickle.listen import Encoder, PageEvents, Start, Update, follow
from trickle.providers import Usage
from trickle.thoughts import RETHOUGHT, DeltaReader, Rethink, Thought

THOUGHT = "Let me think.\n\nThe user says hi, so: greet back."
ANSWER = "Hello **there**.\n\nHow can I help?"
INTERVALS = {"flush_interval": 0.0, "ping_interval": 5.0}


def read(deltas: list[dict]) -> tuple[str, str]:
    """(thought, answer) as the engine's log would hold them."""
    reader = DeltaReader()
    thought, answer = [], []
    for piece in [piece for delta in deltas for piece in reader.read(delta)] + reader.end():
        if isinstance(piece, Thought):
            thought.append(piece.text)
        elif isinstance(piece, Rethink):
            thought, answer = thought + answer, []
        else:
            answer.append(piece)
    return "".join(thought), "".join(answer)


@pytest.mark.parametrize("dialect", THOUGHT_DIALECTS)
def test_every_dialect_gives_the_thought_apart_from_the_answer(dialect):
    thoughts, lead = thought_chunks(Script(thought=THOUGHT, dialect=dialect))
    deltas = thoughts + [{"content": piece} for piece in lead] + [{"content": ANSWER[:7]}, {"content": ANSWER[7:]}]
    thought, answer = read(deltas)
    assert thought.strip() == THOUGHT.strip()
    assert answer == ANSWER


def test_reasoning_details_alone_and_encrypted_ones():
    details = [{"type": "reasoning.text", "text": "a"}, {"type": "reasoning.encrypted", "data": "xx"}]
    assert (
        read([{"reasoning_details": details}, {"reasoning_details": [{"type": "reasoning.summary", "summary": "b"}]}])[
            0
        ]
        == "ab"
    )


class Scripted:
    """A provider replaying deltas (str, Thought, RETHOUGHT), `gap` s apart."""

    label = "scripted"

    def __init__(self, deltas, gap: float = 0.0):
        self.deltas = deltas
        self.gap = gap

    def stream(self, messages, model):
        for delta in self.deltas:
            if self.gap:
                gevent.sleep(self.gap)
            yield delta
        yield Usage(1, 1)


def run(deltas, gap: float = 0.0) -> Generation:
    generation = Generation(1, Scripted(deltas, gap), [], "m", stored=False).start()
    generation.done.wait(5)
    return generation


class Recorder(Encoder):
    """What a client assembles: thought and answer, rebuilt from the events alone."""

    def __init__(self):
        self.thoughts, self.answer = "", ""

    def start(self, prefix, cursor, thought_length=0):
        self.thoughts, self.answer = prefix[:thought_length], prefix[thought_length:]
        return ""

    def thought(self, delta, cursor):
        self.thoughts += delta
        return "t"

    def thought_done(self, event):
        if event.rethought:
            self.answer = ""
        self.thoughts = event.whole_thought
        return "d"

    def text(self, delta, cursor):
        self.answer += delta
        return "a"

    def finish(self, followed, cursor):
        return "end"


def test_the_log_holds_the_thought_then_the_answer_in_one_offset_space():
    generation = run([Thought("Hmm, "), Thought("a greeting."), "Hi", " there."])
    assert generation.thought() == "Hmm, a greeting." and generation.text() == "Hi there."
    assert generation.thought_length == len("Hmm, a greeting.") and generation.length == len(
        "Hmm, a greeting.Hi there."
    )
    assert generation.thought_ms is not None and generation.ttft_ms is not None


def test_a_template_opened_thought_moves_the_boundary_not_the_text():
    generation = run(["I should ", "greet.", RETHOUGHT, "Hello!"])
    assert generation.thought() == "I should greet." and generation.text() == "Hello!"
    assert generation.logged() == "I should greet.Hello!"


def test_a_thought_after_the_answer_began_is_activity_not_answer():
    generation = run([Thought("a"), "Answer", Thought("late")])
    assert generation.thought() == "a" and generation.text() == "Answer"


@pytest.mark.parametrize(
    "deltas",
    [
        [Thought("one "), Thought("two\n\nthree "), "Answer ", "text\n\nmore"],
        ["was ", "thinking", RETHOUGHT, "Then ", "the answer"],
        ["plain ", "answer ", "only"],
    ],
)
def test_a_listener_resumes_at_any_cursor_without_loss_or_repetition(deltas):
    generation = run(deltas)
    whole = generation.logged()
    for cursor in range(len(whole) + 1):
        # A live answer: replayed from `cursor`, the client holding what came before it.
        live = RemoteAnswer(1, "")
        live.feed(0, whole[:cursor], thought_length=min(generation.thought_length, cursor))
        recorder = Recorder()
        events = follow(live, cursor, **INTERVALS)
        assert "".join(recorder.encode(next(events))) == ""
        live.feed(cursor, whole[cursor:], thought_length=generation.thought_length, thought_ms=1)
        live.update(generation.text(), "done", None, generation.thought(), 1)
        for event in events:
            recorder.encode(event)
        assert (recorder.thoughts, recorder.answer) == (generation.thought(), generation.text()), cursor


def test_a_listener_that_saw_the_answer_learns_it_was_a_thought():
    live = RemoteAnswer(1, "was thinking")
    events = follow(live, 0, **INTERVALS)
    assert next(events) == Start("", 0)
    assert next(events) == Update(12, "was thinking")
    live.feed(12, "Answer", thought_length=12, thought_ms=5)
    live.update("Answer", "done", None, "was thinking", 5)
    update = next(events)
    assert update.rethought and update.whole_thought == "was thinking" and update.text == "Answer"


def test_the_page_opens_the_disclosure_streams_into_it_then_closes_it():
    rendered = []

    def render_thought(thought, thinking, thought_ms):
        rendered.append((thought, thinking, thought_ms))
        return f"<details>{'open' if thinking else thought_ms}</details>"

    page = PageEvents(7, lambda followed, shown: "final", render_thought)
    page.start("", 0, 0)
    # Into the disclosure the streaming bubble already holds (hidden while empty): no element swapped in.
    assert page.thought("Hmm", 3) == "event: thought-delta\nid: 3\ndata: Hmm\n\n"
    assert page.thought(", well", 9).startswith("event: thought-delta\nid: 9\ndata: , well")
    closing = page.thought_done(
        Update(14, "Hi", thought="", thought_cursor=9, whole_thought="Hmm, well", thought_ms=2500)
    )
    assert closing.startswith("event: thought-state\nid: 9\n") and rendered[-1] == ("Hmm, well", False, 2500)
    assert page.text("Hi", 11).startswith("event: delta\nid: 11\ndata: Hi")


def test_the_page_empties_an_answer_that_was_a_thought():
    page = PageEvents(7, lambda followed, shown: "final", lambda thought, thinking, ms: "<details></details>")
    page.start("was thinking", 12, 0)
    event = page.thought_done(
        Update(12, "", thought_cursor=12, whole_thought="was thinking", rethought=True, thinking=True)
    )
    assert '<div id="blocks-7" hx-swap-oob="innerHTML"></div><div id="tail-7" hx-swap-oob="innerHTML">' in event
    assert '<p class="tail-opening"><span class="tail-end" id="tail-7-end"></span></p>' in event  # emptied
    assert page.thought(" more", 17).startswith("event: thought-delta")


def test_each_provider_gets_the_effort_in_its_own_field_or_not_at_all():
    from trickle.openai_compatible import OpenAICompatible
    from trickle.provider_choice import configured_endpoint
    from trickle.providers import DemoModel
    from trickle.reasoning import effort_fields
    from trickle.settings import load_settings

    def provider(env):
        return OpenAICompatible(configured_endpoint(load_settings(env)), load_settings(env))

    openai, openrouter = provider({"OPENAI_API_KEY": "k"}), provider({"OPENROUTER_API_KEY": "k"})
    ollama = provider({"OLLAMA_HOST": "http://127.0.0.1:11434"})
    assert effort_fields(openai, "high") == {"reasoning_effort": "high"}
    assert effort_fields(openrouter, "low") == {"reasoning": {"effort": "low"}}
    assert effort_fields(ollama, "medium") == {"reasoning_effort": "medium"}
    assert effort_fields(ollama, "off") == {"reasoning_effort": "none"}
    assert effort_fields(openai, "off") == effort_fields(openrouter, "off") == {}  # only Ollama turns it off
    assert effort_fields(openai, None) == effort_fields(DemoModel(0), "high") == {}
