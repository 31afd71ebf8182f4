"""Simulated external providers: a card payment gateway, parcel carriers and an email provider.

They stand in for the third parties a real system calls (Stripe, a carrier's label API, SES), and behave
like them where it matters for correctness:

- **stateful**: every request and every effect is stored in a SQLite database on disk, so they survive
  a crash of the service process that calls them;
- **idempotent by key**: a request repeated with the same idempotency key returns the first answer and
  has no second effect (a ``ctx.run`` cut off by a crash runs again, and must not charge twice);
- **able to fail on documented test data** (see :data:`DECLINED_PREFIX` and friends);
- **able to stop answering**: a test (or a person trying things out) flips a provider-level switch in the
  gateway's database (:meth:`PaymentGateway.hang`, :meth:`PaymentGateway.slow_down`,
  :meth:`PaymentGateway.recover`; for a carrier also :meth:`CarrierProvider.take_down`, which answers
  503 at once), so a provider that stops answering is simulated across processes.
  A hung provider still takes each request and acts on it (the money moves), then never answers: the
  worst case for the caller, whose call may have charged although it saw no answer. The caller's wait is
  bounded by the client's own ``timeout`` (:class:`PaymentGateway` ``timeout=``), as an HTTP client's read
  timeout bounds it, and ends in :class:`ProviderTimeout`.

Each provider counts ``requests`` (calls received) and ``effects`` (money moved, labels made or voided,
mail sent) per key, so tests prove exactly-once effects by counting.

The databases live in ``$PODIUM_DATA_DIR/providers`` (default ``.podium/providers``).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from services.common import sqlite

DECLINED_PREFIX = "declined-"
"""Customers whose id starts with this have their card declined."""
SLOW_PREFIX = "slow-"
"""Charges for customers whose id starts with this answer :data:`SLOW_SECONDS` late: the money has moved
but the caller has not heard yet (the window a crash test kills the caller in)."""
SLOW_SECONDS = 3.0
BOUNCE_DOMAIN = "bounce.example.com"
"""Mail to any address at this domain bounces."""
UNDELIVERABLE_PHONE_PREFIX = "+000"
"""SMS to numbers starting with this cannot be delivered."""
EXPIRED_METHOD = "card-expired"
"""A payment method that does not validate and is declined."""
SLOW_PRIMARY_METHOD = "card-slow-primary"
"""The primary provider charges this method but answers :data:`SLOW_SECONDS` late."""
PRIMARY_DOWN_METHOD = "card-primary-down"
"""The primary provider is unavailable (503) for this method; the backup works."""
PROVIDERS = ("primary", "backup")
"""The card gateway's two providers: each can be hung or slowed down on its own."""
CARRIERS = ("podium-post", "podium-global")
"""The simulated parcel carriers (:class:`CarrierProvider`): each can be taken down, hung or slowed."""
POST_COUNTRIES = frozenset({"US", "CA", "MX"})
"""Where ``podium-post`` ships (North America); ``podium-global`` ships everywhere but
:data:`UNSERVED_COUNTRIES`, the US included."""
UNSERVED_COUNTRIES = frozenset({"AQ", "KP"})
"""Countries no carrier delivers to: every carrier refuses the label (422)."""
INVALID_ZIP = "00000"
"""A zip code that does not exist: every carrier refuses the label (422)."""
REMOTE_ZIP_PREFIX = "99"
"""Zip codes starting with this are a remote area that ``podium-post`` refuses (422) and
``podium-global`` serves: the fallback to the second carrier, made by data alone."""
TRACKING_PREFIXES = {"podium-post": "PP", "podium-global": "PG"}
"""Each carrier's tracking numbers start with its prefix, then 12 hex digits (``PP3F9A0C11B2D4``)."""


def provider_dir() -> Path:
    """Where provider databases live."""
    return Path(os.environ.get("PODIUM_DATA_DIR", ".podium")) / "providers"


