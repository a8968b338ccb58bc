"""Prometheus metrics, multiprocess-safe under several gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it), every worker writes
its samples to that folder and /metrics aggregates them.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .security import bearer_ok

ACTIVE_STREAMS = Gauge("trickle_active_streams", "Answers being written now", multiprocess_mode="livesum")
STREAMS = Counter("trickle_streams_total", "Answers by how they ended", ["outcome"])
TOKENS = Counter("trickle_tokens_total", "Tokens by direction", ["direction"])
COST = Counter("trickle_cost_usd_total", "Estimated spend from MODEL_PRICES")
UPSTREAM_ERRORS = Counter("trickle_upstream_errors_total", "Provider failures by HTTP status", ["status"])
TTFT = Histogram(
    "trickle_time_to_first_token_seconds", "Time to first token", buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
)
DURATION = Histogram(
    "trickle_stream_duration_seconds", "Duration of an answer", buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640)
)

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    """Prometheus text format, aggregated over the workers in multiprocess mode."""
    token = current_app.extensions["trickle"].settings.metrics_token
    if token and not bearer_ok((token,)):
        return Response(
            "Send METRICS_TOKEN as 'Authorization: Bearer <token>'.\n",
            401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def record_end(
    outcome: str,
    tokens_in: int,
    tokens_out: int,
    cost: float,
    ttft_ms: int | None,
    duration_ms: int | None,
    upstream_status: int | None,
) -> None:
    STREAMS.labels(outcome).inc()
    TOKENS.labels("in").inc(tokens_in)
    TOKENS.labels("out").inc(tokens_out)
    if cost:
        COST.inc(cost)
    if ttft_ms is not None:
        TTFT.observe(ttft_ms / 1000)
    if duration_ms is not None:
        DURATION.observe(duration_ms / 1000)
    if upstream_status is not None:
        UPSTREAM_ERRORS.labels(str(upstream_status)).inc()
