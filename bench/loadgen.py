"""The load generator: N concurrent streams over raw non-blocking sockets, in its own process.

During the run it does as little as it can (one epoll loop; each `recv` is
stored with its arrival time, nothing is parsed), so its CPU stays small and is
reported separately; the streams are decoded afterwards. Every request says
`Connection: close`, so a response ends at EOF and no framing is parsed while
timing matters.

Modes:
  openai  POST /v1/chat/completions (stream, include_usage): the upstream directly
  api     POST /api/chat {"messages": [...]} -> data: {"content": ...} ... data: [DONE]
  page    POST /messages (HX-Request) -> sse-connect URL -> GET it: delta events ... done

Run by the benchmark (`python -m bench.loadgen CONFIG.json`): opens its sessions and
prints READY; then, for each wave of N streams, waits for GO on stdin, prints
RUNDONE <client cpu s>, waits for ANALYSE <path>, and prints RESULT once that JSON
file is written. Waves reuse the same sessions (the same N people asking again),
so a soak is many waves of one process; QUIT or EOF ends it. 127.0.0.1 only.
"""

from __future__ import annotations

import errno
import gc
import html
import http.client
import json
import re
import resource
import select
import socket
import sys
import time
from urllib.parse import quote_plus

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
CONNECTING, SENDING, READING = 1, 2, 3
SSE_CONNECT = re.compile(r'sse-connect="([^"]+)"')
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- requests -------------------------------------------------------------------------
def _request(method: str, path: str, host: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def first_request(mode: str, host: str, prompt: str, session: dict | None = None) -> bytes:
    messages = [{"role": "user", "content": prompt}]
    if mode == "openai":
        body = json.dumps(
            {"model": "bench", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        ).encode()
        return _request(
            "POST",
            "/v1/chat/completions",
            host,
            {"Content-Type": "application/json", "Authorization": "Bearer x", "Accept": "text/event-stream"},
            body,
        )
    if mode == "api":
        body = json.dumps({"messages": messages}).encode()
        return _request(
            "POST", "/api/chat", host, {"Content-Type": "application/json", "Accept": "text/event-stream"}, body
        )
    if mode == "page":
        body = ("content=" + quote_plus(prompt)).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true", "Accept": "text/html"}
        return _request("POST", "/messages", host, {**headers, **(session or {})}, body)
    raise ValueError(mode)


def events_request(path: str, host: str, session: dict | None = None) -> bytes:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if session and "Cookie" in session:
        headers["Cookie"] = session["Cookie"]
    return _request("GET", path, host, headers)


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


def open_session(host: str, port: int) -> dict:
    """What a browser has after loading the chat page: its session cookie and the page's CSRF token
    (both absent from versions without them). Done before the run: it is not part of the measure."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Accept": "text/html"})
        response = conn.getresponse()
        page = response.read().decode("utf-8", "replace")
        cookies = [value.split(";", 1)[0] for name, value in response.getheaders() if name.lower() == "set-cookie"]
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"GET / answered {response.status}: cannot open a browser session")
    session = {}
    if cookies:
        session["Cookie"] = "; ".join(cookies)
    match = CSRF_META.search(page)
    if match:
        session["X-CSRF-Token"] = html.unescape(match.group(1))
    return session


# -- decoding (after the run) -------------------------------------------------------------
class HttpResponse:
    """Incremental HTTP/1.1 response parser: head, then the body (chunked or not) as SSE events."""

    def __init__(self):
        self.buf = b""
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.chunked = False
        self.length: int | None = None
        self.seen = 0
        self.complete = False
        self.body = b""  # for non-SSE use (the POST's HTML)
        self.sse = b""

    def feed(self, data: bytes, keep_body: bool = False) -> list[bytes]:
        self.buf += data
        if self.headers is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return []
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            self.buf = self.buf[end + 4 :]
            try:
                self.status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                self.status = -1
            self.headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            if not self.chunked and "content-length" in self.headers:
                self.length = int(self.headers["content-length"])
        if self.chunked:
            parts = []
            while not self.complete:
                line_end = self.buf.find(b"\r\n")
                if line_end < 0:
                    break
                try:
                    size = int(self.buf[:line_end].split(b";")[0], 16)
                except ValueError:
                    self.status = -2  # garbled framing
                    self.buf = b""
                    break
                if size == 0:
                    if self.buf.find(b"\r\n", line_end + 2) >= 0 or self.buf[line_end : line_end + 4] == b"\r\n\r\n":
                        self.complete = True
                    break
                if len(self.buf) < line_end + 2 + size + 2:
                    break
                parts.append(self.buf[line_end + 2 : line_end + 2 + size])
                self.buf = self.buf[line_end + 4 + size :]
            data = b"".join(parts)
        else:
            data, self.buf = self.buf, b""
            self.seen += len(data)
            if self.length is not None and self.seen >= self.length:
                self.complete = True
        if keep_body:
            self.body += data
            return []
        self.sse += data
        events = []
        while True:
            end = self.sse.find(b"\n\n")
            if end < 0:
                return events
            events.append(self.sse[:end])
            self.sse = self.sse[end + 2 :]


def parse_event(raw: bytes) -> tuple[str | None, str | None]:
    """(event name, data) of one SSE event; data None for a comment-only event."""
    name = None
    data = []
    for line in raw.decode("utf-8").split("\n"):
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            name = line[6:].strip()
    return name, ("\n".join(data) if data else None)


def content_of(mode: str, raw: bytes) -> tuple[str, str | None]:
    """What one event means for the text: ("content", text), ("done", None), ("error", msg) or ("other", …)."""
    name, data = parse_event(raw)
    if data is None:
        return "other", None
    if mode == "page":
        if name == "delta":
            return "content", html.unescape(data)
        if name == "done":
            return "done", data
        if name == "block":
            return "error", "unexpected block event (the bench reply has no newline)"
        return "other", name
    if data == "[DONE]":
        return "done", None
    obj = json.loads(data)
    if mode == "api":
        if "error" in obj:
            return "error", str(obj["error"])
        return "content", obj.get("content") or ""
    if obj.get("error"):
        return "error", str(obj["error"])
    text = "".join((choice.get("delta") or {}).get("content") or "" for choice in obj.get("choices") or ())
    return "content", text


TAIL = re.compile(r'<div class="tail"[^>]*>(.*?)</div>', re.S)  # the bench reply's tail: text in spans
MESSAGE_BODY = re.compile(r'<div class="body">(.*?)</div>\s*<footer', re.S)
TAG = re.compile(r"<[^>]+>")


def text_of_message(fragment: str) -> str | None:
    """The text of a final message bubble (one paragraph of plain text, for the bench reply)."""
    match = MESSAGE_BODY.search(fragment)
    return html.unescape(TAG.sub("", match.group(1))).strip() if match else None


def analyse(mode: str, stream: Stream, expected: str) -> dict:
    """Per-stream figures from the timed recvs."""
    result = {
        "ttft_ms": None,
        "gap_ms": None,
        "chars": 0,
        "exact": False,
        "bytes": 0,
        "post_bytes": 0,
        "post_ms": None,
        "error": stream.error,
        "status": None,
        "contents": 0,
        "late": False,
    }
    if mode == "page" and stream.post_recvs:
        result["post_bytes"] = sum(len(d) for _, d in stream.post_recvs)
        if stream.t_post is not None:
            result["post_ms"] = (stream.t_post - stream.t0) * 1000
    response = HttpResponse()
    # What the POST's bubble showed already (an answer that began before it was rendered): the events
    # stream resumes after it, as in a browser; shown at the POST's reply.
    text = [stream.prefix] if mode == "page" and stream.prefix else []
    times = [stream.t_post] if text else []
    done = False
    done_html = None
    done_at = None
    try:
        for t, data in stream.recvs:
            result["bytes"] += len(data)
            for raw in response.feed(data):
                kind, value = content_of(mode, raw)
                if kind == "content" and value:
                    text.append(value)
                    times.append(t)
                elif kind == "done":
                    done = True
                    done_html, done_at = value, t
                elif kind == "error" and not result["error"]:
                    result["error"] = value
    except (ValueError, UnicodeDecodeError) as err:
        result["error"] = result["error"] or f"undecodable stream: {err.__class__.__name__}"
    result["status"] = response.status
    if response.status not in (0, 200) and not result["error"]:
        result["error"] = f"HTTP {response.status}"
    complete = response.complete or (
        response.headers is not None and not response.chunked and response.length is None and stream.eof
    )
    body = "".join(text)
    if mode == "page" and body != expected and done_html:
        # The answer had ended before the events request attached: the page gets it whole in `done`
        # (what a browser shows is right, but it did not stream). Counted apart, never as exact.
        whole = text_of_message(done_html)
        if whole == expected:
            result["late"] = True
            times = times[:1] or [done_at]
            result["error"] = result["error"] or "answer ended before the stream attached (whole in done)"
    result["chars"] = len(body)
    result["contents"] = len(times)
    if times:
        result["ttft_ms"] = (times[0] - stream.t0) * 1000
        result["gap_ms"] = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0) * 1000
    result["exact"] = bool(done and complete and body == expected and response.status == 200 and not stream.error)
    if not result["exact"] and not result["error"]:
        if not done:
            result["error"] = "no end event"
        elif not complete:
            result["error"] = "truncated HTTP body"
        elif body != expected:
            result["error"] = f"text differs ({len(body)} chars vs {len(expected)})"
    return result


# -- the run --------------------------------------------------------------------------
class Stream:
    __slots__ = (
        "index",
        "sock",
        "fd",
        "state",
        "phase",
        "t0",
        "out",
        "recvs",
        "post_recvs",
        "error",
        "eof",
        "t_end",
        "t_post",
        "session",
        "prefix",
    )

    def __init__(self, index: int):
        self.index = index
        self.sock = None
        self.fd = -1
        self.state = 0
        self.phase = "main"
        self.t0 = 0.0
        self.out = b""
        self.recvs: list = []
        self.post_recvs: list | None = None
        self.error: str | None = None
        self.eof = False
        self.t_end = None
        self.t_post = None
        self.session: dict | None = None
        self.prefix = ""  # page flow: the text the POST's bubble already showed (its cursor's worth)


class LoadGen:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.host = cfg["host"]
        if self.host not in LOOPBACK:
            raise SystemExit("the load generator only targets the loopback")
        self.port = cfg["port"]
        # Several instances behind a (here: round-robin) balancer: stream i goes to ports[i % len]; in the
        # page flow its answer is then followed on the next instance, as a reload elsewhere would.
        self.ports = cfg.get("ports") or [self.port]
        self.mode = cfg["mode"]
        self.expected = cfg["expected"]
        self.epoll = select.epoll()
        self.fds: dict[int, Stream] = {}
        self.streams: list[Stream] = []
        self.running = 0
        self.wave = 0
        # the page flow: one browser session per concurrent stream, as N people would have
        self.sessions = [open_session(self.host, self.port) for _ in range(cfg["n"])] if self.mode == "page" else []

    def port_of(self, stream: Stream, hop: int = 0) -> int:
        return self.ports[(stream.index + hop) % len(self.ports)]

    def connect(self, stream: Stream, request: bytes, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream.sock, stream.fd, stream.out, stream.state = sock, sock.fileno(), request, CONNECTING
        code = sock.connect_ex((self.host, port))
        if code not in (0, errno.EINPROGRESS):
            stream.error = f"connect: {errno.errorcode.get(code, code)}"
            sock.close()
            self.end(stream)
            return
        self.fds[stream.fd] = stream
        self.epoll.register(stream.fd, EPOLLOUT)

    def start(self, index: int) -> None:
        stream = Stream(index)
        self.streams.append(stream)
        self.running += 1
        stream.t0 = time.monotonic()
        if self.mode == "page":
            stream.phase = "post"
            stream.post_recvs = stream.recvs
            stream.session = self.sessions[index % len(self.sessions)]
        port = self.port_of(stream)
        self.connect(
            stream,
            first_request(self.mode, f"{self.host}:{port}", f"Benchmark question {self.wave}.{index}", stream.session),
            port,
        )

    def close(self, stream: Stream) -> None:
        if self.fds.pop(stream.fd, None) is not None:
            try:
                self.epoll.unregister(stream.fd)
            except OSError:
                pass
        stream.sock.close()

    def phase_ended(self, stream: Stream) -> None:
        self.close(stream)
        if stream.phase == "post" and not stream.error:
            stream.t_post = time.monotonic()
            response = HttpResponse()
            for _, data in stream.post_recvs:
                response.feed(data, keep_body=True)
            match = SSE_CONNECT.search(response.body.decode("utf-8", "replace"))
            if response.status != 200 or match is None:
                stream.error = f"POST /messages: HTTP {response.status}" + ("" if match else ", no sse-connect")
                self.end(stream)
                return
            tail = TAIL.search(response.body.decode("utf-8", "replace"))
            # The text the bubble already shows, without the markup's own line breaks.
            stream.prefix = html.unescape(TAG.sub("", tail.group(1))).strip("\n") if tail else ""
            stream.phase = "main"
            stream.recvs = []
            stream.eof = False
            port = self.port_of(stream, hop=1)
            self.connect(
                stream, events_request(html.unescape(match.group(1)), f"{self.host}:{port}", stream.session), port
            )
            return
        self.end(stream)

    def end(self, stream: Stream) -> None:
        stream.t_end = time.monotonic()
        self.running -= 1

    def on_event(self, stream: Stream, mask: int) -> None:
        if stream.state == CONNECTING:
            code = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                stream.error = f"connect: {errno.errorcode.get(code, code)}"
                self.close(stream)
                self.end(stream)
                return
            stream.state = SENDING
        if stream.state == SENDING:
            try:
                sent = stream.sock.send(stream.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                stream.error = f"send: {err.__class__.__name__}"
                self.close(stream)
                self.end(stream)
                return
            stream.out = stream.out[sent:]
            if not stream.out:
                stream.state = READING
                self.epoll.modify(stream.fd, EPOLLIN)
            return
        try:
            data = stream.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            stream.error = f"recv: {err.__class__.__name__}"
            data = b""
        if data:
            stream.recvs.append((time.monotonic(), data))
        else:
            stream.eof = True
            self.phase_ended(stream)

    def run(self) -> dict:
        """One wave: N streams, one every ramp_s / N, until all have ended or the deadline passed."""
        cfg = self.cfg
        n = cfg["n"]
        self.wave += 1
        self.streams = []
        self.running = 0
        started = time.monotonic()
        deadline = started + cfg["timeout_s"]
        spacing = cfg.get("ramp_s", 0.0) / n if n else 0
        next_index = 0
        poll = self.epoll.poll
        fds = self.fds
        while True:
            now = time.monotonic()
            while next_index < n and started + spacing * next_index <= now:
                self.start(next_index)
                next_index += 1
            if next_index == n and self.running == 0:
                break
            if now > deadline:
                for stream in list(fds.values()):
                    stream.error = stream.error or "timeout"
                    self.close(stream)
                    self.end(stream)
                break
            timeout = 0.05
            if next_index < n:
                timeout = max(0.0, min(timeout, started + spacing * next_index - now))
            for fd, mask in poll(timeout):
                stream = fds.get(fd)
                if stream is not None:
                    self.on_event(stream, mask)
        return {"wall_s": time.monotonic() - started, "started": next_index}


def main() -> None:
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    gen = LoadGen(cfg)
    print("READY", flush=True)
    while sys.stdin.readline().strip() == "GO":
        gc.collect()
        gc.disable()  # a full collection over the stored recvs would stall the loop for tens of ms: no cycles here
        cpu0 = cpu_seconds()
        info = gen.run()
        cpu_run = cpu_seconds() - cpu0
        gc.enable()
        print(f"RUNDONE {cpu_run:.3f}", flush=True)
        command, _, path = sys.stdin.readline().strip().partition(" ")
        if command != "ANALYSE" or not path:  # decoding waits until the server's CPU has been read
            return
        results = [analyse(gen.mode, stream, gen.expected) for stream in gen.streams]
        gen.streams = []  # a soak runs many waves: only the figures stay
        cpu_total = cpu_seconds() - cpu0
        with open(path, "w") as fh:
            json.dump({"client_cpu_run_s": cpu_run, "client_cpu_total_s": cpu_total, **info, "streams": results}, fh)
        print("RESULT", flush=True)


if __name__ == "__main__":
    main()
