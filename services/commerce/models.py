"""The commerce systems' JSON (camelCase on the wire)."""

from __future__ import annotations

from pydantic import Field

from podium import Model, SagaLog, Status
from services.common.money import Amount
from services.common.payments import PaymentMethod


class Item(Model):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0, le=1_000)


class Address(Model):
    street: str = Field(min_length=1)
    city: str = Field(min_length=1)
    country: str = Field(min_length=2, max_length=2)
    zip: str = ""


class Order(Model):
    """Seed 002's ``Order``."""

    id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    user_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    user_phone: str = Field(default="", pattern=r"^(\+[0-9]{6,15})?$")
    items: list[Item] = Field(min_length=1)
    total: Amount
    """What the customer pays: a JSON number, more than 0, at most two decimals (the payments' rule)."""
    payment_method: PaymentMethod
    shipping_address: Address


class StockRequest(Model):
    reservation_id: str = Field(min_length=1)
    items: list[Item] = Field(min_length=1)


class CheckRequest(Model):
    items: list[Item] = Field(min_length=1)


class Availability(Model):
    available: bool
    missing: list[str] = []
    """SKUs without enough stock."""


class Reservation(Model):
    reservation_id: str
    items: list[Item]
    status: str


class ShippingSlot(Model):
    slot_id: str
    carrier: str
    status: str


class Label(Model):
    slot_id: str
    tracking_number: str
    carrier: str


class Pick(Model):
    reservation_id: str
    pick_ticket: str
    items: list[Item]


class Invoice(Model):
    invoice_id: str
    order_id: str
    total: float


class PaymentInfo(Model):
    id: str
    provider: str
    amount: float
    status: str


class Fulfillment(Model):
    pick: Pick
    label: Label
    invoice: Invoice


class Notifications(Model):
    sent: int
    failed: int
    errors: list[str | None]


class OrderResult(Model):
    """Seed 002's ``OrderResult``, with the failure reason and notification counts."""

    order_id: str
    status: str
    """``completed`` or ``failed``."""
    payment: PaymentInfo | None = None
    fulfillment: Fulfillment | None = None
    notifications: Notifications | None = None
    reason: str | None = None


class OrderStatus(Status):
    """``GetOrderStatus``: the status record plus the saga log."""

    saga: SagaLog | None = None
