"""Live markdown on the wire and in the browser: `python -m bench.markdown [--tokens 4000]`.

Streams one long answer (paragraphs, lists, tables, code) through the page flow and prints
(1) the SSE bytes the stream took against the size of the final rendered HTML: blocks are sent
once, and the unfinished block, shown formatted, as its new text appended when that is all that
changed, else rendered again (so at most that block's size a flush, and in an open code fence only
the lines that completed), so the ratio stays small however long the answer grows; and
(2) the longest main-thread task Chromium saw while the answer streamed (PerformanceObserver
"longtask", which reports tasks over 50 ms). 127.0.0.1 only; bounded in time.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import CHROMIUM, AppServer, client  # noqa: E402
from tests.fake_upstream import FakeUpstream, Script  # noqa: E402
from trickle.render import render_markdown  # noqa: E402

SECTION = """## Part {n}

Streaming markdown is rendered on the server, block by block, and **only the unfinished tail** travels as
plain text. This paragraph has *emphasis*, `inline code` and a [link](https://example.org/{n}).

- first point of part {n}, with a few words to make it a realistic line
- second point, which mentions `trickle.render.Splitter`
- third point: lists end when a paragraph follows

| column | value | note |
|---|---:|---|
| alpha | {n} | the first row |
| beta | {m} | the second row |
| gamma | {k} | the third row |

```python
def part_{n}(items: list[int]) -> int:
    total = 0
    for item in items:
        total += item * {n}
    return total
```

"""


def long_answer(tokens: int) -> str:
    text, n = "", 0
    while len(re.findall(r"\S+\s*|\s+", text)) < tokens:
        n += 1
        text += SECTION.format(n=n, m=n * 7, k=n * 13)
    return text


def measure_bytes(server: AppServer, upstream: FakeUpstream, answer: str, delay: float) -> tuple[int, int]:
    """SSE bytes of one page-flow stream, and the size of the answer's final rendered HTML."""
    upstream.push(Script(text=answer, delay=delay))
    session = client(server)
    response = session.post(
        server.url("/messages"), data={"content": "Write the long one."}, headers={"HX-Request": "true"}, timeout=30
    )
    url = re.search(r'sse-connect="([^"]+)"', response.text).group(1)
    received = 0
    with session.get(server.url(url), stream=True, timeout=(10, 120)) as events:
        for chunk in events.iter_content(chunk_size=None):
            received += len(chunk)
            if b"event: done" in chunk:
                break
    return received, len(str(render_markdown(answer)).encode())


def measure_longest_task(server: AppServer, upstream: FakeUpstream, answer: str, delay: float) -> tuple[float, int]:
    """The longest main-thread task while the answer streams in Chromium, and how many there were over 50 ms."""
    from playwright.sync_api import sync_playwright

    upstream.push(Script(text=answer, delay=delay))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server.url("/"))
        page.evaluate("""() => { window.__tasks = [];
            new PerformanceObserver(list => { for (const e of list.getEntries())
                if (window.__sent !== undefined && e.startTime >= window.__sent) window.__tasks.push(e.duration); })
              .observe({type: 'longtask'}); }""")
        page.locator("#content").fill("Write the long one.")
        page.evaluate("() => { window.__sent = performance.now(); }")  # the page's own load is not the stream
        page.locator("#content").press("Enter")
        page.wait_for_selector("article.assistant[data-status=done]", timeout=300_000)
        tasks = page.evaluate("() => window.__tasks")
        browser.close()
    return (max(tasks) if tasks else 0.0), len(tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000, help="answer length in tokens (default 4000)")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="time between tokens in the browser run")
    parser.add_argument(
        "--bytes-delay-ms", type=float, default=1.0, help="time between tokens in the bytes run (more: more flushes)"
    )
    args = parser.parse_args()
    answer = long_answer(args.tokens)
    tokens = len(re.findall(r"\S+\s*|\s+", answer))
    upstream = FakeUpstream().start()
    server = AppServer(
        {
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "bench",
            "CHAT_MODEL": "bench",
            "RATE_LIMIT_PER_IP": "100000/minute",
        }
    ).start()
    try:
        started = time.monotonic()
        sse_bytes, html_bytes = measure_bytes(server, upstream, answer, args.bytes_delay_ms / 1000)
        longest, count = measure_longest_task(server, upstream, answer, args.delay_ms / 1000)
        print(f"Live markdown: {tokens} tokens ({len(answer):,} chars of markdown)")
        print(
            f"  SSE bytes {sse_bytes:,} / rendered HTML {html_bytes:,} bytes = {sse_bytes / html_bytes:.2f}x "
            f"(target <= 3x)"
        )
        print(
            f"  longest main-thread task while streaming in Chromium: {longest:.0f} ms "
            f"({count} tasks over 50 ms; target: none)"
        )
        print(f"  ({time.monotonic() - started:.0f} s)")
    finally:
        server.stop()
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
