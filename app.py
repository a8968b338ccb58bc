"""WSGI entry point: `gunicorn app:app` (see Procfile) or `python app.py` for development."""

from gevent import monkey

monkey.patch_all()  # first, before anything imports ssl or socket: provider calls must not block the loop

import sys  # noqa: E402

from trickle import create_app  # noqa: E402
from trickle.settings import SettingsError  # noqa: E402

try:
    app = create_app()
except SettingsError as err:
    sys.exit(f"trickle: configuration error: {err}")

if __name__ == "__main__":
    import os

    from gevent.pywsgi import WSGIServer

    from trickle.settings import read_setting

    port = read_setting(os.environ, "PORT")
    print(f"Trickle on http://127.0.0.1:{port}", flush=True)
    WSGIServer(("127.0.0.1", port), app).serve_forever()
