"""Requests checked before any view runs: ids a database can hold, whole bodies, UTF-8 forms."""

from __future__ import annotations

from urllib.parse import parse_qsl

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from .errors import error_response

# Views that read a large body themselves, streamed to a temporary file, under IMPORT_MAX_MB.
STREAMED_BODIES = {"history.import_history"}


class IdConverter(IntegerConverter):
    """`<int:…>` ids no larger than a database integer: a bigger one is a 404, not an OverflowError."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def init_app(app: Flask) -> None:
    app.url_map.converters["int"] = IdConverter

    @app.before_request
    def whole_body_checked():
        if request.method not in ("POST", "PUT", "PATCH"):
            return None
        if request.endpoint in STREAMED_BODIES:  # the limit applies before anything reads the form
            request.max_content_length = app.extensions["trickle"].settings.import_max_bytes
            return None
        if request.content_length is None:  # chunked: Werkzeug stops at the limit without a 413
            if len(request.get_data(cache=True)) >= app.config["MAX_CONTENT_LENGTH"]:
                raise RequestEntityTooLarge()
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            data = request.get_data(cache=True)
            try:
                if request.mimetype == "multipart/form-data":
                    data.decode("utf-8")
                else:
                    parse_qsl(data.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
            except (UnicodeDecodeError, ValueError):
                return error_response(400, "The form was not sent as UTF-8 text.")
        return None
