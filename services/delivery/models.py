"""The delivery system's JSON (camelCase on the wire)."""

from __future__ import annotations

from pydantic import Field

from podium import Model


class Dish(Model):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0, le=50)


class DeliveryOrder(Model):
    customer_id: str = Field(min_length=1)
    restaurant_id: str = Field(min_length=1)
    zone: str = Field(min_length=1)
    """The driver pool to assign from."""
    items: list[Dish] = Field(min_length=1)
    total: float = Field(gt=0, le=10_000)
    address: str = Field(min_length=1)
    driver_answer_ms: int = Field(default=60_000, gt=0, le=86_400_000)
    """How long a driver has to accept an offer before it goes to the next one."""
    ready_timeout_ms: int = Field(default=3_600_000, gt=0, le=7 * 86_400_000)
    """How long to wait for the restaurant to signal the food is ready."""
    delivery_timeout_ms: int = Field(default=7_200_000, gt=0, le=7 * 86_400_000)
    """How long to wait for pick-up and for delivery."""


class Location(Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    at: float | None = None
    driver_id: str | None = None


class DeliveryResult(Model):
    order_id: str
    status: str
    """``delivered``, ``rejected``, ``cancelled``, ``failed``."""
    driver_id: str | None = None
    payment_id: str | None = None
    reason: str | None = None
