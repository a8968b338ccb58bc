"""`/ws`: chat over a WebSocket, with cancel, on the same generation engine.

The client sends `{"messages": […], "model": optional}`; the server answers
with `{"type": "token", "content": …}` events and one `{"type": "done",
"usage": {…}}`. `{"type": "cancel"}` stops the running answer (upstream
closed), answered by `{"type": "done", "reason": "cancelled", …}`. `{"type":
"context", "content": …}` adds a user turn to the running answer, which goes on in the same
stream of tokens (see `continuation.py`) and ends with the one `done`. Problems are
`{"type": "error", "message": …}` and leave the socket open: a bad message, or a
failed answer (its error then takes the place of its done). Several answers may
follow one another on one socket; closing it stops the running one. The server
closes it only for a message over the POST body limit (1009) or a restart, once
the running answer has ended (1001).

Two greenlets per socket: this handler reads the client's messages, while a
forwarder follows the generation with `follow()` and the `SocketEvents`
encoder (batched exactly like the SSE streams) and sends each event as one
WebSocket message. Keep-alive is the WebSocket's own ping/pong, every
`SSE_PING_S`; `{"type": "ping"}` is answered by `{"type": "pong"}` for
browsers, which cannot send protocol pings.
"""

from __future__ import annotations

import json
import logging
from contextlib import closing
from json.encoder import encode_basestring as json_string  # json.dumps's own quoting (ensure_ascii=False)

import gevent
from flask import Blueprint, current_app
from flask_sock import Sock
from gevent.lock import Semaphore
from simple_websocket import ConnectionClosed
from werkzeug.exceptions import HTTPException

from . import answers, limits, open_streams
from .chat_requests import BadChatRequest, chat_request, is_text, parse_json
from .generation import Generation
from .listen import Encoder, follow
from .status import Status

log = logging.getLogger("trickle.ws")

bp = Blueprint("ws", __name__)
sock = Sock()

DRAIN_CHECK_S = 1.0  # how often an idle socket looks whether the worker is shutting down
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013


@bp.record_once
def _configure(state) -> None:
    app = state.app
    settings = app.extensions["trickle"].settings
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {
            "ping_interval": settings.ping_interval,  # unanswered for one interval: the socket is closed
            "max_message_size": app.config.get("MAX_CONTENT_LENGTH"),  # the same limit as a POST body
        },
    )


@sock.route("/ws", bp=bp)
def chat_socket(ws) -> None:
    chat = ChatSocket(ws, current_app.extensions["trickle"])
    try:
        release = open_streams.hold()  # a socket holds a connection like a stream: the same caps
    except HTTPException as err:
        chat.error(err.description)
        ws.close(TRY_AGAIN_LATER, "Too many open streams.")
        return
    try:
        chat.serve()
    finally:
        release()


def _usage(generation) -> dict:
    usage = generation.usage
    return {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
    }


def _message(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False)


class SocketEvents(Encoder):
    """Encoder for `follow()`: JSON events, each sent as one WebSocket message."""

    def __init__(self, reasoning: bool = False):
        self.ended = False
        self.reasoning = reasoning  # the request asked for the thought ("reasoning": true)

    def text(self, delta: str, cursor: int) -> str:
        return f'{{"type":"token","content":{json_string(delta)}}}'  # once per flush: no encoder object built

    def thought(self, delta: str, cursor: int) -> str:
        return _message({"type": "reasoning", "content": delta}) if self.reasoning else ""

    def notice(self, notice: str | None, cursor: int) -> str:
        return _message({"type": "status", "message": notice}) if notice else ""

    def finish(self, generation: Generation, cursor: int) -> str:  # /ws follows only its own generations
        self.ended = True
        if generation.status == Status.DONE:
            return _message({"type": "done", "usage": _usage(generation)})
        if generation.status == Status.STOPPED:
            return _message({"type": "done", "reason": "cancelled", "usage": _usage(generation)})
        message = generation.error or f"The answer ended: {generation.status}."
        return _message({"type": "error", "message": message, "usage": _usage(generation)})


