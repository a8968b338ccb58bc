"""Fixtures: a fake upstream on 127.0.0.1, the app in process or under gunicorn, Chromium.

Where the server is the point (streaming over sockets, workers, restarts, the browser) the app
runs as in production: the Procfile's gunicorn with gevent workers, pointed at the fake upstream
through OPENAI_BASE_URL. Request/response tests (status codes, headers, CSRF, validation, error
messages, HTML fragments) use the `app` and `client` fixtures instead, as in the Flask tutorial:
the app built by `create_app` in this process on a temporary SQLite file, and Flask's test client.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
import pytest
import requests
from flask.testing import FlaskClient

from tests.fake_upstream import FakeUpstream, Script

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def client(server: AppServer) -> requests.Session:
    """A browser-like HTTP client: the owner cookie of a first visit, and the CSRF token that
    htmx sends in a header."""
    session = requests.Session()
    server.sessions.append(session)
    page = session.get(server.url("/"), timeout=10)
    token = CSRF_META.search(page.text)
    assert token, page.text[:500]
    session.headers["X-CSRF-Token"] = token.group(1)
    return session


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def browser_session(page) -> requests.Session:
    """An HTTP client that is the same owner as the browser page (its cookies)."""
    session = requests.Session()
    for cookie in page.context.cookies():
        session.cookies.set(cookie["name"], cookie["value"], domain=cookie["domain"], path=cookie["path"])
    return session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What every test app gets unless a test says otherwise.
TEST_ENV = {
    # Every test client is 127.0.0.1: limits are tested on purpose, not hit by accident.
    "RATE_LIMIT_PER_IP": "100000/minute",
    "RATE_LIMIT_PER_OWNER": "100000/minute",
    "MAX_CONCURRENT_PER_OWNER": "100",
    # Every request the fake upstream counts is an answer's; test_titles.py asks for titles on purpose.
    "MODEL_TITLES": "0",
}


class AppServer:
    """One gunicorn process running `app:app` with the given environment."""

    def __init__(self, env: dict[str, str], workers: int = 1, database_url: str | None = None):
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="trickle-test-")
        self.database_url = database_url or f"sqlite:///{self.tmp}/trickle.db"
        self.log_path = Path(self.tmp) / "server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPENROUTER_", "OLLAMA_"))},
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "DATABASE_URL": self.database_url,
            "PYTHONUNBUFFERED": "1",
            "GRACEFUL_TIMEOUT": "10",
            **TEST_ENV,
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.sessions: list[requests.Session] = []  # the clients made by `client`, closed by `stop`

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self, timeout: float = 20.0) -> AppServer:
        self.log = open(self.log_path, "ab")
        command = [sys.executable, "-m", "gunicorn", "app:app", "--bind", f"127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.read_log()}")
            try:
                if requests.get(self.url("/healthz"), timeout=2).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or busy booting
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not come up in {timeout} s:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Signal every process of the server (master and workers)."""
        for pid in [self.process.pid, *self.worker_pids()]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, timeout: float = 15.0) -> None:
        """End the server after its tests: gunicorn's quick shutdown (SIGQUIT), where each worker still
        saves its answers as it exits. The graceful drain on SIGTERM is tested on purpose (test_restarts)."""
        for session in self.sessions:
            session.close()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(5)
        if getattr(self, "log", None):
            self.log.close()

    def engine(self):
        from trickle import database

        return database.make_engine(self.database_url)


class BrowserClient(FlaskClient):
    """Flask's test client as a browser holds it after its first visit: the owner cookie in its jar, and
    the page's CSRF token, sent in htmx's header with every request (a test may set it to None)."""

    csrf_token: str | None = None

    def open(self, *args, headers=None, **kwargs):
        if self.csrf_token is not None and args and isinstance(args[0], str):
            headers = {"X-CSRF-Token": self.csrf_token, **dict(headers or {})}
        return super().open(*args, headers=headers, **kwargs)


def live_greenlets() -> set:
    """Every greenlet not yet ended (spawned and waiting to run, or running)."""
    return {obj for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet) and not obj.dead}


def run_greenlets(seconds: float = 0.0) -> None:
    """Let the in-process app's greenlets (answers being written) run; `time.sleep` would freeze them."""
    gevent.sleep(seconds)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll `predicate` until it is true or `timeout` passes, letting greenlets run; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        gevent.sleep(interval)


