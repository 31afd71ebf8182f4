"""The pipeline deployment's settings: business deadlines, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_PIPELINE_<NAME>`` when the deployment starts, as a number of seconds, an
ISO 8601 duration (``PT24H``, ``PT10M``) or ``HH:MM:SS``. A pipeline records the deadline when it asks
for the approval, so changing the setting never moves the deadline of a pipeline already waiting.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class PipelineSettings(BaseSettings):
    """Deadlines of the pipeline system; environment variables PODIUM_PIPELINE_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_PIPELINE_", frozen=True)

    approval_timeout: Deadline = timedelta(hours=24)
    """How long a pipeline waits for the production approval before it stops (production untouched)."""


SETTINGS = PipelineSettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
