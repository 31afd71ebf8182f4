"""``AccountService``: one virtual object per account with a balance, holds and an append-only ledger.

Every movement is keyed by the caller's transaction id, so repeating it (a retried call, a replay) is
harmless: the second ``Debit`` of ``tx-1`` returns the first answer and moves nothing. The ledger lists
every movement with the balance after it, so it explains the balance at any time.

- ``Open``: create the account with an opening deposit (the only way money enters the bank).
- ``Hold`` / ``ReleaseHold``: reserve funds for a transfer, or give them back.
- ``Debit``: take money (capturing a hold when ``holdId`` is given); insufficient funds → 409.
- ``Credit``: add money; accounts whose id starts with ``frozen-`` refuse credits (409), except the
  reversal of one of their own debits.
- ``Get``: balance, available (balance minus holds), holds and the ledger.

Only ``Open`` (a teller's, ``banking:operator``) and ``Get`` are public. Every movement (``Hold``,
``ReleaseHold``, ``Debit``, ``Credit``, reversals included) is private: money moves only as a step of a
transfer another handler runs, never because a client asked an account for it (an anonymous ``Credit``
with a made-up ``txId`` once created 1,000,000.00 out of nothing).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject
from services.common.money import Amount, Balance, cents, units

accounts = VirtualObject("AccountService", system="banking")
FROZEN_PREFIX = "frozen-"


class OpenRequest(Model):
    owner: str = Field(min_length=1, max_length=200)
    email: str = Field(default="", pattern=r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$")
    initial_deposit: Balance = Decimal(0)


class HoldRequest(Model):
    hold_id: str = Field(min_length=1)
    amount: Amount


class HoldRef(Model):
    hold_id: str = Field(min_length=1)


class Movement(Model):
    tx_id: str = Field(min_length=1)
    amount: Amount
    hold_id: str | None = None
    """With ``Debit``: capture this hold instead of taking free funds."""
    reverses: str | None = None
    """With ``Credit``: the id of a debit of this account that this credit gives back. A reversal is
    accepted even by a frozen account (the money was its own); a reversal of a debit that never happened
    moves nothing and voids that debit's id, so it cannot happen later."""
    memo: str = ""


class LedgerEntry(Model):
    entry: int
    tx_id: str
    kind: Literal["open", "debit", "credit"]
    amount: float
    balance_after: float
    memo: str = ""
    at: float


class Account(Model):
    id: str
    owner: str
    email: str = ""
    balance: float
    available: float
    holds: dict[str, float] = {}
    ledger: list[LedgerEntry] = []


class _State(Model):
    owner: str
    email: str = ""
    balance_cents: int = 0
    holds: dict[str, int] = {}
    ledger: list[LedgerEntry] = []
    done: dict[str, float] = {}
    """Transaction ids already applied (``debit:tx``, ``credit:tx``) → balance after."""


async def _load(ctx: ObjectContext | ObjectSharedContext) -> _State:
    raw = await ctx.get("account", type_hint=dict)
    if raw is None:
        raise TerminalError(f"no account {ctx.key()}", 404)
    return _State.model_validate(raw)


def _view(key: str, state: _State) -> Account:
    held = sum(state.holds.values())
    return Account(
        id=key,
        owner=state.owner,
        email=state.email,
        balance=units(state.balance_cents),
        available=units(state.balance_cents - held),
        holds={k: units(v) for k, v in state.holds.items()},
        ledger=state.ledger,
    )


async def _book(
    ctx: ObjectContext, state: _State, kind: Literal["open", "debit", "credit"], m: Movement
) -> None:
    delta = cents(m.amount) if kind != "debit" else -cents(m.amount)
    state.balance_cents += delta
    state.ledger.append(
        LedgerEntry(
            entry=len(state.ledger) + 1,
            tx_id=m.tx_id,
            kind=kind,
            amount=units(cents(m.amount)),
            balance_after=units(state.balance_cents),
            memo=m.memo,
            at=await ctx.time(),
        )
    )
    state.done[f"{kind}:{m.tx_id}"] = units(state.balance_cents)
    ctx.set("account", state.model_dump(mode="json"))


