"""The deployments ``podium up`` serves (``[tool.podium]`` of pyproject.toml), as tests see them."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import podium
from podium.gateway import load_edge_routes

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class System:
    """One system: the deployments of one app module (the shop has several), and its README."""

    name: str
    module: str
    """The module whose ``SERVICES`` are the system's services (``services.shop.app``)."""

    @property
    def readme(self) -> Path:
        return ROOT / "services" / self.name / "README.md"

    def services(self) -> list[Any]:
        return list(importlib.import_module(self.module).SERVICES)

    def app_object(self) -> Any:
        """Every service of the system in one app (its deployments together)."""
        return podium.app(services=self.services())


def podium_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["podium"]
    return config


def systems() -> list[System]:
    """One per app module of ``[tool.podium] deployments``, named by its folder under ``services/``."""
    found: dict[str, System] = {}
    for deployment in podium_config()["deployments"]:
        module = deployment["app"].partition(":")[0]
        found.setdefault(module, System(module.split(".")[1], module))
    return list(found.values())


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
