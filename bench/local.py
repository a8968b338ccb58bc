"""The embedded local model: `python -m bench.local` (needs `make local`).

Prints the model's tokens/s and what a concurrent page load costs while it generates, against the
same page load with the model idle: the event loop must stay free while llama.cpp computes.
127.0.0.1 only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import AppServer, client  # noqa: E402
from trickle import storage  # noqa: E402


def page_loads(session, server: AppServer, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.monotonic()
        assert session.get(server.url("/"), timeout=30).status_code == 200
        timings.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=300, help="max tokens of the local answer (default 300)")
    parser.add_argument("--loads", type=int, default=20, help="page loads per phase (default 20)")
    args = parser.parse_args()
    server = AppServer(
        {
            "CHAT_PROVIDER": "local",
            "MAX_TOKENS": str(args.tokens),
            "TEMPERATURE": "0",
            "RATE_LIMIT_PER_IP": "100000/minute",
        }
    ).start()
    try:
        writer, visitor = client(server), client(server)
        warm = writer.post(server.url("/messages"), data={"content": "Hi"}, headers={"HX-Request": "true"})
        engine = server.engine()
        warm_id = int(re.search(r'id="message-(\d+)" hx-ext', warm.text).group(1))
        deadline = time.monotonic() + 120
        while storage.get_message(engine, warm_id).status == "streaming" and time.monotonic() < deadline:
            time.sleep(0.2)  # the first answer loads the model
        idle = page_loads(visitor, server, args.loads)
        sent = writer.post(
            server.url("/messages"),
            headers={"HX-Request": "true"},
            data={"content": "Write a long essay about lighthouses, their history and keepers."},
        )
        answer_id = int(re.search(r'id="message-(\d+)" hx-ext', sent.text).group(1))
        time.sleep(0.5)
        busy = page_loads(visitor, server, args.loads)
        still_running = storage.get_message(engine, answer_id).status == "streaming"
        deadline = time.monotonic() + 300
        while storage.get_message(engine, answer_id).status == "streaming" and time.monotonic() < deadline:
            time.sleep(0.2)
        row = storage.get_message(engine, answer_id)
        seconds = (row.duration_ms - row.ttft_ms) / 1000 if row.duration_ms and row.ttft_ms is not None else 0
        rate = row.tokens_out / seconds if seconds else 0.0
        print(
            f"Local model: {row.tokens_out} tokens in {seconds:.1f} s = {rate:.0f} tokens/s "
            f"(first token {row.ttft_ms} ms)"
        )
        print(
            f"  page load (GET /) with the model idle:       p50 {statistics.median(idle):.0f} ms, "
            f"max {max(idle):.0f} ms"
        )
        print(
            f"  page load while it generates ({'all' if still_running else 'some'} during the answer): "
            f"p50 {statistics.median(busy):.0f} ms, max {max(busy):.0f} ms"
        )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
