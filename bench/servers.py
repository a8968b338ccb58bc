"""The processes of a benchmark run: the fake upstream, the reference Express relay, Trickle under gunicorn."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import procstat

ROOT = Path(__file__).resolve().parent.parent  # the repository
BENCH = ROOT / "bench"
CACHE = BENCH / ".cache"
EXPRESS_FILES = ("server.mjs", "package.json", "package-lock.json")
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """The benchmark cannot run (a server did not start, npm failed…): exit non-zero."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _kill_tree(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    pids = procstat.tree(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(5)


def base_env() -> dict[str, str]:
    """The environment without any real provider's settings: nothing may leave the machine."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OPENROUTER_", "OLLAMA_", "CHAT_", "WEB_CONCURRENCY", "DATABASE_URL"))
    }


# -- the fake upstream --------------------------------------------------------------
class Upstream:
    def __init__(self, tokens: int, interval_ms: float, log_dir: Path, first_ms: float | None = None):
        self.tokens, self.interval_ms, self.first_ms = tokens, interval_ms, first_ms
        self.log_path = log_dir / "upstream.log"
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> Upstream:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.upstream",
                "--port",
                "0",
                "--tokens",
                str(self.tokens),
                "--interval-ms",
                str(self.interval_ms),
                *(["--first-ms", str(self.first_ms)] if self.first_ms is not None else []),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=base_env(),
        )
        line = self.process.stdout.readline().decode()
        if not line.startswith("READY "):
            raise BenchError(f"the fake upstream did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def stats(self) -> dict:
        status, _, body = http_get(self.port, "/stats")
        if status != 200:
            raise BenchError(f"upstream /stats answered {status}")
        return json.loads(body)

    def stop(self) -> str:
        if self.process is None:
            return ""
        _kill_tree(self.process, 5)
        self.log.close()
        return self.log_path.read_text(errors="replace").strip()


# -- servers under test -----------------------------------------------------------------
class Server:
    name = "server"
    port = 0
    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        return [self.pid]

    def roots(self) -> list[int]:
        """The top processes of the server under test (one per instance)."""
        return [self.pid]

    def stop(self) -> None:
        if self.process is not None:
            _kill_tree(self.process)
        if getattr(self, "log", None):
            self.log.close()

    def read_log(self) -> str:
        path = getattr(self, "log_path", None)
        return path.read_text(errors="replace")[-4000:] if path and path.exists() else ""


class DirectUpstream(Server):
    """Target (c): the upstream itself, the limit of any relay."""

    def __init__(self, upstream: Upstream):
        self.upstream = upstream

    def start(self) -> DirectUpstream:
        self.port = self.upstream.port
        return self

    @property
    def pid(self) -> int:
        return self.upstream.pid

    def stop(self) -> None:
        pass


def express_seed_dir() -> Path:
    """The read-only reference: $BENCH_EXPRESS_SEED, else shared/ beside the repository."""
    candidates = [
        os.environ.get("BENCH_EXPRESS_SEED"),
        ROOT.parent / "shared" / "reference" / "express-seed",
        "/work/shared/reference/express-seed",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "server.mjs").exists():
            return Path(candidate)
    raise BenchError("the reference Express server was not found (set BENCH_EXPRESS_SEED to its folder)")


def ensure_express(log=print) -> Path:
    """Copy the reference into bench/.cache/express-seed and `npm ci` there when its lock changed."""
    seed = express_seed_dir()
    target = CACHE / "express-seed"
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    for name in EXPRESS_FILES:
        data = (seed / name).read_bytes()
        digest.update(name.encode() + b"\0" + data)
        if not (target / name).exists() or (target / name).read_bytes() != data:
            (target / name).write_bytes(data)
    stamp = target / "node_modules" / ".bench-stamp"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return target
    npm = shutil.which("npm")
    node = shutil.which("node")
    if not npm or not node:
        raise BenchError("node and npm are needed for the Express baseline (Node 20)")
    log(f"npm ci in {target.relative_to(ROOT)} …")
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError("npm ci took more than 300 s") from err
    if done.returncode != 0:
        raise BenchError(f"npm ci failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    stamp.write_text(digest.hexdigest())
    return target


class Express(Server):
    """Target (a): the reference Express relay, `node server.mjs`."""

    name = "express"

    def __init__(self, directory: Path, upstream: Upstream, log_dir: Path):
        self.directory = directory
        self.upstream = upstream
        self.log_path = log_dir / "express.log"

    def start(self, timeout: float = 20.0) -> Express:
        self.port = free_port()
        env = {
            **base_env(),
            "OPENAI_BASE_URL": self.upstream.base_url,
            "OPENAI_API_KEY": "x",
            "PORT": str(self.port),
            "NODE_ENV": "production",
        }
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [shutil.which("node") or "node", "server.mjs"],
            cwd=self.directory,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"node exited with {self.process.returncode}:\n{self.read_log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"Express did not listen within {timeout} s:\n{self.read_log()}")


SECRET_KEY = secrets.token_hex(32)  # one per run: every worker must accept the others' session cookies

# The load comes from one address and its rates are the point: the limits a public instance
# needs (requests per minute, answers at once per person) would refuse it.
BENCH_LIMITS = {
    "RATE_LIMIT_PER_OWNER": "1000000/minute",
    "RATE_LIMIT_PER_IP": "1000000/minute",
    "MAX_CONCURRENT_PER_OWNER": "100000",
    "MAX_STREAMS_PER_OWNER": "100000",  # open event streams per worker
    "MAX_STREAMS_PER_IP": "100000",
    "MODEL_TITLES": "0",
}  # the baseline names nothing: a title request would be extra load


def trickle_env(upstream: Upstream, database_url: str, workers: int, port: int) -> dict[str, str]:
    return {
        **BENCH_LIMITS,
        **base_env(),
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "x",
        "CHAT_MODEL": "bench",
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": str(workers),
        "WORKER_CONNECTIONS": "4000",
        "PORT": str(port),
        "GRACEFUL_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
        "SECRET_KEY": SECRET_KEY,
    }


class Trickle(Server):
    """Target (b): `python -m gunicorn app:app` with gevent workers, as the Procfile runs it."""

    def __init__(
        self,
        upstream: Upstream,
        workers: int,
        log_dir: Path,
        app_dir: Path = ROOT,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.upstream = upstream
        self.app_dir = app_dir
        self.worker_count = workers
        self.name = f"trickle-{workers}w"
        self.tmp = Path(tempfile.mkdtemp(prefix="trickle-bench-", dir=log_dir))
        self.log_path = self.tmp / "gunicorn.log"
        self.database_url = database_url or f"sqlite:///{self.tmp}/bench.db"
        self.extra_env = env or {}

    def start(self, timeout: float = 30.0) -> Trickle:
        self.port = free_port()
        env = {**trickle_env(self.upstream, self.database_url, self.worker_count, self.port), **self.extra_env}
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "app:app", "--bind", f"{HOST}:{self.port}"],
            cwd=self.app_dir,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}:\n{self.read_log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"Trickle did not answer /healthz within {timeout} s:\n{self.read_log()}")
            try:
                if http_get(self.port, "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        # Every worker imports the app on its own: wait until all exist and have gone quiet.
        last = procstat.tree_cpu(self.pid)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = procstat.tree_cpu(self.pid)
            if len(self.workers()) == self.worker_count and now - last < 0.02:
                break
            last = now
        return self

    def workers(self) -> list[int]:
        return procstat.children(self.pid)

    def stop(self) -> None:
        super().stop()
        for path in self.tmp.glob("bench.db*"):  # the log stays beside the results
            path.unlink(missing_ok=True)


def start_services():
    """Throwaway PostgreSQL and Redis (`scripts/services`, which installs them if missing) for the rows
    with several instances: the tests' own helper, destroyed with `.destroy()` at the end of the run."""
    import pytest

    from tests.services import Services

    try:
        return Services()
    except pytest.fail.Exception as err:  # how that helper reports a failure to start
        raise BenchError(str(err)) from None


class TrickleInstances(Server):
    """Target (c): two instances of one gevent worker each, sharing one PostgreSQL and one Redis, as
    two dynos behind a load balancer. Their CPU and memory are summed; the services' own CPU is not."""

    def __init__(self, upstream: Upstream, services, log_dir: Path, app_dir: Path = ROOT, count: int = 2):
        self.services = services
        self.instances = [
            Trickle(upstream, 1, log_dir, app_dir, env={"REDIS_URL": services.redis_url, "DB_POOL_SIZE": "20"})
            for _ in range(count)
        ]
        self.name = f"trickle-{count}i"

    def start(self) -> TrickleInstances:
        database_url = self.services.new_database()
        for instance in self.instances:
            instance.database_url = database_url
            instance.start()
        self.port = self.instances[0].port
        self.ports = [instance.port for instance in self.instances]
        return self

    @property
    def pid(self) -> int:
        return self.instances[0].pid

    def roots(self) -> list[int]:
        return [instance.pid for instance in self.instances]

    def workers(self) -> list[int]:
        return [pid for instance in self.instances for pid in instance.workers()]

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()  # (one never started has nothing to stop)

    def read_log(self) -> str:
        return "\n".join(instance.read_log()[-2000:] for instance in self.instances)
