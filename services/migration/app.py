"""The migration deployment: the migration saga and the two databases it moves between."""

import podium
from services.migration.saga import SERVICES

app = podium.app(services=SERVICES)
