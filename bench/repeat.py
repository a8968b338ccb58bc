"""`--repeat K`: one row per (N, target) from its K measures, so that one noisy measure does not decide.

Each figure is the median over the repeats, except what must not hide a single bad measure:
streams and exact ones are summed (one lost stream in one repeat shows as 599/600), the memory
peaks and the largest gap are the maximum.
"""

from __future__ import annotations

import statistics

MEDIAN = (
    "ttft_p50_ms",
    "ttft_p99_ms",
    "gap_p50_ms",
    "gap_p99_ms",
    "server_cpu_s",
    "us_per_token",
    "wire_ratio",
    "post_bytes_avg",
    "post_p50_ms",
    "client_cpu_s",
    "client_cpu_total_s",
    "upstream_cpu_s",
    "other_cpu_s",
    "wall_s",
    "loadavg_before",
)
SUM = ("streams", "exact", "late", "tokens_relayed", "wire_bytes", "text_bytes")
MAX = ("gap_max_ms", "rss_total_mb", "rss_worker_mb", "upstream_peak_active")


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per (N, target), in the order they were first measured."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["n"], row["target"]), []).append(row)
    return [combine(group) for group in groups.values()]


def combine(group: list[dict]) -> dict:
    measured = [row for row in group if not row.get("skipped")]
    first = group[0]
    if not measured:
        return {**first, "repeats": 0, "of": len(group)}
    row = {"target": first["target"], "label": first["label"], "n": first["n"], "repeats": len(measured)}
    row["of"] = len(group)
    for key in MEDIAN:
        values = [r[key] for r in measured if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    for key in SUM:
        row[key] = sum(r.get(key) or 0 for r in measured)
    for key in MAX:
        values = [r[key] for r in measured if r.get(key) is not None]
        row[key] = max(values) if values else None
    errors: dict[str, int] = {}
    for r in measured:
        for reason, count in r["errors"].items():
            errors[reason] = errors.get(reason, 0) + count
    row["errors"] = errors
    return row
