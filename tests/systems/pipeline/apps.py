"""The pipeline app, importable by a deployment process for crash tests."""

import podium
from services.pipeline.app import SERVICES

app = podium.app(services=SERVICES)
