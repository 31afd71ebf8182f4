"""``PaymentService``: charges, refunds and payouts through the gateway, idempotent by payment id.

A virtual object keyed by payment id (the caller's idempotency key for the payment, such as
``trip-001-payment``). Its state is the payment record, so a second ``Charge`` returns the first answer
and a ``Refund`` never exceeds what was charged. The gateway call runs in ``ctx.run`` with the payment id
as idempotency key: if a crash cuts the call off, it runs again and the gateway answers from its record.

``Refund`` asks the gateway, not only its own record: a charge whose answer never reached this object
(the call was cancelled, as a losing contender in a payment race is) is still found by its key and
refunded. A refund for a payment that was never charged voids the id, so a charge arriving later (a
retried or delayed call) is refused.

Every amount follows :data:`services.common.money.Amount` (more than 0, at most two decimals, at most
1,000,000,000), the rule the systems' doors use for their own money fields, so an amount a door accepted
is never refused here in the middle of a saga. Amounts arrive as JSON numbers (``12.5``); the records keep
them as JSON numbers too, computed from exact cents.

Every handler is private: only other services' handlers call it (a client pays by booking a trip or
placing an order, never by charging a card itself).

**A slow or hung provider never hangs a payment.** Each call to the gateway waits at most
``call_timeout`` for its answer (:class:`PaymentSettings`), and goes through a circuit breaker of its
provider (``primary`` and ``backup`` have one each, per process): after ``breaker_failures`` failures or
timeouts in a row the circuit opens, and calls fail fast, without reaching the provider, until
``breaker_reset`` has passed; then one call is let through (half-open), and its success closes the
circuit again (its failure opens it for another period). The breakers are the shared ones of
:mod:`services.common.circuits` (pybreaker; why that library is said there).

A timeout and an open circuit are **retryable**: the ``ctx.run`` retries with backoff (an open circuit
asks to come back when it half-opens), within its budget of attempts; a provider that comes back within
it makes the payment succeed, and one that does not makes it fail terminally, so the caller's saga
compensates. Retrying is safe because a timed-out call may well have charged: the retry carries the same
idempotency key (the payment id) and the gateway answers it from its record, and a ``Refund`` asks the
gateway by that key, so a charge whose answer was lost is found and refunded. A decline (402) or a
provider that answers "unavailable" (503) is the provider's final word and is terminal at once, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from restate import ObjectContext, ObjectSharedContext, RunOptions

from podium import Deadline, Model, TerminalError, VirtualObject
from services.common.circuits import BreakerSettings, ProviderCircuits, guarded
from services.common.money import Amount, cents, units
from services.common.providers import (
    TEST_METHODS,
    TOKEN_PREFIX,
    PaymentGateway,
)


class PaymentSettings(BaseSettings):
    """How the payment service calls the card gateway; ``PODIUM_PAYMENTS_<NAME>`` overrides each."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_PAYMENTS_", frozen=True)

    call_timeout: Deadline = timedelta(seconds=5)
    """How long one call waits for the provider's answer (longer than the 3 s of the slow test data)."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures or timeouts of one provider in a row that open its circuit."""
    breaker_reset: Deadline = timedelta(seconds=10)
    """How long an open circuit fails fast before it lets one call through (half-open)."""


SETTINGS = PaymentSettings()
"""What the deployment runs with, read from the environment when it starts."""


CIRCUITS = ProviderCircuits(BreakerSettings(SETTINGS.breaker_failures, SETTINGS.breaker_reset))
"""The deployment's breakers (one per provider, shared by every payment this process handles)."""


def _gateway() -> PaymentGateway:
    return PaymentGateway(timeout=SETTINGS.call_timeout)


_TOKEN = re.compile(rf"{TOKEN_PREFIX}[0-9a-f]{{24}}")


def _payment_method(value: str) -> str:
    if value in TEST_METHODS or _TOKEN.fullmatch(value):
        return value
    raise ValueError(
        "must be a card token (tok_…) from POST /PaymentService/Tokenize, or one of the test tokens "
        f"{', '.join(TEST_METHODS)}; a card number is never accepted here"
    )


