"""Settings per environment, chosen by ``APP_ENV`` (development when unset)."""

from __future__ import annotations

import os
from dataclasses import dataclass

SETTINGS: dict[str, dict[str, object]] = {
    "development": {"currency": "EUR", "tax_percent": 20, "max_discount": 100},
    "staging": {"currency": "EUR", "tax_percent": 20, "max_discount": 50},
    "production": {"currency": "EUR", "tax_percent": 20, "max_discount": 50},
}


@dataclass(frozen=True)
class Settings:
    """The settings of one environment."""

    env: str
    currency: str
    tax_percent: int
    max_discount: int


def load(env: str | None = None) -> Settings:
    """The settings of ``env`` (default: ``APP_ENV``); raises ValueError when they are not valid."""
    name = env or os.environ.get("APP_ENV", "development")
    if name not in SETTINGS:
        raise ValueError(f"unknown environment {name!r}")
    raw = SETTINGS[name]
    currency, tax, discount = raw["currency"], raw["tax_percent"], raw["max_discount"]
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isupper()):
        raise ValueError(f"{name}: currency must be an ISO 4217 code, got {currency!r}")
    if not (isinstance(tax, int) and 0 <= tax <= 100):
        raise ValueError(f"{name}: tax_percent must be 0..100, got {tax!r}")
    if not (isinstance(discount, int) and 0 <= discount <= 100):
        raise ValueError(f"{name}: max_discount must be 0..100, got {discount!r}")
    return Settings(env=name, currency=currency, tax_percent=tax, max_discount=discount)
