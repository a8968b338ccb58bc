"""The performance targets, checked against the figures of a run: one line each, met or missed.

They are benchmark figures, never test assertions. Ratios are against the Express row of the same
N measured in the same run (with --repeat, median over median); a target whose rows were not run
prints nothing.
"""

from __future__ import annotations

TTFT_N = (50, 200)
CPU_N = (200, 1000)
GAP_N = 1000
TTFT_API = 1.0  # × Express, /api/chat
TTFT_PAGE = 1.5  # × Express, page flow
GAP_ONE_WORKER = 2.0  # × Express, p99 of the largest gap
GAP_TWO_WORKERS_MS = 250.0
CPU_API = 0.6  # × Express, µs per token
CPU_PAGE = 0.8
WIRE_PAGE = 3.0  # bytes on the wire / bytes of text
COLD_START_S = 0.8
FIRST_TEXT_MS = 50.0  # upstream's first content chunk → text in the page, in Chromium
SOAK_RSS_DRIFT = 0.05
WIRE_SETTINGS = ("STREAM_FLUSH_MS", "STREAM_FLUSH_CHARS", "SSE_PING_S")  # what the wire/text target assumes unset


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _inexact(row: dict) -> str:
    lost = row["n"] * row.get("repeats", 1) - row["exact"]
    return f" ({lost} stream{'s' if lost > 1 else ''} not exact)" if lost else ""


def _ratio_line(what: str, row: dict, base: dict, key: str, limit: float, unit: str = "ms", spec: str = ".0f") -> str:
    value, reference = row[key], base[key]
    ratio = value / reference
    return (
        f"{what}, {row['label']}, N={row['n']}: {value:{spec}} {unit} vs Express {reference:{spec}} {unit} "
        f"= {ratio:.2f}× (≤ {limit:.2f}×) — {verdict(ratio <= limit)}{_inexact(row)}"
    )


def check_rows(rows: list[dict], targets: dict, settings: dict[str, str] | None = None) -> list[str]:
    """The targets on the table's rows (medians when repeated): TTFT, gaps, CPU per token, wire bytes.
    `settings`: those of WIRE_SETTINGS the run set, named on the wire/text line (not the default)."""
    measured = [row for row in rows if not row.get("skipped") and row.get("repeats", 1) > 0]
    express = {row["n"]: row for row in measured if row["target"] == "express"}
    ttft, gap, cpu, wire = [], [], [], []  # printed in this order, each in the order the rows ran
    worst_wire: dict[str, dict] = {}
    for row in measured:
        target = targets.get(row["target"])
        if target is None or not target.server.startswith("trickle"):
            continue
        base = express.get(row["n"])
        one_worker = target.server == "trickle" and target.workers == 1
        if base and row["n"] in TTFT_N and row["ttft_p50_ms"] is not None and base["ttft_p50_ms"]:
            limit = TTFT_API if target.mode == "api" else TTFT_PAGE
            ttft.append(_ratio_line("TTFT p50", row, base, "ttft_p50_ms", limit))
        if row["n"] == GAP_N and row["gap_p99_ms"] is not None:
            if one_worker and base and base["gap_p99_ms"]:
                gap.append(_ratio_line("gap p99", row, base, "gap_p99_ms", GAP_ONE_WORKER))
            elif target.server == "trickle" and target.workers == 2:
                ok = row["gap_p99_ms"] <= GAP_TWO_WORKERS_MS
                gap.append(
                    f"gap p99, {row['label']}, N={row['n']}: {row['gap_p99_ms']:.0f} ms "
                    f"(≤ {GAP_TWO_WORKERS_MS:.0f} ms) — {verdict(ok)}{_inexact(row)}"
                )
        if one_worker and base and row["n"] in CPU_N and row["us_per_token"] is not None and base["us_per_token"]:
            limit = CPU_API if target.mode == "api" else CPU_PAGE
            cpu.append(_ratio_line("CPU per token", row, base, "us_per_token", limit, "µs/tok", ".1f"))
        if target.mode == "page" and row["wire_ratio"] is not None:
            worst = worst_wire.get(row["target"])
            if worst is None or row["wire_ratio"] > worst["wire_ratio"]:
                worst_wire[row["target"]] = row
    changed = ", ".join(f"{name}={value}" for name, value in (settings or {}).items())
    for row in worst_wire.values():
        wire.append(
            f"wire/text, {row['label']}, worst N={row['n']}: {row['wire_ratio']:.2f} (≤ {WIRE_PAGE:.2f}) "
            f"— {verdict(row['wire_ratio'] <= WIRE_PAGE)}"
            + (f" (not at default settings: {changed})" if changed else "")
        )
    lines = ttft + gap + cpu + wire
    if not express and any(row["target"].startswith("trickle") for row in measured):
        lines.append("(no Express row in this run: the targets relative to Express are not checked)")
    return lines


def check_cold_start(cold_start: dict) -> str:
    seconds = cold_start["median_s"]
    return f"worker cold start: {seconds:.2f} s (≤ {COLD_START_S:.2f} s) — {verdict(seconds <= COLD_START_S)}"


def check_first_text(first_text: dict) -> str:
    p50 = first_text["p50_ms"]
    return (
        f"first text in Chromium, one person: p50 {p50:.0f} ms (p90 {first_text['p90_ms']:.0f}, "
        f"max {first_text['max_ms']:.0f}; {first_text['count']} answers) after the upstream sent it "
        f"(≤ {FIRST_TEXT_MS:.0f} ms) — {verdict(p50 <= FIRST_TEXT_MS)}"
    )
