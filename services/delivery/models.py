"""The delivery system's JSON (camelCase on the wire), and the forms of its ids.

Every id a client or a webhook sends is checked for its form at the door, with the rule every layer
uses, so a bad one is a 400 naming the field and never reaches a handler that would retry on it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, Field

from podium import Model
from services.common.money import Amount

ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""Order, restaurant, driver and zone ids: letters, digits and ``._-``, at most 100 characters."""
AWAKEABLE_ID = r"^sign_1[A-Za-z0-9_-]{38}$"
"""The form of the engine's awakeable ids: ``sign_1`` and 28 bytes in unpadded base64url. The engine
refuses to resolve anything else (``InvalidAwakeableId``) on every retry, so it is refused at the door."""
MAX_TOTAL = 10_000
"""The largest order the delivery service takes."""

_AWAKEABLE_BYTES = 28
"""An invocation id (partition key and uuid) and the signal's index."""


def _canonical_awakeable(value: str) -> str:
    # The pattern lets through 38 characters whose last one carries bits past the 28 bytes; the engine
    # refuses those too, so only the exact encoding of 28 bytes passes.
    body = value.removeprefix("sign_1")
    try:
        raw = base64.urlsafe_b64decode(body + "==")
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _AWAKEABLE_BYTES or base64.urlsafe_b64encode(raw).decode().rstrip("=") != body:
        raise ValueError("not an awakeable id of the engine")
    return value


Id = Annotated[str, Field(pattern=ID)]
AwakeableId = Annotated[str, Field(pattern=AWAKEABLE_ID), AfterValidator(_canonical_awakeable)]


class Dish(Model):
    name: str = Field(min_length=1, max_length=200)
    quantity: int = Field(gt=0, le=50)


class DeliveryOrder(Model):
    """The body of ``PlaceOrder``; the order id is the key in the URL.

    The deadlines (a driver's answer, the kitchen, the delivery) are the deployment's settings
    (:mod:`services.delivery.settings`), not the customer's: fields such as ``driverAnswerMs`` are ignored.
    """

    customer_id: Id
    restaurant_id: Id
    zone: Id
    """The driver pool to assign from."""
    items: list[Dish] = Field(min_length=1, max_length=50)
    total: Annotated[Amount, Field(le=MAX_TOTAL)]
    """What the customer pays: the payment's rule (positive, at most two decimals), at most 10,000."""
    address: str = Field(min_length=1, max_length=500)


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
