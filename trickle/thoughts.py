"""Thoughts written inside the answer's text, as `<think>…</think>` and its other spellings.

Servers without a reasoning parser (and older fine-tunes) put a thinking model's thoughts in
`content`, between tags that may arrive split across chunks at any character. `TagSplitter` turns
such a stream into thought text and answer text, holding back only what could still be the start of
a tag. A chat template may open the tag itself, so that only the closing tag arrives: the text seen
before it was a thought, which `TagSplitter` says with a `RETHINK` piece.
"""

from __future__ import annotations

from dataclasses import dataclass

THOUGHT = "thought"
TEXT = "text"
RETHINK = "rethink"  # everything given as TEXT so far was a thought (the template opened the tag)

# Opening and closing spellings seen in the wild (Open WebUI's list); matched without regard to case.
TAGS = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<reason>", "</reason>"),
    ("<thought>", "</thought>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
    ("◁think▷", "◁/think▷"),
)
_OPENINGS = tuple(opening for opening, _ in TAGS)
_CLOSINGS = tuple(closing for _, closing in TAGS)

Piece = tuple[str, str]  # (THOUGHT | TEXT | RETHINK, text)


def _find(haystack: str, needles: tuple[str, ...]) -> tuple[int, str] | None:
    """The first of `needles` in `haystack` (case-insensitive): its position and spelling."""
    lowered = haystack.lower()
    found = None
    for needle in needles:
        at = lowered.find(needle.lower())
        if at >= 0 and (found is None or at < found[0]):
            found = (at, needle)
    return found


