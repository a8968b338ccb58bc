"""What every model behind Trickle offers (`Provider`), the pieces a stream is made of, and the demo model.

`stream()` yields text deltas, perhaps `Notice`s, then one `Usage`; failures surface as
`ProviderError`, whatever library raised them. The OpenAI-compatible services live in
`openai_compatible.py`, the embedded model in `local.py`; `provider_choice.py` picks one.
This module imports nothing else of Trickle's, so any of them can import it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from .thoughts import Rethink, Thought


@dataclass(frozen=True)
class Usage:
    """Token counts for one answer, from the provider or counted when it gives none."""

    prompt_tokens: int
    completion_tokens: int
    counted: bool = False  # True when estimated here rather than reported upstream


class ProviderError(Exception):
    """An upstream failure, with a message written for the person in the chat."""

    def __init__(
        self, message: str, *, status: int | None = None, retryable: bool = False, retry_after: float | None = None
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notice:
    """Something to show while no text comes (e.g. waiting for the local model); None clears it."""

    text: str | None


Delta = str | Thought | Rethink | Usage | Notice


def estimate_tokens(text: str) -> int:
    """A rough count (about four characters a token) for providers that report no usage."""
    return max(1, (len(text) + 3) // 4) if text else 0


WHAT_TO_DO_WITH_IMAGES = "Pick a vision model (one that reads images) for this conversation, or send it without images."


def has_images(messages: list[dict]) -> bool:
    """Whether any message carries an image part (OpenAI content arrays)."""
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


def refuse_images(messages: list[dict], model: str) -> None:
    """A model that cannot read images (the demo model, the local one without a vision projector)
    says so at once, with what to do, instead of failing obscurely on the content parts."""
    if has_images(messages):
        raise ProviderError(f"{model} cannot see images. {WHAT_TO_DO_WITH_IMAGES}")


def text_of(content) -> str:
    """A message's text: its content, or the text parts of a content array joined."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


class Provider(Protocol):
    """A model that answers: the OpenAI-compatible services, the local model and the demo all are one."""

    label: str  # short, for messages: "OpenAI did not answer in time"
    default_model: str  # used when CHAT_MODEL is not set
    names_titles: bool  # worth a short side request to name a conversation (titles.py)
    about: str | None  # the header's words for it, when "label · model" would not tell a person enough
    effort_dialect: str | None  # how it takes a reasoning effort (reasoning.py): an endpoint's name, or None

    def stream(self, messages: list[dict], model: str) -> Iterator[Delta]:
        """Text deltas as they come (perhaps `Notice`s), then one `Usage`; raises `ProviderError`.
        An OpenAI-compatible one also takes `extra_body=` (a reasoning effort)."""
        ...

    def complete(self, messages: list[dict], model: str, *, max_tokens: int) -> str:
        """One short answer, not streamed (a conversation's title)."""
        ...

    def list_models(self) -> list[str]:
        """The models people can pick; empty when it cannot tell."""
        ...

    def problem(self) -> str | None:
        """What keeps it from answering, said for the page before anyone types (None: nothing known)."""
        ...


def counted_usage(messages: list[dict], answer: str) -> Usage:
    prompt = sum(estimate_tokens(text_of(m.get("content"))) for m in messages)
    return Usage(prompt, estimate_tokens(answer), counted=True)


DEMO_TEMPLATE = """You asked: *{question}*

I am Trickle's **demo model**: I answer offline, the same way every time, so you can try the chat before connecting a real one. Here is what a real answer can hold:

1. Lists, like this one
2. **Bold**, *italic* and `inline code`
3. Tables and code blocks, below

| Provider | Setting |
|---|---|
| OpenAI | `OPENAI_API_KEY` |
| OpenRouter | `OPENROUTER_API_KEY` |
| Ollama | `OLLAMA_HOST` |

```python
def greet(name: str) -> str:
    return f"Hello, {{name}}!"
```

Set one of those variables and restart to talk to a real model."""

_TOKEN = re.compile(r"\S+\s*|\s+")


class DemoModel:
    """An offline, deterministic model that streams at a realistic pace and exercises the renderer."""

    label = "demo model"
    default_model = "demo"
    names_titles = False
    effort_dialect = None  # the demo model does not think
    about = "demo model — set OPENAI_API_KEY or OLLAMA_HOST to use a real model"

    def __init__(self, delay: float = 0.025):
        self.delay = delay

    def answer(self, messages: list[dict]) -> str:
        question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        question = " ".join(text_of(question).split())[:200] or "nothing"
        question = re.sub(r"([\\`*_{}\[\]()#+\-.!|<>])", r"\\\1", question)
        return DEMO_TEMPLATE.format(question=question)

    def stream(self, messages: list[dict], model: str) -> Iterator[Delta]:
        refuse_images(messages, "The demo model")
        answer = self.answer(messages)
        for token in _TOKEN.findall(answer):
            if self.delay:
                time.sleep(self.delay)  # cooperative: time.sleep is gevent's after monkey-patching
            yield token
        yield counted_usage(messages, answer)

    def complete(self, messages: list[dict], model: str, *, max_tokens: int) -> str:
        return self.answer(messages)

    def list_models(self) -> list[str]:
        return ["demo"]

    def problem(self) -> str | None:
        return None
