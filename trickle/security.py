"""Who may do what: the owner cookie, the optional password gate, API tokens, CSRF and headers.

Every browser is an owner (a random id in the signed, HttpOnly, SameSite=Lax
session cookie); its conversations are invisible to every other owner. An
operator can put a password in front of everything (APP_PASSWORD) and require
bearer tokens on the API (API_TOKENS).
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import error_response
from .settings import Settings

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
OPEN_ENDPOINTS = {"static", "pages.healthz", "metrics.metrics", "security.login"}
SHARED_PAGE = "sharing.shared_conversation"  # open too when SHARED_LINKS_PUBLIC (the default)


def content_security_policy(settings: Settings) -> str:
    """No inline script or style anywhere, so the policy can be strict: htmx is configured (meta
    htmx-config) not to eval or inject styles. Images only from this site (and an APP_LOGO elsewhere):
    a remote image in model output would be a request the reader never chose to make."""
    images = ["'self'"]
    logo = urlsplit(settings.app_logo or "")
    if logo.scheme in ("http", "https") and logo.netloc:
        images.append(f"{logo.scheme}://{logo.netloc}")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie gets `Secure` whenever the request came over HTTPS, and a refused request
    never sends one: a cross-site form carries no cookie (SameSite=Lax), and a new cookie in its answer
    would replace the victim's owner and hide every conversation they have."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)

    def save_session(self, app: Flask, session, response) -> None:
        if g.get("session_untouchable"):
            return
        super().save_session(app, session, response)


def _cross_site() -> bool:
    """A state-changing request sent by another site's page. Browsers say so in Sec-Fetch-Site (computed
    by the browser, so a proxy's Host header cannot confuse it); older ones only send Origin."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "cross-site"
    origin = request.headers.get("Origin")
    return bool(origin) and origin != "null" and urlsplit(origin).netloc != request.host


def _refuse(status: int, message: str):
    """Refuse without touching the session cookie (see `_SessionInterface`)."""
    g.session_untouchable = True
    return error_response(status, message)


def _csrf_ok() -> bool:
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    return bool(given and expected and hmac.compare_digest(given, expected))


def current_owner() -> str:
    return g.owner


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


_NAMED_TOKEN = re.compile(r"([A-Za-z0-9_.-]{1,40}):(.+)")


def token_names(tokens: tuple[str, ...]) -> list[tuple[str, str]]:
    """API_TOKENS entries as (name, token): `alice:s3cret` is alice's; a bare token is named by its place."""
    named = []
    for position, entry in enumerate(tokens, start=1):
        match = _NAMED_TOKEN.fullmatch(entry)
        named.append((match.group(1), match.group(2)) if match else (f"token-{position}", entry))
    return named


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def bearer_ok(tokens: tuple[str, ...]) -> bool:
    given = _bearer()
    # compare against every token, whatever matches first: no early exit to time
    return bool(given) and sum(hmac.compare_digest(given, token) for token in tokens) > 0


def bearer_owner(tokens: tuple[str, ...]) -> str | None:
    """The owner an API request speaks for: its bearer token's name, so that limits, budgets and usage
    apply per token (a client without a cookie would otherwise be a new owner at every request)."""
    given = _bearer()
    if not given:
        return None
    found = None
    for name, token in token_names(tokens):  # compare against every token: no early exit to time
        if hmac.compare_digest(given, token):
            found = name
    return f"api:{found}" if found else None


def _local_path(target: str) -> str:
    """`target` if it is a path on this site, else "/". Browsers drop tabs and newlines from a URL and
    read a backslash as a slash, so `/<tab>/evil.example` or `/\\evil.example` would leave the site."""
    if not target.startswith("/") or not target.isprintable() or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "/"
    return target


def init_app(app: Flask, settings: Settings, limiter) -> None:
    app.session_interface = _SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="trickle_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(days=365),
    )
    if settings.trust_proxy:  # Heroku, nginx…: scheme and client address from X-Forwarded-*
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    open_endpoints = OPEN_ENDPOINTS | ({SHARED_PAGE} if settings.shared_links_public else set())
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["csrf_field"] = lambda: Markup(
        f'<input type="hidden" name="csrf_token" value="{csrf_token()}">'
    )

    @app.before_request
    def authenticate():
        api = request.path.startswith("/api/") or request.path == "/ws"
        unsafe = request.method not in SAFE_METHODS
        if unsafe and not api and _cross_site():
            return _refuse(403, "This request came from another site; send it from this site's own pages.")
        if request.endpoint in open_endpoints:
            return None
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin and urlsplit(origin).netloc != request.host:
            return error_response(403, "WebSocket connections are accepted from this site's own pages only.")
        if api and settings.api_tokens:
            g.owner = bearer_owner(settings.api_tokens)
            g.session_untouchable = True  # a token is the identity: no cookie is made for it
            if g.owner is None:
                return error_response(401, "Send a valid API token as 'Authorization: Bearer <token>'.")
            return None
        if settings.app_password and not session.get("authenticated"):
            if api:
                return error_response(401, "Log in first, or use an API token.")
            if request.headers.get("HX-Request"):
                return "", 401, {"HX-Redirect": url_for("security.login")}
            return redirect(url_for("security.login", next=request.full_path.rstrip("?")))
        if unsafe and not api and not _csrf_ok():  # also: no session yet, so none is made here
            return _refuse(403, "This form has expired: reload the page and try again.")
        if "owner" not in session:
            session["owner"] = secrets.token_urlsafe(16)
            session.permanent = True
        g.owner = session["owner"]
        return None

    policy = content_security_policy(settings)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    from flask import Blueprint

    bp = Blueprint("security", __name__)

    @bp.route("/login", methods=["GET", "POST"])
    @limiter.limit(settings.login_rate_limit, methods=["POST"])
    def login():
        """The password gate (only when APP_PASSWORD is set)."""
        if not settings.app_password:
            return redirect(url_for("pages.index"))
        error = None
        if request.method == "POST":
            if not _csrf_ok():
                return _refuse(403, "This form has expired: reload the page and try again.")
            given = request.form.get("password", "")
            if hmac.compare_digest(given.encode(), settings.app_password.encode()):
                owner = session.get("owner")
                session.clear()  # a fresh CSRF token; the browser's conversations stay its own
                if owner:
                    session["owner"] = owner
                session["authenticated"] = True
                session.permanent = True
                target = request.args.get("next", "")
                return redirect(_local_path(target))
            error = "That password is not right."
        return render_template("login.html", error=error), 401 if error else 200

    app.register_blueprint(bp)
