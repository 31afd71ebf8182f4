"""The insurance system's JSON (camelCase on the wire)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from podium import Decision, Model, Status
from services.common.money import Amount

CLAIM_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""Claim ids name the payment (``{claimId}-payment``) and the records request: letters, digits, ``._-``."""
MAX_CLAIM = 1_000_000
"""The largest amount one claim may ask for (policies cover less)."""


class Claim(Model):
    """The body of ``Run`` (the seed's ``Claim``).

    The deadlines of the records and of the adjuster are the deployment's settings
    (:mod:`services.insurance.settings`), not the claimant's: fields such as ``approvalTimeoutMs`` are
    ignored.
    """

    claim_id: str = Field(pattern=CLAIM_ID)
    """Must equal the workflow key in the URL."""
    policy_id: str = Field(min_length=1, max_length=50)
    customer_id: str = Field(min_length=1, max_length=200)
    amount: Annotated[Amount, Field(le=MAX_CLAIM)]
    """What the customer claims, in the policy's currency: the payout's rule (positive, two decimals)."""
    description: str = Field(min_length=1, max_length=2000)
    incident_date: dt.date


# -- the policy catalogue --------------------------------------------------------------------------------


class PolicyCheck(Model):
    policy_id: str
    customer_id: str
    amount: float
    incident_date: dt.date
    filed_on: dt.date
    """The day the claim was filed (the engine's clock): incidents after it are refused."""


class PolicySummary(Model):
    policy_id: str
    holder: str
    coverage_limit: float
    cover_from: dt.date
    cover_to: dt.date


class PolicyVerdict(Model):
    valid: bool
    reason: str | None = None
    """Why the claim is invalid."""
    policy: PolicySummary | None = None
    contact_email: str | None = None
    """Where the decision letter goes: the holder's address, only when the claimant is the holder."""


# -- the medical records provider ------------------------------------------------------------------------


class MedicalRecords(Model):
    """What the records provider sends back (the body of the ``Deliver`` webhook)."""

    covered: bool
    """Whether the records support the claim (false: e.g. a pre-existing condition)."""
    findings: str = Field(default="", max_length=2000)
    provider: str = Field(default="manual", min_length=1, max_length=100)
    """Who sent them: the verified subject of the provider's token when they came through the gateway
    (a ``provider`` in the body is then ignored), ``auto`` for the simulated provider."""


class RecordsRequest(Model):
    """What ``ClaimSaga`` files with the provider; the object key is the claim id."""

    policy_id: str
    customer_id: str
    incident_date: dt.date
    description: str
    callback_id: str = Field(min_length=1)
    """The awakeable the saga waits on; ``Deliver`` resolves it."""


class RecordsFile(Model):
    """The provider's view of one claim's request."""

    claim_id: str
    policy_id: str
    status: Literal["requested", "delivered", "withdrawn"]
    callback_id: str
    requested_at: str
    delivered_at: str | None = None
    records: MedicalRecords | None = None


# -- the claim -------------------------------------------------------------------------------------------

ClaimOutcome = Literal[
    "paid", "rejected_invalid", "rejected", "timeout", "failed", "payment_failed", "cancelled"
]
Stage = Literal["validation", "records", "approval", "payment"]


class ClaimResult(Model):
    """The answer of ``Run`` (the seed's ``ClaimResult``), also in ``GetStatus`` once closed."""

    claim_id: str
    status: ClaimOutcome
    reason: str | None = None
    """Why it did not end ``paid``; never a stack trace."""
    stage: Stage
    """The stage the claim ended at."""
    amount: float
    payment_id: str | None = None
    """Set once a payout was attempted (``{claimId}-payment`` in ``PaymentService``)."""
    records: MedicalRecords | None = None
    approval: Decision | None = None
    needs_manual_review: bool = False
    """True when money may have moved or must move and a person has to look (``payment_failed``)."""
    letter_sent: bool = False
    """Whether the decision letter reached the policyholder."""
    closed_at: str


class ClaimStatus(Status):
    """``GetStatus``: phase, progress, history, and the result once the claim is closed."""

    result: ClaimResult | None = None
