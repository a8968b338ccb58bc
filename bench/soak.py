"""`python -m bench --soak SECONDS`: N=200 streams in waves against one server for that long.

A long run shows what a short one cannot: streams lost once in thousands, memory that grows a
little per answer. Each wave is N streams from the same N sessions (the same people asking again);
the workers' resident memory is read after each wave, when its streams have ended, so the samples
are comparable. Bounded: no wave starts after SECONDS, and each wave has its own deadline.
"""

from __future__ import annotations

import math
import statistics
import time

from .goals import SOAK_RSS_DRIFT, verdict
from .measure import Load, workers_rss_kb
from .runner import log

SOAK_N = 200
KEPT = ("streams", "exact", "late", "ttft_p50_ms", "gap_p99_ms", "us_per_token", "other_cpu_s", "errors")


def soak(bench, target, seconds: float, n: int = SOAK_N) -> dict:
    """Waves of `n` streams for `seconds`; per wave its figures and the workers' RSS after it."""
    server = bench.start(target)
    waves: list[dict] = []
    began = time.monotonic()
    most = math.ceil(seconds / bench.stream_seconds()) + 1  # a wave lasts at least one stream
    next_log = began + 30
    try:
        with Load(bench, target, server, n, f"{target.key}-soak") as load:
            for index in range(most):
                if time.monotonic() - began >= seconds:
                    break
                name = f"{target.key}-soak-w{index + 1}"
                row = load.wave(name=name)
                wave = {key: row[key] for key in KEPT}
                wave["rss_mb"] = workers_rss_kb(server) / 1024
                wave["at_s"] = time.monotonic() - began
                waves.append(wave)
                if row["exact"] == row["streams"]:  # the per-stream data of a clean wave is not worth keeping
                    (bench.run_dir / f"{name}.streams.json").unlink(missing_ok=True)
                if time.monotonic() >= next_log:
                    next_log += 30
                    started = sum(w["streams"] for w in waves)
                    lost = started - sum(w["exact"] + w["late"] for w in waves)
                    log(
                        f"  soak {wave['at_s']:.0f}/{seconds:.0f} s: {len(waves)} waves, {started} streams, "
                        f"{lost} lost, worker RSS {wave['rss_mb']:.1f} MB"
                    )
    finally:
        server.stop()
    return summarize(target, n, seconds, waves)


def summarize(target, n: int, seconds: float, waves: list[dict]) -> dict:
    rss = [w["rss_mb"] for w in waves]
    # the baseline: the median of the first waves (a tenth of them, 3 to 10), so that the first one,
    # which still sizes the pools, does not decide alone
    head = max(3, min(10, len(waves) // 10))
    baseline = statistics.median(rss[:head]) if rss else None
    started = sum(w["streams"] for w in waves)
    exact = sum(w["exact"] for w in waves)
    late = sum(w["late"] for w in waves)
    errors: dict[str, int] = {}
    for wave in waves:
        for reason, count in wave["errors"].items():
            errors[reason] = errors.get(reason, 0) + count
    return {
        "target": target.key,
        "label": target.label,
        "n": n,
        "soak_s": seconds,
        "seconds": waves[-1]["at_s"] if waves else 0.0,
        "waves": len(waves),
        "streams": started,
        "exact": exact,
        "late": late,
        "lost": started - exact - late,
        "errors": errors,
        "rss_first_mb": rss[0] if rss else None,
        "rss_last_mb": rss[-1] if rss else None,
        "rss_min_mb": min(rss, default=None),
        "rss_max_mb": max(rss, default=None),
        "rss_baseline_mb": baseline,
        "rss_baseline_waves": min(head, len(rss)),
        "rss_drift": (rss[-1] - baseline) / baseline if baseline else None,
        "ttft_p50_ms": statistics.median([w["ttft_p50_ms"] for w in waves if w["ttft_p50_ms"] is not None] or [0]),
        "gap_p99_worst_ms": max((w["gap_p99_ms"] for w in waves if w["gap_p99_ms"] is not None), default=None),
        "us_per_token": statistics.median([w["us_per_token"] for w in waves if w["us_per_token"] is not None] or [0]),
        "wave_rows": waves,
    }


def report(result: dict) -> str:
    lines = [
        f"Soak: {result['label']}, N={result['n']} in waves for {result['seconds']:.0f} s "
        f"({result['waves']} waves): {result['streams']} streams started, {result['exact']} exact, "
        f"{result['late']} whole in done, {result['lost']} lost",
        f"  per wave (median): TTFT p50 {result['ttft_p50_ms']:.0f} ms, {result['us_per_token']:.1f} µs/tok; "
        f"gap p99 of the worst wave {result['gap_p99_worst_ms'] or 0:.0f} ms",
    ]
    if result["rss_drift"] is not None:
        lines.append(
            f"  worker RSS after each wave: first {result['rss_first_mb']:.1f} MB, last {result['rss_last_mb']:.1f}, "
            f"min {result['rss_min_mb']:.1f}, max {result['rss_max_mb']:.1f}; baseline (median of the first "
            f"{result['rss_baseline_waves']} waves) {result['rss_baseline_mb']:.1f} MB"
        )
    if result["errors"]:
        lines.append(f"  not exact: {result['errors']}")
    return "\n".join(lines)


def check(result: dict) -> list[str]:
    """The soak's targets: nothing lost, the last wave's RSS within ±5 % of the first waves'."""
    lines = [
        f"soak, {result['label']}: {result['lost']} of {result['streams']} streams lost (none) "
        f"— {verdict(result['lost'] == 0 and result['streams'] > 0)}"
    ]
    drift = result["rss_drift"]
    if drift is not None:
        lines.append(
            f"soak, {result['label']}: worker RSS drift {drift * 100:+.1f} % (within ±{SOAK_RSS_DRIFT * 100:.0f} %) "
            f"— {verdict(abs(drift) <= SOAK_RSS_DRIFT)}"
        )
    return lines
