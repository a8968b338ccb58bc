"""How an answer stands: streaming while a generation owns it, then how it ended.

A `StrEnum`, so a status is stored, compared and sent as its plain string value.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    STREAMING = "streaming"  # a generation owns the row
    DONE = "done"
    STOPPED = "stopped"  # Stop, or nobody watching
    FAILED = "failed"  # an upstream error or a deadline
    INTERRUPTED = "interrupted"  # the server went away mid-answer

    @property
    def is_error(self) -> bool:
        """Ended in a way a client should hear as an error (not a Stop)."""
        return self in (Status.FAILED, Status.INTERRUPTED)
