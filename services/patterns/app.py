"""The patterns deployment: seed 002's catalog as runnable handlers, with their simulated backends."""

import podium
from services.patterns.catalog import SERVICES as CATALOG
from services.patterns.sources import SERVICES as SOURCES

SERVICES = [*CATALOG, *SOURCES]

app = podium.app(services=SERVICES)
