"""`python -m bench`: Trickle vs the reference Express relay vs the upstream itself, side by side.

Every target streams the same deterministic reply from the same fake upstream
(bench/upstream.py, its own process) to the same load generator (bench/loadgen.py,
its own process); the server's CPU (whole process tree, from /proc) and memory
are read around each row. See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import procstat
from .reply import reply_text
from .servers import (
    BENCH,
    HOST,
    ROOT,
    BenchError,
    DirectUpstream,
    Express,
    Trickle,
    TrickleInstances,
    Upstream,
    ensure_express,
    http_get,
    start_services,
    trickle_env,
)


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    mode: str  # the load generator's mode: openai, api or page
    server: str  # upstream, express, trickle, trickle-2i (two instances on PostgreSQL + Redis)
    workers: int = 1
    app_dir: Path | None = None  # another checkout of Trickle (--variant)


TARGETS = (
    Target("upstream", "upstream direct", "openai", "upstream"),
    Target("express", "express /api/chat", "api", "express"),
    Target("trickle-1w-api", "trickle 1w /api/chat", "api", "trickle", 1),
    Target("trickle-1w-page", "trickle 1w page", "page", "trickle", 1),
    Target("trickle-2w-api", "trickle 2w /api/chat", "api", "trickle", 2),
    Target("trickle-2w-page", "trickle 2w page", "page", "trickle", 2),
    Target("trickle-2i-api", "trickle 2i /api/chat", "api", "trickle-2i"),
    Target("trickle-2i-page", "trickle 2i page", "page", "trickle-2i"),
)
SOAK_DEFAULT = ("trickle-1w-api", "trickle-1w-page")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- one row ---------------------------------------------------------------------------
class Bench:
    def __init__(self, args, run_dir: Path):
        self.args = args
        self.run_dir = run_dir
        self.upstream: Upstream | None = None
        self.express_dir: Path | None = None
        self.page_weight: dict | None = None
        self.services = None  # PostgreSQL and Redis (tests/services.py), for the two-instance rows
        self.expected = reply_text(args.tokens)
        self.started = time.monotonic()

    def make_server(self, target: Target):
        if target.server == "upstream":
            return DirectUpstream(self.upstream)
        if target.server == "express":
            return Express(self.express_dir, self.upstream, self.run_dir)
        if target.server == "trickle-2i":
            if self.services is None:
                log("starting PostgreSQL and Redis (scripts/services) …")
                self.services = start_services()
            return TrickleInstances(self.upstream, self.services, self.run_dir, target.app_dir or self.args.app_dir)
        return Trickle(self.upstream, target.workers, self.run_dir, target.app_dir or self.args.app_dir)

    def stream_seconds(self) -> float:
        return (self.args.tokens + 1) * self.args.interval_ms / 1000

    def ramp(self, n: int) -> float:
        return n * self.args.ramp_ms / 1000

    def row_estimate(self, n: int) -> float:
        return 4 + self.ramp(n) + self.stream_seconds() * 1.5

    def run(self, targets: list[Target], ns: list[int], soak: float = 0.0) -> list[dict]:
        """Start every server and warm it up, then load them in turn at each N: the targets of one N
        run minutes apart at most, so whatever else the machine does affects them alike."""
        rows = []
        servers = {}
        target = n = None
        try:
            for target in targets:
                log(f"starting {target.label} …")
                server = servers[target.key] = self.make_server(target).start()
                if target.server == "trickle" and self.page_weight is None:
                    self.page_weight = page_weight(server.port)
                if self.args.warmup and target.server != "upstream":  # the upstream is always warm
                    n = self.args.warmup
                    self._load(target, server, n, 0.0, name=f"{target.key}-warmup")
            for n in ns:
                for target in targets:
                    if soak:
                        log(f"{target.label}: soak, N={n} for {soak:g} s")
                    elif time.monotonic() - self.started + self.row_estimate(n) > self.args.max_seconds:
                        rows.append(
                            {
                                "target": target.key,
                                "label": target.label,
                                "n": n,
                                "skipped": "skipped: time budget",
                                "us_per_token": None,
                            }
                        )
                        continue
                    else:
                        log(f"{target.label} N={n} …")
                    row = self._load(target, servers[target.key], n, soak)
                    rows.append(row)
                    if row["errors"]:
                        log(f"  not exact: {row['errors']}")
            return rows
        except BenchError:
            raise
        except Exception as err:
            server = servers.get(target.key) if target else None
            raise BenchError(
                f"{target.label if target else '?'} N={n}: {err.__class__.__name__}: {err}\n"
                f"{server.read_log() if server else ''}"
            ) from err
        finally:
            for server in servers.values():
                server.stop()

    def _load(self, target: Target, server, n: int, soak: float, name: str | None = None) -> dict:
        name = name or f"{target.key}-n{n}" + (f"-soak{soak:g}" if soak else "")
        timeout = self.ramp(n) + 4 * self.stream_seconds() + 30
        config = {
            "host": HOST,
            "port": server.port,
            "mode": target.mode,
            "n": n,
            "ramp_s": self.ramp(n),
            "ports": getattr(server, "ports", None),
            "timeout_s": timeout,
            "soak_s": soak,
            "expected": self.expected,
            "result_path": str(self.run_dir / f"{name}.streams.json"),
        }
        config_path = self.run_dir / f"{name}.config.json"
        config_path.write_text(json.dumps(config))
        loadgen = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", str(config_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in loadgen.stdout], daemon=True).start()
        profiler = None
        try:
            expect(lines, "READY", 30, loadgen)
            pids = _tree(server)
            rss_start = sum(procstat.memory_kb(pid)["VmRSS"] for pid in pids)
            up0 = self.upstream.stats()
            cpu0 = _tree_cpu(server)
            busy0 = procstat.machine_busy_seconds()
            load0 = _loadavg()
            worker_cpu0 = {pid: procstat.cpu_seconds(pid) for pid in server.workers()}
            loadgen.stdin.write("GO\n")
            loadgen.stdin.flush()
            began = time.monotonic()
            if self.args.profile and target.server == "trickle" and not name.endswith("warmup"):
                profiler = start_profiler(
                    server.pid,
                    self.run_dir / f"{name}.{self.args.profile}",
                    self.args.profile,
                    self.ramp(n) + self.stream_seconds() + soak,
                )
            samples = []  # (seconds, RSS of the tree in kB): the soak's growth
            deadline = began + soak + timeout + 30
            client_cpu = None
            while client_cpu is None:
                if time.monotonic() > deadline:
                    raise BenchError(f"{target.label} N={n}: the load generator did not finish in time")
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    line = ""
                if line.startswith("RUNDONE"):
                    client_cpu = float(line.split()[1])
                elif line.startswith("PROGRESS"):
                    log(f"  {target.label}: {line.strip()}")
                elif loadgen.poll() is not None and lines.empty():
                    raise BenchError(f"the load generator exited with {loadgen.returncode}")
                if soak and (not samples or time.monotonic() - began - samples[-1][0] >= 2):
                    rss = sum(procstat.memory_kb(pid)["VmRSS"] for pid in _tree(server))
                    samples.append((time.monotonic() - began, rss))
            wall = time.monotonic() - began
            time.sleep(0.3)  # the server's last writes and bookkeeping after the final byte
            cpu = _tree_cpu(server) - cpu0
            busy = procstat.machine_busy_seconds() - busy0
            worker_cpu = {pid: procstat.cpu_seconds(pid) - worker_cpu0.get(pid, 0.0) for pid in server.workers()}
            up1 = self.upstream.stats()
            memory = {pid: procstat.memory_kb(pid) for pid in _tree(server)}
            loadgen.stdin.write("ANALYSE\n")
            loadgen.stdin.flush()
            expect(lines, "RESULT", 120, loadgen)
            result = json.loads(Path(config["result_path"]).read_text())
        finally:
            if loadgen.poll() is None:
                loadgen.kill()
            loadgen.wait(5)
            if profiler is not None:
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
        streams = result["streams"]
        exact = [s for s in streams if s["exact"]]
        tokens = up1["tokens_sent"] - up0["tokens_sent"]
        text_bytes = len(self.expected.encode())
        workers = [pid for pid in server.workers() if pid in memory]
        errors: dict[str, int] = {}
        for s in streams:
            if not s["exact"]:
                errors[s["error"] or "?"] = errors.get(s["error"] or "?", 0) + 1
        row = {
            "target": target.key,
            "label": target.label,
            "n": n,
            "streams": len(streams),
            "exact": len(exact),
            "ttft_p50_ms": percentile([s["ttft_ms"] for s in streams if s["ttft_ms"] is not None], 50),
            "ttft_p99_ms": percentile([s["ttft_ms"] for s in streams if s["ttft_ms"] is not None], 99),
            "gap_p50_ms": percentile([s["gap_ms"] for s in streams if s["gap_ms"] is not None], 50),
            "gap_p99_ms": percentile([s["gap_ms"] for s in streams if s["gap_ms"] is not None], 99),
            "gap_max_ms": max((s["gap_ms"] for s in streams if s["gap_ms"] is not None), default=None),
            "server_cpu_s": cpu,
            "worker_cpu_s": list(worker_cpu.values()),
            "tokens_relayed": tokens,
            "us_per_token": cpu / tokens * 1e6 if tokens else None,
            "rss_total_mb": sum(m["VmHWM"] for m in memory.values()) / 1024,
            "rss_worker_mb": max((memory[pid]["VmHWM"] for pid in workers), default=0) / 1024,
            "rss_start_mb": rss_start / 1024,
            "wire_bytes": sum(s["bytes"] for s in exact),
            "text_bytes": text_bytes * len(exact),
            "wire_ratio": sum(s["bytes"] for s in exact) / (text_bytes * len(exact)) if exact else None,
            "post_bytes_avg": statistics.mean(s["post_bytes"] for s in exact)
            if exact and target.mode == "page"
            else None,
            "client_cpu_s": client_cpu,
            "client_cpu_total_s": result["client_cpu_total_s"],
            "upstream_cpu_s": up1["cpu_s"] - up0["cpu_s"],
            "upstream_peak_active": up1["peak_active"],
            "wall_s": wall,
            "errors": errors,
            "started": result.get("started"),
            "post_p50_ms": percentile([s["post_ms"] for s in streams if s.get("post_ms") is not None], 50),
            "late": sum(1 for s in streams if s.get("late")),
            # whatever else ran on the machine meanwhile (other users' tests…): makes latency noisy
            "other_cpu_s": busy
            - cpu
            - client_cpu
            - (up1["cpu_s"] - up0["cpu_s"] if target.server != "upstream" else 0),
            "loadavg_before": load0,
        }
        if soak:
            row["soak_s"] = soak
            row["rss_samples"] = samples
        return row


def expect(lines: queue.Queue, word: str, timeout: float, process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith(word):
            return
    raise BenchError(f"the load generator did not say {word} (exit code {process.poll()})")


def start_profiler(pid: int, path: Path, fmt: str, duration: float):
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() and not shutil.which(spy):
        raise BenchError("--profile needs py-spy: pip install -r bench/requirements.txt")
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "200",
            "--duration",
            str(max(1, math.ceil(duration))),
            "--format",
            fmt,
            "-o",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- page weight and cold start -----------------------------------------------------------
ASSET = re.compile(r'<(?:link[^>]*\brel="stylesheet"[^>]*\bhref|script[^>]*\bsrc)="([^"]+)"')


def page_weight(port: int) -> dict:
    """GET / and the CSS and JS it references: raw and gzip-compressed bytes."""
    status, _, page = http_get(port, "/")
    if status != 200:
        raise BenchError(f"GET / answered {status}")
    files = [("/", page)]
    for path in dict.fromkeys(ASSET.findall(page.decode())):
        status, _, body = http_get(port, path)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}")
        files.append((path, body))
    sizes = [{"path": path, "raw": len(body), "gzip": len(gzip.compress(body, 6, mtime=0))} for path, body in files]
    return {"files": sizes, "raw": sum(s["raw"] for s in sizes), "gzip": sum(s["gzip"] for s in sizes)}


def cold_start(upstream: Upstream, run_dir: Path, app_dir: Path = ROOT, runs: int = 3) -> dict:
    """Wall time of `python -c "import app"` (what each worker does at boot), median of `runs`."""
    times = []
    tmp = Path(tempfile.mkdtemp(prefix="cold-", dir=run_dir))
    try:
        env = trickle_env(upstream, f"sqlite:///{tmp}/cold.db", 1, 8000)  # nothing listens: import only
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", "import app"], cwd=app_dir, env=env, capture_output=True, timeout=60
            )
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise BenchError(f"python -c 'import app' failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"median_s": statistics.median(times), "runs_s": times}


# -- output -----------------------------------------------------------------------------
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


def table(rows: list[dict]) -> str:
    express = {row["n"]: row["us_per_token"] for row in rows if row["target"] == "express"}
    body = []
    for row in rows:
        base = express.get(row["n"])
        ratio = row["us_per_token"] / base if base and row["us_per_token"] is not None else None
        row["ratio_to_express"] = ratio
        if row.get("skipped"):
            body.append((str(row["n"]), row["label"], row["skipped"], *[""] * (len(COLUMNS) - 3)))
            continue
        body.append(
            (
                str(row["n"]),
                row["label"],
                f"{fmt(row['ttft_p50_ms'])}/{fmt(row['ttft_p99_ms'])}",
                f"{fmt(row['gap_p50_ms'])}/{fmt(row['gap_p99_ms'])}",
                f"{row['exact']}/{row['n'] if not row.get('soak_s') else row['streams']}",
                fmt(row["server_cpu_s"], ".2f"),
                fmt(row["us_per_token"], ".1f"),
                fmt(ratio, ".2f"),
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


def soak_table(rows: list[dict]) -> str:
    out = [
        f"{'target':22} {'seconds':>7} {'streams':>8} {'exact':>8} {'lost':>6} {'µs/tok':>7} "
        f"{'RSS MB warm→end':>16} {'growth MB':>9} {'gap p99 ms':>10}"
    ]
    for row in rows:
        samples = row.get("rss_samples") or []
        warm = [kb for t, kb in samples if t >= row["soak_s"] * 0.2] or [kb for _, kb in samples] or [0]
        first, last = warm[0] / 1024, warm[-1] / 1024
        row["rss_warm_mb"], row["rss_end_mb"], row["rss_growth_mb"] = first, last, last - first
        out.append(
            f"{row['label']:22} {row['soak_s']:>7.0f} {row['streams']:>8} {row['exact']:>8} "
            f"{row['streams'] - row['exact']:>6} {fmt(row['us_per_token'], '.1f'):>7} "
            f"{f'{first:.0f}→{last:.0f}':>16} {last - first:>9.1f} {fmt(row['gap_p99_ms']):>10}"
        )
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------
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
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead of the table: keep N=200 streams open for SECONDS per target "
        "(default targets: trickle 1w api and page) and report RSS growth and lost streams",
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
        "--max-seconds", type=float, help="time budget: rows that would not fit are skipped (default 570; --smoke 240)"
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
    args.max_seconds = args.max_seconds or (240.0 if args.smoke else 570.0)
    args.strict = args.strict or args.smoke
    if args.warmup is None:
        args.warmup = 0 if args.smoke else 20
    if args.n:
        args.ns = [int(x) for x in args.n.split(",") if x.strip()]
    else:
        args.ns = [20] if args.smoke else [50, 200, 1000]
    if any(n < 1 or n > 5000 for n in args.ns):
        parser.error("--n values must be between 1 and 5000")
    if args.soak is not None and not 1 <= args.soak <= 3600:
        parser.error("--soak must be between 1 and 3600 seconds")
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
    run_dir = BENCH / "results" / (stamp + ("-smoke" if args.smoke else "-soak" if args.soak else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, run_dir)
    info = {
        "app_dir": str(args.app_dir),
        "tokens": args.tokens,
        "interval_ms": args.interval_ms,
        "ns": args.ns,
        "ramp_ms": args.ramp_ms,
        "targets": [t.key for t in args.targets],
        "cpus": _cpus(),
        "python": sys.version.split()[0],
        "node": _node_version(),
        "reply_chars": len(bench.expected),
        "reply_bytes": len(bench.expected.encode()),
    }
    rows: list[dict] = []
    try:
        if any(t.server == "express" for t in args.targets):
            bench.express_dir = ensure_express(log)
        bench.upstream = Upstream(args.tokens, args.interval_ms, run_dir).start()
        log(
            f"bench: {args.tokens} tokens every {args.interval_ms:g} ms ({len(bench.expected)} chars), "
            f"upstream on 127.0.0.1:{bench.upstream.port}, logs in {run_dir.relative_to(ROOT)}"
        )
        if any(t.server == "trickle" for t in args.targets):
            info["cold_start"] = cold_start(bench.upstream, run_dir, args.app_dir)
        if args.soak:
            for target in args.targets:  # one at a time: each soak is long
                rows += bench.run([target], [200], soak=args.soak)
        else:
            rows = bench.run(args.targets, args.ns)
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
    print(
        f"Trickle benchmark: {args.tokens}-token reply ({info['reply_bytes']} bytes), one token every "
        f"{args.interval_ms:g} ms; {info['cpus']} CPUs; Python {info['python']}, Node {info['node']}"
    )
    if args.soak:
        print(soak_table(rows))
    else:
        print(table(rows))
    lost = sum(
        (row["n"] if not row.get("soak_s") else row["streams"]) - row["exact"] for row in rows if not row.get("skipped")
    )
    # An answer that ended before its page stream attached arrives whole in `done`: delivered, not streamed.
    late = sum(row.get("late", 0) for row in rows if not row.get("skipped"))
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
    page_rows = [r for r in rows if r.get("post_bytes_avg")]
    if page_rows:
        print(
            "Page flow: wire/text counts the SSE response only; the POST /messages reply adds "
            + ", ".join(f"{r['post_bytes_avg']:.0f} B ({r['label']}, N={r['n']})" for r in page_rows[:2])
            + " per answer"
        )
    print(
        f"Streams not exact: {lost}"
        + ("" if lost == 0 else f" ({late} of them whole in done; see the errors in the JSON results)")
    )
    payload = {"info": info, "rows": rows}
    (run_dir / "results.json").write_text(json.dumps(payload, indent=1))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    print(f"Results: {(run_dir / 'results.json').relative_to(ROOT)}")
    return 1 if args.strict and lost - late else 0


def _tree(server) -> list[int]:
    """Every process of the server under test (of each instance, when there are several)."""
    return [pid for root in server.roots() for pid in procstat.tree(root)]


def _tree_cpu(server) -> float:
    return sum(procstat.tree_cpu(root) for root in server.roots())


def _loadavg() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


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
