"""The shop deployment's settings: business deadlines, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_SHOP_<NAME>`` when the deployment starts, as a number of seconds, an ISO
8601 duration (``PT60S``) or ``HH:MM:SS``. An order runs under the deadline its checkout started with.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class ShopSettings(BaseSettings):
    """Deadlines of the shop; environment variables PODIUM_SHOP_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_SHOP_", frozen=True)

    checkout_deadline: Deadline = timedelta(seconds=60)
    """How long the checkout may take from placing to shipping label; past it, the order compensates
    and is cancelled with the reason (a payment provider that stops answering, a carrier that hangs)."""


SETTINGS = ShopSettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
