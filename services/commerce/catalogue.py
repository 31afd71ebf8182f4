"""Products, stock, shipping zones, and the test data that makes an order fail.

| test data | what happens |
|---|---|
| a line with SKU ``SKU-SOLDOUT`` | no stock: validation fails (``Inventory.Check`` says no) |
| a line with SKU ``SKU-DAMAGED`` | reserved and paid, then the warehouse cannot pick it: all undone |
| ``paymentMethod`` ``card-expired`` | the payment method does not validate |
| ``paymentMethod`` ``card-slow-primary`` | the primary answers late; the backup wins the race |
| ``paymentMethod`` ``card-primary-down`` | the primary provider fails; the backup provider charges |
| ``userId`` starting ``declined-`` | both providers decline the card: reservations are released |
| ``userId`` starting ``fraud-``, or a total above 10,000 | the fraud check fails |
| ``shippingAddress.country`` not in :data:`SHIPPING_COUNTRIES` | no shipping there: validation fails |
| ``shippingAddress.city`` ``No Slots`` | shipping is available but no slot can be reserved: stock released |
| ``shippingAddress.city`` ``No Labels`` | a slot is reserved but no label can be printed there: all undone |
| email at ``bounce.example.com``, phone starting ``+000`` | that notification fails; the order completes |
"""

from __future__ import annotations

from decimal import Decimal

from podium import TerminalError

STOCK_PER_SKU = 1_000
"""Units of every catalogue SKU (0 for ``SKU-SOLDOUT``)."""
SOLD_OUT_SKU = "SKU-SOLDOUT"
DAMAGED_SKU = "SKU-DAMAGED"
PRICES: dict[str, Decimal] = {
    **{f"ITEM-{n:03d}": Decimal(10 * n) - Decimal("0.01") for n in range(1, 21)},
    SOLD_OUT_SKU: Decimal("19.99"),
    DAMAGED_SKU: Decimal("24.99"),
}
"""Unit prices, exact (an order's amount is their sum)."""
SHIPPING_COUNTRIES = frozenset({"US", "CA", "GB", "FR", "DE", "JP"})
NO_SLOTS_CITY = "No Slots"
NO_LABELS_CITY = "No Labels"
"""A city whose slots can be reserved but whose shipping labels cannot be printed (the label step fails)."""
EXPIRED_METHOD = "card-expired"
SLOW_PRIMARY_METHOD = "card-slow-primary"
PRIMARY_DOWN_METHOD = "card-primary-down"
SMS_FAILS_PREFIX = "+000"


def stock(sku: str) -> int:
    """Units of ``sku`` (capacity of its stock object)."""
    if sku not in PRICES:
        raise TerminalError(f"unknown SKU {sku!r}", 400)
    return 0 if sku == SOLD_OUT_SKU else STOCK_PER_SKU


def price(sku: str, field: str = "items") -> Decimal:
    """Unit price of ``sku``."""
    if sku not in PRICES:
        known = ", ".join(sorted(PRICES)[:3])
        raise TerminalError(f"{field}: unknown SKU {sku!r} (known: {known}, … ITEM-020)", 400)
    return PRICES[sku]
