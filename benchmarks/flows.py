"""The order flow the benchmarks measure, written twice: with Podium, and by hand on restate-sdk.

Both run the same work: a workflow keyed by order id that calls four services (reserve stock, charge,
ship, notify) in order, each doing one durable side effect (``ctx.run``), with compensations for the
first three. The hand-written flow keeps its compensations in a local list, as restate-sdk users do
today; the Podium flow uses :class:`podium.Saga` (compensations recorded in state before each action).
Podium's overhead is the ratio of the two.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import restate
from restate import Context, RunOptions, WorkflowContext

import podium
from podium import Model, Saga, call


def _effect(kind: str, order_id: str) -> str:
    """A cheap, deterministic stand-in for a call to a provider."""
    return hashlib.sha256(f"{kind}:{order_id}".encode()).hexdigest()[:16]


class BenchOrder(Model):
    id: str
    amount: float = 42.0


class StepResult(Model):
    ref: str


_RUN = RunOptions[str](max_attempts=5)


# -- hand-written on restate-sdk -----------------------------------------------------------------------

raw_steps = restate.Service("RawSteps")


@raw_steps.handler("Reserve")
async def raw_reserve(ctx: Context, order: dict[str, Any]) -> str:
    return await ctx.run_typed("reserve", _effect, _RUN, "reserve", order["id"])


@raw_steps.handler("Charge")
async def raw_charge(ctx: Context, order: dict[str, Any]) -> str:
    return await ctx.run_typed("charge", _effect, _RUN, "charge", order["id"])


@raw_steps.handler("Ship")
async def raw_ship(ctx: Context, order: dict[str, Any]) -> str:
    return await ctx.run_typed("ship", _effect, _RUN, "ship", order["id"])


@raw_steps.handler("Notify")
async def raw_notify(ctx: Context, order: dict[str, Any]) -> str:
    return await ctx.run_typed("notify", _effect, _RUN, "notify", order["id"])


@raw_steps.handler("Undo")
async def raw_undo(ctx: Context, order: dict[str, Any]) -> str:
    return await ctx.run_typed("undo", _effect, _RUN, "undo", order["id"])


raw_order = restate.Workflow("RawOrder")


@raw_order.main("run")
async def raw_run(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    compensations = []
    try:
        compensations.append(lambda: ctx.service_call(raw_undo, order))
        reservation = await ctx.service_call(raw_reserve, order)
        compensations.append(lambda: ctx.service_call(raw_undo, order))
        payment = await ctx.service_call(raw_charge, order)
        compensations.append(lambda: ctx.service_call(raw_undo, order))
        shipment = await ctx.service_call(raw_ship, order)
    except restate.TerminalError:
        for undo in reversed(compensations):
            await undo()
        raise
    await ctx.service_call(raw_notify, order)
    return {"orderId": order["id"], "reservation": reservation, "payment": payment, "shipment": shipment}


# Verifies the engine's signature like podium.app() does, so both flows pay for it.
raw_app = restate.app(
    services=[raw_steps, raw_order],
    identity_keys=[k for k in os.environ.get(podium.IDENTITY_KEYS_ENV, "").split(",") if k],
)


# -- with Podium ---------------------------------------------------------------------------------------

steps = podium.Service("PodiumSteps")


@steps.handler("Reserve")
async def reserve(ctx: Context, order: BenchOrder) -> StepResult:
    return StepResult(ref=await ctx.run_typed("reserve", _effect, _RUN, "reserve", order.id))


@steps.handler("Charge")
async def charge(ctx: Context, order: BenchOrder) -> StepResult:
    return StepResult(ref=await ctx.run_typed("charge", _effect, _RUN, "charge", order.id))


@steps.handler("Ship")
async def ship(ctx: Context, order: BenchOrder) -> StepResult:
    return StepResult(ref=await ctx.run_typed("ship", _effect, _RUN, "ship", order.id))


@steps.handler("Notify")
async def notify(ctx: Context, order: BenchOrder) -> StepResult:
    return StepResult(ref=await ctx.run_typed("notify", _effect, _RUN, "notify", order.id))


@steps.handler("Undo")
async def undo(ctx: Context, order: BenchOrder) -> StepResult:
    return StepResult(ref=await ctx.run_typed("undo", _effect, _RUN, "undo", order.id))


class BenchResult(Model):
    order_id: str
    reservation: str
    payment: str
    shipment: str


orders = podium.Workflow("PodiumOrder", system="bench")


async def _run_order(ctx: WorkflowContext, order: BenchOrder, *, keep_log: bool) -> BenchResult:
    async with Saga(ctx, "order", keep_log=keep_log) as saga:
        reservation = await saga.step(
            "reserve", lambda: call(ctx, reserve, order), compensate=lambda: call(ctx, undo, order)
        )
        payment = await saga.step(
            "charge", lambda: call(ctx, charge, order), compensate=lambda: call(ctx, undo, order)
        )
        shipment = await saga.step(
            "ship", lambda: call(ctx, ship, order), compensate=lambda: call(ctx, undo, order)
        )
    await call(ctx, notify, order)
    return BenchResult(
        order_id=order.id, reservation=reservation.ref, payment=payment.ref, shipment=shipment.ref
    )


@orders.main("Run", public="write")
async def run(ctx: WorkflowContext, order: BenchOrder) -> BenchResult:
    """The order flow with Podium: a saga whose log is kept in state (readable while it runs)."""
    return await _run_order(ctx, order, keep_log=True)


orders_without_log = podium.Workflow("PodiumOrderNoLog", system="bench")


@orders_without_log.main("Run", public="write")
async def run_without_log(ctx: WorkflowContext, order: BenchOrder) -> BenchResult:
    """The Podium flow with ``keep_log=False``: no saga state writes, to measure what the log costs."""
    return await _run_order(ctx, order, keep_log=False)


ping = podium.Service("Ping", system="bench")


@ping.handler("Ping", public="read")
async def ping_handler(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """A handler that does nothing: what a request costs the gateway, the engine and the service alone."""
    return request


podium_app = podium.app(services=[steps, orders, orders_without_log, ping])
