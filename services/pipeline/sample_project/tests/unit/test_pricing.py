"""Unit tests: pure functions, run against the source tree (``PYTHONPATH=src``)."""

import pytest
from sample_app import config, pricing


def test_subtotal_sums_the_lines() -> None:
    assert pricing.subtotal([(250, 2), (100, 3)]) == 800


def test_subtotal_refuses_negative_prices() -> None:
    with pytest.raises(ValueError, match="negative"):
        pricing.subtotal([(-1, 1)])


def test_percent_rounds_half_up() -> None:
    assert pricing.percent_of(250, 10) == 25
    assert pricing.percent_of(5, 10) == 1


def test_discount_is_applied_and_capped() -> None:
    assert pricing.apply_discount(1000, 10) == 900
    assert pricing.apply_discount(1000, 80, limit=50) == 500


def test_development_settings_are_valid() -> None:
    # Staging and production settings are checked where they are used: by the deployment's health
    # check (python -m sample_app.health) in that environment.
    assert config.load("development").currency == "EUR"
