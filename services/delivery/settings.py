"""The delivery deployment's settings: business deadlines, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_DELIVERY_<NAME>`` when the deployment starts, as a number of seconds, an
ISO 8601 duration (``PT60S``, ``PT1H``) or ``HH:MM:SS``. An order records the deadlines it was placed
under, so changing a setting applies to new orders, never to one already under way.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class DeliverySettings(BaseSettings):
    """Deadlines of the delivery system; environment variables PODIUM_DELIVERY_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_DELIVERY_", frozen=True)

    driver_answer: Deadline = timedelta(seconds=60)
    """How long a driver has to accept an offer before it goes to the next driver."""
    ready_timeout: Deadline = timedelta(hours=1)
    """How long the kitchen has to say the food is ready."""
    delivery_timeout: Deadline = timedelta(hours=2)
    """How long the driver has to pick the food up, and then again to deliver it."""


SETTINGS = DeliverySettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