def _held_back(text: str, needles: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of one of `needles`."""
    lowered = text.lower()
    longest = 0
    for needle in needles:
        needle = needle.lower()
        for size in range(min(len(needle) - 1, len(lowered)), longest, -1):
            if needle.startswith(lowered[-size:]):
                longest = size
                break
    return longest


class TagSplitter:
    """Feed it content deltas; it returns the pieces they hold. Call `end()` when the stream ends.

    Tags count only where a model puts them: an opening tag before any answer text (whitespace
    aside), a closing one while thinking, or a first closing tag with no opening one at all.
    """

    def __init__(self):
        self.state = "start"  # start → thinking → answer, or start → answer
        self.closing: tuple[str, ...] = _CLOSINGS
        self.pending = ""  # text held back: it may be the start of a tag
        self.thought_seen = False
        self.last_char = ""  # of the answer text given so far

    def feed(self, delta: str) -> list[Piece]:
        self.pending += delta
        pieces: list[Piece] = []
        while self.pending:
            before = self.pending
            getattr(self, f"_{self.state}")(pieces)
            if self.pending == before:  # waiting for more text to decide
                break
        return [piece for piece in pieces if piece[1] or piece[0] == RETHINK]

    def end(self) -> list[Piece]:
        """What was held back, as what it would have been had no tag come."""
        rest, self.pending = self.pending, ""
        if not rest:
            return []
        if self.state == "start":
            return [(TEXT, rest)] if rest.strip() else []
        return [(THOUGHT if self.state == "thinking" else TEXT, rest)]

    def _start(self, pieces: list[Piece]) -> None:
        stripped = self.pending.lstrip()
        if not stripped:
            return  # only whitespace so far
        for opening in _OPENINGS:
            if stripped.lower().startswith(opening.lower()):
                self.pending = stripped[len(opening) :]
                self.state, self.closing = "thinking", (TAGS[_OPENINGS.index(opening)][1],)
                self.thought_seen = True
                return
        if any(opening.lower().startswith(stripped.lower()) for opening in _OPENINGS):
            return  # could still become an opening tag
        self.state = "answer"

    def _thinking(self, pieces: list[Piece]) -> None:
        found = _find(self.pending, self.closing)
        if found is None:
            keep = _held_back(self.pending, self.closing)
            cut = len(self.pending) - keep
            pieces.append((THOUGHT, self.pending[:cut]))
            self.pending = self.pending[cut:]
            return
        at, closing = found
        pieces.append((THOUGHT, self.pending[:at]))
        self.pending = self.pending[at + len(closing) :].lstrip()
        self.state = "answer"
        if not self.pending:
            self.state = "after"  # the answer's leading blank lines are not part of it

    def _after(self, pieces: list[Piece]) -> None:
        self.pending = self.pending.lstrip()
        if self.pending:
            self.state = "answer"

    def _answer(self, pieces: list[Piece]) -> None:
        # One thought per answer: any later tag is just text. No tag starts without `<` or `◁`: the
        # usual token is tested cheaply.
        if self.thought_seen:
            pieces.append((TEXT, self.pending))
            self.pending = ""
            return
        if "<" not in self.pending and "◁" not in self.pending:
            self._text(pieces, len(self.pending))
            return
        found = _find(self.pending, _CLOSINGS)
        if found is None:
            keep = _held_back(self.pending, _CLOSINGS)
            self._text(pieces, len(self.pending) - keep)
            return
        at, closing = found
        before = self.pending[at - 1] if at else self.last_char
        if before not in ("", " ", "\t", "\r", "\n"):  # `</think>` quoted in an answer is text
            self._text(pieces, at + len(closing))
            return
        # A closing tag nobody opened, on its own: the template opened it, all so far was a thought.
        self.thought_seen = True
        pieces.append((RETHINK, ""))
        pieces.append((THOUGHT, self.pending[:at]))
        self.pending = self.pending[at + len(closing) :].lstrip()
        if not self.pending:
            self.state = "after"

    def _text(self, pieces: list[Piece], cut: int) -> None:
        text, self.pending = self.pending[:cut], self.pending[cut:]
        if text:
            pieces.append((TEXT, text))
            self.last_char = text[-1]


@dataclass(frozen=True, slots=True)
class Thought:
    """A delta of thought text from the provider, beside the answer's `str` deltas."""

    text: str


class Rethink:
    """Everything streamed as answer text so far was a thought (the template opened the tag)."""

    def __repr__(self) -> str:
        return "RETHOUGHT"


RETHOUGHT = Rethink()

_REASONING_FIELDS = ("reasoning_content", "reasoning")  # DeepSeek, vLLM, llama.cpp, LM Studio; OpenRouter, Ollama


def _details_text(details) -> str:
    """OpenRouter's `reasoning_details`: the text of its `reasoning.text` and `reasoning.summary` parts
    (encrypted ones carry nothing to show)."""
    if not isinstance(details, list):
        return ""
    out = []
    for detail in details:
        if isinstance(detail, dict):
            text = detail.get("text") if detail.get("type") == "reasoning.text" else detail.get("summary")
            if isinstance(text, str):
                out.append(text)
    return "".join(out)


class DeltaReader:
    """Turns the `delta` objects of one streamed chat completion into answer text (`str`),
    `Thought`s and `RETHOUGHT`, whatever dialect the server speaks."""

    __slots__ = ("tags",)

    def __init__(self):
        self.tags = TagSplitter()

    def read(self, delta: dict) -> list:
        out = []
        for field in _REASONING_FIELDS:
            reasoning = delta.get(field)
            if reasoning and isinstance(reasoning, str):
                out.append(Thought(reasoning))
                break  # OpenRouter sends the same text in `reasoning` and `reasoning_details`
        else:
            details = delta.get("reasoning_details")
            if details:
                text = _details_text(details)
                if text:
                    out.append(Thought(text))
        content = delta.get("content")
        if content:
            self._pieces(self.tags.feed(content), out)
        return out

    def end(self) -> list:
        """What the tag splitter held back, once the stream ended."""
        out = []
        self._pieces(self.tags.end(), out)
        return out

    @staticmethod
    def _pieces(pieces: list[Piece], out: list) -> None:
        for kind, text in pieces:
            if kind == TEXT:
                out.append(text)
            elif kind == THOUGHT:
                out.append(Thought(text))
            else:
                out.append(RETHOUGHT)
