"""What an answer costs: MODEL_PRICES (USD per million tokens in and out) applied to its usage.

Plain arithmetic on the settings, with no Flask in it, so the engine can price answers as they end."""

from __future__ import annotations

from .settings import Settings


def price_of(settings: Settings, model: str) -> tuple[float, float] | None:
    """USD per million input and output tokens of `model`, or None when MODEL_PRICES names no price."""
    for name, price_in, price_out in settings.model_prices:
        if name == model:
            return price_in, price_out
    return None


def cost_of(settings: Settings, model: str, tokens_in: int, tokens_out: int) -> float:
    """Estimated USD of one answer (0 for a model without a price)."""
    price = price_of(settings, model)
    if price is None:
        return 0.0
    return (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000
