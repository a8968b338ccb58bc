"""A scriptable fake OpenAI-compatible provider for tests.

A real HTTP/1.1 server on 127.0.0.1 (stdlib only, one thread per connection) so
that the real ``openai`` client, its transport and the app's SSE handling are
exercised end to end, while the test process scripts the answers and inspects
what was received. Streams use ``Transfer-Encoding: chunked`` with one chunk per
SSE event: every event reaches the client as soon as it is written, and an
abrupt close mid-body is a protocol error the client can detect (with
``Connection: close`` a drop would look like a normal end of stream).
"""

from __future__ import annotations

import json
import re
import select
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

__all__ = ["THOUGHT_DIALECTS", "FakeUpstream", "Script", "StreamRecord", "thought_chunks"]

DEFAULT_MODELS = ["fake-model", "fake-model-2"]
_STEP = 0.05  # longest uninterrupted sleep, so stop() and hang-ups are noticed fast
_WRITE_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError)


@dataclass
class Script:
    """How the upstream answers one chat completion request.

    If several of drop_after / error_after / stall_after are set, that order
    decides which one applies. Non-streamed requests only honour text/tokens,
    status, retry_after, error_message, first_delay (before the answer) and repeat.
    """

    text: str | None = None
    tokens: list[str] | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    status: int = 200
    retry_after: float | None = None
    error_message: str = "fake upstream error"
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    error_after: int | None = None
    usage: bool = True
    repeat: int = 1
    # A thinking model: `thought` streamed before the answer, in the way `dialect` names (THOUGHT_DIALECTS),
    # a word a chunk every `thought_delay` s (`delay` when None), then `thought_hold` s before the answer.
    thought: str | None = None
    dialect: str = "reasoning_content"
    thought_delay: float | None = None
    thought_hold: float = 0.0
    # Token indices before which the stream waits until the test calls `upstream.release()` (one call a hold).
    holds: tuple[int, ...] = ()


# How a thinking model's thought arrives: in a field of the delta, or inside the content.
THOUGHT_DIALECTS = (
    "reasoning_content",  # DeepSeek, vLLM, llama.cpp's server, LM Studio
    "reasoning",  # Ollama's /v1, OpenRouter, newer vLLM
    "reasoning_details",  # OpenRouter: `reasoning` and its structured `reasoning_details` alike
    "tags",  # <think>…</think> in the content, each tag one chunk
    "split_tags",  # <thinking>…</thinking> in the content, cut every 3 characters (tags split anywhere)
    "template",  # the chat template opened the tag: only </think> arrives
)


def thought_chunks(script: Script) -> tuple[list[dict], list[str]]:
    """(the deltas that carry the thought, answer tokens prefixed to the content) for a Script."""
    words = re.findall(r"\S+\s*|\s+", script.thought or "")
    dialect = script.dialect
    if dialect in ("reasoning_content", "reasoning"):
        return [{dialect: word} for word in words], []
    if dialect == "reasoning_details":
        return [{"reasoning": w, "reasoning_details": [{"type": "reasoning.text", "text": w}]} for w in words], []
    if dialect == "tags":
        return [{"content": piece} for piece in ["<think>", *words, "</think>"]], ["\n\n"]
    if dialect == "split_tags":
        whole = f"<thinking>{script.thought}</thinking>\n\n"
        return [{"content": whole[i : i + 3]} for i in range(0, len(whole), 3)], []
    if dialect == "template":
        return [{"content": piece} for piece in [*words, "\n", "</think>"]], ["\n\n"]  # R1's: "…\n</think>\n\n"
    raise ValueError(f"unknown thought dialect {dialect!r}")


@dataclass
class StreamRecord:
    """What the fake did with one streamed response, for assertions.

    ``finished`` means the script played to its end (normal [DONE], or the
    scripted drop / stall end / in-stream error) without a hang-up or stop().
    """

    model: str
    tokens_sent: int = 0
    text_sent: str = ""
    finished: bool = False
    client_closed_early: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    holding: bool = False  # waiting at one of the script's `holds`


