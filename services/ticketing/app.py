"""The ticketing deployment: the ticketing system's own services (payments and email are in ``common``)."""

import podium
from services.ticketing.orchestrator import bookings
from services.ticketing.seats import seat_maps
from services.ticketing.tickets import tickets

SERVICES = [bookings, seat_maps, tickets]

app = podium.app(services=SERVICES)
