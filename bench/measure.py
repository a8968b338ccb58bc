"""One row: a load generator process drives N streams at a server, whose CPU and memory are read around it.

The load generator is its own process (bench/loadgen.py) so that its CPU is apart from the
server's; one process can run several waves of N streams with the same sessions (a soak).
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import procstat
from .servers import HOST, ROOT, BenchError


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def tree(server) -> list[int]:
    """Every process of the server under test (of each instance, when there are several)."""
    return [pid for root in server.roots() for pid in procstat.tree(root)]


def tree_cpu(server) -> float:
    return sum(procstat.tree_cpu(root) for root in server.roots())


def workers_rss_kb(server) -> int:
    """Resident memory of the server's workers now (what a soak watches for growth)."""
    return sum(procstat.memory_kb(pid)["VmRSS"] for pid in server.workers())


def loadavg() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


class Load:
    """A load generator for one target at one N; each `wave()` runs N streams and returns their row."""

    def __init__(self, bench, target, server, n: int, name: str):
        self.bench, self.target, self.server, self.n, self.name = bench, target, server, n, name
        self.timeout = bench.ramp(n) + 4 * bench.stream_seconds() + 30
        config = {
            "host": HOST,
            "port": server.port,
            "mode": target.mode,
            "n": n,
            "ramp_s": bench.ramp(n),
            "ports": getattr(server, "ports", None),
            "timeout_s": self.timeout,
            "expected": bench.expected,
        }
        config_path = bench.run_dir / f"{name}.config.json"
        config_path.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", str(config_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()
        try:  # the page flow opens its N sessions first (a GET / each): not part of the measure
            self.expect("READY", 30 + n * 0.05)
        except BenchError:
            self.process.kill()
            self.process.wait(5)
            raise

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("QUIT")
            except OSError:
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.startswith(word):
                return line
        raise BenchError(f"the load generator did not say {word} (exit code {self.process.poll()})")

    def wave(self, name: str | None = None, profile: str | None = None) -> dict:
        """N streams, measured: the row of the table (see bench/README.md for each figure)."""
        bench, server, target, n = self.bench, self.server, self.target, self.n
        name = name or self.name
        upstream = bench.upstream
        rss_start = sum(procstat.memory_kb(pid)["VmRSS"] for pid in tree(server))
        up0 = upstream.stats()
        cpu0 = tree_cpu(server)
        busy0 = procstat.machine_busy_seconds()
        load0 = loadavg()
        worker_cpu0 = {pid: procstat.cpu_seconds(pid) for pid in server.workers()}
        self.send("GO")
        began = time.monotonic()
        profiler = None
        if profile:
            profiler = start_profiler(
                server.pid, bench.run_dir / f"{name}.{profile}", profile, bench.ramp(n) + bench.stream_seconds()
            )
        try:
            line = self.expect("RUNDONE", self.timeout + 30)
            client_cpu = float(line.split()[1])
            wall = time.monotonic() - began
            time.sleep(0.3)  # the server's last writes and bookkeeping after the final byte
            cpu = tree_cpu(server) - cpu0
            busy = procstat.machine_busy_seconds() - busy0
            worker_cpu = {pid: procstat.cpu_seconds(pid) - worker_cpu0.get(pid, 0.0) for pid in server.workers()}
            up1 = upstream.stats()
            memory = {pid: procstat.memory_kb(pid) for pid in tree(server)}
            result_path = bench.run_dir / f"{name}.streams.json"
            self.send(f"ANALYSE {result_path}")
            self.expect("RESULT", 120)
            result = json.loads(result_path.read_text())
        finally:
            if profiler is not None:
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
        upstream_cpu = up1["cpu_s"] - up0["cpu_s"]
        row = figures(target, n, result["streams"], bench.expected)
        tokens = up1["tokens_sent"] - up0["tokens_sent"]
        workers = [pid for pid in server.workers() if pid in memory]
        row.update(
            {
                "server_cpu_s": cpu,
                "worker_cpu_s": list(worker_cpu.values()),
                "tokens_relayed": tokens,
                "us_per_token": cpu / tokens * 1e6 if tokens else None,
                "rss_total_mb": sum(m["VmHWM"] for m in memory.values()) / 1024,
                "rss_worker_mb": max((memory[pid]["VmHWM"] for pid in workers), default=0) / 1024,
                "rss_start_mb": rss_start / 1024,
                "client_cpu_s": client_cpu,
                "client_cpu_total_s": result["client_cpu_total_s"],
                "upstream_cpu_s": upstream_cpu,
                "upstream_peak_active": up1["peak_active"],
                "wall_s": wall,
                "started": result.get("started"),
                # whatever else ran on the machine meanwhile (other users' tests…): makes latency noisy
                "other_cpu_s": busy - cpu - client_cpu - (upstream_cpu if target.server != "upstream" else 0),
                "loadavg_before": load0,
            }
        )
        return row


def figures(target, n: int, streams: list[dict], expected: str) -> dict:
    """What the streams of one wave show: latency, exactness, bytes on the wire."""
    exact = [s for s in streams if s["exact"]]
    text_bytes = len(expected.encode())
    errors: dict[str, int] = {}
    for s in streams:
        if not s["exact"]:
            errors[s["error"] or "?"] = errors.get(s["error"] or "?", 0) + 1
    ttfts = [s["ttft_ms"] for s in streams if s["ttft_ms"] is not None]
    gaps = [s["gap_ms"] for s in streams if s["gap_ms"] is not None]
    return {
        "target": target.key,
        "label": target.label,
        "n": n,
        "streams": len(streams),
        "exact": len(exact),
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p99_ms": percentile(gaps, 99),
        "gap_max_ms": max(gaps, default=None),
        "wire_bytes": sum(s["bytes"] for s in exact),
        "text_bytes": text_bytes * len(exact),
        "wire_ratio": sum(s["bytes"] for s in exact) / (text_bytes * len(exact)) if exact else None,
        "post_bytes_avg": statistics.mean(s["post_bytes"] for s in exact) if exact and target.mode == "page" else None,
        "errors": errors,
        "post_p50_ms": percentile([s["post_ms"] for s in streams if s.get("post_ms") is not None], 50),
        "late": sum(1 for s in streams if s.get("late")),
    }


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
