"""The lab app on the session engine and on an engine that forces replays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.testing import ALWAYS_REPLAY, Deployer, PodiumEnv, running_engine
from tests.integration.lab import app


@pytest.fixture
def podium_app() -> Any:
    return app


@pytest.fixture(scope="session")
def replay_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodiumEnv]:
    """The lab on an engine that suspends at every await, so every step is replayed from the journal."""
    data: Path = tmp_path_factory.mktemp("replay-engine")
    with (
        running_engine(data, env=ALWAYS_REPLAY) as engine,
        httpx.Client(base_url=engine.ingress_url, timeout=60) as client,
    ):
        deployer = Deployer(engine.admin_url)
        try:
            url = deployer.deploy(app)
            yield PodiumEnv(engine.ingress_url, engine.admin_url, url, client)
        finally:
            deployer.close()


@pytest.fixture(params=["normal", "always-replay"])
def lab(request: pytest.FixtureRequest, podium_env: PodiumEnv) -> PodiumEnv:
    """The lab app, once on the session engine and once with forced replays."""
    if request.param == "normal":
        return podium_env
    replay: PodiumEnv = request.getfixturevalue("replay_env")
    return replay