PaymentMethod = Annotated[
    str,
    Field(max_length=40, description="a card token from POST /PaymentService/Tokenize, or a test token"),
    AfterValidator(_payment_method),
]
"""How a card travels in every system: as the vault's token, never as its number (checked at each door)."""

payments = VirtualObject("PaymentService")
_RUN = RunOptions[dict[str, Any]](max_attempts=10, initial_retry_interval=timedelta(milliseconds=100))
_LOOKUP = RunOptions[dict[str, Any] | None](
    max_attempts=10, initial_retry_interval=timedelta(milliseconds=100)
)


class ChargeRequest(Model):
    customer_id: str = Field(min_length=1)
    amount: Amount
    """What to charge: a JSON number, more than 0, at most two decimals (the shared ``Amount`` rule)."""
    description: str = ""
    method: PaymentMethod = "card-visa"
    """The card token (from ``Tokenize``) or a test token; never a card number."""
    provider: str = Field(default="primary", pattern="^(primary|backup)$")


class RefundRequest(Model):
    amount: Amount | None = None
    """Amount to refund; the whole remaining charge when omitted."""
    reason: str = ""


class ValidateRequest(Model):
    method: PaymentMethod


class Payment(Model):
    id: str
    customer_id: str | None = None
    amount: float = 0.0
    """What was charged or paid out, a JSON number computed from exact cents."""
    refunded: float = 0.0
    status: str
    """``charged``, ``declined``, ``refunded``, ``partially_refunded``, ``voided`` (refund before any
    charge: a late charge for this id is refused), or for payouts ``paid_out`` / ``refused``."""
    charge_id: str | None = None
    provider: str | None = None
    reason: str | None = None
    request: str | None = None
    """What was charged (customer, amount, description): a charge for the same payment id with a
    different request is refused, so two systems that pick the same id cannot share one payment."""


def _fingerprint(req: ChargeRequest) -> str:
    return f"{req.customer_id}|{cents(req.amount)}|{req.description}"


async def _load(ctx: ObjectContext | ObjectSharedContext) -> Payment | None:
    raw = await ctx.get("payment", type_hint=dict)
    return None if raw is None else Payment.model_validate(raw)


def _save(ctx: ObjectContext, payment: Payment) -> Payment:
    ctx.set("payment", payment.model_dump(mode="json"))
    return payment


async def _move_money(
    ctx: ObjectContext,
    operation: str,
    gateway_call: Callable[[], dict[str, Any]],
    record: Payment,
    *,
    provider: str,
    done: str,
    refused: str,
    reference: str,
) -> Payment:
    """Run one gateway operation once (``ctx.run``, keyed by the payment id) and record its outcome.

    A 402 from the gateway is its final word and is recorded as ``refused``; any other terminal error
    (a cancellation, a provider that stayed down past the run's retries) is not: the gateway's record by
    key stays the truth for a later refund.
    """

    def attempt() -> dict[str, Any]:
        return guarded(provider, gateway_call, CIRCUITS)

    try:
        answer = await ctx.run_typed(f"gateway {operation}", attempt, _RUN)
    except TerminalError as exc:
        if exc.status_code == 402:
            _save(ctx, record.model_copy(update={"status": refused, "reason": exc.message}))
        raise
    return _save(ctx, record.model_copy(update={"status": done, "charge_id": answer[reference]}))


@payments.handler("Charge")
async def charge(ctx: ObjectContext, req: ChargeRequest) -> Payment:
    current = await _load(ctx)
    if current is not None:
        if current.request is not None and current.request != _fingerprint(req):
            raise TerminalError(f"payment {ctx.key()} was already used for a different charge", 409)
        if current.status == "voided":
            raise TerminalError(f"payment {ctx.key()} was voided before it was charged", 409)
        if current.status == "declined":
            raise TerminalError(current.reason or "card declined", 402)
        return current
    gateway, key = _gateway(), ctx.key()
    record = Payment(
        id=key,
        customer_id=req.customer_id,
        amount=units(cents(req.amount)),
        status="pending",
        provider=req.provider,
        request=_fingerprint(req),
    )
    return await _move_money(
        ctx,
        "charge",
        lambda: gateway.charge(
            key,
            customer_id=req.customer_id,
            amount_cents=cents(req.amount),
            description=req.description,
            method=req.method,
            provider=req.provider,
        ),
        record,
        provider=req.provider,
        done="charged",
        refused="declined",
        reference="chargeId",
    )


