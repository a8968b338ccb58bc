"""A fake OpenAI-compatible upstream, cheap enough never to be the bottleneck.

One process, one epoll loop, no threads: every chunk of the reply is encoded
once (SSE event plus its HTTP chunk header) and each stream only walks a list
of bytes objects, one `send()` per token, on a timer heap. It serves
`POST /v1/chat/completions` (streamed, with `stream_options.include_usage`, or
not), `GET /v1/models`, and `GET /stats` (its own CPU and counters, so the
benchmark can show it is not the limit, and the wall-clock time at which it
wrote the first content chunk of each recent stream, for bench/browser.py). Keep-alive is supported (the Python
and Node OpenAI clients pool connections); 127.0.0.1 only.

    python -m bench.upstream --port 0 --tokens 200 --interval-ms 20

prints `READY <port>` once listening; on SIGTERM/SIGINT it prints its CPU use
to stderr and exits.
"""

from __future__ import annotations

import argparse
import collections
import gc
import heapq
import json
import resource
import select
import signal
import socket
import sys
import time

from bench.reply import reply_tokens

CREATED = 1_700_000_000
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERR, EPOLLHUP = select.EPOLLERR, select.EPOLLHUP


def http_chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def sse(obj) -> bytes:
    return http_chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


class Reply:
    """The pre-encoded chunks of the reply for one (model, include_usage)."""

    def __init__(self, tokens: list[str], model: str, include_usage: bool):
        def chunk(delta, finish=None):
            obj = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                obj["usage"] = None  # as OpenAI does: null on every chunk but the last
            return obj

        self.model = model
        self.include_usage = include_usage
        self.head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
        )
        self.role = sse(chunk({"role": "assistant", "content": ""}))
        self.tokens = [sse(chunk({"content": token})) for token in tokens]
        self.finish = sse(chunk({}, "stop"))
        self.completion_tokens = len(tokens)
        self.text = "".join(tokens)

    def tail(self, prompt_tokens: int) -> bytes:
        out = [self.finish]
        if self.include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": prompt_tokens + self.completion_tokens,
            }
            out.append(
                sse(
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion.chunk",
                        "created": CREATED,
                        "model": self.model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        out.append(http_chunk(b"data: [DONE]\n\n"))
        out.append(b"0\r\n\r\n")
        return b"".join(out)


class Conn:
    __slots__ = ("sock", "fd", "inbuf", "outbuf", "keep_alive", "close_when_flushed", "stream")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = b""
        self.outbuf = b""
        self.keep_alive = True
        self.close_when_flushed = False
        self.stream = None


class Stream:
    __slots__ = ("conn", "reply", "index", "prompt_tokens", "dead", "number")

    def __init__(self, conn, reply, prompt_tokens, number: int):
        self.conn = conn
        self.reply = reply
        self.index = 0
        self.prompt_tokens = prompt_tokens
        self.dead = False
        self.number = number  # 1 for the first stream served


class Upstream:
    def __init__(self, host: str, port: int, tokens: int, interval: float, first_delay: float):
        self.tokens = reply_tokens(tokens)
        self.interval = interval
        self.first_delay = first_delay
        self.replies: dict[tuple[str, bool], Reply] = {}
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), EPOLLIN)
        self.conns: dict[int, Conn] = {}
        self.heap: list = []
        self.seq = 0
        self.running = True
        self.stats = {
            "requests": 0,
            "streams_started": 0,
            "streams_finished": 0,
            "streams_abandoned": 0,
            "tokens_sent": 0,
            "active": 0,
            "peak_active": 0,
            "connections": 0,
            "peak_connections": 0,
        }
        # (stream number, time.time() just after its first content chunk was written): one clock read
        # per stream, the last 64 kept, for a browser on the same machine to compare with its own clock
        self.first_content: collections.deque = collections.deque(maxlen=64)

    def reply(self, model: str, include_usage: bool) -> Reply:
        key = (model, include_usage)
        reply = self.replies.get(key)
        if reply is None:
            if len(self.replies) > 64:  # bounded: models are client-chosen strings
                self.replies.clear()
            reply = self.replies[key] = Reply(self.tokens, model, include_usage)
        return reply

    # -- the loop ---------------------------------------------------------------
    def serve(self) -> None:
        heap, epoll, conns = self.heap, self.epoll, self.conns
        lfd = self.listener.fileno()
        interval = self.interval
        monotonic = time.monotonic
        # No collector pauses while streaming: the loop makes no garbage cycles (a stream and its
        # connection are unlinked when either ends); collect only when idle, for safety.
        gc.collect()
        gc.disable()
        last_collect = monotonic()
        while self.running:
            if not self.stats["active"] and monotonic() - last_collect > 10:
                gc.collect()
                last_collect = monotonic()
            timeout = 0.2  # also how soon a SIGTERM is noticed
            if heap:
                timeout = max(0.0, min(timeout, heap[0][0] - monotonic()))
            try:
                events = epoll.poll(timeout)
            except InterruptedError:
                continue
            for fd, mask in events:
                if fd == lfd:
                    self.accept()
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                if mask & EPOLLOUT:
                    self.flush(conn)
                    if conn.fd not in conns:
                        continue
                if mask & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    self.read(conn)
            now = monotonic()
            stats = self.stats
            while heap and heap[0][0] <= now:
                due, _, stream = heapq.heappop(heap)
                if stream.dead:
                    continue
                reply = stream.reply
                data = reply.tokens[stream.index]
                stream.index += 1
                stats["tokens_sent"] += 1
                if stream.index == len(reply.tokens):
                    self.write(stream.conn, data + reply.tail(stream.prompt_tokens))
                    if not stream.dead:  # a failed write closed the connection and the stream
                        self.end_stream(stream)
                else:
                    self.write(stream.conn, data)
                    if stream.index == 1:
                        self.first_content.append((stream.number, time.time()))
                    if stream.dead:
                        continue
                    self.seq += 1
                    heapq.heappush(heap, (due + interval, self.seq, stream))

    def accept(self) -> None:
        for _ in range(512):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the backlog keeps them
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock)
            self.conns[conn.fd] = conn
            self.epoll.register(conn.fd, EPOLLIN)
            self.stats["connections"] += 1
            self.stats["peak_connections"] = max(self.stats["peak_connections"], len(self.conns))

    def close(self, conn: Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        if conn.stream is not None and not conn.stream.dead:
            conn.stream.dead = True
            self.stats["streams_abandoned"] += 1
            self.stats["active"] -= 1
            conn.stream = None
        try:
            self.epoll.unregister(conn.fd)
        except OSError:
            pass
        conn.sock.close()

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return
        conn.inbuf += data
        if len(conn.inbuf) > 8 * 1024 * 1024:
            self.close(conn)
            return
        if conn.stream is None:
            self.handle(conn)

    def write(self, conn: Conn, data: bytes) -> None:
        if conn.fd not in self.conns:
            return
        if conn.outbuf:
            conn.outbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(conn)
            return
        if sent < len(data):
            conn.outbuf = data[sent:]
            self.epoll.modify(conn.fd, EPOLLIN | EPOLLOUT)

    def flush(self, conn: Conn) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close(conn)
                return
            conn.outbuf = conn.outbuf[sent:]
        if not conn.outbuf:
            if conn.close_when_flushed:
                self.close(conn)
            else:
                self.epoll.modify(conn.fd, EPOLLIN)

    def finish_response(self, conn: Conn) -> None:
        """The response is written: close, or read the next request on this connection."""
        if not conn.keep_alive:
            if conn.outbuf:
                conn.close_when_flushed = True
            else:
                self.close(conn)
            return
        if conn.inbuf:
            self.handle(conn)

    def end_stream(self, stream: Stream) -> None:
        stream.dead = True
        stream.conn.stream = None
        self.stats["streams_finished"] += 1
        self.stats["active"] -= 1
        self.finish_response(stream.conn)

    # -- HTTP -------------------------------------------------------------------
    def handle(self, conn: Conn) -> None:
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = conn.inbuf[:end].decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            conn.keep_alive = False
            self.respond(conn, 400, {"error": {"message": "bad request line"}})
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body_start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, consumed = _dechunk(conn.inbuf, body_start)
            if body is None:
                return  # wait for more
        else:
            length = int(headers.get("content-length") or 0)
            if len(conn.inbuf) < body_start + length:
                return
            body, consumed = conn.inbuf[body_start : body_start + length], body_start + length
        conn.inbuf = conn.inbuf[consumed:]
        connection = headers.get("connection", "").lower()
        conn.keep_alive = version == "HTTP/1.1" and "close" not in connection
        self.stats["requests"] += 1
        path = target.split("?", 1)[0].rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            self.chat(conn, body)
        elif method == "GET" and path.endswith("/models"):
            self.respond(
                conn,
                200,
                {
                    "object": "list",
                    "data": [{"id": "bench", "object": "model", "created": CREATED, "owned_by": "bench"}],
                },
            )
        elif method == "GET" and path == "/stats":
            self.respond(conn, 200, self.snapshot())
        else:
            self.respond(
                conn, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}}
            )

    def respond(self, conn: Conn, status: int, obj) -> None:
        payload = json.dumps(obj).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        close = "" if conn.keep_alive else "Connection: close\r\n"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{close}\r\n"
        )
        self.write(conn, head.encode() + payload)
        self.finish_response(conn)

    def chat(self, conn: Conn, body: bytes) -> None:
        try:
            request = json.loads(body)
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            self.respond(
                conn, 400, {"error": {"message": "body must be JSON with messages", "type": "invalid_request_error"}}
            )
            return
        model = str(request.get("model") or "bench")[:200]
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 4 + 1
        options = request.get("stream_options") or {}
        reply = self.reply(model, bool(options.get("include_usage")) if isinstance(options, dict) else False)
        if not request.get("stream"):
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": prompt_tokens + reply.completion_tokens,
            }
            self.respond(
                conn,
                200,
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                },
            )
            return
        head = reply.head + (b"\r\n" if conn.keep_alive else b"Connection: close\r\n\r\n")
        self.write(conn, head + reply.role)
        if conn.fd not in self.conns:
            return
        self.stats["streams_started"] += 1
        stream = conn.stream = Stream(conn, reply, prompt_tokens, self.stats["streams_started"])
        self.stats["active"] += 1
        self.stats["peak_active"] = max(self.stats["peak_active"], self.stats["active"])
        if not reply.tokens:
            conn.stream = None
            self.write(conn, reply.tail(prompt_tokens))
            self.end_stream(stream)
            return
        self.seq += 1
        heapq.heappush(self.heap, (time.monotonic() + self.first_delay, self.seq, stream))

    def snapshot(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **self.stats,
            "cpu_user_s": usage.ru_utime,
            "cpu_system_s": usage.ru_stime,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
            "tokens_per_reply": len(self.tokens),
            "interval_ms": self.interval * 1000,
            "first_content": list(self.first_content),
        }


