"""What can be booked: airports, hotels, capacities, prices, and the test data that makes things fail.

| test data | what happens |
|---|---|
| a flight from or to ``XSO`` | sold out on every date (0 seats) |
| hotel city ``Sold Out City`` | sold out every night (0 rooms) |
| hotel city ``Atlantis`` | rooms are held, but the hotel refuses to confirm them |
| ``customerId`` starting ``declined-`` | the card is declined |
| ``customerId`` starting ``slow-`` | the card gateway takes 3 s per charge (for crash tests) |
| ``customerEmail`` at ``bounce.example.com`` | the confirmation email bounces |
"""

from __future__ import annotations

from dataclasses import dataclass

from podium import TerminalError

SEATS_PER_FLIGHT = 100
"""Seats on every flight between two catalogue airports on any date (0 for ``XSO``)."""
SOLD_OUT_AIRPORT = "XSO"
SOLD_OUT_CITY = "Sold Out City"
UNCONFIRMABLE_CITY = "Atlantis"

AIRPORTS: dict[str, tuple[str, str]] = {
    # code: (city, country)
    "SFO": ("San Francisco", "US"),
    "JFK": ("New York", "US"),
    "LAX": ("Los Angeles", "US"),
    "SEA": ("Seattle", "US"),
    "ORD": ("Chicago", "US"),
    "BOS": ("Boston", "US"),
    "MIA": ("Miami", "US"),
    "LHR": ("London", "GB"),
    "CDG": ("Paris", "FR"),
    "NRT": ("Tokyo", "JP"),
    SOLD_OUT_AIRPORT: ("Nowhere", "US"),
}


@dataclass(frozen=True)
class Hotel:
    name: str
    rooms: int
    """Rooms per night."""
    nightly_rate: float
    """Price of one room for one night."""
    confirms: bool = True


HOTELS: dict[str, Hotel] = {
    "New York": Hotel("The Podium Manhattan", 20, 189.0),
    "San Francisco": Hotel("Bayview Podium", 20, 169.0),
    "Los Angeles": Hotel("Podium Sunset", 20, 149.0),
    "Seattle": Hotel("Podium Sound", 20, 139.0),
    "Chicago": Hotel("Podium Loop", 20, 129.0),
    "Boston": Hotel("Podium Harbor", 20, 159.0),
    "Miami": Hotel("Podium Beach", 20, 179.0),
    "London": Hotel("Podium Covent Garden", 20, 199.0),
    "Paris": Hotel("Podium Rive Gauche", 20, 189.0),
    "Tokyo": Hotel("Podium Ginza", 20, 209.0),
    SOLD_OUT_CITY: Hotel("The Full House", 0, 99.0),
    UNCONFIRMABLE_CITY: Hotel("Hotel Atlantis", 20, 99.0, confirms=False),
}

ROOM_CAPACITY = 2
"""Guests per room; a stay takes ``ceil(guests / 2)`` rooms."""


def airport(code: str, field: str) -> str:
    """Check an airport code against the catalogue."""
    if code not in AIRPORTS:
        raise TerminalError(f"{field}: unknown airport {code!r}; known: {', '.join(sorted(AIRPORTS))}", 400)
    return code


def seat_price(origin: str, destination: str) -> float:
    """Price of one seat: domestic or international."""
    domestic = AIRPORTS[origin][1] == AIRPORTS[destination][1]
    return 249.0 if domestic else 689.0


def flight_capacity(flight_key: str) -> int:
    """Seats on the flight ``FROM-TO-DATE``."""
    parts = flight_key.split("-", 2)
    if len(parts) != 3 or parts[0] not in AIRPORTS or parts[1] not in AIRPORTS:
        raise TerminalError(f"flight key {flight_key!r} must be FROM-TO-DATE with catalogue airports", 400)
    origin, destination = parts[0], parts[1]
    if SOLD_OUT_AIRPORT in (origin, destination):
        return 0
    return SEATS_PER_FLIGHT


def hotel(city: str, field: str = "hotel.city") -> Hotel:
    """The hotel in ``city``."""
    if city not in HOTELS:
        raise TerminalError(f"{field}: no hotel in {city!r}; cities: {', '.join(sorted(HOTELS))}", 400)
    return HOTELS[city]


def hotel_capacity(city: str) -> int:
    """Rooms per night in ``city``."""
    return hotel(city).rooms
