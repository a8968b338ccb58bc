"""Errors as a readable message: JSON under /api, a page or an htmx fragment elsewhere; never a trace.

Views (and the answer service they call) raise: `abort(status, "…")`, or the JSON protocols'
`BadChatRequest`, an HTTPException too. Each is answered here in the form the client speaks;
`/ws`, which has no response to give, sends the same message as `{"type": "error", …}`.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger("trickle.errors")


def error_response(status: int, message: str):
    """A problem as the client reads it; the hooks that run before any view return it directly."""
    if request.path.startswith("/api/"):
        return jsonify(error=message), status
    if request.headers.get("HX-Request"):
        html = render_template("_error.html", message=message)
        return html, status, {"HX-Retarget": "#composer-error", "HX-Reswap": "innerHTML"}
    return render_template("error.html", message=message, status=status), status


def init_app(app: Flask) -> None:
    from flask_limiter.errors import RateLimitExceeded

    @app.errorhandler(RateLimitExceeded)
    def too_many(err: RateLimitExceeded):
        return error_response(429, f"Too many requests: the limit is {err.description}. Wait a moment and try again.")

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return error_response(err.code or 500, err.description or err.name)

    @app.errorhandler(OperationalError)
    def database_away(err: OperationalError):
        log.warning("database unreachable on %s %s: %s", request.method, request.path, err.__class__.__name__)
        return error_response(
            503,
            "The database cannot be reached right now; answers being written are "
            "saved when it is back. Try again in a moment.",
        )

    @app.errorhandler(PoolTimeout)
    def database_busy(err: PoolTimeout):
        log.warning("no database connection free on %s %s within DB_POOL_TIMEOUT", request.method, request.path)
        return error_response(503, "The server is too busy to reach its database right now. Try again in a moment.")

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, InternalServerError.description)
