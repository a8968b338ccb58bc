"""The unfinished tail shown formatted while it streams: what the page holds depends on the text
alone (however it was cut into flushes, wherever a listener attached), and a flush costs at most
the unfinished block. (Link reference definitions, which reach across blocks, are left out: the
final swap renders such an answer whole.)"""

from __future__ import annotations

import html
import random
import re

import pytest

from bench.markdown import long_answer
from bench.reply import reply_text
from tests.test_units import TRICKY_MARKDOWN
from trickle import live_markdown
from trickle.listen import PageEvents
from trickle.live_markdown import LiveTail
from trickle.render import Splitter

ID = 7
END = re.compile(r'(<span class="tail-end" id="(?:thought-)?tail-7-end">)([^<]*)</span>')
OOB = re.compile(r'<(div|span|tbody) id="(tail-7[^"]*)" hx-swap-oob="(innerHTML|beforeend)">')
CONTENT_ENDS = {
    "end": "</span>",
    "code": '</span><span class="tail-end"',
    "rows": "</tbody><tbody",
    "open": "</tbody></table>",
}

TEXTS = [
    *TRICKY_MARKDOWN,
    long_answer(150),
    reply_text(300),
    "Plain **bold** then *em*, `code`, ~~gone~~ and a [link](https://example.org) (aside) & more; done.\n\n"
    "- one **two**\n- three\n  continued\n\n1. first\n2) second\n\n> quoted *text*\n> more\n\n"
    "# Title #\n\nSetext\n---\n\n| a | b |\n|:--|--:|\n| 1 | 2 | 3 |\n| x\n\n"
    "  ```js\n  let a = `t`;\n    b();\n  ```\n\n~~~\n```\nnot closed by backticks\n~~~~\n\n"
    "A [link][] and <https://example.org/a> and <b>tag</b> &amp; &#35; C# a\\*b\n",
]


def frames(wire: str) -> list[tuple[str, str]]:
    """(event, data) of each SSE frame."""
    out = []
    for frame in wire.split("\n\n"):
        if frame:
            lines = frame.split("\n")
            name = lines[0].removeprefix("event: ")
            out.append((name, "\n".join(line.removeprefix("data: ") for line in lines if line.startswith("data: "))))
    return out


class Page:
    """What htmx makes of the answer's events, as HTML strings: the blocks and the tail's inner HTML."""

    def __init__(self, blocks: list[str], tail: str):
        self.blocks, self.tail = "".join(blocks), tail
        self.events: list[str] = []

    def apply(self, wire: str) -> None:
        for event, data in frames(wire):
            self.events.append(event)
            if event == "delta":
                self.tail = END.sub(lambda m, data=data: m[1] + m[2] + data + "</span>", self.tail)
                continue
            swaps = list(OOB.finditer(data))
            if event == "block":
                self.blocks += data[: swaps[0].start()]
            else:
                assert event == "tail" and swaps and swaps[0].start() == 0, data  # out-of-band swaps only
            for swap, after in zip(swaps, [*swaps[1:], None], strict=True):
                tag, target, how = swap.groups()
                content = data[swap.end() : after.start() if after else len(data)].removesuffix(f"</{tag}>")
                self.swap(target, how, content)

    def swap(self, target: str, how: str, content: str) -> None:
        if target == f"tail-{ID}":
            assert how == "innerHTML"
            self.tail = content
            return
        start = self.tail.index(f'id="{target}">') + len(f'id="{target}">')
        end = self.tail.index(CONTENT_ENDS[target.removeprefix(f"tail-{ID}-")], start)
        kept = self.tail[start:end] if how == "beforeend" else ""
        self.tail = self.tail[:start] + kept + content + self.tail[end:]

    def shown(self) -> str:
        """The page as a reader sees it: text appended at the tail's end reads as if rendered there."""
        tail = END.sub(lambda m: m[2] + m[1] + "</span>", self.tail).replace('<p class="tail-opening">', "<p>")
        return self.blocks + tail


def page_at(text: str) -> Page:
    """The page loaded when the answer was `text` so far (the message view's blocks and tail)."""
    splitter = Splitter()
    blocks = splitter.feed(text)
    return Page(blocks, LiveTail(f"tail-{ID}", splitter.tail).html())


def reloaded(text: str) -> str:
    return page_at(text).shown()


def stream(page: Page, events: PageEvents, text: str, start: int, rng: random.Random, stop: int | None = None):
    """Feed `text[start:stop]` to `events` in random flushes, checking the page against a reload after each."""
    at, stop = start, len(text) if stop is None else stop
    while at < stop:
        step = min(rng.choice((1, 2, 3, 5, 8, 20)), stop - at)
        page.apply(events.text(text[at : at + step], at + step))
        at += step
        assert page.shown() == reloaded(text[:at]), f"after {at} characters: {text[max(0, at - 40) : at]!r}"


def page_events() -> PageEvents:
    return PageEvents(ID, lambda followed, shown: "", lambda thought, thinking, ms: "")


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_the_streaming_page_always_shows_what_a_reload_would(text):
    for seed in range(3):
        events = page_events()
        events.start("", 0)
        page = page_at("")
        stream(page, events, text, 0, random.Random(seed))


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_a_listener_attaching_mid_answer_continues_the_page_it_finds(text):
    """A reconnect with a cursor: the page keeps what the first listener made of the text so far."""
    rng = random.Random(3)
    for cut in sorted(rng.sample(range(1, len(text)), 4)):
        first = page_events()
        first.start("", 0)
        page = page_at("")
        stream(page, first, text, 0, rng, stop=cut)
        second = page_events()
        second.start(text[:cut], cut)
        stream(page, second, text, cut, rng)


