"""Context added while an answer is written: the same answer continues with a new user turn.

The answer so far is kept; the request writing it is cut, and a new one continues it on the
history, the answer so far as an assistant turn and the added context as a user turn. For
the model those are turns of a conversation; for a person it is one answer with a remark in
it. So an addition is kept as its offset in the answer's text (`at`) and its text: the answer
is cut at those offsets wherever it goes upstream (`interleaved`) or is shown (`segments`).
This module holds that shape and the generation's side of it; `context_store.py` its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gevent.event import AsyncResult

from .providers import Usage

# Written into the answer where context was added, unless the answer already ends a paragraph
# there: the text after it then starts a block of its own, live and once rendered. An addition's
# offset is where that text begins, past the separator.
SEPARATOR = "\n\n"


class Continue(BaseException):
    """Cuts the request writing an answer, so that it continues with the context added.

    A BaseException, like `generation.Interrupt`, so that no library swallows it."""


@dataclass
class AddedContext:
    """One addition waiting to be taken: `result` gets its offset in the answer once it is
    (stored first, for a stored answer), None when the answer ended before, or the error."""

    text: str
    result: AsyncResult = field(default_factory=AsyncResult)

    def wait(self, timeout: float | None = None) -> int | None:
        """Its offset, once taken; None when the answer ended first. Raises what kept it from being stored."""
        return self.result.get(timeout=timeout)


class Additions:
    """The additions of one running answer: those waiting, and those placed in it."""

    def __init__(self):
        self.waiting: list[AddedContext] = []
        self.placed: list[tuple[int, str]] = []  # (offset in the answer, text), in order

    def add(self, text: str) -> AddedContext:
        added = AddedContext(text)
        self.waiting.append(added)
        return added

    def take(self) -> list[AddedContext]:
        taken, self.waiting = self.waiting, []
        return taken

    def refuse_waiting(self) -> None:
        """The answer ended: what was still waiting is not part of it."""
        for added in self.take():
            added.result.set(None)


def interleaved(answer: str, added: list[tuple[int, str]]) -> list[dict]:
    """The turns an answer with additions is, upstream: its text cut at each addition's offset
    (assistant turns, empty parts left out), each addition after its part (a user turn)."""
    turns, start = [], 0
    for at, text in added:
        part = answer[start:at].strip()
        if part:
            turns.append({"role": "assistant", "content": part})
        turns.append({"role": "user", "content": text})
        start = at
    rest = answer[start:].strip()
    if rest:
        turns.append({"role": "assistant", "content": rest})
    return turns


def segments(answer: str, added: list[tuple[int, str]]) -> tuple[list[tuple[str, str]], str]:
    """An answer as shown: (the text before each addition, the addition), then the text after the last."""
    before, start = [], 0
    for at, text in added:
        at = max(start, min(at, len(answer)))  # a copy that lags the answer (another worker's) holds less
        before.append((answer[start:at], text))
        start = at
    return before, answer[start:]


def summed(spent: Usage | None, usage: Usage) -> Usage:
    """The usage of an answer written by several requests."""
    if spent is None:
        return usage
    return Usage(
        spent.prompt_tokens + usage.prompt_tokens,
        spent.completion_tokens + usage.completion_tokens,
        counted=spent.counted or usage.counted,
    )
