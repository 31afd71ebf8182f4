"""Mixed load for chaos runs: bank transfers, trip bookings and shop orders, each remembered.

:class:`Load` makes requests with test data that exercises every path (completed, blocked, failed,
compensated: a frozen account, a hotel that refuses to confirm, a declined card, an address no carrier
takes) and leaves windows for faults to land in (every fifth trip or order is paid by a ``slow-``
customer, whose charge the gateway makes at once and answers 3 s later). It sends each with ``/send``
and its business id as the ``idempotency-key``, and keeps a :class:`Request` record of it. A request
is *accepted* when the door answered with an invocation id; network errors and 502/503/504 are retried
with the same key, which the engine deduplicates, so a retry never starts a second invocation.

The door is an ``httpx.Client`` whose ``base_url`` is the ingress, or the gateway with a token carrying
``banking:operator banking:write travel:write shop:write`` (and the ``read`` scopes for
:mod:`tests.chaos.gather`) in its default headers.

Keys carry the run's tag (``tr-<tag>-7``), so a run's records are told apart from anything else.

:meth:`Load.send` sends one request and waits for the door; :meth:`Load.send_open_loop` sends a list on
a schedule (so many a second) from a pool of threads, each request leaving at its time whatever became
of the ones before it, as independent clients do (an open loop): a door that is down while it restarts
holds up the requests that reach it then, never the schedule.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.checker import Kind

_RETRYABLE = (502, 503, 504)
CITIES = ("New York", "San Francisco", "Los Angeles", "Seattle", "Chicago", "Boston", "Miami")
AIRPORTS = ("SFO", "JFK", "LAX", "SEA", "ORD", "BOS", "MIA")
DEPOSIT = 20_000_00
"""What each ordinary account of a run opens with, in cents."""


@dataclass
class Request:
    """One request of the run."""

    kind: Kind
    key: str
    path: str
    """The handler's path, ``/TransferOrchestrator/{key}/Transfer``; ``/send`` is added to send it."""
    body: dict[str, Any]
    accepted: bool = False
    invocation_id: str | None = None
    refused: str | None = None
    """Why the door refused it for good (a status and message), None if it did not."""
    replies: list[str] = field(default_factory=list)
    """What came back from each attempt, in order: an HTTP status (``"202"``) or a network error's name."""
    sent_at: float | None = None
    """When it was first sent (``time.monotonic()``)."""
    settled_at: float | None = None
    """When the door accepted or refused it for good (``time.monotonic()``)."""


