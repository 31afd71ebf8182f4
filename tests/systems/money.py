"""What the simulated card gateway did for a payment id, for the systems' exactly-once assertions."""

from __future__ import annotations

from services.common.providers import PaymentGateway


def money(payment_id: str) -> dict[str, int]:
    """What the gateway did for one payment id: charges, refunds, net cents kept, requests received."""
    gateway = PaymentGateway()
    charges = [e for e in gateway.effects(kind="charge") if e["key"] == payment_id]
    subjects = {c["subject"] for c in charges}
    refunds = [e for e in gateway.effects(kind="refund") if e["subject"] in subjects]
    return {
        "charges": len(charges),
        "refunds": len(refunds),
        "net": sum(c["amountCents"] for c in charges) - sum(r["amountCents"] for r in refunds),
        "requests": gateway.requests(payment_id),
    }
