"""The insurance deployment's settings: business deadlines, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_INSURANCE_<NAME>`` when the deployment starts, as a number of seconds, an
ISO 8601 duration (``P30D``, ``PT5S``) or ``HH:MM:SS``. A claim records the deadlines it was filed
under, so changing a setting applies to new claims, never to one already waiting.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class InsuranceSettings(BaseSettings):
    """Deadlines of the insurance system; environment variables PODIUM_INSURANCE_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_INSURANCE_", frozen=True)

    approval_deadline: Deadline = timedelta(days=30)
    """How long an adjuster has to decide a claim (the seed's 30 days)."""
    records_deadline: Deadline = timedelta(days=14)
    """How long the medical-records provider has to answer before the request is withdrawn."""


SETTINGS = InsuranceSettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
