"""The printed table: one line per row, the Express row of the same N (and repeat) as the baseline."""

from __future__ import annotations


def fmt(value, spec: str = ".0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


COLUMNS = (
    "N",
    "target",
    "TTFT p50/p99 ms",
    "gap p50/p99 ms",
    "exact",
    "CPU s",
    "µs/tok",
    "×Express",
    "RSS MB tot/wkr",
    "wire/text",
    "client CPU s",
    "upstr CPU s",
    "other CPU s",
)


def add_ratios(rows: list[dict]) -> None:
    """`ratio_to_express`: µs/tok over the Express row's measured in the same N (and the same repeat)."""
    express = {(row["n"], row.get("repeat")): row["us_per_token"] for row in rows if row["target"] == "express"}
    for row in rows:
        base = express.get((row["n"], row.get("repeat")))
        row["ratio_to_express"] = row["us_per_token"] / base if base and row["us_per_token"] is not None else None


def table(rows: list[dict], numbered: bool = False) -> str:
    """The rows as printed; `numbered` labels each with its repeat (the per-repeat rows of --verbose)."""
    add_ratios(rows)
    body = []
    for row in rows:
        label = row["label"]
        if numbered:
            label += f" #{row['repeat'] + 1}"
        if row.get("of", 1) > row.get("repeats", 1) > 0:
            label += f" ({row['repeats']} of {row['of']})"
        if row.get("skipped") or row.get("repeats") == 0:
            body.append((str(row["n"]), label, row.get("skipped", "skipped"), *[""] * (len(COLUMNS) - 3)))
            continue
        body.append(
            (
                str(row["n"]),
                label,
                f"{fmt(row['ttft_p50_ms'])}/{fmt(row['ttft_p99_ms'])}",
                f"{fmt(row['gap_p50_ms'])}/{fmt(row['gap_p99_ms'])}",
                f"{row['exact']}/{row['n'] * row.get('repeats', 1)}",
                fmt(row["server_cpu_s"], ".2f"),
                fmt(row["us_per_token"], ".1f"),
                fmt(row["ratio_to_express"], ".2f"),
                f"{row['rss_total_mb']:.0f}/{row['rss_worker_mb']:.0f}",
                fmt(row["wire_ratio"], ".2f"),
                fmt(row["client_cpu_s"], ".2f"),
                fmt(row["upstream_cpu_s"], ".2f"),
                fmt(row["other_cpu_s"], ".2f"),
            )
        )
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) for i in range(len(COLUMNS))]
    left = {1}

    def line(cells):
        return "  ".join(c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cells))

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    previous_n = None
    for cells in body:
        if previous_n is not None and cells[0] != previous_n:
            out.append("")
        previous_n = cells[0]
        out.append(line(cells))
    return "\n".join(out)
