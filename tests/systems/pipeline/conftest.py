from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from podium.testing import PodiumEnv, assert_eventually, new_key
from services.pipeline import environments, settings
from services.pipeline.settings import PipelineSettings


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: pytest loads this conftest before the harness has made the engine's
    # request-identity key, and an app built without it refuses every request.
    from tests.systems.pipeline.apps import app

    return app


def configure(monkeypatch: pytest.MonkeyPatch, **deadlines: timedelta) -> None:
    """Run the in-process deployment with these deadlines (the rest stay the defaults) for one test."""
    monkeypatch.setattr(settings, "SETTINGS", PipelineSettings(**deadlines))


def fresh_app() -> str:
    """A fresh application name: its own environments, image repository and DNS name."""
    return new_key("app").lower()


def data_dir() -> Path:
    return Path(os.environ["PODIUM_DATA_DIR"]).resolve() / "pipeline"


def status_or_none(env: PodiumEnv, service: str, key: str) -> dict[str, Any] | None:
    response = env.post(f"/{service}/{key}/GetStatus")
    return response.json() if response.status_code == 200 else None


def wait_for_phase(env: PodiumEnv, service: str, key: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> Any:
        status = status_or_none(env, service, key)
        return status if status is not None and status["phase"] == phase else None

    found: dict[str, Any] = assert_eventually(check, timeout=timeout, message=f"{service}/{key} in {phase}")
    return found


def result_of(env: PodiumEnv, service: str, key: str, timeout: float = 60) -> dict[str, Any]:
    """The result of a run started with /send, once it has one."""

    def check() -> Any:
        status = status_or_none(env, service, key)
        return status["result"] if status is not None else None

    found: dict[str, Any] = assert_eventually(
        check, timeout=timeout, message=f"the result of {service}/{key}"
    )
    return found


def pointer(app: str, env: str) -> str | None:
    """Where ``current`` points on disk (``releases/<version>``), None when there is no pointer."""
    link = environments.env_dir(app, env) / "current"
    return os.readlink(link) if link.is_symlink() else None


def switches(app: str, env: str) -> list[tuple[str, str | None, str | None]]:
    """Every pointer switch of an environment: (action, from, to)."""
    return [(h["action"], h["from"], h["to"]) for h in environments.history(app, env)]
