"""Bank transfers (seed 000 ex 2) and the money-transfer saga (seed 003 ex 2) on a real engine."""

from __future__ import annotations

import concurrent.futures
import random
from typing import Any

import pytest

from podium.testing import GatewayEnv, PodiumEnv, assert_eventually, new_key
from tests.systems.banking.conftest import account, ledger_balance, open_account

pytestmark = pytest.mark.engine


def transfer(
    env: PodiumEnv, source: str, target: str, amount: float, tid: str | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = env.call(
        f"/TransferOrchestrator/{tid or new_key('tr')}/Transfer",
        {"fromAccount": source, "toAccount": target, "amount": amount},
    )
    return answer


def audit(env: PodiumEnv, subject: str) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = env.call(f"/AuditTrail/{subject}/List")
    return answer


def audit_backlog(env: PodiumEnv) -> int:
    """Audit entries sent but not yet written (each is an ``Append`` invocation)."""
    rows = env.query(
        "SELECT count(*) AS n FROM sys_invocation "
        "WHERE target_service_name = 'AuditTrail' AND status <> 'completed'"
    )
    return int(rows[0]["n"])


def test_a_transfer_moves_money_and_is_audited(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 1000), open_account(podium_env, 0)
    tid = new_key("tr")
    result = transfer(podium_env, a, b, 250.5, tid)
    assert result["status"] == "completed"
    assert (account(podium_env, a)["balance"], account(podium_env, b)["balance"]) == (749.5, 250.5)
    assert [e["kind"] for e in account(podium_env, a)["ledger"]] == ["open", "debit"]
    assert account(podium_env, a)["holds"] == {}

    trail = assert_eventually(
        lambda: (t := audit(podium_env, f"transfer:{tid}")) and t[-1]["action"] == "transfer" and t
    )
    steps = [(e["actor"], e["action"], e["outcome"]) for e in trail]
    assert steps[:3] == [
        ("internal", "requested", "accepted"),  # through the ingress: no verified subject
        ("AccountService", "validate-funds", "ok"),
        ("FraudService", "check", "allowed"),
    ]
    assert ("ComplianceService", "check", "allowed") in steps
    assert steps[-3:] == [
        ("AccountService", "credit", "ok"),
        ("NotificationService", "confirmation", "sent"),
        ("TransferOrchestrator", "transfer", "completed"),
    ]
    assert all(e["at"] > 0 and e["transferId"] == tid for e in trail)
    per_account = assert_eventually(
        lambda: (t := audit(podium_env, f"account:{a}")) and len(t) == len(trail) and t
    )
    assert per_account == trail


@pytest.mark.parametrize(
    ("amount", "target_prefix", "reason"),
    [
        (20_000, "acct", "blocked by FraudService: amount 20000 above the 10000.00 limit"),
        (10, "blocked", "blocked by FraudService: account blocked-"),
        (10, "sanctioned", "blocked by ComplianceService: sanctioned-"),
    ],
)
def test_fraud_and_compliance_block_with_a_reason(
    podium_env: PodiumEnv, amount: float, target_prefix: str, reason: str
) -> None:
    a, b = open_account(podium_env, 50_000), open_account(podium_env, 0, target_prefix)
    result = transfer(podium_env, a, b, amount)
    assert result["status"] == "blocked"
    assert reason in result["reason"]
    assert account(podium_env, a)["balance"] == 50_000
    assert account(podium_env, a)["holds"] == {}
    assert account(podium_env, b)["balance"] == 0


def test_the_daily_limit_blocks_and_a_blocked_transfer_does_not_use_it(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 80_000), open_account(podium_env, 0)
    for _ in range(5):
        assert transfer(podium_env, a, b, 9_000)["status"] == "completed"
    over = transfer(podium_env, a, b, 9_000)
    assert over["status"] == "blocked"
    assert "daily limit of 50000.00 exceeded" in over["reason"]
    # 45,000 used; a fraud-blocked 20,000 reserves nothing, so 5,000 still fits today.
    assert transfer(podium_env, a, b, 20_000)["status"] == "blocked"
    assert transfer(podium_env, a, b, 5_000)["status"] == "completed"


def test_insufficient_funds_fail_cleanly(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 100), open_account(podium_env, 0)
    result = transfer(podium_env, a, b, 100.01)
    assert result["status"] == "failed"
    assert result["reason"] == "insufficient funds: 100.00 available, 100.01 needed"
    assert account(podium_env, a)["ledger"][-1]["kind"] == "open"


def test_a_refused_credit_reverses_the_debit(podium_env: PodiumEnv) -> None:
    a, frozen = open_account(podium_env, 500), open_account(podium_env, 0, "frozen")
    tid = new_key("tr")
    result = transfer(podium_env, a, frozen, 200, tid)
    assert result["status"] == "failed"
    assert "is frozen" in result["reason"]
    source = account(podium_env, a)
    assert source["balance"] == 500
    assert [(e["kind"], e["txId"]) for e in source["ledger"]] == [
        ("open", "open"),
        ("debit", tid),
        ("credit", f"{tid}:reversal"),
    ]
    assert source["holds"] == {}
    saga = podium_env.call(f"/TransferOrchestrator/{tid}/Get")["saga"]
    assert [(s["name"], s["status"]) for s in saga["steps"]] == [
        ("checks", "compensated"),
        ("hold-funds", "compensated"),
        ("debit", "compensated"),
        ("credit", "failed"),
    ]


def test_the_same_transfer_twice_moves_money_once(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 300), open_account(podium_env, 0)
    tid = new_key("tr")
    assert transfer(podium_env, a, b, 100, tid) == transfer(podium_env, a, b, 100, tid)
    assert account(podium_env, b)["balance"] == 100
    response = podium_env.post(
        f"/TransferOrchestrator/{tid}/Transfer", {"fromAccount": a, "toAccount": b, "amount": 99}
    )
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fromAccount": "x", "toAccount": "x", "amount": 5}, "fromAccount and toAccount must differ"),
        ({"fromAccount": "x", "toAccount": "y", "amount": 0}, "amount: Input should be greater than 0"),
        ({"fromAccount": "x", "toAccount": "y", "amount": 1.005}, "amount: at most two decimals"),
        ({"fromAccount": "x", "amount": 5}, "toAccount: field required"),
        ({"fromAccount": "x", "toAccount": "y", "amount": "lots"}, "amount: Input should be a valid decimal"),
    ],
)
def test_bad_transfers_are_400(podium_env: PodiumEnv, body: dict[str, Any], message: str) -> None:
    response = podium_env.post(f"/TransferOrchestrator/{new_key('tr')}/Transfer", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_the_audit_trail_names_the_verified_caller_not_the_body(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 100), open_account(podium_env, 0)
    tid = new_key("tr")
    # The gateway sets x-podium-subject from the token; the body's actor is the client's own claim.
    response = podium_env.post(
        f"/TransferOrchestrator/{tid}/Transfer",
        {"fromAccount": a, "toAccount": b, "amount": 10, "actor": "mallory"},
        headers={"x-podium-subject": "alice"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    trail = assert_eventually(
        lambda: (t := audit(podium_env, f"transfer:{tid}")) and t[-1]["action"] == "transfer" and t
    )
    assert (trail[0]["actor"], trail[0]["action"]) == ("alice", "requested")
    assert "mallory" not in str(trail)
    assert assert_eventually(lambda: audit(podium_env, f"account:{a}"))[0]["actor"] == "alice"

    mt = new_key("mt")
    body = {"transferId": mt, "fromAccount": a, "toAccount": b, "amount": 5, "actor": "mallory"}
    answer = podium_env.post(f"/MoneyTransferSaga/{mt}/Run", body, headers={"x-podium-subject": "bob"})
    assert answer.json()["status"] == "completed", answer.text
    saga_trail = assert_eventually(
        lambda: (t := audit(podium_env, f"transfer:{mt}")) and t[-1]["outcome"] == "recorded" and t
    )
    assert (saga_trail[0]["actor"], saga_trail[0]["action"]) == ("bob", "requested")
    assert "mallory" not in str(saga_trail)


def test_through_the_gateway_the_token_is_the_actor_and_money_cannot_be_minted(
    podium_env: PodiumEnv, podium_gateway: GatewayEnv
) -> None:
    """The incident that started the security work, replayed through the public door."""
    a, b = open_account(podium_env, 100), open_account(podium_env, 0)
    client = podium_gateway.token("banking:read", "banking:write", subject="alice")
    minted = podium_gateway.post(
        f"/AccountService/{b}/Credit", {"txId": "gift", "amount": 1_000_000}, token=client
    )
    assert minted.status_code == 404  # private: not even its existence is told
    opened = podium_gateway.post(
        f"/AccountService/{new_key('acct')}/Open", {"owner": "x", "initialDeposit": 10**6}, token=client
    )
    assert opened.status_code == 403  # opening an account (the only way money enters) is a teller's
    assert opened.json()["requiredScope"] == "banking:operator"

    tid = new_key("tr")
    body = {"fromAccount": a, "toAccount": b, "amount": 10, "actor": "mallory"}
    done = podium_gateway.post(f"/TransferOrchestrator/{tid}/Transfer", body, token=client)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    trail = assert_eventually(
        lambda: (t := audit(podium_env, f"transfer:{tid}")) and t[-1]["action"] == "transfer" and t
    )
    assert (trail[0]["actor"], trail[0]["action"]) == ("alice", "requested")
    assert "mallory" not in str(trail)
    assert (account(podium_env, a)["balance"], account(podium_env, b)["balance"]) == (90, 10)


MOVEMENTS = [
    pytest.param("Credit", {"txId": "gift", "amount": 1_000_000}, id="credit"),
    pytest.param("Credit", {"txId": "gift", "amount": 50, "reverses": "tx-0"}, id="reversal"),
    pytest.param("Debit", {"txId": "theft", "amount": 50}, id="debit"),
    pytest.param("Hold", {"holdId": "squat", "amount": 50}, id="hold"),
    pytest.param("ReleaseHold", {"holdId": "h"}, id="release"),
]


@pytest.mark.parametrize(("handler", "body"), MOVEMENTS)
def test_account_movements_are_refused_at_the_ingress_and_move_nothing(
    podium_env: PodiumEnv, handler: str, body: dict[str, Any]
) -> None:
    acct = open_account(podium_env, 100)
    before = account(podium_env, acct)
    podium_env.assert_private(f"/AccountService/{acct}/{handler}", body)
    assert account(podium_env, acct) == before
    started = podium_env.query(f"SELECT target FROM sys_invocation WHERE target LIKE '%/{acct}/{handler}'")
    assert started == []


def test_a_credit_through_the_ingress_is_refused_but_a_handler_can_still_credit(
    podium_env: PodiumEnv,
) -> None:
    # The incident: an anonymous Credit of 1,000,000.00 with a made-up txId to a fresh account.
    fresh = open_account(podium_env, 0)
    gift = {"txId": new_key("tx"), "amount": 1_000_000}
    podium_env.assert_private(f"/AccountService/{fresh}/Credit", gift)
    assert account(podium_env, fresh)["balance"] == 0
    assert account(podium_env, fresh)["ledger"] == []
    # From inside the engine (as a transfer's step) the same handler works: only the door is closed.
    assert podium_env.call_private(f"/AccountService/{fresh}/Credit", gift)["balance"] == 1_000_000


def test_unknown_account_fails_cleanly(podium_env: PodiumEnv) -> None:
    a = open_account(podium_env, 10)
    result = transfer(podium_env, a, "acct-nobody", 1)
    assert (result["status"], result["reason"]) == ("failed", "no account acct-nobody")


def test_200_concurrent_transfers_keep_the_total_and_every_ledger_explains_its_balance(
    podium_env: PodiumEnv,
) -> None:
    accounts = [open_account(podium_env, 1_000, email=False) for _ in range(7)]
    accounts += [open_account(podium_env, 1_000, "frozen", email=False) for _ in range(2)]
    accounts += [open_account(podium_env, 1_000, "blocked", email=False)]
    before = sum(round(account(podium_env, a)["balance"] * 100) for a in accounts)
    rng = random.Random(2024)
    plans = []
    for _ in range(200):
        source, target = rng.sample(accounts, 2)
        amount = rng.choice([5, 12.5, 40, 99.99, 250, 15_000])  # 15,000: blocked by fraud
        plans.append((source, target, amount))

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda p: transfer(podium_env, *p), plans))

    statuses = {r["status"] for r in results}
    assert statuses == {"completed", "blocked", "failed"}
    after_accounts = [account(podium_env, a) for a in accounts]
    assert sum(round(a["balance"] * 100) for a in after_accounts) == before
    for acct in after_accounts:
        assert ledger_balance(acct) == round(acct["balance"] * 100), acct["id"]
        assert acct["holds"] == {}
        assert acct["balance"] >= 0
    moved = sum(
        round(amount * 100)
        for (s, t, amount), r in zip(plans, results, strict=True)
        if r["status"] == "completed"
    )
    assert moved > 0

    # Every audit entry of a transfer also reaches each account it touched, exactly once: when the
    # engine has delivered them all, an account's trail is its transfers' entries, no more, no less.
    assert_eventually(lambda: audit_backlog(podium_env) == 0, timeout=90, message="the audit trail")
    trails = [audit(podium_env, f"transfer:{r['transferId']}") for r in results]
    for account_id in accounts:
        expected = [
            e for (s, t, _), trail in zip(plans, trails, strict=True) if account_id in (s, t) for e in trail
        ]
        written = audit(podium_env, f"account:{account_id}")
        assert sorted(map(str, written)) == sorted(map(str, expected)), account_id


# -- MoneyTransferSaga (seed 003 ex 2) -------------------------------------------------------------------


def run_saga(
    env: PodiumEnv, source: str, target: str, amount: float, tid: str | None = None
) -> dict[str, Any]:
    tid = tid or new_key("mt")
    answer: dict[str, Any] = env.call(
        f"/MoneyTransferSaga/{tid}/Run",
        {"transferId": tid, "fromAccount": source, "toAccount": target, "amount": amount},
    )
    return answer


def test_money_transfer_saga_debits_credits_and_records(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 100), open_account(podium_env, 0)
    tid = new_key("mt")
    result = run_saga(podium_env, a, b, 60, tid)
    assert result == {
        "status": "completed",
        "debitTxId": f"{tid}:debit",
        "creditTxId": f"{tid}:credit",
        "reason": None,
    }
    assert (account(podium_env, a)["balance"], account(podium_env, b)["balance"]) == (40, 60)
    assert assert_eventually(
        lambda: any(e["outcome"] == "recorded" for e in audit(podium_env, f"transfer:{tid}"))
    )
    assert run_saga(podium_env, a, b, 60, tid) == result  # idempotent by transfer id
    assert account(podium_env, b)["balance"] == 60


def test_money_transfer_saga_insufficient_funds_is_a_clean_failure(podium_env: PodiumEnv) -> None:
    a, b = open_account(podium_env, 10), open_account(podium_env, 0)
    result = run_saga(podium_env, a, b, 60)
    assert result["status"] == "failed"
    assert "insufficient funds" in result["reason"]
    assert (result["debitTxId"], result["creditTxId"]) == (None, None)
    assert account(podium_env, a)["balance"] == 10


def test_money_transfer_saga_reverses_the_debit_when_the_credit_fails(podium_env: PodiumEnv) -> None:
    a, frozen = open_account(podium_env, 100), open_account(podium_env, 0, "frozen")
    result = run_saga(podium_env, a, frozen, 30)
    assert result["status"] == "failed"
    assert account(podium_env, a)["balance"] == 100
    assert [e["kind"] for e in account(podium_env, a)["ledger"]] == ["open", "debit", "credit"]


def test_money_transfer_saga_rejects_a_mismatched_id(podium_env: PodiumEnv) -> None:
    response = podium_env.post(
        "/MoneyTransferSaga/mt-1/Run",
        {"transferId": "mt-2", "fromAccount": "a", "toAccount": "b", "amount": 1},
    )
    assert response.status_code == 400
    assert "does not match the id in the URL" in response.json()["message"]


def test_money_transfer_saga_with_an_unknown_account_fails_cleanly(podium_env: PodiumEnv) -> None:
    b = open_account(podium_env, 0)
    result = run_saga(podium_env, "acct-nobody", b, 5)
    assert (result["status"], result["reason"]) == ("failed", "no account acct-nobody")
