"""Conversation titles named by the model: one short request beside the first answer.

A new conversation is titled from its first message at once. With a provider
worth a short request on the side (`names_titles`: the OpenAI-compatible ones,
not the demo or the embedded local model, whose slots belong to the answers),
the model is also asked for a few words that name the conversation, and the
title changes when they come, unless the person renamed it meanwhile.
A failure costs nothing: the first-message title stays.
"""

from __future__ import annotations

import logging
import re

import gevent

from . import storage
from .providers import Provider
from .settings import Settings

log = logging.getLogger("trickle.titles")

PROMPT = (
    "Write a title of at most six words for a conversation that starts with the message below. "
    "Reply with the title only, in the message's language: no quotes, no final punctuation."
)
MAX_TOKENS = 24
TIMEOUT_S = 20.0
KEEP_S = 60.0  # how long a named title waits for the page that shows it live
QUESTION_CHARS = 2000


def first_line_title(text: str) -> str:
    """A title from a message: its words on one line, 60 characters at most."""
    words = " ".join(text.split())
    return words if len(words) <= 60 else words[:57].rstrip() + "…"


def clean(reply: str) -> str | None:
    """The model's reply as a title, or None when nothing usable is left of it."""
    line = next((line for line in reply.splitlines() if line.strip()), "")
    line = re.sub(r"^\s*title\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip(" \t\"'`*#“”‘’«».:;")
    return first_line_title(line) or None


def can_name(provider: Provider, settings: Settings) -> bool:
    return settings.model_titles and provider.names_titles


class Titles:
    """The titles being asked for in this worker, until the page that shows them live has them."""

    def __init__(self, engine, provider: Provider, settings: Settings):
        self.engine = engine
        self.provider = provider
        self.settings = settings
        self.asking: dict[int, gevent.Greenlet] = {}

    def ask(self, conversation_id: int, question: str, model: str, provisional: str) -> None:
        """Ask the model to name a new conversation, in the background."""
        if not can_name(self.provider, self.settings):
            return
        model = self.settings.title_model or model
        self.asking[conversation_id] = gevent.spawn(self._name, conversation_id, question, model, provisional)
        gevent.spawn_later(TIMEOUT_S + KEEP_S, self.asking.pop, conversation_id, None)

    def _name(self, conversation_id: int, question: str, model: str, provisional: str) -> str | None:
        messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": question[:QUESTION_CHARS]}]
        try:
            with gevent.Timeout(TIMEOUT_S):
                reply = self.provider.complete(messages, model, max_tokens=MAX_TOKENS)
        except (Exception, gevent.Timeout) as err:  # best effort: any failure leaves the first-message title
            log.warning("no title from %s for conversation %s: %s", model, conversation_id, err)
            return None
        title = clean(reply)
        if title and storage.retitle(self.engine, conversation_id, provisional, title):
            return title
        return None

    def named(self, conversation_id: int) -> bool:
        """Did the model just name this conversation? (Asked once: a later answer does not repeat it.)"""
        asking = self.asking.get(conversation_id)
        if asking is None or not asking.ready():
            return False
        del self.asking[conversation_id]
        return asking.value is not None
