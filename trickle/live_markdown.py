"""The unfinished tail of a streaming answer, shown formatted while it grows.

The page shows the tail (the text after the last finished block) rendered like any block: bold,
lists, tables, code. Each flush sends the least that keeps it so: the new characters alone
(`delta`, appended where the next text goes) when the rendering only grew by them; in an open code
fence, the lines that completed (highlighted one by one) and the open line; otherwise the tail
rendered again. So a flush costs at most one render of the unfinished block, never of the answer,
and what the page holds is a function of the text alone: a listener attaching at any cursor agrees.

The HTML comes from `render_markdown` (markdown-it, then the nh3 sanitizer) like every block; the
only markup added here is the tail's own spans, whose ids no model output can carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import escape

from .render import code_frame, highlighted, is_table, open_fence, render_markdown, sanitize

# Put at the end of the text before rendering, then found in the HTML: where the next characters
# will show (inside the paragraph, list item or cell they continue). Punctuation to markdown, as
# the space or stop that usually comes next is (so `**Note:**` shows bold at once); kept by the
# sanitizer; and rare (a text that holds it gets the end of the tail as its place).
MARK = "\u2e3b"

# Characters that may make markdown of plain text (emphasis, code, links, strikethrough, an escape,
# a line break); a delta without them, after text that ends a word, only adds text (see `_inert`).
_MARKUP = frozenset("*_`~[]\n\r\0")
_ESCAPE = re.compile(r"\\(?![^\W_]| )")  # a backslash escapes the punctuation after it
_AUTOLINK = re.compile(r"<[^<>\s]*[:@][^<>\s]*>")
# A line whose block has begun: its markers (list, quote), then a letter; more text cannot change its kind.
_BEGUN = re.compile(r"[ \t]{0,3}(?:(?:[-+*]|\d{1,9}[.)]|>)[ \t]+)*[^\W\d_]")
_TEXT_ENDS = ("</p>", "</li>", "</td>", "</th>", "</h1>", "</h2>", "</h3>", "</h4>", "</h5>", "</h6>")


@dataclass(frozen=True, slots=True)
class Patch:
    """What one flush sends for the tail: `text` to append at its end (escaped HTML, the `delta`
    event), or out-of-band swaps of the tail's parts (the `tail` event)."""

    event: str  # "delta" or "tail"
    data: str


def text_html(text: str) -> str:
    """Plain text as the sanitizer writes it in a text node (so appending it equals rendering it)."""
    return sanitize(str(escape(text)))


class LiveTail:
    """The tail element `#<element_id>` of one stream: what it holds, and the patches that keep it
    equal to `html()` of the text so far as the text grows."""

    def __init__(self, element_id: str, text: str = ""):
        self.element_id = element_id
        self.replace(text)

    def replace(self, text: str) -> str:
        """Start again from `text` (after blocks were finished); the tail's new inner HTML."""
        self.text = text
        self.fence = open_fence(text)
        self.table = _open_table(text) if self.fence is None else None
        if self.fence is not None:
            lines, self.open_line = self.fence.lines(text)
            self.code = "".join(self._line_html(line) for line in lines)
        elif self.table is not None:
            lines, self.open_line = self.table.rows(text)
            self.body = "".join(self.table.row_html(line) or "" for line in lines)
        else:
            self.head, self.rest, self.marked = _rendered(text)
        return self.html()

    def html(self) -> str:
        """The tail's inner HTML for the text so far (the page's first render, and each full swap)."""
        end = f'<span class="tail-end" id="{self.element_id}-end">'
        if self.fence is not None:
            open_line = text_html(self.fence.shown(self.open_line))
            code = f'<span id="{self.element_id}-code">{self.code}</span>{end}{open_line}</span>'
            return code_frame(self.fence.language, code)
        if self.table is not None:
            return (
                f'{self.table.head_html}<tbody id="{self.element_id}-rows">{self.body}</tbody>'
                f'<tbody id="{self.element_id}-open">{self._open_row()}</tbody></table>\n'
            )
        head = self.head
        if head.endswith("<p>") and self.rest.startswith("</p>"):  # a paragraph with no text yet
            head = head[:-3] + '<p class="tail-opening">'
        return f"{head}{end}</span>{self.rest}"

    def grow(self, delta: str) -> Patch:
        """The patch that shows `delta` added to the tail."""
        if self.fence is not None:
            return self._grow_code(delta)
        if self.table is not None:
            return self._grow_table(delta)
        text = self.text + delta
        if _inert(self, delta):  # the usual flush of prose: no need to render to know
            appended = text_html(delta)
            self.text, self.head = text, self.head + appended
            return Patch("delta", appended)
        if open_fence(text) is None:
            head, rest, marked = _rendered(text)
            appended = text_html(delta)
            if rest == self.rest and head == self.head + appended:
                self.text, self.head, self.marked = text, head, marked
                return Patch("delta", appended)
        return Patch("tail", self.swap(text))

    def swap(self, text: str) -> str:
        """The out-of-band swap that replaces the whole tail with the rendering of `text`."""
        return f'<div id="{self.element_id}" hx-swap-oob="innerHTML">{self.replace(text)}</div>'

    def _grow_code(self, delta: str) -> Patch:
        """In an open fence: the open line grows, or lines complete, and only those are highlighted."""
        fence, was_shown = self.fence, self.fence.shown(self.open_line)
        pending = self.open_line + delta
        *done, open_line = pending.split("\n")
        if any(fence.closes(line) for line in done):
            return Patch("tail", self.swap(self.text + delta))
        self.text += delta
        self.open_line = open_line
        shown = fence.shown(open_line)
        if not done and shown.startswith(was_shown):
            return Patch("delta", text_html(shown[len(was_shown) :]))
        added = "".join(self._line_html(line + "\n") for line in done)
        self.code += added
        return Patch(
            "tail",
            f'<span id="{self.element_id}-code" hx-swap-oob="beforeend">{added}</span>'
            f'<span id="{self.element_id}-end" hx-swap-oob="innerHTML">{text_html(shown)}</span>',
        )

    def _grow_table(self, delta: str) -> Patch:
        """In a table: rows that completed are rendered once and appended; the open row is rendered again."""
        *done, open_line = (self.open_line + delta).split("\n")
        rows = [self.table.row_html(line) for line in done]
        if None in rows:  # not a row (a blank line): the table ended, the splitter will say so
            return Patch("tail", self.swap(self.text + delta))
        self.text += delta
        self.open_line = open_line
        self.body += "".join(rows)
        shown, row = self.open_html, self._open_row()
        end = f'<span class="tail-end" id="{self.element_id}-end"></span>'
        if not rows and end in shown and shown.replace(end, text_html(delta) + end) == row:
            return Patch("delta", text_html(delta))  # more text in the same cell
        added = f'<tbody id="{self.element_id}-rows" hx-swap-oob="beforeend">{"".join(rows)}</tbody>' if rows else ""
        return Patch("tail", f'{added}<tbody id="{self.element_id}-open" hx-swap-oob="innerHTML">{row}</tbody>')

    def _open_row(self) -> str:
        """The row being written, with the tail's end in its last cell (none while it has no text)."""
        self.open_html = self._render_open_row()
        return self.open_html

    def _render_open_row(self) -> str:
        if not self.open_line.strip():
            return ""
        end = f'<span class="tail-end" id="{self.element_id}-end"></span>'
        row = self.table.row_html(self.open_line + MARK) if MARK not in self.open_line else None
        if row is not None and MARK in row:
            return row.replace(MARK, end)
        row = self.table.row_html(self.open_line) or ""
        cell_end = row.rfind("</td>")
        return row[:cell_end] + end + row[cell_end:] if cell_end >= 0 else row

    def _line_html(self, line: str) -> str:
        """One line of code, highlighted on its own (so each is highlighted once, whatever follows)."""
        return sanitize(highlighted(self.fence.shown(line), self.fence.language))


