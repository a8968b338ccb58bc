"""Every OpenAI-compatible service (OpenAI, OpenRouter, Ollama, vLLM, LM Studio…): one class, another `Endpoint`.

At start it asks the service for its models once, with a short timeout: that names the
default model of a server that was given no CHAT_MODEL, and tells the page, before anyone
types, when the service cannot be reached or refuses the key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import gevent
import httpx2
import openai

from .providers import WHAT_TO_DO_WITH_IMAGES, Delta, ProviderError, Usage, counted_usage, has_images
from .settings import Settings
from .thoughts import DeltaReader, Rethink

CHECK_TIMEOUT_S = 3.0  # the start-up look at /models: a dead address must not hold a worker's start for long
RECHECK_S = 60.0  # a problem shown on the page is looked at again this often (in the background)
# The variable that sets each kind of endpoint, for the page's "could not reach …" banner.
ADDRESS_VARIABLE = {"custom": "OPENAI_BASE_URL", "ollama": "OLLAMA_HOST"}
KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "custom": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY"}


def _retry_after(response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


def _refused_images(error: ProviderError, err: Exception, model: str) -> ProviderError:
    """A request with images that the model refused: most likely it cannot read them; say what to do."""
    body = getattr(err, "body", None)
    words = body.get("message") if isinstance(body, dict) else None
    said = f" It said: {str(words)[:300]}" if words else ""
    hint = f"Model {model} may not read images. {WHAT_TO_DO_WITH_IMAGES}"
    return ProviderError(f"{error.message}{said} {hint}", status=error.status)


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


DEFAULT_MODELS = {"openai": "gpt-5.4-mini", "openrouter": "openai/gpt-5.4-mini", "ollama": "llama3.2"}


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible provider, described as data (one client class serves them all)."""

    name: str  # "openai", "openrouter", "ollama", "custom"
    base_url: str
    api_key: str = field(repr=False)
    label: str
    headers: tuple[tuple[str, str], ...] = ()


class OpenAICompatible:
    """Streams chat completions from any OpenAI-compatible base URL."""

    names_titles = True
    about = None  # "OpenAI · gpt-5.4-mini" says it all

    def __init__(self, endpoint: Endpoint, settings: Settings):
        self.endpoint = endpoint
        self.effort_dialect = endpoint.name  # reasoning.py: ollama, openrouter, or OpenAI's field
        self.label = endpoint.label
        self.default_model = DEFAULT_MODELS.get(endpoint.name, "default")
        self._problem: str | None = None
        self._checked_at = 0.0
        self._checking: gevent.Greenlet | None = None
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

    def stream(self, messages: list[dict], model: str, extra_body: dict | None = None) -> Iterator[Delta]:
        """Yield content deltas as they arrive, then the usage record. `extra_body`: more request
        fields (a reasoning effort, see `reasoning.py`).

        Reads the raw SSE lines instead of building a model object per chunk: the
        per-token cost is most of what a relay spends.
        """
        try:
            # openai's documented low-level request: its auth, base URL, headers and error types, its
            # connection pool, without the typed-params transform (which walks every message each time).
            response = self.client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                content=self._body(messages, model, extra_body),
                options={"headers": {"Content-Type": "application/json"}},
                stream=True,
            )
            try:
                yield from _parse_sse(_data_lines(response.iter_bytes()), messages)
            finally:
                # Closed at `[DONE]`, before its last chunk: the connection is not reused. Reading that
                # chunk to give it back made httpcore's pool grow past its keep-alive limit under load
                # (a few hundred idle sockets per hundred answers at once), until the provider refused more.
                response.close()
        except openai.OpenAIError as err:
            error = _provider_error(err, self.endpoint, model)
            if has_images(messages) and error.status is not None and error.status not in (401, 403, 429):
                error = _refused_images(error, err, model)
            raise error from err
        except (OSError, ValueError, httpx2.TransportError) as err:  # a dropped socket or body, a garbled line
            raise ProviderError(
                f"The connection to {self.label} broke: {err.__class__.__name__}.", retryable=False
            ) from err

    def _body(self, messages: list[dict], model: str, extra_body: dict | None) -> bytes:
        """The request, encoded once: what `chat.completions.create` would send for these arguments."""
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        if extra_body:
            body.update(extra_body)
        return json.dumps(body, ensure_ascii=False).encode()

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

    def check(self) -> None:
        """Ask for the models once, briefly: remember what went wrong, and take the server's own model
        as the default where the preset would be a guess (a server of one's own, or Ollama)."""
        self._checked_at = time.monotonic()
        try:
            listed = [model.id for model in self.client.with_options(timeout=CHECK_TIMEOUT_S).models.list()]
        except openai.NotFoundError:  # a server without /models answers, which is all this asks
            listed = []
        except openai.OpenAIError as err:
            self._problem = self._describe(err)
            return
        self._problem = None
        guessed = self.endpoint.name not in ("openai", "openrouter")
        if listed and guessed and self.default_model not in listed:
            self.default_model = listed[0]

    def _describe(self, err: openai.OpenAIError) -> str:
        name = self.endpoint.name
        if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            variable = KEY_VARIABLE.get(name, "its API key")
            return f"{self.label} refused the API key ({err.status_code}): check {variable}."
        variable = ADDRESS_VARIABLE.get(name)
        if isinstance(err, openai.APIStatusError):
            return f"{self.label} answered with an error ({err.status_code}) when asked for its models."
        if variable is None:
            return f"Could not reach {self.label} at {self.endpoint.base_url}: is this computer online?"
        return f"Could not reach {self.endpoint.base_url}: is the server running? {variable} sets where it is."

    def problem(self) -> str | None:
        """The start-up check's finding; looked at again in the background once it is a minute old,
        so that a server started later clears the banner without a restart."""
        stale = time.monotonic() - self._checked_at > RECHECK_S
        if self._problem and stale and (self._checking is None or self._checking.ready()):
            self._checking = gevent.spawn(self.check)
        return self._problem


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


_DECODER = json.JSONDecoder()


def _json_object(data: bytes) -> dict:
    """One event's JSON. `json.loads(bytes)` decodes with the `surrogatepass` handler, which takes
    CPython's slow path: it cost several times the parse itself, once per token."""
    text = data.decode()
    value, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError(f"extra data after the JSON of an event at {end}")
    return value


def _parse_sse(payloads: Iterator[bytes], messages: list[dict]) -> Iterator[Delta]:
    usage = None
    sent = []
    finish_reason = None
    reader = DeltaReader()  # thoughts in every dialect: reasoning fields and tags in the content
    for data in payloads:
        if data == b"[DONE]":
            break
        chunk = _json_object(data)
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ProviderError(f"The provider reported an error mid-answer: {message}")
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            for delta in reader.read(choice.get("delta") or {}):
                if not isinstance(delta, Rethink):  # thoughts count as output tokens too
                    sent.append(delta if isinstance(delta, str) else delta.text)
                yield delta
            finish_reason = choice.get("finish_reason") or finish_reason
            if finish_reason == "error":
                raise ProviderError("The provider ended the answer with an error.")
    else:
        if finish_reason is None:  # some servers skip [DONE], but none skip finish_reason
            raise ProviderError("The provider closed the stream before the answer was complete.")
    yield from reader.end()
    if usage:
        yield Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    else:
        yield counted_usage(messages, "".join(sent))
