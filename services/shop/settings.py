"""The shop deployment's settings: deadlines and retention, set by whoever runs it, never by a client.

Each one is read from ``PODIUM_SHOP_<NAME>`` when the deployment starts, as a number of seconds, an ISO
8601 duration (``PT60S``) or ``HH:MM:SS``. An order runs under the deadline its checkout started with.

**Retention.** The engine keeps every completed invocation, and its journal, for its service's retention
(a day unless the service says otherwise), and slows as that history grows: at the shop's rates a day is
tens of millions of invocations (docs/performance.md measures it). What the shop needs to keep lives
elsewhere: an order's events and its saga's log in the order's state (forever), stock and its history in
the inventory's store, labels in the carrier's records, notification outcomes in the customer's object,
read models in SQL. So the shop keeps the engine's history only as long as someone debugging a recent
order would look at it. The values are registered with the deployment (the engine reads them from it),
so a change takes effect when the deployment is registered again (``podium up`` does that at start).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from podium import Deadline


class ShopSettings(BaseSettings):
    """Deadlines of the shop; environment variables PODIUM_SHOP_<NAME> override them."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_SHOP_", frozen=True)

    checkout_deadline: Deadline = timedelta(seconds=60)
    """How long the checkout may take from placing to shipping label; past it, the order compensates
    and is cancelled with the reason (a payment provider that stops answering, a carrier that hangs)."""
    order_retention: Deadline = timedelta(hours=1)
    """How long the engine keeps a finished ``ShopOrder`` invocation: its journal, and its answer to a
    repeat sent with the same ``Idempotency-Key``. A repeat after that is still answered, by the order
    itself (``Place`` returns the stored outcome)."""
    participant_retention: Deadline = timedelta(minutes=10)
    """How long the engine keeps the journals of the invocations an order causes (stock, label,
    notifications, read models): called by the order, deduplicated by its journal, not by theirs."""


SETTINGS = ShopSettings()
"""What the deployment runs with; tests replace it with monkeypatch.setattr(settings, "SETTINGS", ...)."""