@dataclass(frozen=True, slots=True)
class _Table:
    """A table the tail holds, its header and delimiter row complete: each body row renders on its own
    (given the header, which sets the columns and their alignment), so a complete row is final."""

    head: str  # the header and delimiter lines
    head_html: str  # the table's start and its rendered header
    body: int  # where the first body row begins

    def rows(self, text: str) -> tuple[list[str], str]:
        """The complete body rows in `text`, and the open one."""
        rows = text[self.body :]
        cut = rows.rfind("\n") + 1
        return rows[: cut - 1].split("\n") if cut else [], rows[cut:]

    def row_html(self, line: str) -> str | None:
        """One body row, rendered as it is in the whole table; None if the line is no row of it."""
        html = str(render_markdown(self.head + line))
        start, end = html.find("<tbody>\n"), html.rfind("</tbody>")
        if not line.strip() or start < 0 or html.count("<tr>") != 2:
            return None
        return html[start + len("<tbody>\n") : end]


def _open_table(text: str) -> _Table | None:
    """The table `text` is (after any blank lines), once its header and delimiter row are complete."""
    start = len(text) - len(text.lstrip("\n"))
    complete = text[start : text.rfind("\n") + 1]
    lines = complete.split("\n")
    if len(lines) < 3 or "|" not in lines[0] or not is_table(complete):
        return None
    head = lines[0] + "\n" + lines[1] + "\n"
    head_html = str(render_markdown(head)).removesuffix("</table>\n")
    return _Table(head, head_html, start + len(head))


def _rendered(text: str) -> tuple[str, str, bool]:
    """The sanitized rendering of `text`, cut where its next characters will go (and whether that place was found)."""
    if MARK in text:
        return str(render_markdown(text)), "", False
    html = str(render_markdown(text + MARK))
    head, mark, rest = html.rpartition(MARK)
    if not mark:  # the mark went into something not shown (a link reference definition, a table's extra cell)
        return html, "", False
    return head, rest, True


def _inert(tail: LiveTail, delta: str) -> bool:
    """Does `delta` surely render as itself, appended where the tail's text ends? Conservative: when
    unsure it says no, and the tail is rendered to find out.

    Yes when the text ends in a paragraph, list item or cell (not code, not a construct the mark
    could not show), on a line whose block has begun, not on a character that acts on the next one,
    and `delta` holds nothing that could open or close an inline construct or reach back before it."""
    text = tail.text
    if not (tail.marked and text and tail.rest.startswith(_TEXT_ENDS)):
        return False
    if not (text[-1].isalnum() or text[-1] in " .,:'\"?%-"):  # `]`, `*`, `\`… act on what follows
        return False
    line = text[text.rfind("\n") + 1 :]
    if not _BEGUN.match(line) or not _MARKUP.isdisjoint(delta) or _ESCAPE.search(delta):
        return False
    if ("(" in delta or ")" in delta) and "]" in text:  # a link's destination
        return False
    if ";" in delta and "&" in text[-40:] + delta:  # an entity
        return False
    if "|" in delta and not tail.rest.startswith("</p>"):  # a table's cell
        return False
    return ">" not in delta or not _AUTOLINK.search(line + delta)
