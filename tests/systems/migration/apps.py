"""The migration app, importable by a deployment process for crash tests."""

import podium
from services.migration.saga import SERVICES

app = podium.app(services=SERVICES)