@accounts.handler("Open", public="operator")
async def open_account(ctx: ObjectContext, req: OpenRequest) -> Account:
    raw = await ctx.get("account", type_hint=dict)
    if raw is not None:
        state = _State.model_validate(raw)
        if state.owner != req.owner:
            raise TerminalError(f"account {ctx.key()} already exists for another owner", 409)
        return _view(ctx.key(), state)
    state = _State(owner=req.owner, email=req.email)
    if req.initial_deposit > 0:
        await _book(
            ctx, state, "open", Movement(tx_id="open", amount=req.initial_deposit, memo="opening deposit")
        )
    else:
        ctx.set("account", state.model_dump(mode="json"))
    return _view(ctx.key(), state)


@accounts.handler("Hold")
async def hold(ctx: ObjectContext, req: HoldRequest) -> Account:
    state = await _load(ctx)
    if req.hold_id in state.holds:
        return _view(ctx.key(), state)
    available = state.balance_cents - sum(state.holds.values())
    if cents(req.amount) > available:
        raise TerminalError(
            f"insufficient funds in {ctx.key()}: {units(available):.2f} available, {req.amount} needed", 409
        )
    state.holds[req.hold_id] = cents(req.amount)
    ctx.set("account", state.model_dump(mode="json"))
    return _view(ctx.key(), state)


@accounts.handler("ReleaseHold")
async def release_hold(ctx: ObjectContext, req: HoldRef) -> Account:
    state = await _load(ctx)
    if state.holds.pop(req.hold_id, None) is not None:
        ctx.set("account", state.model_dump(mode="json"))
    return _view(ctx.key(), state)


@accounts.handler("Debit")
async def debit(ctx: ObjectContext, m: Movement) -> Account:
    state = await _load(ctx)
    if f"debit:{m.tx_id}" in state.done:
        return _view(ctx.key(), state)
    if f"void:{m.tx_id}" in state.done:
        raise TerminalError(f"transaction {m.tx_id} on {ctx.key()} was cancelled before it ran", 409)
    held = state.holds.get(m.hold_id, 0) if m.hold_id else 0
    if m.hold_id and held != cents(m.amount):
        raise TerminalError(f"hold {m.hold_id} on {ctx.key()} does not cover {m.amount}", 409)
    free = state.balance_cents - sum(state.holds.values()) + held
    if cents(m.amount) > free:
        raise TerminalError(
            f"insufficient funds in {ctx.key()}: {units(free):.2f} available, {m.amount} needed", 409
        )
    if m.hold_id:
        state.holds.pop(m.hold_id, None)
    await _book(ctx, state, "debit", m)
    return _view(ctx.key(), state)


@accounts.handler("Credit")
async def credit(ctx: ObjectContext, m: Movement) -> Account:
    state = await _load(ctx)
    if f"credit:{m.tx_id}" in state.done:
        return _view(ctx.key(), state)
    if m.reverses is not None and f"reversed:{m.reverses}" in state.done:
        return _view(ctx.key(), state)  # that debit was already given back, under another id
    if m.reverses is not None and f"debit:{m.reverses}" not in state.done:
        # Nothing to reverse (the debit never happened): void its id so a late debit is refused.
        state.done[f"void:{m.reverses}"] = units(state.balance_cents)
        ctx.set("account", state.model_dump(mode="json"))
        return _view(ctx.key(), state)
    if ctx.key().startswith(FROZEN_PREFIX) and m.reverses is None:
        raise TerminalError(f"account {ctx.key()} is frozen and cannot receive money", 409)
    if m.reverses is not None:
        state.done[f"reversed:{m.reverses}"] = units(state.balance_cents)
    await _book(ctx, state, "credit", m)
    return _view(ctx.key(), state)


@accounts.handler("Get", kind="shared", public="read")
async def get_account(ctx: ObjectSharedContext) -> Account:
    return _view(ctx.key(), await _load(ctx))
