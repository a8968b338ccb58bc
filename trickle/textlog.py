"""What a listener follows: an answer's append-only text log, how it stands, and a wake-up.

The log holds a thinking model's thought, then its answer, in one offset space: its first
`thought_length` characters are the thought. Offsets never change, so a cursor means the same
wherever it is resumed; when a template opened the thought tag (only `</think>` arrives), the
text so far becomes the thought by moving that boundary, not the text.

Three things play that role: a `Generation` written in this worker, a `RemoteAnswer`
written elsewhere and followed (`followers.py`), and an `EndedMessage` read from the
database. They share `TextLog`; `listen.follow` relies on `Followed` alone.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gevent.event import Event

from .status import Status


@runtime_checkable
class Followed(Protocol):
    """The listener-facing side of an answer."""

    parts: list[str]  # the log, only ever appended to: listeners hold indexes into it
    length: int  # characters in `parts`; offsets (cursors) count characters
    thought_length: int  # the log's first characters that are the thought (only ever grows)
    thought_ms: int | None  # how long the model thought, once its answer began
    status: Status
    error: str | None
    notice: str | None  # e.g. "Retrying in 2 s…", shown while waiting
    wakeup: Event  # set (and replaced) when there is something new
    idle_waiters: int  # listeners with nothing to send, waiting on `wakeup`
    abandoned: bool  # this worker stops following it: listeners end without a final event

    @property
    def finished(self) -> bool: ...

    def text(self) -> str: ...

    def thought(self) -> str: ...

    def logged(self) -> str: ...

    def locate(self, cursor: int) -> tuple[int, str]: ...

    def attach(self) -> None: ...

    def detach(self) -> None: ...


class TextLog:
    """The shared implementation of `Followed`; subclasses decide what feeds the log."""

    def __init__(
        self,
        text: str = "",
        status: Status = Status.STREAMING,
        error: str | None = None,
        thought: str = "",
        thought_ms: int | None = None,
    ):
        logged = thought + text
        self.parts: list[str] = [logged] if logged else []
        self.length = len(logged)
        self.thought_length = len(thought)
        self.thought_ms = thought_ms
        self.status = status
        self.error = error
        self.notice: str | None = None
        self.wakeup = Event()
        self.idle_waiters = 0
        self.abandoned = False
        self.listeners = 0

    @property
    def finished(self) -> bool:
        return self.status != Status.STREAMING

    def logged(self) -> str:
        """The whole log: the thought, then the answer."""
        return "".join(self.parts)  # never merged in place: listeners hold indexes into parts

    def text(self) -> str:
        """The answer's text (without the thought)."""
        logged = self.logged()
        return logged[self.thought_length :] if self.thought_length else logged

    def thought(self) -> str:
        return self.logged()[: self.thought_length] if self.thought_length else ""

    def locate(self, cursor: int) -> tuple[int, str]:
        """Where a listener at `cursor` resumes: (part index, text it has not seen of that part)."""
        if cursor <= 0:
            return 0, ""
        offset = 0
        for index, part in enumerate(self.parts):
            if offset + len(part) > cursor:
                return index + 1, part[cursor - offset :]
            offset += len(part)
        return len(self.parts), ""

    def signal(self) -> None:
        """Wake every waiting listener (a fresh Event, so none of them misses a wake-up)."""
        wakeup, self.wakeup = self.wakeup, Event()
        wakeup.set()

    def attach(self) -> None:
        self.listeners += 1

    def detach(self) -> None:
        self.listeners -= 1


class EndedMessage(TextLog):
    """A finished answer read from the database: a listener's only event is its end."""

    def __init__(
        self, text: str, status: str, error: str | None = None, thought: str = "", thought_ms: int | None = None
    ):
        super().__init__(text or "", Status(status), error, thought or "", thought_ms)

    def locate(self, cursor: int) -> tuple[int, str]:
        return len(self.parts), ""  # nothing to replay: its final render replaces what the client holds