@dataclass
class Load:
    """Makes, sends and remembers the requests of one run."""

    client: httpx.Client
    tag: str
    seed: int = 2024
    accounts: dict[str, int] = field(default_factory=dict)
    """Accounts the run opened, with the cents each was opened with."""
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._counter = 0

    def _next(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self.tag}-{self._counter}"

    # -- requests ------------------------------------------------------------------------------------------

    def open_accounts(self, count: int = 8) -> list[str]:
        """Open ``count`` accounts with :data:`DEPOSIT` each, and one frozen account (refuses credits)."""
        opened = [self._next("acct") for _ in range(count)]
        for account in opened:
            self._open(account, DEPOSIT)
        self._open(self._next("frozen"), 0)
        return opened

    def _open(self, account: str, cents: int) -> None:
        body = {
            "owner": f"owner of {account}",
            "email": f"{account}@example.com",
            "initialDeposit": cents / 100,
        }
        response = self.client.post(f"/AccountService/{account}/Open", json=body)
        response.raise_for_status()
        self.accounts[account] = cents

    def transfer(self) -> Request:
        """A transfer between two of the run's accounts: mostly completed, some blocked or failed."""
        if len(self.accounts) < 2:
            raise RuntimeError("open the run's accounts first")
        source, target = self._rng.sample(sorted(self.accounts), 2)
        amount = self._rng.choice([5, 12.5, 40, 99.99, 250, 2_500, 15_000])  # 15,000: blocked by fraud
        key = self._next("tr")
        body = {"fromAccount": source, "toAccount": target, "amount": amount}
        return Request("transfer", key, f"/TransferOrchestrator/{key}/Transfer", body)

    def trip(self) -> Request:
        """A trip on a date of its own: mostly confirmed; Atlantis compensates, declined- is refused."""
        key = self._next("trip")
        n = self._counter
        customer = self._customer(key, declined=n % 11 == 0, slow=n % 5 == 0)
        city = "Atlantis" if n % 7 == 0 else CITIES[n % len(CITIES)]
        origin, destination = self._rng.sample(AIRPORTS, 2)
        day = dt.date(2025, 1, 1) + dt.timedelta(days=n)
        body = {
            "customerId": customer,
            "customerEmail": f"{customer}@example.com",
            "flight": {"from": origin, "to": destination, "date": day.isoformat(), "passengers": 2},
            "hotel": {
                "city": city,
                "checkIn": day.isoformat(),
                "checkOut": (day + dt.timedelta(days=2)).isoformat(),
                "guests": 2,
            },
        }
        return Request("trip", key, f"/TripOrchestrator/{key}/BookTrip", body)

    def order(self) -> Request:
        """A shop order of 1-3 units of the run's limited SKUs; some ship nowhere, some are declined."""
        key = self._next("order")
        n = self._counter
        customer = self._customer(key, declined=n % 9 == 0, slow=n % 5 == 0)
        skus = self._rng.sample([f"LIMITED-60-{self.tag}-{letter}" for letter in "ABC"], 2)
        items = [{"sku": sku, "quantity": self._rng.randint(1, 3), "unitPrice": 9.99} for sku in skus]
        address = {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"}
        if n % 6 == 0:
            address["country"] = "AQ"  # no carrier: shipping fails, the charge is refunded
        body = {
            "customerId": customer,
            "email": f"{customer}@example.com",
            "items": items,
            "shippingAddress": address,
        }
        return Request("order", key, f"/ShopOrder/{key}/Place", body)

    @staticmethod
    def _customer(key: str, *, declined: bool, slow: bool) -> str:
        """A customer id of the providers' test data: declined, slow to be answered, or ordinary."""
        if declined:
            return f"declined-{key}"
        return f"slow-{key}" if slow else f"cust-{key}"

    def mix(self, count: int, *, transfers: int = 3, trips: int = 2, orders: int = 1) -> list[Request]:
        """``count`` requests in the ratio ``transfers:trips:orders``, interleaved."""
        cycle = ["transfer"] * transfers + ["trip"] * trips + ["order"] * orders
        makers = {"transfer": self.transfer, "trip": self.trip, "order": self.order}
        return [makers[cycle[i % len(cycle)]]() for i in range(count)]

    # -- sending -------------------------------------------------------------------------------------------

    def send(self, request: Request, *, attempts: int = 30) -> Request:
        """Send ``request`` (``/send``, its key as idempotency key) until the door accepts or refuses it."""
        self.requests.append(request)
        request.sent_at = time.monotonic()
        try:
            return self._send(request, attempts)
        finally:
            request.settled_at = time.monotonic()

    def _send(self, request: Request, attempts: int) -> Request:
        for attempt in range(attempts):
            try:
                response = self.client.post(
                    f"{request.path}/send", json=request.body, headers={"idempotency-key": request.key}
                )
            except httpx.TransportError as exc:
                request.replies.append(type(exc).__name__)
                time.sleep(min(0.05 * 2**attempt, 2.0))  # the door is restarting: same key, no duplicate
                continue
            request.replies.append(str(response.status_code))
            if response.status_code in (200, 202):
                request.accepted = True
                request.invocation_id = response.json()["invocationId"]
                return request
            if response.status_code in _RETRYABLE:
                time.sleep(float(response.headers.get("retry-after", min(0.05 * 2**attempt, 2.0))))
                continue
            request.refused = f"{response.status_code} {response.text[:200]}"
            return request
        request.refused = f"no answer after {attempts} attempts"
        return request

    def send_all(self, requests: list[Request]) -> list[Request]:
        """Send each of ``requests`` in turn."""
        return [self.send(r) for r in requests]

    def send_open_loop(
        self,
        requests: Sequence[Request],
        *,
        rate: float,
        stop: threading.Event | None = None,
        senders: int = 128,
    ) -> list[Request]:
        """Send ``requests`` on a schedule, ``rate`` a second, each on its own thread (an open loop).

        Request ``i`` leaves ``i / rate`` seconds after the first, whatever became of those before it:
        one held up by a door that is restarting (:meth:`send` retries it) holds up no other. ``senders``
        bounds the requests under way at once; give the client at least as many connections.

        Args:
            requests: What to send, in order (from :meth:`mix`).
            rate: Requests a second.
            stop: Set to send no more (those already sent still finish).
            senders: Threads that send.

        Returns:
            The requests sent, once each was accepted or refused.
        """
        stop = stop or threading.Event()
        start = time.monotonic()
        with ThreadPoolExecutor(senders, thread_name_prefix="load") as pool:
            futures = []
            for i, request in enumerate(requests):
                # Waiting on the event paces the schedule and lets a failing test stop it early.
                if stop.wait(max(0.0, start + i / rate - time.monotonic())):
                    break
                futures.append(pool.submit(self.send, request))
            return [future.result() for future in futures]

    def answer(self, request: Request) -> str | None:
        """The status in the invocation's own result, None while it has none (or it was never accepted)."""
        if not request.accepted:
            return None
        try:
            response = self.client.get(f"/restate/invocation{request.path}/{request.key}/output")
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        status: str | None = response.json().get("status")
        return status
