"""The travel deployment: the travel-booking system's own services (payments and email are in ``common``)."""

import podium
from services.travel.orchestrator import trips
from services.travel.reservations import flights, hotels

SERVICES = [
    trips,
    flights.service,
    flights.inventory.service,
    hotels.service,
    hotels.inventory.service,
]

app = podium.app(services=SERVICES)