def _content_text(content: Any) -> str:
    """Plain text of a message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error_body(message: str, type_: str, code: Any = None, param: Any = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: FakeUpstream

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn): skip it, it can be slow.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection errors are expected (hang-ups, stop()); real bugs still print.
        if isinstance(sys.exc_info()[1], _WRITE_ERRORS):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes must not wait for ACKs
    server: _Server

    # -- plumbing ---------------------------------------------------------

    @property
    def up(self) -> FakeUpstream:
        return self.server.upstream

    def setup(self) -> None:
        super().setup()
        self.up._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.up._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read records, not logs

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _not_found(self) -> None:
        self._send_json(
            404,
            _error_body(
                f"Unknown request URL: {self.command} {self.path}",
                "invalid_request_error",
                "unknown_url",
            ),
        )

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/")

    # -- routes -----------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        models = self.up.models
        if path == "/v1/models" and self.up.models_status != 200:  # e.g. 401: a key it refuses
            self._send_json(self.up.models_status, _error_body("Incorrect API key provided.", "invalid_request_error"))
        elif path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]
            self._send_json(200, {"object": "list", "data": data})
        elif path.startswith("/v1/models/") and path[len("/v1/models/") :] in models:
            self._send_json(
                200,
                {
                    "id": path[len("/v1/models/") :],
                    "object": "model",
                    "created": 0,
                    "owned_by": "fake",
                },
            )
        else:
            self._not_found()

    def do_POST(self) -> None:
        if self._path() != "/v1/chat/completions":
            self._read_body()
            self._not_found()
            return
        raw = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = None
        if not isinstance(body, dict):
            problem = "We could not parse the JSON body of your request."
        elif not isinstance(body.get("model"), str):
            problem = "you must provide a model parameter"
        elif not isinstance(body.get("messages"), list):
            problem = "Missing required parameter: 'messages'."
        if problem:
            self.up._record(
                None if not isinstance(body, dict) else body,
                headers,
                self.path,
                raw,
                consume=False,
            )
            self._send_json(400, _error_body(problem, "invalid_request_error"))
            return
        script, n = self.up._record(body, headers, self.path, raw, consume=True)
        assert script is not None
        if script.status != 200:
            self._answer_error(script, body)
        elif body.get("stream") is True:
            self._stream(script, body, n)
        else:
            self._complete(script, body, n)

    def do_PUT(self) -> None:
        self._read_body()
        self._not_found()

    do_DELETE = do_PATCH = do_PUT

    # -- chat completions -------------------------------------------------

    def _answer_error(self, script: Script, body: dict) -> None:
        default_msg = script.error_message == Script.error_message
        status = script.status
        if status == 404:
            msg = f"The model `{body.get('model')}` does not exist" if default_msg else script.error_message
            err = _error_body(msg, "invalid_request_error", "model_not_found")
        elif status == 401:
            msg = "Incorrect API key provided" if default_msg else script.error_message
            err = _error_body(msg, "invalid_request_error", "invalid_api_key")
        elif status == 429:
            err = _error_body(script.error_message, "requests", "rate_limit_exceeded")
        elif status >= 500:
            err = _error_body(script.error_message, "server_error")
        else:
            err = _error_body(script.error_message, "invalid_request_error")
        extra = {}
        if script.retry_after is not None:
            extra["Retry-After"] = _fmt_seconds(script.retry_after)
        self._send_json(status, err, extra)

    def _tokens(self, script: Script, body: dict) -> list[str]:
        if script.tokens is not None:
            return [str(t) for t in script.tokens]
        text = script.text
        if text is None:
            last = ""
            for m in body["messages"]:
                if isinstance(m, dict) and m.get("role") == "user":
                    last = _content_text(m.get("content"))
            text = "Echo: " + last
        return re.findall(r"\S+\s*|\s+", text)

    @staticmethod
    def _prompt_tokens(body: dict) -> int:
        return sum(len(_content_text(m.get("content")).split()) for m in body["messages"] if isinstance(m, dict))

    def _complete(self, script: Script, body: dict, n: int) -> None:
        tokens = self._tokens(script, body)
        if script.first_delay and not self.up._sleep(script.first_delay):
            self.close_connection = True
            return
        prompt = self._prompt_tokens(body)
        self._send_json(
            200,
            {
                "id": f"chatcmpl-fake-{n}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(tokens),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt + len(tokens),
                },
            },
            {"x-request-id": f"req_fake_{n}"},
        )

    def _stream(self, script: Script, body: dict, n: int) -> None:
        model = body["model"]
        tokens = self._tokens(script, body)
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        rec = StreamRecord(model=model)
        self.up._add_stream(rec)
        base = {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            c = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
            if include_usage:  # OpenAI then sends usage: null on all but the last chunk
                c["usage"] = None
            return c

        def write(data: bytes) -> bool:
            """One HTTP chunk; False (and the record updated) if the client is gone."""
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                return True
            except _WRITE_ERRORS:
                if not self.up._stopping.is_set():
                    rec.client_closed_early = True
                return False

        def event(obj: Any) -> bool:
            text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
            return write(b"data: " + text.encode() + b"\n\n")

        def wait(seconds: float) -> bool:
            """Interruptible sleep that also notices a client hang-up."""
            deadline = time.monotonic() + seconds
            while True:
                if self.up._stopping.is_set():
                    return False
                if self._peer_closed():
                    rec.client_closed_early = True
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self.up._stopping.wait(min(_STEP, left))

        def held() -> bool:
            """Wait for the test's `release()`, noticing a hang-up or stop() meanwhile."""
            rec.holding = True
            released = self.up._released  # this test's: a reset() gives the next test its own
            try:
                while not released.acquire(timeout=_STEP):
                    if self.up._stopping.is_set():
                        return False
                    if self._peer_closed():
                        rec.client_closed_early = True
                        return False
                return True
            finally:
                rec.holding = False

        try:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("x-request-id", f"req_fake_{n}")
                self.end_headers()
            except _WRITE_ERRORS:
                rec.client_closed_early = not self.up._stopping.is_set()
                return
            if script.first_delay and not wait(script.first_delay):
                return
            if not event(chunk({"role": "assistant", "content": ""})):
                return
            mode, cut = next(
                (
                    (m, v)
                    for m, v in (
                        ("drop", script.drop_after),
                        ("error", script.error_after),
                        ("stall", script.stall_after),
                    )
                    if v is not None
                ),
                (None, None),
            )
            if script.thought:
                thoughts, lead = thought_chunks(script)
                gap = script.delay if script.thought_delay is None else script.thought_delay
                for i, delta in enumerate(thoughts):
                    if i > 0 and gap and not wait(gap):
                        return
                    if not event(chunk(delta)):
                        return
                if script.thought_hold and not wait(script.thought_hold):
                    return
                for piece in lead:
                    if not event(chunk({"content": piece})):
                        return
            for i, tok in enumerate(tokens):
                if cut is not None and i >= cut:
                    break
                if i > 0 and script.delay and not wait(script.delay):
                    return
                if i in script.holds and not held():
                    return
                # Count before writing so the record is never behind what the client saw.
                rec.tokens_sent += 1
                rec.text_sent += tok
                if not event(chunk({"content": tok})):
                    rec.tokens_sent -= 1
                    rec.text_sent = rec.text_sent[: len(rec.text_sent) - len(tok)]
                    return
            if mode == "drop":
                self._abort()
                rec.finished = True
                return
            if mode == "stall":
                if not wait(script.stall_seconds):
                    return
                # End the chunked body cleanly, without [DONE].
                if not write(b""):
                    return
                rec.finished = True
                self.close_connection = True
                return
            if mode == "error":
                err = dict(base, error={"message": script.error_message, "code": 502})
                err["choices"] = [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
                if not event(err) or not write(b""):
                    return
                rec.finished = True
                return
            if not event(chunk({}, "stop")):
                return
            if include_usage and script.usage:
                prompt = self._prompt_tokens(body)
                usage = {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt + len(tokens),
                }
                if not event(dict(base, choices=[], usage=usage)):
                    return
            rec.finished = True  # set first: a client that saw [DONE] must see finished
            if not event("[DONE]"):
                rec.finished = False
                return
            try:  # the client may already have hung up after [DONE]: not an early close
                self.wfile.write(b"0\r\n\r\n")
            except _WRITE_ERRORS:
                self.close_connection = True
        finally:
            if not rec.finished:
                self.close_connection = True
            rec.ended.set()

    def _peer_closed(self) -> bool:
        """True if the client closed its side (EOF or reset) while we wait."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def _abort(self) -> None:
        """Close the connection mid-body (FIN, so already-sent tokens still arrive)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeUpstream:
    """Scriptable fake OpenAI provider; see the module docstring."""

    def __init__(self, default: Script | None = None, models: list[str] | None = None):
        self._initial_default = default or Script()
        self.default: Script = self._initial_default
        self.models: list[str] = list(models) if models is not None else list(DEFAULT_MODELS)
        self.models_status = 200  # what GET /v1/models answers (reset() restores 200)
        self.requests: list[dict] = []
        self.streams: list[StreamRecord] = []
        self._queue: deque[list[Any]] = deque()  # [script, remaining uses]
        self.by_model: dict[str, Script] = {}  # requests for these models: always this script
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._released = threading.Semaphore(0)  # one permit per `release()`, taken by a held stream
        self._conns: set[socket.socket] = set()
        self._counter = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.port = 0

    # -- lifecycle --------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.upstream = self
        self._server = server
        self.port = server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every connection, including stalled streams, promptly."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes every interruptible sleep
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        # Idle keep-alive handlers are blocked reading: give them EOF.
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self._lock:
                if not self._conns:
                    break
            time.sleep(0.01)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting --------------------------------------------------------

    def push(self, *scripts: Script) -> None:
        """Queue scripts for the next chat requests (FIFO, each used `repeat` times)."""
        with self._lock:
            for s in scripts:
                self._queue.append([s, max(1, s.repeat)])

    def release(self) -> None:
        """Let a stream waiting at one of its `holds` go on (to its next hold)."""
        self._released.release()

    def reset(self) -> None:
        """Forget queued scripts and records; restore the constructor's default."""
        self._released = threading.Semaphore(0)
        with self._lock:
            self._queue.clear()
            self.by_model.clear()
            self.requests.clear()
            self.streams.clear()
            self.default = self._initial_default
            self.models_status = 200

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll predicate every 10 ms; True as soon as it holds, False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -- used by the handler ----------------------------------------------

    def _record(
        self, body: dict | None, headers: dict, path: str, raw: bytes, consume: bool
    ) -> tuple[Script | None, int]:
        with self._lock:
            entry: dict[str, Any] = {"body": body, "headers": headers, "path": path}
            if body is None:
                entry["raw"] = raw.decode("utf-8", "replace")
            self.requests.append(entry)
            if not consume:
                return None, 0
            self._counter += 1
            if body is not None and body.get("model") in self.by_model:
                script = self.by_model[body["model"]]
            elif self._queue:
                head = self._queue[0]
                script = head[0]
                head[1] -= 1
                if head[1] <= 0:
                    self._queue.popleft()
            else:
                script = self.default
            return script, self._counter

    def _add_stream(self, rec: StreamRecord) -> None:
        with self._lock:
            self.streams.append(rec)

    @property
    def open_connections(self) -> int:
        """TCP connections open to it now."""
        with self._lock:
            return len(self._conns)

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stop() comes first; False if interrupted."""
        return not self._stopping.wait(seconds)
