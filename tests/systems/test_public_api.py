"""Every system's public API is exactly what its README lists; every other handler is closed to clients.

Each deployment of ``[tool.podium] deployments`` has a README whose ``## Public API`` table names its
public handlers and the scope a token needs for each. The engine's admin API says which handlers are
public: the two must agree, so a new handler stays private until someone decides otherwise and writes
it down. A private handler called through the ingress, or through the gateway with a token that holds
every scope, is refused before any invocation starts. Edge routes (``[tool.podium] edge``, served by the
gateway itself) count as public handlers of the system whose service they are named after.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.testing import Deployer, GatewayEnv, PodiumEnv, new_key
from tests.systems.deployments import System, edge_api, systems

_ROW = re.compile(
    r"^\|\s*`POST /(?P<service>\w+)(?:/\{[^}/]+\})?/(?P<handler>\w+)`\s*\|\s*`(?P<scope>[\w-]+:\w+)`"
)


def readme_api(readme: Path) -> set[tuple[str, str, str]]:
    """``(service, handler, scope)`` for each row of the README's ``## Public API`` table."""
    text = readme.read_text()
    heading = text.find("\n## Public API")
    assert heading >= 0, f"{readme} has no '## Public API' section"
    end = text.find("\n## ", heading + 1)
    section = text[heading : end if end >= 0 else len(text)]
    rows = set()
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            rows.add((match["service"], match["handler"], match["scope"]))
    return rows


def engine_api(admin_url: str, services: list[Any]) -> tuple[set[tuple[str, str, str]], list[str]]:
    """What the engine has registered: public handlers with their scopes, and private handlers' paths."""
    public: set[tuple[str, str, str]] = set()
    private: list[str] = []
    for service in services:
        answer = httpx.get(f"{admin_url}/services/{service.name}", timeout=10)
        assert answer.status_code == 200, answer.text
        described = answer.json()
        system = (described.get("metadata") or {}).get("podium.system")
        for handler in described["handlers"]:
            if handler.get("public", True) and described.get("public", True):
                access = (handler.get("metadata") or {}).get("podium.access")
                public.add((service.name, handler["name"], f"{system}:{access}"))
            else:
                keyed = described["ty"] != "Service"
                private.append(
                    f"/{service.name}/{{key}}/{handler['name']}"
                    if keyed
                    else f"/{service.name}/{handler['name']}"
                )
    return public, private


@pytest.fixture(params=systems(), ids=lambda s: s.name)
def system(request: pytest.FixtureRequest) -> System:
    found: System = request.param
    return found


@pytest.fixture
def deployed(
    system: System, podium_engine: Any, podium_deployer: Deployer, podium_client: httpx.Client
) -> PodiumEnv:
    """The system's own deployment (what ``podium up`` serves), registered with the session engine."""
    url = podium_deployer.deploy(system.app_object())
    return PodiumEnv(podium_engine.ingress_url, podium_engine.admin_url, url, podium_client)


def test_public_handlers_are_the_readme_list(system: System, deployed: PodiumEnv) -> None:
    public, _ = engine_api(deployed.admin_url, system.services())
    assert public | edge_api(system.services()) == readme_api(system.readme)


def test_private_handlers_are_refused_at_the_ingress(system: System, deployed: PodiumEnv) -> None:
    _, private = engine_api(deployed.admin_url, system.services())
    key = new_key("closed")
    for path in private:
        # A connection of its own each: the ingress may close one after refusing a body it did not read.
        response = httpx.post(f"{deployed.ingress_url}{path.replace('{key}', key)}", json={}, timeout=30)
        assert response.status_code == 400, (path, response.text)
        assert "not public" in response.json()["message"], path
    started = deployed.query(f"SELECT target FROM sys_invocation WHERE target LIKE '%{key}%'")
    assert started == [], f"refused calls started invocations: {started}"


def test_private_handlers_are_refused_at_the_gateway_whatever_the_token(
    system: System, deployed: PodiumEnv, podium_gateway: GatewayEnv
) -> None:
    _, private = engine_api(deployed.admin_url, system.services())
    key = new_key("closed")
    token = podium_gateway.token("*:*", subject="holds-every-scope")
    for path in private:
        response = podium_gateway.post(path.replace("{key}", key), {}, token=token)
        assert response.status_code == 404, (path, response.text)
        assert "no public handler" in response.json()["message"], path
    started = deployed.query(f"SELECT target FROM sys_invocation WHERE target LIKE '%{key}%'")
    assert started == [], f"refused calls started invocations: {started}"
