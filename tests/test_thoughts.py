"""Thoughts inside the content: every spelling, split anywhere, and a tag the template opened."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.thoughts import RETHINK, TAGS, TEXT, THOUGHT, TagSplitter


def split(chunks: list[str]) -> tuple[str, str, bool]:
    """Feed the chunks; (thought, answer, rethought) as a listener would assemble them."""
    splitter = TagSplitter()
    thought, answer, rethought = [], [], False
    pieces = [piece for chunk in chunks for piece in splitter.feed(chunk)] + splitter.end()
    for kind, text in pieces:
        if kind == RETHINK:
            rethought = True
            thought, answer = answer + thought, []
        elif kind == THOUGHT:
            thought.append(text)
        else:
            assert kind == TEXT
            answer.append(text)
    return "".join(thought), "".join(answer), rethought


def cuts(text: str, positions: list[int]) -> list[str]:
    points = sorted({p % (len(text) + 1) for p in positions})
    edges = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


@pytest.mark.parametrize(("opening", "closing"), TAGS)
def test_every_spelling_is_a_thought_and_never_part_of_the_answer(opening, closing):
    thought, answer, rethought = split([f"\n{opening}Let me think.\nStill thinking.{closing}\n\nThe answer."])
    assert (thought, answer, rethought) == ("Let me think.\nStill thinking.", "The answer.", False)


def test_tags_are_matched_whatever_their_case():
    assert split(["<Thought>hmm</Thought>Yes."]) == ("hmm", "Yes.", False)


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from(TAGS),
    thought=st.text(min_size=1).filter(lambda t: "<" not in t and "◁" not in t and t.strip()),
    answer=st.text(min_size=1).filter(lambda t: "<" not in t and "◁" not in t and t.strip() == t),
    positions=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_split_across_chunks_at_any_character_gives_the_same_pieces(tag, thought, answer, positions):
    opening, closing = tag
    whole = f"{opening}{thought}{closing}\n\n{answer}"
    assert split(cuts(whole, positions)) == (thought, answer, False)


def test_an_answer_without_tags_passes_through_as_it_came():
    chunks = ["Hello", " <b>world</b>", " a < b", " and 2 <", "3."]
    assert split(chunks) == ("", "Hello <b>world</b> a < b and 2 <3.", False)


def test_a_tag_after_the_answer_began_is_text():
    assert split(["The tag <think> opens a thought."]) == ("", "The tag <think> opens a thought.", False)


def test_only_the_closing_tag_when_the_template_opened_it():
    chunks = ["Okay, the user", " wants a greeting.\n</th", "ink>\n\nHello!"]
    assert split(chunks) == ("Okay, the user wants a greeting.\n", "Hello!", True)


def test_a_closing_tag_quoted_in_an_answer_is_text():
    text = "Models end a thought with `</think>` and then answer."
    assert split([text]) == ("", text, False)


def test_a_thought_cut_off_by_the_end_of_the_stream_is_kept_as_a_thought():
    assert split(["<think>I was about to", " say </thi"]) == ("I was about to say </thi", "", False)


def test_one_thought_per_answer_a_later_tag_is_text():
    assert split(["<think>a</think>b <think>c</think>"]) == ("a", "b <think>c</think>", False)
