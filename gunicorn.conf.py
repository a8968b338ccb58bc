"""gunicorn settings: gevent workers, long-lived streams, a graceful drain on SIGTERM.

The master checks the whole configuration (the environment and `.env`) before it starts a worker: a
wrong value stops `gunicorn app:app` (and `make run`) at once with the variable's name and a non-zero
exit, instead of each worker failing at boot and being restarted forever while the port hangs.
"""

import importlib.util
import os
import sys
import tempfile

import gevent
from dotenv import load_dotenv


def _settings_module():
    """trickle/settings.py on its own (it is stdlib-only). Importing the `trickle` package here would load
    Flask, the openai client and their network stack in the master, before each gevent worker patches them."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trickle", "settings.py")
    spec = importlib.util.spec_from_file_location("trickle_settings_for_gunicorn", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the classes
    spec.loader.exec_module(module)
    return module


_settings = _settings_module()
load_dotenv(os.path.join(os.getcwd(), ".env"))  # as create_app does: the master checks what the workers read
try:
    _settings.load_settings(os.environ)
except _settings.SettingsError as err:
    sys.exit(f"trickle: configuration error: {err}")


def _read(name):
    return _settings.read_setting(os.environ, name)


# Not configuration: a process variable. Metrics from every worker are aggregated through files in this
# folder (prometheus-client's multiprocess mode); set here, in the master, so that each worker inherits it.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="trickle-metrics-")

bind = f"0.0.0.0:{_read('PORT')}"
workers = _read("WEB_CONCURRENCY")
worker_class = "gevent"
worker_connections = _read("WORKER_CONNECTIONS")
# With gevent workers `timeout` is only a heartbeat: long streams are fine.
timeout = 60
# Heroku sends SIGKILL 30 s after SIGTERM: finish or save every answer before that.
graceful_timeout = _read("GRACEFUL_TIMEOUT")
keepalive = 5
accesslog = _read("ACCESS_LOG")
errorlog = "-"
loglevel = _read("LOG_LEVEL")


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