@payments.handler("Refund")
async def refund(ctx: ObjectContext, req: RefundRequest) -> Payment:
    current = await _load(ctx)
    gateway = _gateway()
    key = ctx.key()
    if current is None or current.status == "declined":
        # The answer may never have reached us: the gateway's record by key is the truth. A lookup that
        # times out is retried, never taken for "no charge".
        asked_of = (current.provider if current is not None else None) or "primary"

        def lookup() -> dict[str, Any] | None:
            return guarded(asked_of, lambda: gateway.charge_for_key(key, provider=asked_of), CIRCUITS)

        found = await ctx.run_typed("gateway lookup", lookup, _LOOKUP)
        if found is None or found["status"] != "succeeded":
            if current is not None:
                return current
            return _save(ctx, Payment(id=key, status="voided", reason=req.reason or "refunded before charge"))
        current = Payment(
            id=key,
            amount=units(found["amountCents"]),
            status="charged",
            charge_id=found["chargeId"],
            provider=found.get("provider"),
        )
    if current.status in ("voided", "refunded"):
        return current
    # A charged or partially refunded payment always has something left, and ``Amount`` is at least
    # 0.01: every refund here moves at least one cent.
    remaining = cents(current.amount) - cents(current.refunded)
    asked = remaining if req.amount is None else cents(req.amount)
    if asked > remaining:
        raise TerminalError(
            f"refund of {units(asked):.2f} exceeds the {units(remaining):.2f} left on payment {key}", 409
        )
    refund_key = f"{key}:refund:{cents(current.refunded)}:{asked}"
    charge_id = current.charge_id or ""
    provider = current.provider or "primary"

    def call_gateway() -> dict[str, Any]:
        return guarded(
            provider,
            lambda: gateway.refund(refund_key, charge_id=charge_id, amount_cents=asked, provider=provider),
            CIRCUITS,
        )

    await ctx.run_typed("gateway refund", call_gateway, _RUN)
    current.refunded = units(cents(current.refunded) + asked)
    current.status = "refunded" if cents(current.refunded) == cents(current.amount) else "partially_refunded"
    return _save(ctx, current)


class PayoutRequest(Model):
    customer_id: str = Field(min_length=1)
    amount: Amount
    """What to pay out (the shared ``Amount`` rule)."""
    description: str = ""


@payments.handler("Payout")
async def payout(ctx: ObjectContext, req: PayoutRequest) -> Payment:
    """Send money to the customer, once per payment id (a repeat returns the first answer)."""
    current = await _load(ctx)
    fingerprint = f"payout|{req.customer_id}|{cents(req.amount)}|{req.description}"
    if current is not None:
        if current.request != fingerprint:
            raise TerminalError(f"payment {ctx.key()} was already used for a different operation", 409)
        if current.status == "refused":
            raise TerminalError(current.reason or "payout refused", 402)
        return current
    gateway, key = _gateway(), ctx.key()
    record = Payment(
        id=key,
        customer_id=req.customer_id,
        amount=units(cents(req.amount)),
        status="pending",
        request=fingerprint,
    )
    return await _move_money(
        ctx,
        "payout",
        lambda: gateway.payout(
            key, customer_id=req.customer_id, amount_cents=cents(req.amount), description=req.description
        ),
        record,
        provider="primary",
        done="paid_out",
        refused="refused",
        reference="payoutId",
    )


@payments.handler("Get", kind="shared")
async def get_payment(ctx: ObjectSharedContext) -> Payment:
    current = await _load(ctx)
    if current is None:
        raise TerminalError(f"no payment {ctx.key()}", 404)
    return current


@payments.handler("Validate", kind="shared")
async def validate_method(ctx: ObjectSharedContext, req: ValidateRequest) -> bool:
    return PaymentGateway().validate_method(req.method)
