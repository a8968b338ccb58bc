"""Client input cannot forge a log line."""

from __future__ import annotations

import io
import logging

from trickle.logs import FORMAT, OneLineFormatter, one_line


def test_control_characters_in_a_message_are_escaped_and_the_record_stays_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(FORMAT))
    log = logging.getLogger("trickle.test-logs")
    log.addHandler(handler)
    try:
        log.warning("stream model=%s outcome=%s", "m\r\n2026-01-01 INFO trickle: forged\x1b[2J\u2028", "done")
    finally:
        log.removeHandler(handler)
    written = stream.getvalue()
    assert written.count("\n") == 1 and "\r" not in written and "\x1b" not in written
    assert "model=m\\r\\n2026-01-01 INFO trickle: forged\\x1b[2J\\u2028 outcome=done" in written


def test_printable_text_is_left_as_it_is():
    assert one_line("Grüße, 東京 — ok") == "Grüße, 東京 — ok"
