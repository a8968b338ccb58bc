"""The benchmark must keep working: `python -m bench --smoke` end to end, every target, exact text.

No timing is asserted (machines differ); only that every stream of every row
relayed the exact reply, and that the table was printed. The Express baseline
is part of it: if `npm ci` cannot install it (offline), this test fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path):
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "TTFT p50/p99 ms" in done.stdout and "µs/tok" in done.stdout, output[-6000:]
    assert "Streams not exact:" in done.stdout, output[-6000:]
    payload = json.loads(results.read_text())
    rows = payload["rows"]
    targets = {row["target"] for row in rows}
    assert targets == {
        "upstream",
        "express",
        "trickle-1w-api",
        "trickle-1w-page",
        "trickle-2w-api",
        "trickle-2w-page",
        "trickle-2i-api",
        "trickle-2i-page",
    }, targets
    for row in rows:
        assert not row.get("skipped"), row
        # every stream got the exact text; on a loaded machine a short page-flow answer can end before its
        # stream attaches, and then arrives whole in `done` (checked against the expected text too)
        assert row["exact"] + row.get("late", 0) == row["n"] == row["streams"], (row["label"], row["errors"])
        assert row["exact"] > 0, (row["label"], row["errors"])  # all "late": the bench misreads the stream
        assert row["tokens_relayed"] >= row["n"] * payload["info"]["tokens"], row
        assert row["server_cpu_s"] is not None and row["client_cpu_s"] is not None
    assert payload["info"]["page_weight"]["gzip"] > 0
    assert payload["info"]["cold_start"]["median_s"] > 0


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module args…` from the repository; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return run_module("bench", "--smoke", *args)


def test_bench_repeat_prints_median_rows_and_the_target_check(tmp_path):
    """--repeat 2: the repeats interleaved, one median row per target (exact summed), then met/missed lines."""
    results = tmp_path / "bench.json"
    done = run_bench("--repeat", "2", "--only", "express,trickle-1w-api", "--n", "50", "--json", str(results))
    assert "the median of 2 runs" in done.stdout, done.stdout
    payload = json.loads(results.read_text())
    order = [(row["target"], row["repeat"]) for row in payload["repeat_rows"]]
    assert order == [("express", 0), ("trickle-1w-api", 0), ("express", 1), ("trickle-1w-api", 1)], order
    for row in payload["rows"]:
        assert row["repeats"] == 2 and row["exact"] == 100 == row["streams"], (row["label"], row["errors"])
    check = done.stdout.split("Target check", 1)[1]
    assert re.search(r"TTFT p50, trickle 1w /api/chat, N=50: \d+ ms vs Express \d+ ms .* — (met|missed)", check)
    assert re.search(r"worker cold start: [\d.]+ s .* — (met|missed)", check)


def test_bench_soak_and_browser_first_text(tmp_path):
    """A few seconds of soak waves (streams lost, RSS after each wave) and two answers in Chromium."""
    results = tmp_path / "bench.json"
    done = run_bench("--soak", "4", "--n", "20", "--browser", "2", "--json", str(results))
    payload = json.loads(results.read_text())
    (result,) = payload["soaks"]
    assert result["target"] == "trickle-1w-page" and result["waves"] >= 2, result
    assert result["lost"] == 0 and result["streams"] == 20 * result["waves"], result["errors"]
    assert len([w["rss_mb"] for w in result["wave_rows"]]) == result["waves"]
    assert re.search(r"worker RSS drift [+-][\d.]+ % .* — (met|missed)", done.stdout), done.stdout
    assert payload["info"]["first_text"]["count"] == 2
    assert re.search(r"first text in Chromium, one person: p50 \d+ ms .* — (met|missed)", done.stdout), done.stdout


def test_live_markdown_bench_prints_the_byte_ratio_and_longest_task():
    """`python -m bench.markdown` on a short answer, so that it never rots (no timing is asserted)."""
    result = run_module("bench.markdown", "--tokens", "400", "--delay-ms", "1", timeout=300)
    ratio = re.search(r"SSE bytes [\d,]+ / rendered HTML [\d,]+ bytes = ([\d.]+)x", result.stdout)
    assert ratio, result.stdout
    assert float(ratio.group(1)) > 0
    assert "longest main-thread task while streaming in Chromium" in result.stdout


def test_upstream_read_bench_prints_the_cost_of_a_request_and_of_a_token():
    """`python -m bench.upstream_read` on a few short answers, so that it never rots (no timing is asserted)."""
    result = run_module("bench.upstream_read", "--streams", "5", "--tokens", "5", timeout=300)
    assert re.search(r"a request \(.*\): [\d.]+ ms CPU each", result.stdout), result.stdout
    deltas = re.search(r"µs CPU per delta read \((\d+) deltas\)", result.stdout)
    assert deltas and int(deltas.group(1)) >= 5 * 5, result.stdout  # every token of every answer was read
