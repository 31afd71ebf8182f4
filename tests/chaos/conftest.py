"""Fixtures of the chaos suite: the systems and the shared services in processes, the shared behind a proxy.

``chaos_stack`` (one per module, on the module's own engine, ``podium_private_engine``) serves
``tests.chaos.apps:systems`` (banking, travel, shop, the deadline checkout) in one process, registered
directly, and ``services.common.app:app`` (payments, mail, fraud) in another, registered through a
:class:`~tests.chaos.proxy.FaultyProxy`: what the test does to the proxy happens to every call between
a saga and its shared participants. Both processes keep their simulated providers in a folder of the
module's own (``PODIUM_DATA_DIR``), so the providers' counters hold this module's effects only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from podium.runtime import DeploymentProcess, Engine
from tests.chaos.gather import Stack
from tests.chaos.proxy import FaultyProxy


@dataclass(frozen=True)
class ChaosStack:
    """The engine, the two deployments, the proxy in front of ``common``, and where to read facts."""

    engine: Engine
    proxy: FaultyProxy
    common: DeploymentProcess
    systems: DeploymentProcess
    facts: Stack
    client: httpx.Client
    """On the ingress: what the load goes through."""


@pytest.fixture(scope="module")
def chaos_stack(
    podium_private_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosStack]:
    data = tmp_path_factory.mktemp("chaos-data")
    env = {"PODIUM_DATA_DIR": str(data)}
    common = DeploymentProcess("services.common.app:app", log_file=data / "logs" / "common.log", env=env)
    systems = DeploymentProcess("tests.chaos.apps:systems", log_file=data / "logs" / "systems.log", env=env)
    common.start()
    systems.start()
    try:
        with (
            FaultyProxy(common.url) as proxy,
            httpx.Client(base_url=podium_private_engine.ingress_url, timeout=30) as client,
            Stack(
                podium_private_engine.ingress_url, podium_private_engine.admin_url, data / "providers"
            ) as stack,
        ):
            podium_private_engine.register(proxy.url)
            podium_private_engine.register(systems.url)
            yield ChaosStack(podium_private_engine, proxy, common, systems, stack, client)
    finally:
        systems.stop()
        common.stop()
