"""Real PostgreSQL and Redis for the tests, started by `scripts/services` in a throwaway folder.

One pair per test process, shared by the modules that need it (each test gets its own database);
stopped and deleted at exit. If they cannot be installed or started, the tests that use them fail:
they never skip.
"""

from __future__ import annotations

import atexit
import subprocess
import threading
import uuid

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "services"


class Services:
    def __init__(self):
        result = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"scripts/services could not start PostgreSQL and Redis:\n{result.stderr}", pytrace=False)
        found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        self.dir = found["SERVICES_DIR"]
        self.database_url = found["DATABASE_URL"]  # the `trickle` database; tests make their own
        self.redis_url = found["REDIS_URL"]
        self._count = 0

    def run(self, command: str, which: str = "both") -> None:
        subprocess.run([str(SCRIPT), command, self.dir, which], check=True, capture_output=True, timeout=120)

    def stop(self, which: str) -> None:
        self.run("stop", which)

    def up(self, which: str) -> None:
        self.run("up", which)

    def destroy(self) -> None:
        subprocess.run([str(SCRIPT), "destroy", self.dir], capture_output=True, timeout=120)

    def new_database(self) -> str:
        """A fresh, empty database on the shared server; its URL."""
        import psycopg

        self._count += 1
        name = f"t{self._count}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.database_url.rsplit("/", 1)[0] + "/" + name


_lock = threading.Lock()
_shared: Services | None = None


def shared() -> Services:
    global _shared
    with _lock:
        if _shared is None:
            _shared = Services()
            atexit.register(_shared.destroy)
        return _shared
