"""The patterns deployment's settings: business deadlines, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_PATTERNS_<NAME>`` when the deployment starts, as a number of seconds, an
ISO 8601 duration (``PT24H``, ``PT5S``) or ``HH:MM:SS``. An approval request records the deadline it was
made under, so changing a setting applies to new requests, never to one already waiting. The waits of
the other demos (the racing demo's ``timeoutMs``, the status demo's ``stageMs``) are not here: they are
parameters of the pattern being shown, bounded to a minute, and stay in the request.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class PatternsSettings(BaseSettings):
    """Deadlines of the patterns system; environment variables PODIUM_PATTERNS_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_PATTERNS_", frozen=True)

    approval_deadline: Deadline = timedelta(hours=24)
    """How long a person has to approve or reject a request before it escalates (the seed's 24 h)."""


SETTINGS = PatternsSettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
