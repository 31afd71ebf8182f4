"""The migration app, importable by a deployment process for crash tests."""

import restate

from services.migration.saga import SERVICES

app = restate.app(services=SERVICES)
