"""The deployments ``podium up`` serves (``[tool.podium]`` of pyproject.toml), as tests see them."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.gateway import load_edge_routes

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class System:
    name: str
    app: str

    @property
    def readme(self) -> Path:
        return ROOT / "services" / self.name / "README.md"

    def services(self) -> list[Any]:
        module = importlib.import_module(self.app.partition(":")[0])
        return list(module.SERVICES)

    def app_object(self) -> Any:
        module_name, _, attribute = self.app.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


def podium_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["podium"]
    return config


def systems() -> list[System]:
    return [System(d["name"], d["app"]) for d in podium_config()["deployments"]]


def edge_api(services: list[Any]) -> set[tuple[str, str, str]]:
    """The edge routes (served by the gateway itself) that belong to ``services``."""
    names = {service.name for service in services}
    found = set()
    for spec in podium_config().get("edge", []):
        for route in load_edge_routes(spec):
            service, _, handler = route.path.strip("/").partition("/")
            if service in names:
                found.add((service, handler, route.scope))
    return found
