"""Who subscribes to the order's events: registered here, in one place, and nowhere else.

The aggregate (:mod:`services.shop.order`) publishes each command's events to every subscription whose
``types`` they include, as one :class:`~services.shop.events.Published` batch per subscriber, keyed by
``key`` (an object subscriber) or unkeyed (a service). It keeps each subscriber's position, so a batch
holds every event since that subscriber's previous one; each subscriber deduplicates by sequence number
and applies in order. Adding a subscriber is one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.shop.customers import NOTIFIED, notify
from services.shop.events import EventType, OrderState
from services.shop.projections import apply_events


@dataclass(frozen=True)
class Subscription:
    """One subscriber of the order's events."""

    name: str
    """Names the subscriber's position in each order (in its ``sent`` key): never rename a live one."""
    handler: Any
    """The handler that takes a :class:`~services.shop.events.Published` batch."""
    types: frozenset[EventType]
    """The event types it is sent for (it receives the events between them too, to see whole streams)."""
    key: Callable[[OrderState], str | None]
    """Which object of the subscriber gets an order's events (None for a service)."""


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("read-models", apply_events, frozenset(EventType), lambda order: None),
    Subscription("notifications", notify, NOTIFIED, lambda order: order.customer_id),
)
