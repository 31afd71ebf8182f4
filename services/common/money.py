"""Money on the wire and in state.

Amounts travel as JSON numbers with at most two decimals (``12.5``, ``1000``) and are kept as integer
cents everywhere else, so sums are exact: the bank's invariant (money is never created or destroyed) is
checked with integers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field


def _two_decimals(value: Decimal) -> Decimal:
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("at most two decimals")
    return value


Amount = Annotated[Decimal, Field(gt=0, le=Decimal("1000000000")), AfterValidator(_two_decimals)]
"""A positive amount of money, at most two decimals."""

Balance = Annotated[Decimal, Field(ge=0, le=Decimal("1000000000")), AfterValidator(_two_decimals)]
"""Zero or more, at most two decimals (an opening deposit)."""


def cents(amount: Decimal | float | int) -> int:
    """Exact cents of an amount."""
    return int((Decimal(str(amount)) * 100).to_integral_value())


def units(cents_value: int) -> float:
    """Cents as a JSON number."""
    return cents_value / 100
