"""The ticketing deployment's settings: business deadlines, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_TICKETING_<NAME>`` when the deployment starts, as a number of seconds
(``900``), an ISO 8601 duration (``PT15M``) or ``HH:MM:SS``. A booking records the hold it was made
under, so changing a setting applies to new bookings, never to one already waiting for payment.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class TicketingSettings(BaseSettings):
    """Deadlines of the ticketing system; environment variables PODIUM_TICKETING_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_TICKETING_", frozen=True)

    hold: Deadline = timedelta(minutes=15)
    """How long a booking's seats are held for the customer to pay (the seed's 15 minutes)."""


SETTINGS = TicketingSettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
