"""Prices: each model, or its dated snapshot, priced by its own family."""

from __future__ import annotations

import pytest

from instructgen.client.pricing import Price, cost_usd, price_for


@pytest.mark.parametrize(
    ("model", "input_usd", "output_usd"),
    [
        ("gpt-4", 30.0, 60.0),
        ("gpt-4-0613", 30.0, 60.0),
        ("gpt-4-32k", 60.0, 120.0),
        ("gpt-4-32k-0613", 60.0, 120.0),
        ("gpt-4-1106-preview", 10.0, 30.0),
        ("gpt-4-0125-preview", 10.0, 30.0),
        ("gpt-4-turbo-preview", 10.0, 30.0),
        ("gpt-4-vision-preview", 10.0, 30.0),
        ("gpt-4-turbo-2024-04-09", 10.0, 30.0),
        ("gpt-4o-2024-11-20", 2.5, 10.0),
    ],
)
def test_gpt4_snapshots_are_priced_by_their_own_family(model, input_usd, output_usd):
    price = price_for(model)
    assert (price.input, price.output) == (input_usd, output_usd)


def test_an_unknown_model_has_no_price_rather_than_a_guess():
    assert price_for("llava-13b") is None
    assert cost_usd("llava-13b", 1000, 1000) is None


def test_the_batch_api_bills_half_the_standard_price():
    assert price_for("gpt-4o") == Price(2.50, 1.25, 10.00)
    assert cost_usd("gpt-4o", 1_000_000, 0, batch=True) == pytest.approx(1.25)
