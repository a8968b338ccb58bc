"""gunicorn settings: gevent workers, long-lived streams, a graceful drain on SIGTERM."""

import os
import tempfile

import gevent

# Metrics from every worker are aggregated through files in this folder (prometheus-client's
# multiprocess mode); set here, in the master, so that each worker inherits it.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="trickle-metrics-")

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
# With gevent workers `timeout` is only a heartbeat: long streams are fine.
timeout = 60
# Heroku sends SIGKILL 30 s after SIGTERM: finish or save every answer before that.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def _registry(worker):
    return worker.wsgi.extensions["trickle"].registry


def post_worker_init(worker):
    """On SIGTERM gunicorn only stops accepting; this drains the generations in time to save them."""

    def watch():
        while worker.alive:
            gevent.sleep(0.2)
        _registry(worker).drain(max(graceful_timeout - 5, 0))

    gevent.spawn(watch)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    try:
        _registry(worker).drain(0)
    except Exception:  # the app may have failed to load; nothing to save then
        pass
