"""Prices per model, in US dollars per 1M tokens, and the cost of a request's usage.

Standard list prices as published by OpenAI (2025); the Batch API charges half of both.
Unknown models have no price: costs are then reported as unknown, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH_DISCOUNT = 0.5  # the Batch API bills 50% of the standard price


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens: prompt (input), cached prompt, completion (output)."""

    input: float
    cached_input: float
    output: float


PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-2024-08-06": Price(2.50, 1.25, 10.00),
    "gpt-4o-2024-05-13": Price(5.00, 5.00, 15.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4-turbo": Price(10.00, 10.00, 30.00),
    # GPT-4 Turbo's preview snapshots: named gpt-4-*, priced as gpt-4-turbo, not as gpt-4
    "gpt-4-turbo-preview": Price(10.00, 10.00, 30.00),
    "gpt-4-1106-preview": Price(10.00, 10.00, 30.00),
    "gpt-4-0125-preview": Price(10.00, 10.00, 30.00),
    "gpt-4-vision-preview": Price(10.00, 10.00, 30.00),
    "gpt-4-1106-vision-preview": Price(10.00, 10.00, 30.00),
    "gpt-4-32k": Price(60.00, 60.00, 120.00),
    "gpt-4": Price(30.00, 30.00, 60.00),
    "gpt-4-0314": Price(30.00, 30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 0.50, 1.50),
}


def price_for(model: str) -> Price | None:
    """The price of `model`, matching dated snapshots to their family; None if unknown."""
    if model in PRICES:
        return PRICES[model]
    family = max((name for name in PRICES if model.startswith(name + "-")), key=len, default=None)
    return PRICES[family] if family else None


def cost_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    batch: bool = False,
) -> float | None:
    """Dollar cost of one usage record; None when the model has no known price."""
    price = price_for(model)
    if price is None:
        return None
    uncached = max(prompt_tokens - cached_tokens, 0)
    dollars = (
        uncached * price.input
        + cached_tokens * price.cached_input
        + completion_tokens * price.output
    ) / 1e6
    return dollars * (BATCH_DISCOUNT if batch else 1.0)
