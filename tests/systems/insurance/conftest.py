from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from podium import IngressClient
from podium.testing import PodiumEnv, assert_eventually, new_key
from services.common.providers import MailProvider, PaymentGateway
from services.insurance import settings
from services.insurance.settings import InsuranceSettings

HOLDERS = {
    "POL-1001": "cust-alice",
    "POL-1002": "cust-bob",
    "POL-1003": "cust-carol",
    "POL-2001": "cust-dan",
    "POL-3001": "cust-erin",
    "POL-4001": "declined-frank",
}


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: pytest loads this conftest before the harness has made the engine's
    # request-identity key, and an app built without it refuses every request.
    from tests.systems.insurance.apps import app

    return app


def configure(monkeypatch: pytest.MonkeyPatch, **deadlines: timedelta) -> None:
    """Run the in-process deployment with these deadlines (the rest stay the defaults) for one test."""
    monkeypatch.setattr(settings, "SETTINGS", InsuranceSettings(**deadlines))


def claim(policy: str = "POL-1001", **overrides: Any) -> dict[str, Any]:
    """A claim on ``policy`` by its holder, under a fresh claim id (the key of every counter)."""
    body: dict[str, Any] = {
        "claimId": new_key("claim"),
        "policyId": policy,
        "customerId": HOLDERS.get(policy, "cust-nobody"),
        "amount": 1250.0,
        "description": "broken wrist, emergency room",
        "incidentDate": "2025-03-14",
    }
    body.update(overrides)
    return body


def file_claim(env: PodiumEnv, body: dict[str, Any]) -> str:
    """Start ``Run`` without waiting for it; returns the invocation id."""
    return env.send(f"/ClaimSaga/{body['claimId']}/Run", body)


def status(env: PodiumEnv, claim_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(f"/ClaimSaga/{claim_id}/GetStatus")
    return answer


def wait_phase(env: PodiumEnv, claim_id: str, phase: str, timeout: float = 20) -> dict[str, Any]:
    return assert_eventually(
        lambda: (s := status(env, claim_id))["phase"] == phase and s,
        timeout=timeout,
        message=f"claim {claim_id} to reach {phase}",
    )


def records_file(env: PodiumEnv, claim_id: str) -> dict[str, Any] | None:
    """The records request of the claim (a private handler, read from inside the engine)."""
    response = env.post_private(f"/MedicalRecordsService/{claim_id}/Get")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def filed(env: PodiumEnv, claim_id: str) -> dict[str, Any]:
    """The records request of the claim, once the saga has filed it."""

    def check() -> dict[str, Any]:
        found = records_file(env, claim_id)
        assert found is not None, f"no records request for {claim_id} yet"
        return found

    return assert_eventually(check, message=f"the records request of {claim_id}")


def outcome(env: PodiumEnv, claim_id: str) -> dict[str, Any]:
    """The run's result, waiting for it (``GET /restate/workflow/ClaimSaga/{id}/attach``)."""
    with IngressClient(env.ingress_url, timeout=90) as ingress:
        answer: dict[str, Any] = ingress.workflow_attach("ClaimSaga", claim_id)
    return answer


def payouts(claim_id: str) -> tuple[list[dict[str, Any]], int]:
    """Money the gateway moved for the claim's payment id, and how many requests it received for it."""
    gateway = PaymentGateway()
    key = f"{claim_id}-payment"
    return [e for e in gateway.effects(kind="payout") if e["key"] == key], gateway.requests(key)


def letters(claim_id: str) -> list[dict[str, Any]]:
    """Decision letters delivered for the claim."""
    return [e for e in MailProvider().effects(kind="email") if e["key"] == f"{claim_id}-letter"]