TOKEN_PREFIX = "tok_"
"""Card tokens the vault makes are ``tok_`` and 24 hex digits."""
TEST_METHODS = ("card-visa", "card-mastercard", EXPIRED_METHOD, SLOW_PRIMARY_METHOD, PRIMARY_DOWN_METHOD)
"""Ready-made test tokens, as a provider's test mode offers (``tok_visa`` at Stripe)."""
DECLINED_CARDS = {
    "4000000000000002": "card declined",
    "4000000000009995": "card declined: insufficient funds",
}
"""Test card numbers whose charges are declined, and why (see services/common/vault.py)."""


class ProviderError(Exception):
    """A provider refused a request for a reason that will not change on retry (declined, over-refund)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ProviderTimeout(ProviderError):
    """No answer within the client's timeout: the provider may have acted (charged) all the same."""

    def __init__(self, provider: str, timeout: float, *, what: str = "payment provider") -> None:
        super().__init__(f"{what} {provider} did not answer within {timeout:g} s", 504)
        self.provider = provider
        self.timeout = timeout


@dataclass(frozen=True)
class Outage:
    """A provider-level switch in a provider's database: it hangs, answers late, or is down (carriers)."""

    provider: str
    mode: Literal["hang", "slow", "down"]
    delay: float
    """Seconds each answer is late (``slow``)."""
    until: float | None
    """Epoch seconds when it ends by itself; None: until :meth:`PaymentGateway.recover` (or
    :meth:`CarrierProvider.restore`)."""


