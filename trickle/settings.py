"""Environment (and `.env`) to one validated, immutable settings object.

Every setting is read here and nowhere else, so a typo fails at start with a
message that names the variable instead of failing mid-stream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible provider, described as data (one client class serves them all)."""

    name: str  # "openai", "openrouter", "ollama", "custom"
    base_url: str
    api_key: str
    label: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Settings:
    endpoint: Endpoint | None  # None: the built-in demo model answers
    chat_model: str
    chat_model_set: bool  # CHAT_MODEL was given (else the provider's default applies)
    chat_models: tuple[str, ...]
    database_url: str | None  # None: a SQLite file in the instance folder
    secret_key: str | None
    flush_interval: float  # seconds between two writes of one stream
    flush_chars: int  # write sooner once this many characters wait
    ping_interval: float  # SSE keep-alive comment while nothing else is sent
    save_interval: float  # how often a live answer is saved to the database
    disconnect_grace: float  # how long an answer nobody watches goes on
    attach_timeout: float  # how long a new answer waits for its first listener
    connect_timeout: float
    first_token_timeout: float
    idle_timeout: float
    stream_max: float
    retry_attempts: int
    retry_max_wait: float
    fallback_models: tuple[str, ...]
    max_input_chars: int
    max_content_length: int  # bytes of one request body
    max_tokens: int | None
    demo_delay: float  # seconds between the demo model's tokens
    app_name: str
    app_logo: str | None  # a URL or a path under /static
    welcome_message: str
    suggested_prompts: tuple[str, ...]
    system_prompt: str | None  # for new conversations
    model_titles: bool  # a real provider names new conversations (MODEL_TITLES=0: the first message does)
    title_model: str | None  # the model that names them, if not the conversation's own
    templates_dir: str | None  # templates here override the built-in ones of the same name
    static_dir: str | None  # files here override the built-in static files of the same name
    production: bool  # APP_ENV=production, or on a Heroku dyno: SECRET_KEY becomes mandatory
    trust_proxy: bool  # take scheme and client address from X-Forwarded-* (behind a proxy)
    app_password: str | None
    api_tokens: tuple[str, ...]
    metrics_token: str | None  # /metrics asks for it as a bearer token; unset, /metrics is open
    redis_url: str | None
    redis_key_prefix: str | None  # else derived from the database, so instances of one database share keys
    login_rate_limit: str
    rate_limit_owner: str
    rate_limit_ip: str
    max_concurrent_per_owner: int
    max_messages_per_conversation: int
    daily_token_budget: int | None  # the whole instance, per UTC day
    owner_daily_token_budget: int | None
    model_prices: tuple[tuple[str, float, float], ...]  # (model, USD per 1M input, per 1M output)
    forced_provider: str | None  # CHAT_PROVIDER when it names ollama, local or demo
    local_model_path: str | None  # a .gguf file; None: the bundled SmolLM2
    local_max_concurrent: int
    local_threads: int
    temperature: float
    local_parallel: int  # answers the local model writes at once, per worker (its slots)
    local_context: int  # tokens of context each of those answers has (prompt and answer)
    local_max_tokens: int | None  # the longest local answer; None: MAX_TOKENS, else 512


OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
OPENROUTER_BASE = "https://openrouter.ai/api/v1"
OLLAMA_DEFAULT_HOST = "http://127.0.0.1:11434"


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def read_integer(env: Mapping[str, str], name: str, default: int | None, *, minimum: int = 0) -> int | None:
    """A whole-number setting; the error names the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw in ("1", "true", "yes")


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name, "").strip() or default
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"{name} must be an http(s) URL like http://127.0.0.1:11434, got {raw!r}")
    return raw.rstrip("/")


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _endpoint(env: Mapping[str, str]) -> Endpoint | None:
    """Pick the provider: an explicit CHAT_PROVIDER, else the first one configured, else the demo."""
    choice = env.get("CHAT_PROVIDER", "").strip().lower()
    if choice not in ("", "openai", "openrouter", "ollama", "local", "demo"):
        raise SettingsError(f"CHAT_PROVIDER must be one of openai, openrouter, ollama, local, demo; got {choice!r}")
    openai_key = env.get("OPENAI_API_KEY", "").strip()
    openai_base = _url(env, "OPENAI_BASE_URL")
    openrouter_key = env.get("OPENROUTER_API_KEY", "").strip()
    ollama_host = _url(env, "OLLAMA_HOST")
    if not choice:
        if openai_key or openai_base:
            choice = "openai"
        elif openrouter_key:
            choice = "openrouter"
        elif ollama_host:
            choice = "ollama"
        else:
            choice = "demo"
    if choice == "openai":
        base = openai_base or OPENAI_DEFAULT_BASE
        if not openai_key and base == OPENAI_DEFAULT_BASE:
            raise SettingsError("OPENAI_API_KEY is required to use OpenAI (or set OPENAI_BASE_URL)")
        label = "OpenAI" if base == OPENAI_DEFAULT_BASE else urlparse(base).netloc
        return Endpoint("openai" if base == OPENAI_DEFAULT_BASE else "custom", base, openai_key or "unused", label)
    if choice == "openrouter":
        if not openrouter_key:
            raise SettingsError("OPENROUTER_API_KEY is required when CHAT_PROVIDER=openrouter")
        headers = (("X-Title", env.get("APP_NAME", "Trickle")),)
        return Endpoint("openrouter", OPENROUTER_BASE, openrouter_key, "OpenRouter", headers)
    if choice == "ollama":
        host = ollama_host or OLLAMA_DEFAULT_HOST
        return Endpoint("ollama", host + "/v1", "ollama", f"Ollama at {urlparse(host).netloc}")
    return None


DEFAULT_MODELS = {"openai": "gpt-5.4-mini", "openrouter": "openai/gpt-5.4-mini", "ollama": "llama3.2"}


def _file(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not os.path.isfile(raw):
        raise SettingsError(f"{name} must be an existing file, got {raw!r}")
    return os.path.abspath(raw)


def _folder(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = os.path.abspath(raw)
    if not os.path.isdir(path):
        raise SettingsError(f"{name} must be an existing folder, got {raw!r}")
    return path


def _prices(env: Mapping[str, str]) -> tuple[tuple[str, float, float], ...]:
    """MODEL_PRICES="gpt-5.4-mini=0.25/2.00, llama3.2=0/0": USD per million tokens in/out."""
    prices = []
    for item in _names(env, "MODEL_PRICES"):
        try:
            model, pair = item.rsplit("=", 1)
            price_in, price_out = (float(part) for part in pair.split("/"))
        except ValueError:
            raise SettingsError(
                f"MODEL_PRICES entries look like model=0.25/2.00 (USD per 1M tokens in/out), got {item!r}"
            ) from None
        prices.append((model.strip(), price_in, price_out))
    return tuple(prices)


def _limit(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if not re.fullmatch(r"\d+\s*(/|per)\s*(second|minute|hour|day)s?", raw):
        raise SettingsError(f"{name} must look like 30/minute, got {raw!r}")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    endpoint = _endpoint(env)
    app_env = env.get("APP_ENV", "").strip().lower() or ("production" if env.get("DYNO") else "development")
    if app_env not in ("production", "development"):
        raise SettingsError(f"APP_ENV must be production or development, got {app_env!r}")
    production = app_env == "production"
    if production and not env.get("SECRET_KEY", "").strip():
        raise SettingsError(
            "SECRET_KEY must be set in production (APP_ENV=production): it signs the cookies "
            "that keep each person's conversations private. Generate one with "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    default_model = DEFAULT_MODELS.get(endpoint.name, "default") if endpoint else "demo"
    chat_model = env.get("CHAT_MODEL", "").strip() or default_model
    chat_models = _names(env, "CHAT_MODELS")
    flush_ms = _number(env, "STREAM_FLUSH_MS", 30, minimum=0)
    return Settings(
        endpoint=endpoint,
        chat_model=chat_model,
        chat_model_set=bool(env.get("CHAT_MODEL", "").strip()),
        chat_models=chat_models,
        database_url=env.get("DATABASE_URL", "").strip() or None,
        secret_key=env.get("SECRET_KEY", "").strip() or None,
        flush_interval=flush_ms / 1000,
        flush_chars=read_integer(env, "STREAM_FLUSH_CHARS", 2048, minimum=1),
        ping_interval=_number(env, "SSE_PING_S", 15, minimum=0.05),
        save_interval=_number(env, "SAVE_INTERVAL_S", 1.0, minimum=0.05),
        disconnect_grace=_number(env, "DISCONNECT_GRACE_S", 30),
        attach_timeout=_number(env, "ATTACH_TIMEOUT_S", 15),
        connect_timeout=_number(env, "CONNECT_TIMEOUT_S", 10, minimum=0.1),
        first_token_timeout=_number(env, "FIRST_TOKEN_TIMEOUT_S", 120, minimum=0.1),
        idle_timeout=_number(env, "STREAM_IDLE_S", 60, minimum=0.1),
        stream_max=_number(env, "STREAM_MAX_S", 600, minimum=0.1),
        retry_attempts=read_integer(env, "UPSTREAM_RETRIES", 2),
        retry_max_wait=_number(env, "UPSTREAM_RETRY_MAX_S", 20),
        fallback_models=_names(env, "FALLBACK_MODELS"),
        max_input_chars=read_integer(env, "MAX_INPUT_CHARS", 20000, minimum=1),
        max_content_length=read_integer(env, "MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1024),
        max_tokens=read_integer(env, "MAX_TOKENS", None, minimum=1),
        demo_delay=_number(env, "DEMO_DELAY_MS", 25) / 1000,
        app_name=env.get("APP_NAME", "").strip() or "Trickle",
        app_logo=env.get("APP_LOGO", "").strip() or None,
        welcome_message=env.get("WELCOME_MESSAGE", "").strip() or "What can I help with?",
        suggested_prompts=tuple(p.strip() for p in env.get("SUGGESTED_PROMPTS", "").split("|") if p.strip()),
        system_prompt=env.get("SYSTEM_PROMPT", "").strip() or None,
        model_titles=_flag(env, "MODEL_TITLES", default=True),
        title_model=env.get("TITLE_MODEL", "").strip() or None,
        templates_dir=_folder(env, "TEMPLATES_DIR"),
        static_dir=_folder(env, "STATIC_DIR"),
        production=production,
        trust_proxy=_flag(env, "TRUST_PROXY", default=bool(env.get("DYNO"))),
        app_password=env.get("APP_PASSWORD") or None,
        api_tokens=_names(env, "API_TOKENS"),
        metrics_token=env.get("METRICS_TOKEN", "").strip() or None,
        redis_url=env.get("REDIS_URL", "").strip() or None,
        redis_key_prefix=env.get("REDIS_KEY_PREFIX", "").strip() or None,
        login_rate_limit=_limit(env, "LOGIN_RATE_LIMIT", "5/minute"),
        rate_limit_owner=_limit(env, "RATE_LIMIT_PER_OWNER", "30/minute"),
        rate_limit_ip=_limit(env, "RATE_LIMIT_PER_IP", "120/minute"),
        max_concurrent_per_owner=read_integer(env, "MAX_CONCURRENT_PER_OWNER", 3, minimum=1),
        max_messages_per_conversation=read_integer(env, "MAX_MESSAGES_PER_CONVERSATION", 500, minimum=2),
        daily_token_budget=read_integer(env, "DAILY_TOKEN_BUDGET", None, minimum=1),
        owner_daily_token_budget=read_integer(env, "OWNER_DAILY_TOKEN_BUDGET", None, minimum=1),
        model_prices=_prices(env),
        forced_provider=env.get("CHAT_PROVIDER", "").strip().lower() or None,
        local_model_path=_file(env, "LOCAL_MODEL_PATH"),
        local_max_concurrent=read_integer(env, "LOCAL_MAX_CONCURRENT", 1, minimum=1),
        # Half the cores: llama.cpp's threads wait for each other, so one that the event loop (or anything else)
        # preempts stalls them all (measured on 2 cores: 1 thread 64-84 tokens/s, 2 threads 6 tokens/s).
        local_threads=read_integer(env, "LOCAL_THREADS", max(1, min((os.cpu_count() or 2) // 2, 4)), minimum=1),
        temperature=_number(env, "TEMPERATURE", 0.7),
        local_parallel=read_integer(env, "LOCAL_PARALLEL", 2, minimum=1),
        local_context=read_integer(env, "LOCAL_CONTEXT", 4096, minimum=256),
        local_max_tokens=read_integer(env, "LOCAL_MAX_TOKENS", None, minimum=1),
    )
