"""Prices in integer cents: subtotal, discount, tax."""

from __future__ import annotations

from collections.abc import Iterable


def subtotal(lines: Iterable[tuple[int, int]]) -> int:
    """Sum of ``unit_cents * quantity`` over the order lines."""
    total = 0
    for unit_cents, quantity in lines:
        if unit_cents < 0 or quantity < 0:
            raise ValueError("prices and quantities cannot be negative")
        total += unit_cents * quantity
    return total


def percent_of(cents: int, percent: int) -> int:
    """``percent`` % of ``cents``, rounded half up to a whole cent."""
    return (cents * percent + 50) // 100


def apply_discount(cents: int, percent: int, *, limit: int = 100) -> int:
    """The amount after a ``percent`` discount, capped at ``limit`` percent."""
    if not 0 <= percent <= 100:
        raise ValueError(f"discount must be between 0 and 100 percent, got {percent}")
    return cents - percent_of(cents, min(percent, limit))
