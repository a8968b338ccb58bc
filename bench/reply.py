"""The benchmark's deterministic reply: the same tokens for the upstream and the load generator.

Plain text on one line (so the page flow sends only `delta` events and `done`),
with a few characters that each relay must escape correctly: HTML (`<`, `&`,
quotes), JSON (quotes, a backslash) and multi-byte UTF-8 (accents, a dash, an
emoji outside the BMP, which JSON may write as a surrogate pair).
"""

from __future__ import annotations

WORDS = (
    "Trickle",
    " streams",
    " every",
    " token",
    " as",
    " it",
    " arrives",
    ",",
    " and",
    " the",
    " relay",
    " must",
    " keep",
    " up",
    ":",
    " café",
    " naïve",
    " —",
    " <b>bold?</b>",
    " a",
    " &",
    " b",
    ' "quoted"',
    " it's",
    " 50%",
    " 🙂",
    " back\\slash",
    " tab\there",
    " done",
    ".",
)


def reply_tokens(count: int) -> list[str]:
    """`count` tokens, the same for a given count; the first one has no leading space."""
    tokens = [WORDS[(i * 7 + i // len(WORDS)) % len(WORDS)] for i in range(count)]
    if tokens:
        tokens[0] = "Hello"
    return tokens


def reply_text(count: int) -> str:
    return "".join(reply_tokens(count))
