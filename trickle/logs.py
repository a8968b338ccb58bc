"""Log lines that client input cannot forge: control characters in a message are escaped.

A model name or a path with CR/LF would otherwise start a line of its own that looks like ours.
The traceback of an exception is the server's own text and stays as it is.
"""

from __future__ import annotations

import copy
import logging
import re

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with every control character (newlines among them) spelled as an escape."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)  # other handlers may format the same record
        record.msg, record.args = one_line(record.getMessage()), None
        return super().format(record)


def configure(level: str) -> None:
    """The root logger writes one escaped line per record to stderr (gunicorn's log, or a terminal)."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=False)