def _dechunk(buf: bytes, pos: int):
    """A chunked request body starting at `pos`: (body, end offset) or (None, 0) if incomplete."""
    parts = []
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None, 0
        size = int(buf[pos:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", line_end)
            if trailer_end < 0 and buf[line_end : line_end + 4] != b"\r\n\r\n":
                if len(buf) < line_end + 4:
                    return None, 0
            return b"".join(parts), (trailer_end + 4 if trailer_end >= 0 else line_end + 4)
        if len(buf) < line_end + 2 + size + 2:
            return None, 0
        parts.append(buf[line_end + 2 : line_end + 2 + size])
        pos = line_end + 2 + size + 2


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=200, help="content chunks per reply (default 200)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="time between two chunks (default 20)")
    parser.add_argument(
        "--first-ms", type=float, default=None, help="time to the first content chunk (default: the interval)"
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the bench upstream listens on the loopback only")
    interval = args.interval_ms / 1000
    first = interval if args.first_ms is None else args.first_ms / 1000
    upstream = Upstream(args.host, args.port, args.tokens, interval, first)

    def stop(signum, frame):
        upstream.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"READY {upstream.port}", flush=True)
    started = time.monotonic()
    try:
        upstream.serve()
    finally:
        snap = upstream.snapshot()
        print(
            f"bench upstream: {snap['cpu_s']:.2f} s CPU over {time.monotonic() - started:.1f} s, "
            f"{snap['streams_finished']} streams, {snap['tokens_sent']} tokens, "
            f"peak {snap['peak_active']} concurrent, max RSS {snap['max_rss_kb'] / 1024:.0f} MB",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
