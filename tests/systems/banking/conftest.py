from __future__ import annotations

from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: pytest loads this conftest before the podium plugin has put the
    # engine's request-identity key in the environment, and the app reads it when it is built.
    from tests.systems.apps import banking

    return banking


def open_account(env: PodiumEnv, balance: float, prefix: str = "acct", email: bool = True) -> str:
    account = new_key(prefix)
    body: dict[str, Any] = {"owner": f"owner of {account}", "initialDeposit": balance}
    if email:
        body["email"] = f"{account}@example.com"
    env.call(f"/AccountService/{account}/Open", body)
    return account


def account(env: PodiumEnv, account_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(f"/AccountService/{account_id}/Get")
    return answer


def ledger_balance(acct: dict[str, Any]) -> int:
    """Cents the ledger says the account holds."""
    total = 0
    for entry in acct["ledger"]:
        amount = round(entry["amount"] * 100)
        total += -amount if entry["kind"] == "debit" else amount
    return total
