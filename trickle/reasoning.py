"""A thinking model's reasoning effort, in the request field each provider knows.

OpenAI (and OpenAI-compatible servers: vLLM, llama.cpp, LM Studio) take `reasoning_effort`;
OpenRouter `reasoning: {effort}`; Ollama's `/v1` `reasoning_effort`, where "none" turns thinking
off (its `think: false`). An effort a provider does not know is not sent, nor any effort to the
local and demo models.
"""

from __future__ import annotations

from .providers import Provider

EFFORTS = ("low", "medium", "high", "off")


def effort_fields(provider: Provider, effort: str | None) -> dict:
    """The request body fields that ask `provider` for `effort` (none when it would not know them)."""
    name = provider.effort_dialect
    if not effort or name is None:
        return {}
    if name == "ollama":
        return {"reasoning_effort": "none" if effort == "off" else effort}
    if effort == "off":  # only Ollama can be told not to think
        return {}
    if name == "openrouter":
        return {"reasoning": {"effort": effort}}
    return {"reasoning_effort": effort}
