"""The shop's JSON on the wire (camelCase), and how the read side summarises an order."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, ValidationInfo, field_validator, model_validator

from podium import Model, SagaLog
from services.common.money import Amount
from services.common.payments import PaymentMethod
from services.shop.events import EventType, OrderState, OrderStatus, TrackingUpdate, check_data, fingerprint

MAX_TOTAL = 1_000_000
"""The largest order the payment gateway takes."""

Price = Annotated[Amount, Field(le=100_000), PlainSerializer(float, return_type=float, when_used="json")]
"""A unit price: money by the rule every payment uses (positive, at most two decimals), at most
100,000; a JSON number on the wire and in the event store."""


class Item(Model):
    """One order line, priced as the customer saw it at checkout."""

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    quantity: int = Field(gt=0, le=1_000)
    unit_price: Price
    """Checked at the door with the payment's own rule (``services/common/money.py``), so the charge
    the saga asks for later can never be refused for its amount (``0.001`` is a 400 here, not a
    checkout that cannot finish)."""


class Address(Model):
    """Where the parcel goes (``country``: two capital letters)."""

    name: str = ""
    street: str = Field(min_length=1)
    city: str = Field(min_length=1)
    zip: str = Field(min_length=1, max_length=10)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class PlaceOrder(Model):
    """``POST /ShopOrder/{orderId}/Place``."""

    order_id: str | None = None
    """Optional; when given it must be the id in the URL."""
    customer_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    items: list[Item] = Field(min_length=1, max_length=50)
    shipping_address: Address
    payment_method: PaymentMethod = "card-visa"
    correlation_id: str | None = Field(default=None, min_length=1, max_length=100)
    """Optional; generated when absent. Not part of the order: a retry with another one is the same order."""

    @model_validator(mode="after")
    def _total_within_limit(self) -> PlaceOrder:
        if self.total > MAX_TOTAL:
            raise ValueError(f"items: the order comes to {self.total:.2f}, above the 1,000,000 limit")
        return self

    @property
    def total(self) -> float:
        """What the customer pays: the exact sum of the lines (whole cents, since every price is)."""
        return float(sum(i.quantity * i.unit_price for i in self.items))

    @property
    def lines(self) -> dict[str, int]:
        """Units per SKU (an order may list a SKU twice), sorted by SKU."""
        units: Counter[str] = Counter()
        for item in self.items:
            units[item.sku] += item.quantity
        return dict(sorted(units.items()))

    def fingerprint(self) -> str:
        """Identifies the order's content; the order id and the correlation id are left out."""
        return fingerprint(self.model_dump_json(exclude={"order_id", "correlation_id"}))


class CancelOrder(Model):
    """``POST /ShopOrder/{orderId}/Cancel``."""

    reason: str = Field(default="", max_length=500)


class RefundOrder(Model):
    """``POST /ShopOrder/{orderId}/Refund`` (an operator): give back part or all of what was charged."""

    refund_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The operator's id for this refund: the same id again refunds nothing more."""
    amount: Annotated[Amount, PlainSerializer(float, return_type=float, when_used="json")]
    """At most what is left of the charge."""
    reason: str = Field(default="", max_length=500)


class RecordEvent(Model):
    """``ShopOrder/{orderId}/Record``: append one event, if the order's state allows it."""

    type: EventType
    event_id: str = Field(min_length=1, max_length=200)
    """Idempotency key: recording the same id again returns the order unchanged."""
    actor: str = Field(min_length=1)
    """Who caused it (``Record`` is private: the saga and the carrier webhooks set it)."""
    data: dict[str, Any] = {}

    @field_validator("data")
    @classmethod
    def _data_fits_the_type(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        event_type = info.data.get("type")
        return data if event_type is None else check_data(event_type, data)


class OrderSummary(Model):
    """What the read side shows of one order (the saga's answer, the read model, the live status)."""

    order_id: str
    customer_id: str
    status: OrderStatus
    total: float
    lines: dict[str, int]
    payment_id: str | None = None
    charged: float = 0.0
    refunded: float = 0.0
    shipment_id: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    tracking: list[TrackingUpdate] = []
    reason: str | None = None
    correlation_id: str
    placed_at: str | None = None
    updated_at: str | None = None
    version: int
    """The sequence number of the last event reflected."""
    events: list[EventType]
    """Event types, in order."""

    @classmethod
    def of(cls, state: OrderState) -> OrderSummary:
        """Summarise a folded order."""
        return cls(
            order_id=state.order_id,
            customer_id=state.customer_id,
            status=state.status,
            total=state.total,
            lines=state.lines,
            payment_id=state.payment_id,
            charged=state.charged,
            refunded=state.refunded,
            shipment_id=state.shipment_id,
            tracking_number=state.tracking_number,
            carrier=state.carrier,
            tracking=state.tracking,
            reason=state.reason,
            correlation_id=state.correlation_id,
            placed_at=state.placed_at,
            updated_at=state.updated_at,
            version=state.version,
            events=state.history,
        )


class LiveStatus(Model):
    """``ShopOrder/{orderId}/GetStatus``: phase and progress from the fold, while the saga runs."""

    order_id: str
    phase: OrderStatus
    progress: float
    current_step: str | None
    completed_steps: list[str]
    is_complete: bool
    reason: str | None
    updated_at: str | None
    version: int
    saga: SagaLog | None = None
    """The saga's own log (steps, compensations, dead letters)."""