class _WholeFrameSocket:
    """The connection's socket, writing every frame whole and alone.

    simple-websocket writes a frame with one `send()`, which may write only part
    of it when the client reads slowly, and its reader greenlet writes pongs and
    pings on the same socket: `send` here writes all of it, one writer at a time.
    """

    def __init__(self, sock):
        self._sock = sock
        self._lock = Semaphore()

    def send(self, data, *args) -> int:
        with self._lock:
            self._sock.sendall(data, *args)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class ChatSocket:
    """One client connection: reads requests and cancels, runs one generation at a time."""

    def __init__(self, ws, app):
        self.ws = ws
        self.app = app
        ws.sock = _WholeFrameSocket(ws.sock)  # before the reader greenlet first runs (it has not yet)
        self.send_lock = Semaphore()  # one batch of events at a time, in order
        self.current = None  # the generation whose answer is not finished being sent
        self.forwarder: gevent.Greenlet | None = None

    def send(self, event: dict) -> None:
        with self.send_lock:
            self.ws.send(json.dumps(event, ensure_ascii=False))

    def error(self, message: str) -> None:
        self.send({"type": "error", "message": message})

    def serve(self) -> None:
        try:
            while True:
                raw = self.ws.receive(timeout=DRAIN_CHECK_S)
                if raw is not None:
                    self.handle(raw)
                if self.app.registry.draining and self.current is None:
                    with self.send_lock:  # after the last answer's final event, never in between
                        self.ws.close(GOING_AWAY, "The server is restarting; reconnect in a moment.")
                    return
        finally:
            self.stop("Stopped: the WebSocket was closed.")

    def cancel(self, message: str | None) -> None:
        generation = self.current
        if generation is None:
            return  # nothing running: the answer already ended, nothing to do
        generation.cancel(Status.STOPPED, message)

    def stop(self, message: str) -> None:
        forwarder = self.forwarder
        self.cancel(message)
        if forwarder is not None:
            forwarder.kill(block=True, timeout=5)

    def handle(self, raw) -> None:
        """One message from the client; one it cannot act on is answered by an error message.

        Every message counts against RATE_LIMIT_WS_MESSAGES before it is even read (reading a
        large one costs); each answer started counts against `/api/chat`'s own rates.
        """
        try:
            if not limits.hit(self.app.settings.rate_limit_ws_messages, limits.owner_key(), "ws.message"):
                raise BadChatRequest(
                    429,
                    f"Too many messages on this socket: the limit is {self.app.settings.rate_limit_ws_messages} "
                    "(RATE_LIMIT_WS_MESSAGES). Wait a moment and try again.",
                )
            message = parse_json(raw)
            if message is None:
                raise BadChatRequest(
                    400,
                    'Could not read that message: send JSON like {"messages": '
                    '[{"role": "user", "content": "Hi"}]} or {"type": "cancel"}.',
                )
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "cancel":
                self.cancel(None)
            elif kind == "ping":
                self.send({"type": "pong"})
            elif kind == "context":
                self.add_context(message.get("content"))
            elif kind in (None, "chat"):
                self.start(message)
            else:
                shown = repr(kind[:40]) if isinstance(kind, str) else "of that kind"  # never repr a nested value
                raise BadChatRequest(
                    400,
                    f'Unknown message type {shown}: send {{"messages": […]}}, {{"type": "context", "content": "…"}} '
                    'or {"type": "cancel"}.',
                )
        except HTTPException as err:  # the same errors a view raises, as this protocol's error message
            self.error(err.description)

    def start(self, body) -> None:
        """Answer one chat request on this socket; raises an HTTP error (as a view would) when it cannot."""
        if self.current is not None:
            raise BadChatRequest(
                409,
                'An answer is still being written on this socket: wait for its "done", send {"type": "cancel"} '
                'first, or add to it with {"type": "context", "content": "…"}.',
            )
        messages, model = chat_request(body, self.app.settings)
        refused = limits.rate_refusal("api.chat")  # the same counters as /api/chat
        if refused:
            raise BadChatRequest(429, refused)
        generation = answers.answer_unstored(messages, model)
        self.current = generation
        reasoning = isinstance(body, dict) and body.get("reasoning") is True  # thoughts only when asked
        self.forwarder = gevent.spawn(self.forward, generation, reasoning)

    def add_context(self, content) -> None:
        """Add a user turn to the answer running on this socket; raises an HTTP error when it cannot."""
        generation = self.current
        if generation is None:
            raise BadChatRequest(
                409,
                "No answer is being written on this socket: context goes with a running answer. "
                'Send {"messages": […]} to ask.',
            )
        if not isinstance(content, str):
            raise BadChatRequest(400, '"content" must be a string: the text to add to the answer.')
        if not is_text(content):
            raise BadChatRequest(400, '"content" is not valid Unicode text (it holds a lone surrogate).')
        answers.add_context(generation, content)

    def forward(self, generation, reasoning: bool = False) -> None:
        encoder = SocketEvents(reasoning)
        settings = self.app.settings
        try:
            with closing(
                follow(generation, 0, flush_interval=settings.flush_interval, ping_interval=settings.ping_interval)
            ) as events:
                for event in events:
                    messages = encoder.encode(event)
                    if not messages:
                        continue
                    with self.send_lock:
                        if encoder.ended:  # the next request may come as soon as this is read
                            self.current = None
                        for message in messages:
                            self.ws.send(message)
        except (ConnectionClosed, OSError):
            generation.cancel(Status.STOPPED, "Stopped: the WebSocket was closed.")
        except Exception:
            log.exception("forwarding generation %s failed", generation.key)
            generation.cancel(Status.FAILED, "Something went wrong on the server while sending this answer.")
        finally:
            if self.current is generation:
                self.current = None