def _forget_login_limits() -> None:
    """flask-limiter's one `limiter` keeps the login limit of every app built in this process, under the
    view's name, and applies them all; gunicorn builds one app per process: here too each app has its own."""
    from trickle import limits

    decorated = limits.limiter.limit_manager._decorated_limits
    for route in [route for route in decorated if route.endswith(".login")]:
        del decorated[route]


class InProcessApp:
    """The app built by `create_app` in this process, on its own SQLite file: no gunicorn, no socket.

    Its greenlets (an answer being written, the orphan sweep) run whenever the test yields to gevent:
    reading a streamed body, `run_greenlets` or `wait_for`. `close` ends them, so none outlives its test.
    What the app logs is kept for `read_log`, as a server's log would be.
    """

    def __init__(self, env: dict[str, str]):
        from trickle import create_app

        self.tmp = tempfile.mkdtemp(prefix="trickle-app-")
        self.database_url = f"sqlite:///{self.tmp}/trickle.db"
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._handler.setLevel(logging.INFO)
        self._logger = logging.getLogger("trickle")
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._handler)
        _forget_login_limits()
        before = live_greenlets()
        self.app = create_app(
            {"DATABASE_URL": self.database_url, "SECRET_KEY": secrets.token_hex(16), **TEST_ENV, **env}
        )
        self._own = live_greenlets() - before  # the sweeps create_app started: this app's for good
        self.app.test_client_class = BrowserClient

    @property
    def trickle(self):
        return self.app.extensions["trickle"]

    def engine(self):
        return self.trickle.engine

    def client(self) -> BrowserClient:
        """A new person: the owner cookie of a first visit and the page's CSRF token."""
        browser = self.app.test_client()
        page = browser.get("/")
        token = CSRF_META.search(page.text)
        assert token, page.text[:500]
        browser.csrf_token = token.group(1)
        return browser

    def read_log(self) -> str:
        return self._log.getvalue()

    def close(self) -> None:
        registry = self.trickle.registry
        registry.drain(0)  # answers still being written end (interrupted) and are saved
        loops = [getattr(registry, name, None) for name in ("_monitor", "_publisher", "_reader")]
        gevent.killall([g for g in [*self._own, *loops] if g is not None and not g.dead], timeout=5)
        self.trickle.engine.dispose()
        logging.getLogger().removeHandler(self._handler)
        self._logger.setLevel(self._level)
        shutil.rmtree(self.tmp, ignore_errors=True)


def upstream_env(upstream) -> dict[str, str]:
    """The settings that point an app at the fake upstream."""
    return {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "test-key", "CHAT_MODEL": "fake-model"}


@pytest.fixture
def make_app(upstream):
    """Build in-process apps with extra settings (on the fake upstream); all are closed after the test."""
    apps: list[InProcessApp] = []

    def build(**env: str) -> InProcessApp:
        built = InProcessApp({**upstream_env(upstream), **{k: str(v) for k, v in env.items()}})
        apps.append(built)
        return built

    yield build
    for built in reversed(apps):
        built.close()


@pytest.fixture
def app(make_app) -> InProcessApp:
    """The app in process on the fake upstream, with the test settings."""
    return make_app()


@pytest.fixture(name="client")
def browser_client(app) -> BrowserClient:
    """Flask's test client with a person's owner cookie and CSRF token (`client(server)` is its HTTP twin)."""
    return app.client()


@pytest.fixture(scope="session")
def upstream():
    fake = FakeUpstream(default=Script(delay=0.005)).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(request):
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture
def make_server(upstream):
    """Start app servers with extra environment; all are stopped after the test."""
    servers: list[AppServer] = []

    def start(workers: int = 1, provider: str = "upstream", **env: str) -> AppServer:
        # "demo" is named explicitly: with the local model's packages installed, nothing configured means local.
        base = (
            {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "test-key", "CHAT_MODEL": "fake-model"}
            if provider == "upstream"
            else {"CHAT_PROVIDER": provider}
        )
        server = AppServer({**base, **{k: str(v) for k, v in env.items()}}, workers=workers)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(upstream):
    """One long-lived server on the fake upstream, for tests that need no special settings."""
    server = AppServer(
        {
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "test-key",
            "CHAT_MODEL": "fake-model",
            "STREAM_FLUSH_MS": "30",
        }
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test` (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


@pytest.fixture
def console_errors(page):
    """Console errors and uncaught exceptions of the page, for a final `assert not console_errors`."""
    errors: list[str] = []

    def on_console(msg):
        if msg.type == "error":
            errors.append(f"console: {msg.text} ({msg.location.get('url') or ''})")

    page.on("console", on_console)
    page.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
    return errors


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
