"""The pipeline app, importable by a deployment process for crash tests."""

import restate

from services.pipeline.app import SERVICES

app = restate.app(services=SERVICES)
