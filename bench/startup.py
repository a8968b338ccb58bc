"""What a visitor and a new worker pay before any stream: the chat page's weight and the worker's cold start."""

from __future__ import annotations

import gzip
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .servers import ROOT, BenchError, Upstream, http_get, trickle_env

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