class _Store:
    """An append-mostly SQLite store of idempotent requests, shared by processes on this machine."""

    schema = """
    create table if not exists requests (
        key text primary key, kind text not null, response text not null, requests integer not null,
        created real not null
    );
    create table if not exists effects (
        id integer primary key autoincrement, key text not null, kind text not null, subject text not null,
        amount_cents integer not null default 0, detail text not null, at real not null
    );
    create table if not exists outages (
        provider text primary key, mode text not null, delay real not null, until real
    );
    """

    def __init__(self, name: str, directory: Path | None = None) -> None:
        self.path = (directory or provider_dir()) / f"{name}.db"
        self._ready = False

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.executescript(self.schema)
        finally:
            db.close()
        self._ready = True

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self._create()
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=full")
            with sqlite.immediate(db):
                yield db
        finally:
            db.close()

    def _replay(self, db: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        row = db.execute("select response from requests where key = ?", (key,)).fetchone()
        if row is None:
            return None
        db.execute("update requests set requests = requests + 1 where key = ?", (key,))
        answer: dict[str, Any] = json.loads(row[0])
        return answer

    def _remember(self, db: sqlite3.Connection, key: str, kind: str, response: dict[str, Any]) -> None:
        db.execute(
            "insert into requests (key, kind, response, requests, created) values (?, ?, ?, 1, ?)",
            (key, kind, json.dumps(response), time.time()),
        )

    def _effect(
        self, db: sqlite3.Connection, key: str, kind: str, subject: str, cents: int, detail: dict[str, Any]
    ) -> None:
        db.execute(
            "insert into effects (key, kind, subject, amount_cents, detail, at) values (?, ?, ?, ?, ?, ?)",
            (key, kind, subject, cents, json.dumps(detail), time.time()),
        )

    def requests(self, key: str) -> int:
        """How many requests arrived with ``key`` (retries included)."""
        with self._tx() as db:
            row = db.execute("select requests from requests where key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def effects(self, *, subject: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Effects that happened, oldest first, optionally for one subject or kind."""
        query, args = "select key, kind, subject, amount_cents, detail from effects where 1=1", []
        if subject is not None:
            query += " and subject = ?"
            args.append(subject)
        if kind is not None:
            query += " and kind = ?"
            args.append(kind)
        with self._tx() as db:
            rows = db.execute(query + " order by id", args).fetchall()
        return [
            {"key": k, "kind": kd, "subject": s, "amountCents": c, **json.loads(d)} for k, kd, s, c, d in rows
        ]


class _Switched(_Store):
    """A store whose providers can be switched to hang, answer late or be down, from any process.

    The switches live in the store's ``outages`` table; every answer looks there first (:meth:`_answer`).
    """

    names: tuple[str, ...] = ()
    """The providers that have a switch."""
    noun = "provider"
    """What a provider is called in a refused switch (``provider must be one of …``)."""
    what = "payment provider"
    """What a provider is called in a timeout's message."""

    def __init__(self, name: str, directory: Path | None, timeout: timedelta | None) -> None:
        super().__init__(name, directory)
        self.timeout = None if timeout is None else timeout.total_seconds()

    def _outage(self, provider: str) -> Outage | None:
        """The switch in force for ``provider``, or None."""
        if not self._ready:
            self._create()
        # A plain read, outside any write transaction: every answer of the provider looks here first.
        db = sqlite3.connect(self.path, timeout=30)
        try:
            row = db.execute(
                "select mode, delay, until from outages where provider = ?", (provider,)
            ).fetchone()
        finally:
            db.close()
        if row is None or (row[2] is not None and row[2] <= time.time()):
            return None
        return Outage(provider, row[0], row[1], row[2])

    def _set_outage(self, provider: str, mode: str, delay: float, lasting: timedelta | None) -> None:
        if provider not in self.names:
            raise ValueError(f"{self.noun} must be one of {', '.join(self.names)}")
        until = None if lasting is None else time.time() + lasting.total_seconds()
        with self._tx() as db:
            db.execute(
                "insert or replace into outages (provider, mode, delay, until) values (?, ?, ?, ?)",
                (provider, mode, delay, until),
            )

    def _clear(self, provider: str) -> None:
        with self._tx() as db:
            db.execute("delete from outages where provider = ?", (provider,))

    def _answer(self, provider: str, late_by: float = 0.0) -> None:
        """Let the answer go out: ``late_by`` seconds late, later while ``provider`` hangs or is slowed.

        Raises:
            ProviderTimeout: The answer is later than the client's :attr:`timeout`.
        """
        started = time.monotonic()
        while True:
            outage = self._outage(provider)
            hung = outage is not None and outage.mode == "hang"
            due = late_by + (outage.delay if outage is not None and outage.mode == "slow" else 0.0)
            waited = time.monotonic() - started
            if not hung and waited >= due:
                return
            if self.timeout is not None and waited >= self.timeout:
                raise ProviderTimeout(provider, self.timeout, what=self.what)
            # Polled, so that a recovery in another process releases the answer within 50 ms.
            left = [0.05, due - waited] if not hung else [0.05]
            if self.timeout is not None:
                left.append(self.timeout - waited)
            time.sleep(max(0.0, min(left)))


class PaymentGateway(_Switched):
    """A card gateway: charges and refunds in cents, idempotent by key.

    Args:
        directory: Where its database lives (default :func:`provider_dir`).
        timeout: How long a call waits for the provider's answer before it raises
            :class:`ProviderTimeout` (the client's read timeout); None waits as long as it takes.
    """

    names = PROVIDERS

    def __init__(self, directory: Path | None = None, *, timeout: timedelta | None = None) -> None:
        super().__init__("payments", directory, timeout)

    # -- the provider-level switch (test data) ---------------------------------------------------------

    def hang(self, provider: str = "primary", *, lasting: timedelta | None = None) -> None:
        """Make ``provider`` act on requests and answer none (for ``lasting``, or until :meth:`recover`)."""
        self._set_outage(provider, "hang", 0.0, lasting)

    def slow_down(
        self, provider: str = "primary", *, by: timedelta, lasting: timedelta | None = None
    ) -> None:
        """Make ``provider`` answer every request ``by`` late (for ``lasting``, or until recovered)."""
        self._set_outage(provider, "slow", by.total_seconds(), lasting)

    def recover(self, provider: str = "primary") -> None:
        """Make ``provider`` answer normally again (answers it was holding go out at once)."""
        self._clear(provider)

    def outage(self, provider: str = "primary") -> Outage | None:
        """The switch in force for ``provider``, or None."""
        return self._outage(provider)

    def charge(
        self,
        key: str,
        *,
        customer_id: str,
        amount_cents: int,
        description: str,
        method: str = "",
        provider: str = "primary",
    ) -> dict[str, Any]:
        """Charge a customer once per ``key``.

        Raises:
            ProviderError: 402 when the card is declined, 503 when the provider is down.
        """
        if provider == "primary" and method == PRIMARY_DOWN_METHOD:
            raise ProviderError(f"payment provider {provider} is unavailable", 503)
        refusal = self._refusal(customer_id, method)
        with self._tx() as db:
            answer = self._replay(db, key)
            if answer is None:
                charge_id = f"ch_{uuid.uuid4().hex[:16]}"
                declined = refusal is not None
                status = "declined" if declined else "succeeded"
                answer = {
                    "chargeId": charge_id,
                    "status": status,
                    "amountCents": amount_cents,
                    "provider": provider,
                }
                if declined:
                    answer["reason"] = refusal
                if not declined:
                    detail = {"customerId": customer_id, "provider": provider, "description": description}
                    self._effect(db, key, "charge", charge_id, amount_cents, detail)
                self._remember(db, key, "charge", answer)
        slow = customer_id.startswith(SLOW_PREFIX) or (
            provider == "primary" and method == SLOW_PRIMARY_METHOD
        )
        self._answer(provider, SLOW_SECONDS if slow else 0.0)
        if answer["status"] == "declined":
            why = answer.get("reason") or "card declined"
            raise ProviderError(f"{why} for customer {customer_id} by {provider}", 402)
        return answer

    def _refusal(self, customer_id: str, method: str) -> str | None:
        """Why a charge of ``method`` for ``customer_id`` is declined, or None (test data decides)."""
        if customer_id.startswith(DECLINED_PREFIX):
            return "card declined"
        if method == EXPIRED_METHOD:
            return "card declined: expired"
        if method.startswith(TOKEN_PREFIX):
            card = CardVault(self.path.parent).card(method)
            return "no such card token" if card is None else card.declined
        return None

    def payout(self, key: str, *, customer_id: str, amount_cents: int, description: str) -> dict[str, Any]:
        """Send money to a customer once per ``key`` (an insurance payout, a marketplace settlement).

        Raises:
            ProviderError: 402 when the receiving account refuses it (customers ``declined-…``).
        """
        with self._tx() as db:
            answer = self._replay(db, key)
            if answer is None:
                payout_id = f"po_{uuid.uuid4().hex[:16]}"
                refused = customer_id.startswith(DECLINED_PREFIX)
                answer = {
                    "payoutId": payout_id,
                    "status": "refused" if refused else "sent",
                    "amountCents": amount_cents,
                }
                if not refused:
                    detail = {"customerId": customer_id, "description": description}
                    self._effect(db, key, "payout", payout_id, amount_cents, detail)
                self._remember(db, key, "payout", answer)
        self._answer("primary")
        if answer["status"] == "refused":
            raise ProviderError(f"the account of customer {customer_id} refused the payout", 402)
        return answer

    def charge_for_key(self, key: str, *, provider: str = "primary") -> dict[str, Any] | None:
        """The answer ``provider`` gave to a charge with ``key``, if any (a read: counts no request).

        A hung provider answers this no more than a charge: a lookup that times out is never "no charge".
        """
        with self._tx() as db:
            row = db.execute(
                "select response from requests where key = ? and kind = 'charge'", (key,)
            ).fetchone()
        self._answer(provider)
        return None if row is None else dict(json.loads(row[0]))

    def validate_method(self, method: str) -> bool:
        """Whether a payment method is usable: a test token that is not expired, or a vault token."""
        if method.startswith(TOKEN_PREFIX):
            return CardVault(self.path.parent).card(method) is not None
        return method != EXPIRED_METHOD

    def refund(
        self, key: str, *, charge_id: str, amount_cents: int, provider: str = "primary"
    ) -> dict[str, Any]:
        """Refund part or all of a charge once per ``key``; never more than was charged.

        ``provider`` is the one that made the charge (a hung one holds the answer, as for a charge).
        """
        with self._tx() as db:
            answer = self._replay(db, key)
            if answer is None:
                answer = self._new_refund(db, key, charge_id, amount_cents)
        self._answer(provider)
        return answer

    def _new_refund(
        self, db: sqlite3.Connection, key: str, charge_id: str, amount_cents: int
    ) -> dict[str, Any]:
        charged = db.execute(
            "select coalesce(sum(amount_cents), 0) from effects where kind = 'charge' and subject = ?",
            (charge_id,),
        ).fetchone()[0]
        refunded = db.execute(
            "select coalesce(sum(amount_cents), 0) from effects where kind = 'refund' and subject = ?",
            (charge_id,),
        ).fetchone()[0]
        if amount_cents > charged - refunded:
            left = charged - refunded
            raise ProviderError(
                f"refund of {amount_cents} cents exceeds {left} cents left on {charge_id}", 409
            )
        answer = {
            "refundId": f"re_{uuid.uuid4().hex[:16]}",
            "chargeId": charge_id,
            "amountCents": amount_cents,
        }
        self._effect(db, key, "refund", charge_id, amount_cents, {})
        self._remember(db, key, "refund", answer)
        return answer

    def balance_cents(self, charge_id: str) -> int:
        """Charged minus refunded for one charge."""
        total = 0
        for effect in self.effects(subject=charge_id):
            total += effect["amountCents"] if effect["kind"] == "charge" else -effect["amountCents"]
        return total


@dataclass(frozen=True)
class Card:
    """What the vault keeps for a token (never the card number)."""

    token: str
    brand: str
    last4: str
    declined: str | None
    """Why charges of this card are declined, or None."""


class CardVault:
    """Tokens and what charging them does, in an owner-only SQLite file under the providers' folder."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or provider_dir()) / "vault.db"

    def _db(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute(
            "create table if not exists cards (token text primary key, brand text not null,"
            " last4 text not null, exp text not null, declined text, created real not null)"
        )
        return db

    def tokenize(self, digits: str, *, brand: str, exp_month: int, exp_year: int) -> Card:
        """A new token for the card ``digits`` (already checked); only its last four digits are kept."""
        card = Card(TOKEN_PREFIX + secrets.token_hex(12), brand, digits[-4:], DECLINED_CARDS.get(digits))
        db = self._db()
        try:
            db.execute(
                "insert into cards values (?, ?, ?, ?, ?, ?)",
                (
                    card.token,
                    card.brand,
                    card.last4,
                    f"{exp_month:02d}/{exp_year}",
                    card.declined,
                    time.time(),
                ),
            )
        finally:
            db.close()
        return card

    def card(self, token: str) -> Card | None:
        """What the vault knows of ``token``, or None."""
        db = self._db()
        try:
            row = db.execute("select brand, last4, declined from cards where token = ?", (token,)).fetchone()
        finally:
            db.close()
        return None if row is None else Card(token, row[0], row[1], row[2])


class MailProvider(_Store):
    """An email provider: sends once per key; mail to :data:`BOUNCE_DOMAIN` bounces."""

    def __init__(self, directory: Path | None = None) -> None:
        super().__init__("mail", directory)

    def send(self, key: str, *, to: str, subject: str, body: str, channel: str = "email") -> dict[str, Any]:
        """Send a message once per ``key``; returns its id and ``delivered`` or ``bounced``.

        Raises:
            ProviderError: 502 for an SMS to an undeliverable number.
        """
        if channel == "sms" and to.startswith(UNDELIVERABLE_PHONE_PREFIX):
            raise ProviderError(f"SMS to {to} cannot be delivered", 502)
        with self._tx() as db:
            answer = self._replay(db, key)
            if answer is None:
                bounced = channel == "email" and to.lower().endswith("@" + BOUNCE_DOMAIN)
                status = "bounced" if bounced else "delivered"
                answer = {"messageId": f"msg_{uuid.uuid4().hex[:16]}", "status": status}
                if status == "delivered":
                    self._effect(db, key, channel, to, 0, {"subject": subject, "body": body})
                self._remember(db, key, channel, answer)
        return answer

    def outbox(self, to: str, channel: str = "email") -> list[dict[str, Any]]:
        """Messages delivered to ``to`` on ``channel``, oldest first."""
        return self.effects(subject=to, kind=channel)


class CarrierProvider(_Switched):
    """Parcel carriers (:data:`CARRIERS`) behind one label API: labels by idempotency key, voids, pick-ups.

    A label is made once per key: the same key again answers the same label (one ``label`` effect), and
    the carrier, not its caller, makes the label id, the tracking number (:data:`TRACKING_PREFIXES`)
    and the label's URL. A carrier refuses (422) what it does not deliver: :data:`UNSERVED_COUNTRIES`
    and :data:`INVALID_ZIP` for both, and for ``podium-post`` anything outside :data:`POST_COUNTRIES` or
    in a zip starting :data:`REMOTE_ZIP_PREFIX`. A refusal is remembered by key like a label.

    A label is voided once (one ``void`` effect; a repeat answers the same), until the carrier picks the
    parcel up (:meth:`pick_up`, the carrier's first scan): then the void is refused (409). Voiding a key
    that has no label yet voids the key, so a label request arriving late with it is refused (409), as
    the card gateway voids a payment id refunded before its charge.

    The switches: :meth:`take_down` (the carrier answers 503 at once and does nothing), :meth:`hang` (it
    acts on each request and answers none, until the client's ``timeout``), :meth:`slow_down`, and
    :meth:`restore`. Each lasts until restored, or for ``lasting``.

    Args:
        directory: Where its database lives (default :func:`provider_dir`).
        timeout: How long a call waits for the carrier's answer before it raises :class:`ProviderTimeout`;
            None waits as long as it takes.
    """

    schema = (
        _Store.schema
        + """
    create table if not exists labels (
        key text primary key, carrier text not null, label_id text, tracking_number text, label_url text,
        status text not null, parcels integer not null default 0, address text not null default '{}',
        created real not null, updated real not null
    );
    """
    )
    names = CARRIERS
    noun = "carrier"
    what = "carrier"

    def __init__(self, directory: Path | None = None, *, timeout: timedelta | None = None) -> None:
        super().__init__("carriers", directory, timeout)

    # -- the switches (test data) ----------------------------------------------------------------------

    def take_down(self, carrier: str, *, lasting: timedelta | None = None) -> None:
        """Make ``carrier`` answer 503 at once and do nothing (for ``lasting``, or until :meth:`restore`)."""
        self._set_outage(carrier, "down", 0.0, lasting)

    def hang(self, carrier: str, *, lasting: timedelta | None = None) -> None:
        """Make ``carrier`` act on requests and answer none (for ``lasting``, or until :meth:`restore`)."""
        self._set_outage(carrier, "hang", 0.0, lasting)

    def slow_down(self, carrier: str, *, by: timedelta, lasting: timedelta | None = None) -> None:
        """Make ``carrier`` answer every request ``by`` late (for ``lasting``, or until restored)."""
        self._set_outage(carrier, "slow", by.total_seconds(), lasting)

    def restore(self, carrier: str) -> None:
        """Make ``carrier`` answer normally again (answers it was holding go out at once)."""
        self._clear(carrier)

    def outage(self, carrier: str) -> Outage | None:
        """The switch in force for ``carrier``, or None."""
        return self._outage(carrier)

    # -- the label API ---------------------------------------------------------------------------------

    def create_label(
        self, key: str, *, carrier: str, address: dict[str, Any], parcels: int
    ) -> dict[str, Any]:
        """Make a label for ``parcels`` parcels to ``address`` (``country``, ``zip``…) once per ``key``.

        Returns:
            ``carrier``, ``labelId``, ``trackingNumber``, ``labelUrl`` and ``status`` (``created``, or
            ``picked_up`` once the carrier has the parcel).

        Raises:
            ProviderError: 422 when ``carrier`` does not deliver there, 409 when ``key`` was voided or
                used with another carrier, 400 for a request it cannot read, 503 when the carrier is
                down.
            ProviderTimeout: The carrier hangs (it made the label all the same).
        """
        self._check(carrier)
        country, zip_code = str(address.get("country", "")), str(address.get("zip", ""))
        if not country or not zip_code or parcels < 1:
            raise ProviderError(f"{carrier} needs a country, a zip and at least one parcel", 400)
        refusal = carrier_refusal(carrier, country, zip_code)
        with self._tx() as db:
            answer = self._replay(db, key)
            if answer is None:
                answer = self._new_label(db, key, carrier, address, parcels, refusal)
            row = db.execute("select status from labels where key = ?", (key,)).fetchone()
        self._answer(carrier)
        if answer["carrier"] != carrier:
            raise ProviderError(f"label key {key} was used with {answer['carrier']}, not {carrier}", 409)
        if answer["status"] == "refused":
            raise ProviderError(answer["reason"], answer["code"])
        if row is not None and row[0] == "voided":
            raise ProviderError(f"label {answer['labelId']} ({key}) was voided", 409)
        return {**answer, "status": row[0] if row is not None else answer["status"]}

    def _new_label(
        self,
        db: sqlite3.Connection,
        key: str,
        carrier: str,
        address: dict[str, Any],
        parcels: int,
        refusal: str | None,
    ) -> dict[str, Any]:
        voided = db.execute("select 1 from labels where key = ? and status = 'voided'", (key,)).fetchone()
        if voided is not None:
            answer: dict[str, Any] = {
                "carrier": carrier,
                "status": "refused",
                "code": 409,
                "reason": f"label key {key} was voided before any label was made",
            }
        elif refusal is not None:
            answer = {"carrier": carrier, "status": "refused", "code": 422, "reason": refusal}
        else:
            tracking = TRACKING_PREFIXES[carrier] + secrets.token_hex(6).upper()
            label_id = f"lbl_{uuid.uuid4().hex[:16]}"
            answer = {
                "carrier": carrier,
                "labelId": label_id,
                "trackingNumber": tracking,
                "labelUrl": f"https://labels.{carrier}.example.com/{label_id}.pdf",
                "status": "created",
            }
            now = time.time()
            db.execute(
                "insert into labels (key, carrier, label_id, tracking_number, label_url, status, parcels,"
                " address, created, updated) values (?, ?, ?, ?, ?, 'created', ?, ?, ?, ?)",
                (
                    key,
                    carrier,
                    label_id,
                    tracking,
                    answer["labelUrl"],
                    parcels,
                    json.dumps(address),
                    now,
                    now,
                ),
            )
            self._effect(db, key, "label", tracking, 0, {"carrier": carrier, "parcels": parcels})
        self._remember(db, key, "label", answer)
        return answer

    def void_label(self, key: str, *, carrier: str) -> dict[str, Any]:
        """Void the label made with ``key`` (once); voiding a key with no label voids the key.

        Returns:
            ``carrier``, ``labelId`` and ``trackingNumber`` (None for a key with no label) and
            ``status`` ``voided``.

        Raises:
            ProviderError: 409 once the carrier has picked the parcel up, 404 when ``key`` is a label
                of another carrier, 503 when the carrier is down.
            ProviderTimeout: The carrier hangs (it voided the label all the same).
        """
        self._check(carrier)
        refused: ProviderError | None = None
        with self._tx() as db:
            answer = self._replay(db, f"void:{key}")
            if answer is None:
                answer, refused = self._new_void(db, key, carrier)
        self._answer(carrier)
        if refused is not None:
            raise refused
        return answer

    def _new_void(
        self, db: sqlite3.Connection, key: str, carrier: str
    ) -> tuple[dict[str, Any], ProviderError | None]:
        row = db.execute(
            "select carrier, label_id, tracking_number, status from labels where key = ?", (key,)
        ).fetchone()
        answer: dict[str, Any] = {
            "carrier": carrier,
            "labelId": None if row is None else row[1],
            "trackingNumber": None if row is None else row[2],
            "status": "voided",
        }
        if row is not None and row[0] != carrier:
            return answer, ProviderError(f"{carrier} has no label {key}", 404)
        if row is not None and row[3] != "created":
            why = f"{carrier} has picked up the parcel {row[2]}: its label can no longer be voided"
            return answer, ProviderError(why, 409)
        now = time.time()
        if row is None:
            db.execute(
                "insert into labels (key, carrier, status, created, updated) values (?, ?, 'voided', ?, ?)",
                (key, carrier, now, now),
            )
        else:
            db.execute("update labels set status = 'voided', updated = ? where key = ?", (now, key))
            self._effect(db, key, "void", row[2], 0, {"carrier": carrier})
        self._remember(db, f"void:{key}", "void", answer)
        return answer, None

    def pick_up(self, key: str) -> dict[str, Any]:
        """The carrier collects the parcel of the label made with ``key`` (its first scan); once.

        Raises:
            ProviderError: 404 when ``key`` has no label, 409 when its label was voided.
        """
        with self._tx() as db:
            row = db.execute("select tracking_number, status from labels where key = ?", (key,)).fetchone()
            if row is None or row[0] is None:
                raise ProviderError(f"no label {key}", 404)
            if row[1] == "voided":
                raise ProviderError(f"label {key} was voided: nothing to pick up", 409)
            if row[1] == "created":
                db.execute(
                    "update labels set status = 'picked_up', updated = ? where key = ?", (time.time(), key)
                )
                self._effect(db, key, "pickup", row[0], 0, {})
        label = self.label(key)
        assert label is not None
        return label

    def label(self, key: str) -> dict[str, Any] | None:
        """The carrier's record of the label made with ``key``, or None (a read: counts no request)."""
        with self._tx() as db:
            row = db.execute(
                "select carrier, label_id, tracking_number, label_url, status, parcels from labels"
                " where key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        names = ("carrier", "labelId", "trackingNumber", "labelUrl", "status", "parcels")
        return dict(zip(names, row, strict=True))

    def _check(self, carrier: str) -> None:
        if carrier not in CARRIERS:
            raise ProviderError(f"no carrier {carrier}: the carriers are {', '.join(CARRIERS)}", 400)
        outage = self._outage(carrier)
        if outage is not None and outage.mode == "down":
            raise ProviderError(f"{carrier} is unavailable", 503)


def carrier_refusal(carrier: str, country: str, zip_code: str) -> str | None:
    """Why ``carrier`` refuses a label to ``country`` and ``zip_code``, or None (the test data decides)."""
    if country in UNSERVED_COUNTRIES:
        return f"{carrier} does not deliver to {country}"
    if zip_code == INVALID_ZIP:
        return f"zip {zip_code} does not exist"
    if carrier == "podium-post" and country not in POST_COUNTRIES:
        return f"podium-post ships within {', '.join(sorted(POST_COUNTRIES))} only, not to {country}"
    if carrier == "podium-post" and zip_code.startswith(REMOTE_ZIP_PREFIX):
        return f"podium-post does not serve zip {zip_code}: remote area"
    return None
