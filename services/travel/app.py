"""The travel deployment: every service of the travel-booking system, as one ASGI app."""

import restate

from services.common.notifications import notifications
from services.common.payments import payments
from services.travel.orchestrator import trips
from services.travel.reservations import flights, hotels

SERVICES = [
    trips,
    flights.service,
    flights.inventory.service,
    hotels.service,
    hotels.inventory.service,
    payments,
    notifications,
]

app = restate.app(services=SERVICES)
