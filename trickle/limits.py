"""What one owner (and the whole instance) may spend: request rates, concurrent answers,
conversation length and daily token budgets. Each refusal says which limit was hit."""

from __future__ import annotations

import time

from flask import current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from . import ledger, storage


def _owner_key() -> str:
    return "owner:" + (getattr(g, "owner", None) or get_remote_address())


# The Flask-extension pattern: configured per app by init_app (memory, or Redis via REDIS_URL).
limiter = Limiter(key_func=get_remote_address)


def _settings():
    return current_app.extensions["trickle"].settings


def per_owner(view):
    """Rate-limit a view that starts an answer, per owner and per client address."""
    view = limiter.limit(lambda: _settings().rate_limit_owner, key_func=_owner_key)(view)
    return limiter.limit(lambda: _settings().rate_limit_ip, key_func=get_remote_address)(view)


def init_app(app, settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url or "memory://"
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
