"""The card vault: the payment provider's tokenisation, served at the edge: ``POST /PaymentService/Tokenize``.

A card number must never reach the engine, whose journal keeps every request for a day, nor any state,
event or log of ours. So a client trades the card for a token first, at the gateway, which serves this
route in its own process (``[tool.podium] edge`` lists it): the card goes from the client to the vault
and nowhere else. Orders, events and payments carry the token (``tok_…``) and the last four digits only.

The vault stands in for the provider's (a real one keeps the card encrypted in its own PCI-scoped
store). This one keeps no card number at all: for each token only the brand, the last four digits, the
expiry and how the card behaves, which the documented test cards decide, as a real provider's test mode
does:

=====================  ============================================
card number            what charging its token does
=====================  ============================================
4242 4242 4242 4242    succeeds (Visa)
5555 5555 5555 4444    succeeds (Mastercard)
3782 822463 10005      succeeds (American Express)
4000 0000 0000 0002    declined
4000 0000 0000 9995    declined: insufficient funds
any other valid card   succeeds
=====================  ============================================

A number that fails the Luhn check, an expiry in the past or a malformed CVC is refused (400 naming the
field) and no token is made. The CVC is checked for its form and then forgotten, as card rules require.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from podium import Model, describe_validation_error
from podium.gateway import Claims, EdgeRoute, luhn_valid
from services.common.providers import CardVault

TOKENIZE_SCOPE = "common:write"
"""What a client's token needs to tokenise a card."""


def _brand(digits: str) -> str:
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in ("34", "37"):
        return "amex"
    if digits[:2] in {str(n) for n in range(51, 56)} or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits.startswith(("6011", "65")):
        return "discover"
    return "unknown"


class TokenizeRequest(Model):
    card_number: str = Field(min_length=12, max_length=23)
    """Digits, spaces or dashes allowed between them."""
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=2000, le=2100)
    cvc: str = Field(pattern=r"^[0-9]{3,4}$")

    @field_validator("card_number")
    @classmethod
    def _card(cls, value: str) -> str:
        digits = value.replace(" ", "").replace("-", "")
        if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise ValueError("a card number is 12 to 19 digits")
        if not luhn_valid(digits):
            raise ValueError("not a valid card number (the check digit is wrong)")
        return digits

    @model_validator(mode="after")
    def _not_expired(self) -> TokenizeRequest:
        today = dt.date.today()
        if (self.exp_year, self.exp_month) < (today.year, today.month):
            raise ValueError(
                f"expYear/expMonth: the card expired at the end of {self.exp_month:02d}/{self.exp_year}"
            )
        return self


class CardToken(Model):
    token: str
    """What orders and payments carry instead of the card."""
    brand: str
    last4: str
    exp_month: int
    exp_year: int


async def tokenize(body: bytes, claims: Claims) -> tuple[int, dict[str, Any]]:
    """The edge route: a card in, a token out (201); a bad card is a 400 naming the field."""
    try:
        request = TokenizeRequest.model_validate_json(body or b"null")
    except ValidationError as exc:
        return 400, {"message": describe_validation_error(exc, show_input=False)}  # never echo a card
    digits = request.card_number

    def store() -> CardToken:
        card = CardVault().tokenize(
            digits, brand=_brand(digits), exp_month=request.exp_month, exp_year=request.exp_year
        )
        return CardToken(
            token=card.token,
            brand=card.brand,
            last4=card.last4,
            exp_month=request.exp_month,
            exp_year=request.exp_year,
        )

    token = await asyncio.get_running_loop().run_in_executor(None, store)
    return 201, token.model_dump(mode="json", by_alias=True)


EDGE_ROUTES = [EdgeRoute("/PaymentService/Tokenize", TOKENIZE_SCOPE, tokenize)]
"""What the gateway serves for the vault (``[tool.podium] edge`` names this list)."""
