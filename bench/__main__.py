"""`python -m bench`: Trickle vs the reference Express relay vs the upstream itself, side by side.

Every target streams the same deterministic reply from the same fake upstream
(bench/upstream.py, its own process) to the same load generator (bench/loadgen.py,
its own process); the server's CPU (whole process tree, from /proc) and memory
are read around each row. See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import browser, goals, soak
from .repeat import median_rows
from .runner import TARGETS, Bench, Target, log
from .servers import BENCH, ROOT, BenchError, Upstream, ensure_express
from .startup import cold_start
from .table import table

SOAK_DEFAULT = ("trickle-1w-page",)  # the page flow: a database write, rendering and a second request per answer


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="quick check that every target relays the exact text: N=20, a 40-token reply",
    )
    parser.add_argument("--n", help="concurrent streams per row, comma-separated (default 50,200,1000)")
    parser.add_argument(
        "--only",
        help="run only targets whose key contains one of these words, comma-separated "
        "(keys: " + ", ".join(t.key for t in TARGETS) + ")",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="measure each (N, target) K times, interleaved, and print the median row (default 1)",
    )
    parser.add_argument("--verbose", action="store_true", help="with --repeat: also print the table of every repeat")
    parser.add_argument(
        "--soak",
        type=float,
        nargs="?",
        const=1200.0,
        metavar="SECONDS",
        help="instead of the table: waves of N=200 streams (--n to change) for SECONDS (default 1200) per "
        "target (default: trickle 1w page); streams lost and the workers' RSS after each wave",
    )
    parser.add_argument(
        "--browser",
        type=int,
        nargs="?",
        const=20,
        metavar="COUNT",
        help="also measure the first answer text in Chromium, COUNT answers (default 20): bench/browser.py",
    )
    parser.add_argument("--tokens", type=int, help="tokens per reply (default 200; --smoke 40)")
    parser.add_argument("--interval-ms", type=float, help="time between two upstream tokens (default 20; --smoke 10)")
    parser.add_argument(
        "--ramp-ms",
        type=float,
        default=1.0,
        help="the streams of a row start this far apart (default 1 ms: N=1000 ramps over 1 s)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="time budget: rows that would not fit are skipped (default 570 per repeat; --smoke 240)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="streams of a warm-up round, not measured, when each server starts (default 20; --smoke 0; 0 for none)",
    )
    parser.add_argument(
        "--profile",
        choices=("flamegraph", "raw", "speedscope"),
        help="record Trickle's workers with py-spy during each Trickle row (bench/requirements.txt)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--variant",
        action="append",
        metavar="NAME=DIR",
        help="also run each selected Trickle target from the checkout DIR, labelled NAME "
        "(repeatable): a patch measured side by side with the current code",
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=ROOT,
        help="run Trickle from this checkout instead (e.g. a worktree with a patch), same venv",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any stream did not end with the exact text (implied by --smoke)",
    )
    args = parser.parse_args(argv)
    args.tokens = args.tokens or (40 if args.smoke else 200)
    args.interval_ms = args.interval_ms if args.interval_ms is not None else (10.0 if args.smoke else 20.0)
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be between 1 and 20")
    args.max_seconds = args.max_seconds or (240.0 if args.smoke else 570.0) * args.repeat
    args.strict = args.strict or args.smoke
    if args.warmup is None:
        args.warmup = 0 if args.smoke else 20
    if args.n:
        args.ns = [int(x) for x in args.n.split(",") if x.strip()]
    else:
        args.ns = [soak.SOAK_N] if args.soak else [20] if args.smoke else [50, 200, 1000]
    if any(n < 1 or n > 5000 for n in args.ns):
        parser.error("--n values must be between 1 and 5000")
    if args.soak is not None and not 1 <= args.soak <= 3600:
        parser.error("--soak must be between 1 and 3600 seconds")
    if args.browser is not None and not 1 <= args.browser <= 200:
        parser.error("--browser must be between 1 and 200 answers")
    words = [w.strip() for w in (args.only or "").split(",") if w.strip()]
    if words:
        args.targets = [t for t in TARGETS if any(w in t.key for w in words)]
    elif args.soak:
        args.targets = [t for t in TARGETS if t.key in SOAK_DEFAULT]
    else:
        args.targets = list(TARGETS)
    if not args.targets:
        parser.error(f"--only {args.only!r} matches no target")
    for variant in args.variant or ():
        name, _, directory = variant.partition("=")
        if not name or not directory or not (Path(directory) / "app.py").exists():
            parser.error(f"--variant wants NAME=DIR with DIR a checkout of Trickle, got {variant!r}")
        args.targets += [
            Target(f"{t.key}@{name}", f"{t.label} [{name}]", t.mode, t.server, t.workers, Path(directory).resolve())
            for t in args.targets
            if t.server == "trickle" and t.app_dir is None
        ]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = BENCH / "results" / (stamp + ("-smoke" if args.smoke else "") + ("-soak" if args.soak else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, run_dir)
    info = {
        "app_dir": str(args.app_dir),
        "tokens": args.tokens,
        "interval_ms": args.interval_ms,
        "ns": args.ns,
        "repeat": args.repeat,
        "ramp_ms": args.ramp_ms,
        "targets": [t.key for t in args.targets],
        "cpus": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "node": _node_version(),
        "reply_chars": len(bench.expected),
        "reply_bytes": len(bench.expected.encode()),
    }
    rows: list[dict] = []
    soaks: list[dict] = []
    try:
        if any(t.server == "express" for t in args.targets):
            bench.express_dir = ensure_express(log)
        bench.upstream = Upstream(args.tokens, args.interval_ms, run_dir).start()
        log(
            f"bench: {args.tokens} tokens every {args.interval_ms:g} ms ({len(bench.expected)} chars), "
            f"upstream on 127.0.0.1:{bench.upstream.port}, logs in {run_dir.relative_to(ROOT)}"
        )
        if args.soak:
            for target in args.targets:  # one at a time: each soak is long
                log(f"{target.label}: soak, waves of N={args.ns[0]} for {args.soak:g} s")
                soaks.append(soak.soak(bench, target, args.soak, args.ns[0]))
        else:
            if any(t.server == "trickle" for t in args.targets):
                runs = 1 if args.smoke else 3  # a smoke run only checks that it works
                info["cold_start"] = cold_start(bench.upstream, run_dir, args.app_dir, runs)
            rows = bench.run(args.targets, args.ns, args.repeat)
        if args.browser:
            log(f"browser: {args.browser} answers in Chromium …")
            info["first_text"] = browser.measure(run_dir, args.browser, app_dir=args.app_dir, log=log)
    except BenchError as err:
        log(f"bench: {err}")
        return 2
    finally:
        if bench.services is not None:
            bench.services.destroy()
        if bench.upstream is not None:
            summary = bench.upstream.stop()
            if summary:
                log(summary.splitlines()[-1])
    info["page_weight"] = bench.page_weight
    print()
    heading = (
        f"Trickle benchmark: {args.tokens}-token reply ({info['reply_bytes']} bytes), one token every "
        f"{args.interval_ms:g} ms; {info['cpus']} CPUs; Python {info['python']}, Node {info['node']}"
    )
    if args.soak:
        print(heading)
        lost = report_soaks(soaks, info)
        payload = {"info": info, "soaks": soaks}
    else:
        medians = median_rows(rows)
        if args.repeat > 1 and args.verbose:
            print(heading + "; every repeat")
            print(table(rows, numbered=True))
            print()
        if args.repeat > 1:
            heading += f"; each row the median of {args.repeat} runs (exact: summed over them)"
        print(heading)
        print(table(medians))
        lost = report_rows(args, bench, rows, medians, info)
        payload = {"info": info, "rows": medians, "repeat_rows": rows}
    (run_dir / "results.json").write_text(json.dumps(payload, indent=1))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    print(f"Results: {(run_dir / 'results.json').relative_to(ROOT)}")
    return 1 if args.strict and lost else 0


def report_rows(args, bench: Bench, rows: list[dict], medians: list[dict], info: dict) -> int:
    """What is printed below the table, the target check last; the streams lost (not exact, not late)."""
    measured = [row for row in rows if not row.get("skipped")]
    not_exact = sum(row["n"] - row["exact"] for row in measured)
    # An answer that ended before its page stream attached arrives whole in `done`: delivered, not streamed.
    late = sum(row.get("late", 0) for row in measured)
    print()
    if bench.page_weight:
        pw = bench.page_weight
        print(
            f"Chat page weight: {pw['gzip'] / 1024:.1f} KiB gzip ({pw['raw'] / 1024:.1f} KiB raw) for "
            + ", ".join(f"{f['path']} {f['gzip'] / 1024:.1f}" for f in pw["files"])
        )
    if info.get("cold_start"):
        cs = info["cold_start"]
        print(
            f"Worker cold start (python -c 'import app'): {cs['median_s'] * 1000:.0f} ms median of "
            f"{len(cs['runs_s'])} (" + ", ".join(f"{t * 1000:.0f}" for t in cs["runs_s"]) + " ms)"
        )
    if any(t.server == "trickle-2i" for t in args.targets):
        print(
            "2i: two instances of one worker each on one PostgreSQL and one Redis; stream i goes to instance "
            "i mod 2, and in the page flow its answer is followed on the other instance (through Redis)."
        )
    page_rows = [r for r in medians if r.get("post_bytes_avg")]
    if page_rows:
        print(
            "Page flow: wire/text counts the SSE response only; the POST /messages reply adds "
            + ", ".join(f"{r['post_bytes_avg']:.0f} B ({r['label']}, N={r['n']})" for r in page_rows[:2])
            + " per answer"
        )
    print(
        f"Streams not exact: {not_exact}"
        + ("" if not_exact == 0 else f" ({late} of them whole in done; see the errors in the JSON results)")
    )
    if info.get("first_text"):
        print()
        print(browser.report(info["first_text"]))
    settings = {name: os.environ[name] for name in goals.WIRE_SETTINGS if name in os.environ}
    checks = goals.check_rows(medians, {t.key: t for t in args.targets}, settings)
    if info.get("cold_start"):
        checks.append(goals.check_cold_start(info["cold_start"]))
    if info.get("first_text"):
        checks.append(goals.check_first_text(info["first_text"]))
    print_checks(checks, args.repeat)
    return not_exact - late


def report_soaks(soaks: list[dict], info: dict) -> int:
    checks = []
    for result in soaks:
        print(soak.report(result))
        checks += soak.check(result)
    if info.get("first_text"):
        print(browser.report(info["first_text"]))
        checks.append(goals.check_first_text(info["first_text"]))
    print_checks(checks, 1)
    return sum(result["lost"] for result in soaks)


def print_checks(checks: list[str], repeat: int) -> None:
    if not checks:
        return
    print()
    print("Target check" + (f" (on the medians of {repeat} runs)" if repeat > 1 else "") + ":")
    for line in checks:
        print("  " + line)


def _node_version() -> str | None:
    node = shutil.which("node")
    if not node:
        return None
    try:
        return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())
