"""The delivery deployment: restaurants, drivers and the delivery orchestrator (payments: ``common``)."""

import podium
from services.delivery.drivers import drivers, tracker
from services.delivery.orchestrator import deliveries
from services.delivery.restaurant import restaurants

SERVICES = [deliveries, restaurants, drivers, tracker]

app = podium.app(services=SERVICES)
