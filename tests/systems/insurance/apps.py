"""The insurance app with the shared services it calls, importable by a deployment process."""

from typing import Any

import podium
from services.common.app import SERVICES as COMMON
from services.insurance.app import SERVICES

services: list[Any] = [*SERVICES, *COMMON]
app = podium.app(services=services)
