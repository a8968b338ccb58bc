"""The embedded local model: `python -m bench.local` (after `make run` or `make test` installed it).

Prints tokens/s with 1, 2 and 4 answers written at once, their first-token times, the worker's memory,
and what a concurrent page load costs meanwhile (against the same load with the model idle): the event
loop must stay free while llama.cpp computes. `--prompts` instead answers the ten everyday prompts of
bench/prompts.txt one by one and prints each answer (LOCAL_MODEL_PATH=… to try another GGUF).
127.0.0.1 only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import memory_kb, tree  # noqa: E402
from tests.conftest import AppServer, client  # noqa: E402
from trickle import storage  # noqa: E402

PROMPTS = ROOT / "bench" / "prompts.txt"
LONG_PROMPTS = [
    "Write a long story about a lighthouse keeper and the ships that pass.",
    "Describe the four seasons in detail, one long paragraph each.",
    "Explain how bread is made, step by step, in detail.",
    "Write a long letter to a friend about a trip to the mountains.",
]


def everyday_prompts() -> list[str]:
    lines = PROMPTS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def page_loads(session, server: AppServer, seconds: float, limit: int = 200, until=None) -> list[float]:
    """GET / repeatedly for `seconds` (at most `limit` times, or until the `until` event), in ms each."""
    timings: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(timings) < limit and not (until and until.is_set()):
        started = time.monotonic()
        assert session.get(server.url("/"), timeout=30).status_code == 200
        timings.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    return timings


def ask(server: AppServer, session, question: str) -> int:
    sent = session.post(server.url("/messages"), data={"content": question}, headers={"HX-Request": "true"})
    return int(re.search(r'id="message-(\d+)" hx-ext', sent.text).group(1))


def wait_ended(engine, answer_ids: list[int], timeout: float = 600) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [storage.get_message(engine, answer_id) for answer_id in answer_ids]
        if all(row.status != "streaming" for row in rows):
            return rows
        time.sleep(0.2)
    raise SystemExit(f"answers still streaming after {timeout:g} s")


def worker_memory(server: AppServer) -> str:
    """The worker's resident memory now and at its peak (the gunicorn master left out)."""
    workers = [memory_kb(pid) for pid in tree(server.process.pid) if pid != server.process.pid]
    now, peak = (sum(m[key] for m in workers) / 1024 for key in ("VmRSS", "VmHWM"))
    return f"worker memory: {now:.0f} MB resident, {peak:.0f} MB at its peak"


def concurrent(server: AppServer, count: int, loads_session) -> dict:
    """`count` answers asked at once (each by its own person), with page loads while they run."""
    sessions = [client(server) for _ in range(count)]
    started = time.monotonic()
    answer_ids = [ask(server, s, LONG_PROMPTS[n % len(LONG_PROMPTS)]) for n, s in enumerate(sessions)]
    loads: list[float] = []
    ended = threading.Event()
    loader = threading.Thread(target=lambda: loads.extend(page_loads(loads_session, server, 600, 200, ended)))
    loader.start()
    rows = wait_ended(server.engine(), answer_ids)
    wall = time.monotonic() - started
    ended.set()
    loader.join()
    tokens = sum(row.tokens_out or 0 for row in rows)
    per_answer = [
        row.tokens_out / ((row.duration_ms - row.ttft_ms) / 1000)
        for row in rows
        if row.tokens_out and row.ttft_ms is not None and row.duration_ms > row.ttft_ms
    ]
    return {
        "count": count,
        "total": tokens / wall,
        "each": statistics.mean(per_answer) if per_answer else 0.0,
        "first": [row.ttft_ms for row in rows],
        "loads": loads,
    }


def run_prompts(server: AppServer) -> None:
    session = client(server)
    engine = server.engine()
    for prompt in everyday_prompts():
        row = wait_ended(engine, [ask(server, session, prompt)])[0]
        seconds = (row.duration_ms - row.ttft_ms) / 1000 if row.ttft_ms is not None else 0
        rate = row.tokens_out / seconds if seconds > 0 and row.tokens_out else 0
        answer = " ".join(row.content.split())
        print(f"\n> {prompt}\n  [{row.tokens_out} tokens, {rate:.0f} tokens/s, first token {row.ttft_ms} ms]")
        print(f"  {answer[:400]}{'…' if len(answer) > 400 else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200, help="max tokens of each local answer (default 200)")
    parser.add_argument("--parallel", type=int, default=None, help="LOCAL_PARALLEL (default: the app's)")
    parser.add_argument("--prompts", action="store_true", help="answer the ten everyday prompts instead")
    args = parser.parse_args()
    env = {
        "CHAT_PROVIDER": "local",
        "LOCAL_MAX_TOKENS": str(args.tokens),
        "DISCONNECT_GRACE_S": "600",  # nobody listens to these answers: they must go on
        "ATTACH_TIMEOUT_S": "600",
    }
    if args.parallel:
        env["LOCAL_PARALLEL"] = str(args.parallel)
    for name in ("LOCAL_MODEL_PATH", "LOCAL_THREADS", "LOCAL_CONTEXT", "TEMPERATURE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    server = AppServer(env).start(timeout=120)
    try:
        if args.prompts:
            run_prompts(server)
            print(f"\n{worker_memory(server)}")
            return 0
        visitor = client(server)
        wait_ended(server.engine(), [ask(server, visitor, "Hi")])  # the first answer waits for the model to load
        idle = page_loads(visitor, server, 3, limit=30)
        print(f"Local model, {env.get('LOCAL_PARALLEL', 'default')} slots, answers of up to {args.tokens} tokens")
        print(f"  page load (GET /) with the model idle: p50 {statistics.median(idle):.0f} ms, max {max(idle):.0f} ms")
        for count in (1, 2, 4):
            got = concurrent(server, count, visitor)
            loads = got["loads"]
            print(
                f"  {count} at once: {got['total']:.0f} tokens/s in all, {got['each']:.0f} per answer; first token "
                f"{min(got['first'])}–{max(got['first'])} ms; page load meanwhile p50 "
                f"{statistics.median(loads):.0f} ms, max {max(loads):.0f} ms ({len(loads)} loads)"
            )
        print(f"  {worker_memory(server)}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