@pytest.mark.parametrize("step", [1, 3, 7])
def test_prose_streams_as_its_text_appended(step, monkeypatch):
    """A reply without markdown or newline (the load bench's) goes out as `delta` events whose data
    is its text, escaped, and without rendering the tail at each flush."""
    rendered = []
    real_render = live_markdown.render_markdown
    monkeypatch.setattr(live_markdown, "render_markdown", lambda text: rendered.append(text) or real_render(text))
    text = reply_text(300)
    events = page_events()
    events.start("", 0)
    sent = [frames(events.text(text[at : at + step], at + step))[0] for at in range(0, len(text), step)]
    assert {event for event, _ in sent} == {"delta"}
    assert "".join(html.unescape(data) for _, data in sent) == text
    assert len(rendered) < len(sent) / 3  # most flushes are known to be text without rendering


@pytest.mark.parametrize(
    ("tail", "shown"),
    [
        ("Some **bold** so far", "<strong>bold</strong>"),
        ("**Note:**", "<strong>Note:</strong>"),
        ("- first\n- second", "<li>second"),
        ("| a | b |\n|---|---|\n| 1 | 2", "<td>2"),
        ("```python\ndef f():\n    return 1\nx", '<span class="hl-k">def</span>'),
    ],
)
def test_an_unfinished_block_is_shown_formatted(tail, shown):
    rendered = LiveTail(f"tail-{ID}", tail).html()
    assert shown in rendered
    assert "**" not in rendered and "|---" not in rendered and "```" not in rendered


def test_the_tail_is_sanitized_like_any_block():
    nasty = "<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1)) **<b onclick=y>"
    for tail in (nasty, "- " + nasty, "```\n" + nasty + "\n" + nasty):
        rendered = LiveTail(f"tail-{ID}", tail).html()
        assert "<script" not in rendered and "<img" not in rendered and "<b " not in rendered
        assert "javascript:" not in rendered.replace("(javascript:alert(1))", "")
    assert LiveTail(f"tail-{ID}", "a").grow("<script>x</script>").data == "&lt;script&gt;x&lt;/script&gt;"


def test_a_long_code_block_highlights_each_line_once(monkeypatch):
    """Inside an open fence, a flush highlights the lines it completed, not the block: no O(n²)."""
    highlighted, rendered = [], []
    real_highlighted, real_render = live_markdown.highlighted, live_markdown.render_markdown
    monkeypatch.setattr(
        live_markdown, "highlighted", lambda code, lang: highlighted.append(code) or real_highlighted(code, lang)
    )
    monkeypatch.setattr(live_markdown, "render_markdown", lambda text: rendered.append(text) or real_render(text))
    lines = [f"    total += item * {n}  # line {n}\n" for n in range(400)]
    events = page_events()
    at = len("Intro.\n\n```python\n")
    events.start("Intro.\n\n```python\n", at)
    rendered.clear()
    page = page_at("Intro.\n\n```python\n")
    per_flush = []
    for line in lines:
        for piece in (line[:9], line[9:20], line[20:]):
            before = len(highlighted)
            at += len(piece)
            page.apply(events.text(piece, at))
            per_flush.append(len(highlighted) - before)
    assert max(per_flush) == 1 and sum(per_flush) == len(lines)  # each line once, when it completes
    assert rendered == []  # the block is never rendered while it streams
    assert set(page.events) == {"delta", "tail"}
    page.apply(events.text("```\n", at + 4))
    assert page.events[-1] == "block"  # closed: finished at once, rendered whole this one time


def test_the_end_keeps_the_streamed_blocks_even_after_a_closed_code_block():
    """A closed fence is finished at once, so an answer can end with an empty tail: `done` still keeps
    the blocks the page holds, and an answer read back whole (nothing streamed) is rendered whole."""
    from types import SimpleNamespace

    from trickle.listen import follow
    from trickle.pages import _kept_blocks
    from trickle.textlog import EndedMessage

    text = "Intro.\n\n```python\nx = 1\n```\n"
    shown = []
    events = PageEvents(ID, lambda followed, state: shown.append(state) or "", lambda *args: "")
    events.start("", 0)
    events.text(text, len(text))
    events.finish(None, len(text))
    row = SimpleNamespace(id=ID, content=text, thoughts="")
    assert (
        shown[-1].tail == ""
        and _kept_blocks(row, shown[-1]) == f'<div class="blocks" id="blocks-{ID}" hx-preserve="true"></div>'
    )

    events = PageEvents(ID, lambda followed, state: shown.append(state) or "", lambda *args: "")
    for event in follow(EndedMessage(text, "done"), 0, flush_interval=0.01, ping_interval=1):
        events.encode(event)
    assert shown[-1] is None  # the page got no block: the final fragment renders the answer whole


def test_a_long_table_renders_its_rows_not_the_table_at_each_flush(monkeypatch):
    rendered = []
    real_render = live_markdown.render_markdown
    monkeypatch.setattr(live_markdown, "render_markdown", lambda text: rendered.append(text) or real_render(text))
    head = "| name | value | note |\n|---|---:|---|\n"
    events = page_events()
    events.start(head, len(head))
    page, at = page_at(head), len(head)
    for n in range(200):
        for piece in (f"| row {n} ", f"| {n * 7} ", f"| note {n} |\n"):
            at += len(piece)
            page.apply(events.text(piece, at))
    assert max(len(text) for text in rendered) < len(head) + 40  # the header and one row at most
    assert page.shown() == reloaded(head + "".join(f"| row {n} | {n * 7} | note {n} |\n" for n in range(200)))
    assert page.shown().count("<tr>") == 201
