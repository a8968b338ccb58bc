"""Environment (and `.env`) to one validated, immutable settings object.

Every variable is declared once in `SETTINGS` (name, where it goes, how it is read, default, help) and
read by one function, `read_setting`; nothing else reads the environment. A typo fails at start with a message
that names the variable instead of failing mid-stream. Stdlib only: gunicorn's master loads this file
on its own, before any worker's gevent monkey-patching (see gunicorn.conf.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import partial
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    openai_api_key: str | None
    openai_base_url: str | None
    openrouter_api_key: str | None
    ollama_host: str | None
    chat_model: str | None  # CHAT_MODEL; create_app puts the provider's default in when it is unset
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
    reasoning_effort: str | None  # low, medium, high or off (Ollama), where a conversation sets none
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
    local_threads: int
    local_parallel: int  # answers the local model writes at once, per worker (its slots)
    local_context: int  # tokens of context each of those answers has (prompt and answer)
    local_max_tokens: int | None  # the longest local answer; None: MAX_TOKENS, else 512
    temperature: float
    log_level: str  # debug, info, warning, error or critical (lower case, as gunicorn spells them)
    sharing: bool  # owners may make read-only links to a snapshot of a conversation
    shared_links_public: bool  # a shared link opens without APP_PASSWORD's login
    import_max_bytes: int  # the largest history file one import may upload
    max_request_messages: int  # messages in one JSON chat request (/api/chat, /ws)
    max_streams_per_owner: int  # open event streams (/messages/<id>/events, /api/chat, /ws) per owner, per worker
    max_streams_per_ip: int  # the same per client address
    rate_limit_ws_messages: str  # every message a /ws client sends, per owner
    attachment_max_bytes: int  # one attached file, as uploaded
    message_attachments_max_bytes: int  # every file of one message together
    max_attachments: int  # files in one message
    owner_daily_attachment_bytes: int  # stored attachments per owner, per UTC day

    def __repr__(self) -> str:
        """Secrets stay out of logs and tracebacks."""
        hidden = {setting.attribute for setting in SETTINGS if setting.secret}
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        return "Settings(" + ", ".join(f"{k}={'…' if k in hidden and v else repr(v)}" for k, v in shown.items()) + ")"


# -- kinds: each turns the variable's text into a value, or raises ValueError saying what it must be ---

Parse = Callable[[str], object]


def number(minimum: float = 0, maximum: float | None = None, *, whole: bool = False, scale: float = 1) -> Parse:
    """A number (a whole one if `whole`) within bounds, times `scale` (0.001: milliseconds to seconds)."""

    def parse(raw: str) -> float | int:
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            raise ValueError("must be a whole number" if whole else "must be a number") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum:g}")
        return value if scale == 1 else value * scale

    return parse


def whole(minimum: int = 0, maximum: int | None = None) -> Parse:
    """A whole number within bounds (a count, a port, seconds gunicorn wants as an integer)."""
    return number(minimum, maximum, whole=True)


def text(raw: str) -> str:
    return raw


def flag(raw: str) -> bool:
    if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("must be true or false (or on/off)")
    return raw.lower() in ("1", "true", "yes", "on")


def choice(*options: str) -> Parse:
    """One of a few words, in any case; the value is the lower-case word."""

    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw.lower()

    return parse


def names(separator: str = ",") -> Parse:
    """A list; blank items are dropped."""
    return lambda raw: tuple(part.strip() for part in raw.split(separator) if part.strip())


def url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL like http://127.0.0.1:11434")
    return raw.rstrip("/")


def rate(raw: str) -> str:
    if not re.fullmatch(r"\d+\s*(/|per)\s*(second|minute|hour|day)s?", raw):
        raise ValueError("must look like 30/minute")
    return raw


def existing_file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError("must be an existing file")
    return os.path.abspath(raw)


def existing_folder(raw: str) -> str:
    path = os.path.abspath(raw)
    if not os.path.isdir(path):
        raise ValueError("must be an existing folder")
    return path


def prices(raw: str) -> tuple[tuple[str, float, float], ...]:
    """MODEL_PRICES="gpt-5.4-mini=0.25/2.00, llama3.2=0/0": USD per million tokens in/out."""
    found = []
    for item in names()(raw):
        try:
            model, pair = item.rsplit("=", 1)
            price_in, price_out = (float(part) for part in pair.split("/"))
        except ValueError:
            raise ValueError("entries must look like model=0.25/2.00 (USD per 1M tokens in/out)") from None
        found.append((model.strip(), price_in, price_out))
    return tuple(found)


# -- the table ----------------------------------------------------------------------------------------

megabytes = partial(number, whole=True, scale=1024 * 1024)  # a size in whole MB, as bytes
Default = str | Callable[[Mapping[str, str]], str] | None


@dataclass(frozen=True)
class Setting:
    """One environment variable: the Settings field it fills, how it is read, its default, what it is for."""

    name: str
    attribute: str | None  # None: read where it is used (gunicorn, the database pool) or derived below
    parse: Parse
    default: Default  # as one would write it in the environment (or computed from it); None: unset
    help: str
    secret: bool = False  # never echoed in an error or a repr
    keep_spaces: bool = False  # taken exactly as given (a password); else surrounding spaces are dropped


def _on_heroku(env: Mapping[str, str]) -> bool:
    return bool(read_setting(env, "DYNO"))


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # The model: which provider (provider_choice.py decides), which model
    Setting("CHAT_PROVIDER", "forced_provider", choice("openai", "openrouter", "ollama", "local", "demo"), None,
            "force a provider instead of the first one configured"),
    Setting("OPENAI_API_KEY", "openai_api_key", text, None, "an OpenAI (or OpenAI-compatible) key", secret=True),
    Setting("OPENAI_BASE_URL", "openai_base_url", url, None, "an OpenAI-compatible server, e.g. http://host:port/v1"),
    Setting("OPENROUTER_API_KEY", "openrouter_api_key", text, None, "use OpenRouter", secret=True),
    Setting("OLLAMA_HOST", "ollama_host", url, None, "use Ollama at this address (default http://127.0.0.1:11434)"),
    Setting("CHAT_MODEL", "chat_model", text, None, "the model of new answers; unset, the provider's default"),
    Setting("CHAT_MODELS", "chat_models", names(), "", "the models people can pick (else the provider's list)"),
    Setting("FALLBACK_MODELS", "fallback_models", names(), "", "models to try when the first keeps failing"),
    Setting("MODEL_TITLES", "model_titles", flag, "true", "a real provider names new conversations"),
    Setting("TITLE_MODEL", "title_model", text, None, "the model that names them, if not the chat's own"),
    Setting("TEMPERATURE", "temperature", number(0), "0.7", "sampling temperature sent upstream"),
    Setting("REASONING_EFFORT", "reasoning_effort", choice("low", "medium", "high", "off"), None,
            "a thinking model's effort where a conversation sets none; unset, the provider's own"),
    Setting("MAX_TOKENS", "max_tokens", whole(1), None, "max_tokens sent upstream"),
    Setting("LOCAL_MODEL_PATH", "local_model_path", existing_file, None, "a .gguf file for the local model"),
    # Half the cores: llama.cpp's threads wait for each other, so one that the event loop (or anything else)
    # preempts stalls them all (measured on 2 cores: 1 thread 64-84 tokens/s, 2 threads 6 tokens/s).
    Setting("LOCAL_THREADS", "local_threads", whole(1), lambda env: str(max(1, min((os.cpu_count() or 2) // 2, 4))),
            "CPU threads of the local model (default: half the cores, at most 4)"),
    Setting("LOCAL_PARALLEL", "local_parallel", whole(1), "2", "answers the local model writes at once per worker"),
    Setting("LOCAL_CONTEXT", "local_context", whole(256), "4096", "tokens of context per local answer"),
    Setting("LOCAL_MAX_TOKENS", "local_max_tokens", whole(1), None, "longest local answer (else MAX_TOKENS, else 512)"),
    Setting("DEMO_DELAY_MS", "demo_delay", number(0, scale=0.001), "25", "the demo model's pace"),
    # Storage
    Setting("DATABASE_URL", "database_url", text, None, "PostgreSQL (or SQLite) URL; unset, SQLite in instance/",
            secret=True),
    Setting("DB_POOL_SIZE", None, whole(1), "5", "PostgreSQL connections kept open per worker"),
    Setting("DB_MAX_OVERFLOW", None, whole(0), "10", "more connections opened under load"),
    Setting("DB_POOL_TIMEOUT", None, whole(1), "10", "seconds a request waits for a connection"),
    Setting("DB_CONNECT_TIMEOUT", None, whole(1), "5", "seconds before connecting gives up"),
    Setting("REDIS_URL", "redis_url", text, None, "live answers, Stop and rate limits across instances", secret=True),
    Setting("REDIS_KEY_PREFIX", "redis_key_prefix", text, None, "Redis key scope; unset, from the database URL"),
    # Streaming
    Setting("STREAM_FLUSH_MS", "flush_interval", number(0, scale=0.001), "30", "ms between two writes"),
    Setting("STREAM_FLUSH_CHARS", "flush_chars", whole(1), "2048", "write sooner once this many characters wait"),
    Setting("SSE_PING_S", "ping_interval", number(0.05), "15", "keep-alive comment interval"),
    Setting("SAVE_INTERVAL_S", "save_interval", number(0.05), "1", "how often live answers are saved"),
    Setting("DISCONNECT_GRACE_S", "disconnect_grace", number(0), "30", "how long an unwatched answer goes on"),
    Setting("ATTACH_TIMEOUT_S", "attach_timeout", number(0), "15", "how long a new answer waits for a listener"),
    Setting("CONNECT_TIMEOUT_S", "connect_timeout", number(0.1), "10", "upstream connect deadline"),
    Setting("FIRST_TOKEN_TIMEOUT_S", "first_token_timeout", number(0.1), "120", "upstream first-token deadline"),
    Setting("STREAM_IDLE_S", "idle_timeout", number(0.1), "60", "upstream silence deadline"),
    Setting("STREAM_MAX_S", "stream_max", number(0.1), "600", "longest answer"),
    Setting("UPSTREAM_RETRIES", "retry_attempts", whole(0), "2", "retries of 429/5xx before the first token"),
    Setting("UPSTREAM_RETRY_MAX_S", "retry_max_wait", number(0), "20", "longest wait between two retries"),
    # Limits
    Setting("MAX_INPUT_CHARS", "max_input_chars", whole(1), "20000", "longest message"),
    Setting("MAX_CONTENT_LENGTH", "max_content_length", whole(1024), "1048576", "bytes of one request body"),
    Setting("MAX_MESSAGES_PER_CONVERSATION", "max_messages_per_conversation", whole(2), "500",
            "messages in one conversation"),
    Setting("MAX_CONCURRENT_PER_OWNER", "max_concurrent_per_owner", whole(1), "3", "answers streaming at once"),
    Setting("LOGIN_RATE_LIMIT", "login_rate_limit", rate, "5/minute", "login attempts"),
    Setting("RATE_LIMIT_PER_OWNER", "rate_limit_owner", rate, "30/minute", "answers started per owner"),
    Setting("RATE_LIMIT_PER_IP", "rate_limit_ip", rate, "120/minute", "answers started per client address"),
    Setting("RATE_LIMIT_WS_MESSAGES", "rate_limit_ws_messages", rate, "120/minute", "messages a /ws client sends"),
    Setting("MAX_REQUEST_MESSAGES", "max_request_messages", whole(1), "200", "messages in one JSON chat request"),
    Setting("MAX_STREAMS_PER_OWNER", "max_streams_per_owner", whole(1), "20", "open streams per owner, per worker"),
    Setting("MAX_STREAMS_PER_IP", "max_streams_per_ip", whole(1), "100", "open streams per address, per worker"),
    Setting("ATTACHMENT_MAX_MB", "attachment_max_bytes", megabytes(1), "10", "one attached file, in MB"),
    Setting("MESSAGE_ATTACHMENTS_MAX_MB", "message_attachments_max_bytes", megabytes(1), "20", "files of a message"),
    Setting("MAX_ATTACHMENTS", "max_attachments", whole(0), "8", "files one message may attach (0: none)"),
    Setting("OWNER_DAILY_ATTACHMENT_MB", "owner_daily_attachment_bytes", megabytes(0), "200", "MB per owner per day"),
    Setting("DAILY_TOKEN_BUDGET", "daily_token_budget", whole(1), None, "tokens per UTC day, whole instance"),
    Setting("OWNER_DAILY_TOKEN_BUDGET", "owner_daily_token_budget", whole(1), None, "tokens per UTC day, per owner"),
    Setting("MODEL_PRICES", "model_prices", prices, "", "model=in/out USD per million tokens, comma-separated"),
    # Security
    Setting("SECRET_KEY", "secret_key", text, None, "signs cookies; required in production", secret=True),
    Setting("APP_ENV", None, choice("production", "development"),
            lambda env: "production" if _on_heroku(env) else "development", "production requires SECRET_KEY"),
    Setting("DYNO", None, text, None, "set by Heroku on each dyno: production and TRUST_PROXY by default"),
    Setting("TRUST_PROXY", "trust_proxy", flag, lambda env: "true" if _on_heroku(env) else "false",
            "take scheme and client address from X-Forwarded-*"),
    Setting("APP_PASSWORD", "app_password", text, None, "a login page in front of everything", secret=True,
            keep_spaces=True),
    Setting("API_TOKENS", "api_tokens", names(), "", "bearer tokens for /api/* and /ws", secret=True),
    Setting("METRICS_TOKEN", "metrics_token", text, None, "bearer token for /metrics", secret=True),
    # Sharing and history (trickle/sharing.py, trickle/history.py)
    Setting("SHARING", "sharing", flag, "on", "owners may share a read-only snapshot of a conversation by link"),
    Setting("SHARED_LINKS_PUBLIC", "shared_links_public", flag, "true", "a shared link needs no APP_PASSWORD login"),
    Setting("IMPORT_MAX_MB", "import_max_bytes", megabytes(1), "25", "the largest history file to import, in MB"),
    # Words and look (docs/customizing.md)
    Setting("APP_NAME", "app_name", text, "Trickle", "the name in the sidebar and the page title"),
    Setting("APP_LOGO", "app_logo", text, None, "an image URL or /static/… path shown before the name"),
    Setting("WELCOME_MESSAGE", "welcome_message", text, "What can I help with?", "the heading of a new chat"),
    Setting("SUGGESTED_PROMPTS", "suggested_prompts", names("|"), "", "prompts on a new chat, separated by |"),
    Setting("SYSTEM_PROMPT", "system_prompt", text, None, "the system prompt of new conversations"),
    Setting("TEMPLATES_DIR", "templates_dir", existing_folder, None, "templates that win over the built-in ones"),
    Setting("STATIC_DIR", "static_dir", existing_folder, None, "static files that win over the built-in ones"),
    # The server (gunicorn.conf.py)
    Setting("PORT", None, whole(1, 65535), "8000", "the port gunicorn listens on"),
    Setting("WEB_CONCURRENCY", None, whole(1), "1", "gunicorn worker processes"),
    Setting("WORKER_CONNECTIONS", None, whole(1), "1000", "connections per gevent worker"),
    Setting("GRACEFUL_TIMEOUT", None, whole(0), "25", "seconds to finish answers after SIGTERM"),
    Setting("ACCESS_LOG", None, text, None, "gunicorn's access log file (- for stdout); unset, none"),
    Setting("LOG_LEVEL", "log_level", choice("debug", "info", "warning", "error", "critical"), "info",
            "how much the app and gunicorn log"),
)
# fmt: on

BY_NAME = {setting.name: setting for setting in SETTINGS}


def read_setting(env: Mapping[str, str], name: str):
    """The value of one declared setting: the variable, else its default, parsed and checked.

    Blank is unset. The error names the variable, says what it is for, and shows the value unless it is
    secret."""
    setting = BY_NAME[name]
    raw = env.get(name, "")
    raw = raw if setting.keep_spaces else raw.strip()
    if not raw:
        raw = setting.default(env) if callable(setting.default) else setting.default
    if raw is None:
        return None
    try:
        return setting.parse(raw)
    except ValueError as reason:
        shown = "a value not shown here (it is secret)" if setting.secret else repr(raw)
        raise SettingsError(f"{name} {reason}, got {shown} ({setting.help})") from None


def _check_provider(values: Mapping[str, object]) -> None:
    """The provider variables agree with each other (which provider answers is provider_choice's call)."""
    forced = values["CHAT_PROVIDER"]
    if forced == "openai" and not values["OPENAI_API_KEY"] and not values["OPENAI_BASE_URL"]:
        raise SettingsError("OPENAI_API_KEY is required to use OpenAI (or set OPENAI_BASE_URL)")
    if forced == "openrouter" and not values["OPENROUTER_API_KEY"]:
        raise SettingsError("OPENROUTER_API_KEY is required when CHAT_PROVIDER=openrouter")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every declared setting; raise SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    values = {setting.name: read_setting(env, setting.name) for setting in SETTINGS}
    _check_provider(values)
    production = values["APP_ENV"] == "production"
    if production and not values["SECRET_KEY"]:
        raise SettingsError(
            "SECRET_KEY must be set in production (APP_ENV=production): it signs the cookies "
            "that keep each person's conversations private. Generate one with "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return Settings(
        production=production,
        **{setting.attribute: values[setting.name] for setting in SETTINGS if setting.attribute},
    )
