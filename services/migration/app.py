"""The migration deployment: the migration saga and the two databases it moves between."""

import restate

from services.migration.saga import SERVICES

app = restate.app(services=SERVICES)
