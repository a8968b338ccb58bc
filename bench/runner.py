"""The targets under test and the order of a run: every server started and warmed up, then loaded in turn."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .measure import Load
from .reply import reply_text
from .servers import BenchError, DirectUpstream, Express, Trickle, TrickleInstances, Upstream, start_services
from .startup import page_weight


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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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

    def start(self, target: Target):
        """Start the target's server and warm it up with a round that is not measured."""
        log(f"starting {target.label} …")
        server = self.make_server(target).start()
        if target.server == "trickle" and self.page_weight is None:
            self.page_weight = page_weight(server.port)
        if self.args.warmup and target.server != "upstream":  # the upstream is always warm
            self.load(target, server, self.args.warmup, f"{target.key}-warmup", profile=False)
        return server

    def load(self, target: Target, server, n: int, name: str, profile: bool = True) -> dict:
        with Load(self, target, server, n, name) as load:
            return load.wave(profile=self.args.profile if profile and target.server == "trickle" else None)

    def run(self, targets: list[Target], ns: list[int], repeats: int = 1) -> list[dict]:
        """Start every server and warm it up, then load them in turn: for each N, for each repeat, every
        target, so the rows of one N run minutes apart at most and drift on the machine hits them alike."""
        rows = []
        servers = {}
        target = n = None
        try:
            for target in targets:
                servers[target.key] = self.start(target)
            for n in ns:
                for repeat in range(repeats):
                    for target in targets:
                        rows.append(self._row(target, servers[target.key], n, repeat, repeats))
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

    def _row(self, target: Target, server, n: int, repeat: int, repeats: int) -> dict:
        if time.monotonic() - self.started + self.row_estimate(n) > self.args.max_seconds:
            return {
                "target": target.key,
                "label": target.label,
                "n": n,
                "repeat": repeat,
                "skipped": "skipped: time budget",
                "us_per_token": None,
            }
        suffix = f" ({repeat + 1}/{repeats})" if repeats > 1 else ""
        log(f"{target.label} N={n}{suffix} …")
        name = f"{target.key}-n{n}" + (f"-r{repeat + 1}" if repeats > 1 else "")
        row = self.load(target, server, n, name)
        row["repeat"] = repeat
        if row["errors"]:
            log(f"  not exact: {row['errors']}")
        return row
