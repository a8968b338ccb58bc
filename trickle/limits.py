"""What one owner (and the whole instance) may spend: request rates, concurrent answers,
conversation length and daily token budgets. Each refusal says which limit was hit."""

from __future__ import annotations

import logging
import time

from flask import current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse

from . import ledger, storage
from .rate_counters import SCHEME as IN_PROCESS_COUNTERS

log = logging.getLogger("trickle.limits")


def owner_key() -> str:
    return "owner:" + (getattr(g, "owner", None) or get_remote_address())


# The Flask-extension pattern: configured per app by init_app (memory, or Redis via REDIS_URL).
limiter = Limiter(key_func=get_remote_address)


def _settings():
    return current_app.extensions["trickle"].settings


def per_owner(view):
    """Rate-limit a view that starts an answer, per owner and per client address."""
    view = limiter.limit(lambda: _settings().rate_limit_owner, key_func=owner_key)(view)
    return limiter.limit(lambda: _settings().rate_limit_ip, key_func=get_remote_address)(view)


def hit(rate: str, key: str, scope: str) -> bool:
    """Count one request against `rate` outside a view's decorator (each `/ws` message); False once over.

    The identifiers are the decorator's own (its key, then the view's endpoint as scope), so a
    `scope` of "api.chat" spends the very counters that `/api/chat` spends.
    """
    try:
        return limiter.limiter.hit(parse(rate), key, scope)
    except Exception:  # storage (Redis) away: serve without limits, like RATELIMIT_SWALLOW_ERRORS
        log.warning("rate limit storage unreachable; %s not counted", scope, exc_info=True)
        return True


def rate_refusal(scope: str) -> str | None:
    """Why this owner or address may not start another answer now by `scope`'s rates, or None."""
    settings = _settings()
    for rate, key in ((settings.rate_limit_owner, owner_key()), (settings.rate_limit_ip, get_remote_address())):
        if not hit(rate, key, scope):
            return f"Too many requests: the limit is {rate}. Wait a moment and try again."
    return None


def init_app(app, settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url or f"{IN_PROCESS_COUNTERS}://"
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True  # Redis away: serve without limits rather than fail
    limiter.init_app(app)


def start_of_day() -> float:
    """Budgets reset at midnight UTC."""
    now = time.time()
    return now - now % 86400


def refusal(engine, settings, registry, owner: str, conversation_id: int | None = None) -> str | None:
    """Why this owner may not start another answer now, or None."""
    running = storage.count_streaming(engine, owner) + registry.count_unstored(owner)
    if running >= settings.max_concurrent_per_owner:
        return (
            f"You already have {running} answers being written; wait for one to finish "
            f"(MAX_CONCURRENT_PER_OWNER={settings.max_concurrent_per_owner})."
        )
    if conversation_id is not None:
        count = storage.count_messages(engine, conversation_id)
        if count + 2 > settings.max_messages_per_conversation:
            return (
                f"This conversation has reached {settings.max_messages_per_conversation} messages "
                "(MAX_MESSAGES_PER_CONVERSATION): start a new chat."
            )
    since = start_of_day()
    if settings.owner_daily_token_budget is not None:
        used = ledger.tokens_used(engine, since, owner)
        if used >= settings.owner_daily_token_budget:
            return (
                f"You have used your {settings.owner_daily_token_budget:,} tokens for today "
                "(OWNER_DAILY_TOKEN_BUDGET); it resets at midnight UTC."
            )
    if settings.daily_token_budget is not None:
        used = ledger.tokens_used(engine, since)
        if used >= settings.daily_token_budget:
            return (
                f"This server has used its {settings.daily_token_budget:,} tokens for today "
                "(DAILY_TOKEN_BUDGET); it resets at midnight UTC."
            )
    return None
