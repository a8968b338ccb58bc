"""`python -m bench.browser`: how soon one person in Chromium sees the first answer text after the upstream sent it.

The bench upstream answers at once (no wait before the first token) and notes the wall-clock time,
`time.time()`, at which it wrote each stream's first content chunk (its `/stats`); the page notes
`performance.timeOrigin + performance.now()` when a MutationObserver first sees text in the new
answer bubble. Same machine, same clock: the difference is what the relay, the network stack, htmx
and the DOM add. One Trickle worker under gunicorn, as the main bench runs it; 127.0.0.1 only,
bounded in answers and in time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from .goals import check_first_text
from .measure import percentile
from .servers import BENCH, HOST, ROOT, BenchError, Trickle, Upstream

# Armed once the page is loaded: answer bubbles already there are ignored; the first new one with text
# (in its streamed blocks and tail, or its final body) is stamped, and so is the next animation frame,
# which is when that text can first be painted.
WATCH = """() => {
  const now = () => performance.timeOrigin + performance.now();
  const known = new Set(document.querySelectorAll("article.message.assistant"));
  window.__firstText = null;
  window.__firstFrame = null;
  const textOf = (article) => {
    const parts = article.querySelectorAll(".body .blocks, .body .tail");
    if (parts.length) return Array.from(parts, (part) => part.textContent).join("");
    const body = article.querySelector(".body");
    return body ? body.textContent : "";
  };
  const observer = new MutationObserver(() => {
    for (const article of document.querySelectorAll("article.message.assistant")) {
      if (known.has(article) || !textOf(article).trim()) continue;
      window.__firstText = now();
      requestAnimationFrame(() => { window.__firstFrame = now(); });
      observer.disconnect();
      return;
    }
  });
  observer.observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
PAGE_CLOCK = "() => performance.timeOrigin + performance.now()"


def clock_offset_ms(page) -> tuple[float, float]:
    """The page's clock minus Python's, in ms, and its uncertainty (half the shortest of 5 round trips)."""
    best = None
    for _ in range(5):
        before = time.time() * 1000
        page_ms = page.evaluate(PAGE_CLOCK)
        after = time.time() * 1000
        if best is None or after - before < best[1] * 2:
            best = (page_ms - (before + after) / 2, (after - before) / 2)
    return best


def first_content_after(upstream: Upstream, number: int) -> float | None:
    """When the upstream wrote the first content chunk of its first stream after stream `number`."""
    stamps = [t for n, t in upstream.stats()["first_content"] if n > number]
    return min(stamps) if stamps else None


def one_answer(page, server: Trickle, upstream: Upstream, index: int, timeout_s: float) -> dict:
    page.goto(f"http://{HOST}:{server.port}/")
    page.wait_for_selector("#content")
    offset, uncertainty = clock_offset_ms(page)
    before = upstream.stats()["streams_started"]
    page.evaluate(WATCH)
    page.locator("#content").fill(f"Browser question {index}")
    page.locator("#content").press("Enter")
    page.wait_for_function("() => window.__firstText !== null", timeout=timeout_s * 1000)
    page.wait_for_selector("article.message.assistant[data-status=done]", timeout=timeout_s * 1000)
    seen = page.evaluate("() => ({text: window.__firstText, frame: window.__firstFrame})")
    sent = first_content_after(upstream, before)
    if sent is None:
        raise BenchError("the upstream recorded no first content chunk for the browser's answer")
    return {
        "text_ms": seen["text"] - sent * 1000,
        "frame_ms": seen["frame"] - sent * 1000 if seen["frame"] is not None else None,
        "clock_offset_ms": offset,
        "clock_uncertainty_ms": uncertainty,
    }


def summary(samples: list[dict]) -> dict:
    texts = [s["text_ms"] for s in samples]
    frames = [s["frame_ms"] for s in samples if s["frame_ms"] is not None]
    offsets = [s["clock_offset_ms"] for s in samples]
    return {
        "count": len(samples),
        "p50_ms": statistics.median(texts),
        "p90_ms": percentile(texts, 90),
        "max_ms": max(texts),
        "frame_p50_ms": statistics.median(frames) if frames else None,
        "clock_offset_ms": statistics.median(offsets),
        "clock_offset_max_ms": max(abs(o) for o in offsets),
        "clock_uncertainty_max_ms": max(s["clock_uncertainty_ms"] for s in samples),
        "samples": samples,
    }


def measure(run_dir: Path, count: int = 20, max_seconds: float = 180.0, app_dir: Path = ROOT, log=print) -> dict:
    """`count` answers one after the other, each in a fresh chat (at most `max_seconds` in all)."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM

    upstream = Upstream(40, 10.0, run_dir, first_ms=0.0).start()
    server = None
    samples: list[dict] = []
    started = time.monotonic()
    try:
        server = Trickle(upstream, 1, run_dir, app_dir).start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                one_answer(page, server, upstream, 0, 30)  # warm-up: the first page load compiles the scripts
                for index in range(1, count + 1):
                    remaining = max_seconds - (time.monotonic() - started)
                    if remaining < 5:
                        log(f"browser: time budget reached after {len(samples)} answers")
                        break
                    samples.append(one_answer(page, server, upstream, index, min(30, remaining)))
            finally:
                browser.close()
    finally:
        if server is not None:
            server.stop()
        upstream.stop()
    if not samples:
        raise BenchError("the browser measured no answer")
    return summary(samples)


def report(result: dict) -> str:
    frame = result["frame_p50_ms"]
    return "\n".join(
        [
            "First answer text in Chromium, one person, the upstream answering at once "
            "(upstream's first content chunk → text in the answer bubble):",
            f"  p50 {result['p50_ms']:.1f} ms, p90 {result['p90_ms']:.1f} ms, max {result['max_ms']:.1f} ms "
            f"over {result['count']} answers"
            + (f"; the next animation frame p50 {frame:.1f} ms" if frame is not None else ""),
            f"  clock check: the page's clock minus Python's {result['clock_offset_ms']:+.1f} ms (median; largest "
            f"{result['clock_offset_max_ms']:.1f} ms, each read within ±{result['clock_uncertainty_max_ms']:.1f} ms)",
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="answers measured (default 20; at most 200)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="time budget (default 180)")
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="run Trickle from this checkout")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 200:
        parser.error("--count must be between 1 and 200")
    run_dir = BENCH / "results" / (time.strftime("%Y%m%d-%H%M%S") + "-browser")
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(run_dir, args.count, args.max_seconds, args.app_dir, log=lambda m: print(m, file=sys.stderr))
    except BenchError as err:
        print(f"bench.browser: {err}", file=sys.stderr)
        return 2
    print(report(result))
    print("  " + check_first_text(result))
    (run_dir / "results.json").write_text(json.dumps(result, indent=1))
    print(f"Results: {(run_dir / 'results.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
