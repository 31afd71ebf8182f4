"""``PolicyService``: the policy catalogue, and the check that a claim is covered.

| policy | holder (``customerId``) | limit | cover | records provider | for |
|---|---|---|---|---|---|
| ``POL-1001`` | ``cust-alice`` | 50,000 | 2024–2030 | covered, in 1 s | the happy path |
| ``POL-1002`` | ``cust-bob`` | 2,000 | 2024–2030 | covered, in 1 s | an amount above the limit |
| ``POL-1003`` | ``cust-carol`` | 50,000 | 2019–2022 | covered, in 1 s | an expired policy |
| ``POL-2001`` | ``cust-dan`` | 50,000 | 2024–2030 | not covered, in 1 s | records that reject |
| ``POL-3001`` | ``cust-erin`` | 50,000 | 2024–2030 | waits for ``Deliver`` | playing the provider |
| ``POL-4001`` | ``declined-frank`` | 50,000 | 2024–2030 | covered, in 1 s | a declined payout |

Cover runs from 1 January of the first year to 31 December of the last. Any other policy id is
unknown. A claim is valid when the policy exists, the claimant is its holder, the amount is within the
limit, and the incident date is inside the cover period and not after the filing date.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from restate import Context

from podium import Service
from services.insurance.models import PolicyCheck, PolicySummary, PolicyVerdict


class RecordsMode(enum.StrEnum):
    """How the simulated medical-records provider answers for a policy."""

    COVERED = "covered"
    """Answers by itself after ``records.AUTO_DELAY``: the records support the claim."""
    NOT_COVERED = "not_covered"
    """Answers by itself: a pre-existing condition, the claim is not covered."""
    MANUAL = "manual"
    """Never answers by itself: call ``MedicalRecordsService/{claimId}/Deliver``."""


@dataclass(frozen=True)
class Policy:
    id: str
    holder: str
    email: str
    limit: float
    cover_from: dt.date
    cover_to: dt.date
    records: RecordsMode = RecordsMode.COVERED


_CURRENT = (dt.date(2024, 1, 1), dt.date(2030, 12, 31))

POLICIES: dict[str, Policy] = {
    p.id: p
    for p in (
        Policy("POL-1001", "cust-alice", "alice@example.com", 50_000.0, *_CURRENT),
        Policy("POL-1002", "cust-bob", "bob@example.com", 2_000.0, *_CURRENT),
        Policy(
            "POL-1003",
            "cust-carol",
            "carol@example.com",
            50_000.0,
            dt.date(2019, 1, 1),
            dt.date(2022, 12, 31),
        ),
        Policy("POL-2001", "cust-dan", "dan@example.com", 50_000.0, *_CURRENT, RecordsMode.NOT_COVERED),
        Policy("POL-3001", "cust-erin", "erin@example.com", 50_000.0, *_CURRENT, RecordsMode.MANUAL),
        Policy("POL-4001", "declined-frank", "frank@example.com", 50_000.0, *_CURRENT),
    )
}


def records_mode(policy_id: str) -> RecordsMode:
    """How the records provider answers for claims on ``policy_id`` (manual for unknown policies)."""
    policy = POLICIES.get(policy_id)
    return RecordsMode.MANUAL if policy is None else policy.records


def check(req: PolicyCheck) -> PolicyVerdict:
    """Whether the policy covers the claim, as a pure function of the catalogue."""
    policy = POLICIES.get(req.policy_id)
    if policy is None:
        return PolicyVerdict(valid=False, reason=f"policy {req.policy_id} does not exist")
    summary = PolicySummary(
        policy_id=policy.id,
        holder=policy.holder,
        coverage_limit=policy.limit,
        cover_from=policy.cover_from,
        cover_to=policy.cover_to,
    )
    if req.customer_id != policy.holder:
        reason = f"policy {policy.id} does not belong to customer {req.customer_id}"
        return PolicyVerdict(valid=False, reason=reason, policy=summary)

    def invalid(reason: str) -> PolicyVerdict:
        return PolicyVerdict(valid=False, reason=reason, policy=summary, contact_email=policy.email)

    if req.amount > policy.limit:
        return invalid(
            f"amount {req.amount:.2f} exceeds the coverage limit {policy.limit:.2f} of policy {policy.id}"
        )
    if req.incident_date > req.filed_on:
        return invalid(f"incident date {req.incident_date} is after the filing date {req.filed_on}")
    if not policy.cover_from <= req.incident_date <= policy.cover_to:
        return invalid(
            f"incident date {req.incident_date} is outside the cover of policy {policy.id} "
            f"({policy.cover_from} to {policy.cover_to})"
        )
    return PolicyVerdict(valid=True, policy=summary, contact_email=policy.email)


policies = Service("PolicyService")


@policies.handler("Check")
async def check_claim(ctx: Context, req: PolicyCheck) -> PolicyVerdict:
    return check(req)
