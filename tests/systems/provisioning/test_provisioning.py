"""Tenant provisioning (seed 000 ex 5) against a real engine: real resources on disk, all or nothing."""

from __future__ import annotations

import json
import stat
from typing import Any

import httpx
import pytest

from podium.testing import PodiumEnv, assert_eventually, engine_holds, new_key
from services.common.providers import MailProvider
from services.provisioning import stores
from tests.systems.provisioning.conftest import (
    EVERYTHING,
    NOTHING,
    get_status,
    on_disk,
    provision,
    resource_counts,
    rows,
    secret_of,
    tenant_request,
    tenant_rows,
)

pytestmark = pytest.mark.engine

STEPS = ["create-database", "create-bucket", "create-auth-realm", "create-billing-account"]


def test_success_creates_every_resource_on_disk(podium_env: PodiumEnv) -> None:
    tenant_id, body = new_key("tenant"), tenant_request()
    tenant = provision(podium_env, tenant_id, body)

    assert tenant["status"] == "provisioned"
    assert tenant["tenantId"] == tenant_id
    assert tenant["welcomeEmail"] == "delivered"
    assert tenant["reason"] is None
    assert tenant["createdAt"].endswith("Z")

    # The database: a SQLite file with the schema, the tenant and its owner.
    database = stores.database_path(tenant_id)
    assert database.is_file()
    assert tenant["database"] == {
        "tenantId": tenant_id,
        "location": str(database),
        "schemaVersion": 1,
        "tables": stores.TABLES,
    }
    tables = rows(
        database, "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'"
    )
    assert sorted(t[0] for t in tables) == stores.TABLES
    assert rows(database, "select id, name, plan from tenant") == [(tenant_id, "Acme Corp", "pro")]
    assert rows(database, "select email, role from users") == [(body["adminEmail"], "owner")]
    assert tenant_rows(tenant_id) == {
        "audit_log": 1,
        "projects": 0,
        "schema_migrations": 1,
        "tenant": 1,
        "users": 1,
    }

    # The bucket: a folder with its configuration.
    bucket = stores.bucket_path(tenant_id)
    assert (bucket / "objects").is_dir()
    config = json.loads((bucket / "bucket.json").read_text())
    assert (config["bucket"], config["plan"], config["quotaGb"]) == (f"tenant-{tenant_id}", "pro", 100)
    assert tenant["storage"]["location"] == str(bucket)
    assert tenant["storage"]["quotaGb"] == 100

    # The realm: credentials stored hashed, the secret in its owner-only file.
    realm = rows(
        stores.auth_path(),
        "select realm, client_id, admin_email, secret_hash from realms where tenant_id = ?",
        tenant_id,
    )
    assert len(realm) == 1
    assert realm[0][:3] == (f"tenant-{tenant_id}", tenant["auth"]["clientId"], body["adminEmail"])
    assert realm[0][3].startswith("$argon2id$")
    assert set(tenant["auth"]) == {
        "tenantId",
        "realm",
        "clientId",
        "adminEmail",
        "secretVersion",
        "secretFile",
    }
    assert tenant["auth"]["secretFile"] == str(stores.secret_file(tenant_id))
    issued = secret_of(tenant_id)
    assert (issued["clientId"], issued["secretVersion"]) == (tenant["auth"]["clientId"], 1)
    assert stores.verify_secret(tenant_id, issued["clientId"], issued["clientSecret"]) is True

    # The billing account.
    account = rows(
        stores.billing_path(),
        "select account_id, plan, monthly_price_cents, status from accounts where tenant_id = ?",
        tenant_id,
    )
    assert account == [(tenant["billing"]["accountId"], "pro", 9900, "active")]
    assert tenant["billing"]["monthlyPrice"] == 99.0

    outbox = MailProvider().outbox(body["adminEmail"])
    assert len(outbox) == 1
    assert tenant_id in outbox[0]["subject"]
    assert f"tenant-{tenant_id}" in outbox[0]["body"]
    assert resource_counts(tenant_id) == {"databases": 1, "buckets": 1, "realms": 1, "billingAccounts": 1}


def test_status_has_phase_progress_steps_and_the_saga_log(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    tenant = provision(podium_env, tenant_id, tenant_request(plan="starter"))
    status = get_status(podium_env, tenant_id)

    assert status["tenantId"] == tenant_id
    assert status["phase"] == "completed"
    assert status["progress"] == 1.0
    assert status["isComplete"] is True
    assert status["error"] is None
    assert status["completedSteps"] == [*STEPS, "send-welcome-email"]
    assert [h["phase"] for h in status["history"]] == [
        "database",
        "storage",
        "auth",
        "billing",
        "welcome-email",
        "completed",
    ]
    assert status["metadata"] == {"tenantId": tenant_id, "plan": "starter", "welcomeEmail": "delivered"}
    assert status["result"] == tenant
    assert status["saga"]["status"] == "completed"
    assert [s["name"] for s in status["saga"]["steps"]] == STEPS
    assert {s["status"] for s in status["saga"]["steps"]} == {"completed"}


def test_each_resource_service_reads_its_resource_back(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    tenant = provision(podium_env, tenant_id, tenant_request())
    assert podium_env.call_private(f"/DatabaseService/{tenant_id}/Get") == tenant["database"]
    assert podium_env.call_private(f"/StorageService/{tenant_id}/Get") == tenant["storage"]
    assert podium_env.call_private(f"/AuthService/{tenant_id}/Get") == tenant["auth"]
    assert podium_env.call_private(f"/BillingService/{tenant_id}/Get") == tenant["billing"]


def test_status_of_an_unknown_tenant_is_404(podium_env: PodiumEnv) -> None:
    response = podium_env.post(f"/ProvisioningOrchestrator/{new_key('tenant')}/GetStatus")
    assert response.status_code == 404
    assert "no provisioning of tenant" in response.json()["message"]


FAILURES = [
    pytest.param("-nodb", "pro", "create-database", "no capacity", [], id="database"),
    pytest.param("-nostorage", "pro", "create-bucket", "storage quota exhausted", ["database"], id="storage"),
    pytest.param(
        "-noauth",
        "pro",
        "create-auth-realm",
        "identity provider refused",
        ["database", "bucket"],
        id="auth",
    ),
    pytest.param(
        "",
        "enterprise-invalid",
        "create-billing-account",
        "billing rejected plan 'enterprise-invalid'",
        ["database", "bucket", "realm"],
        id="billing",
    ),
]


@pytest.mark.parametrize(("suffix", "plan", "failed_step", "cause", "created_before"), FAILURES)
def test_a_failing_step_removes_everything_created_before_it(
    podium_env: PodiumEnv, suffix: str, plan: str, failed_step: str, cause: str, created_before: list[str]
) -> None:
    tenant_id, body = new_key("tenant") + suffix, tenant_request(plan=plan)
    tenant = provision(podium_env, tenant_id, body)

    assert tenant["status"] == "failed"
    assert cause in tenant["reason"]
    assert (tenant["database"], tenant["storage"], tenant["auth"], tenant["billing"]) == (None,) * 4
    assert tenant["welcomeEmail"] is None
    assert on_disk(tenant_id) == NOTHING

    # Each earlier resource really existed, and was deleted (in reverse order); nothing after was tried.
    failed_resource = {
        "create-database": "database",
        "create-bucket": "bucket",
        "create-auth-realm": "realm",
        "create-billing-account": "billing",
    }[failed_step]
    undone = [failed_resource, *reversed(created_before)]
    expected = [f"{r} create created" for r in created_before] + [f"{failed_resource} create failed"]
    expected += [f"{r} delete {'deleted' if r in created_before else 'absent'}" for r in undone]
    if failed_resource == "bucket":  # the folder was made before the quota was refused: it is removed
        expected[-2] = "bucket delete deleted"
    assert stores.operations(tenant_id) == expected
    assert MailProvider().outbox(body["adminEmail"]) == []

    status = get_status(podium_env, tenant_id)
    assert status["phase"] == "failed"
    assert status["isComplete"] is True
    assert status["error"] == tenant["reason"]
    assert cause in status["error"]
    assert status["metadata"]["failedStep"] == failed_step
    assert status["completedSteps"] == STEPS[: STEPS.index(failed_step)]
    saga = status["saga"]
    assert saga["status"] == "compensated"
    assert saga["failedStep"] == failed_step
    statuses = {s["name"]: s["status"] for s in saga["steps"]}
    assert statuses == {name: "compensated" for name in STEPS[: STEPS.index(failed_step) + 1]}
    assert status["result"] == tenant


def test_a_bounced_welcome_email_keeps_the_tenant(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    body = tenant_request(adminEmail=f"{new_key('admin')}@bounce.example.com")
    tenant = provision(podium_env, tenant_id, body)

    assert tenant["status"] == "provisioned"
    assert tenant["welcomeEmail"] == "bounced"
    assert on_disk(tenant_id) == EVERYTHING
    assert MailProvider().outbox(body["adminEmail"]) == []
    status = get_status(podium_env, tenant_id)
    assert status["phase"] == "completed"
    assert status["metadata"]["welcomeEmail"] == "bounced"


def test_provisioning_the_same_tenant_twice_is_harmless(podium_env: PodiumEnv) -> None:
    tenant_id, body = new_key("tenant"), tenant_request()
    first = podium_env.post(f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant", body)
    second = podium_env.post(f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant", body)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert resource_counts(tenant_id) == {"databases": 1, "buckets": 1, "realms": 1, "billingAccounts": 1}
    assert tenant_rows(tenant_id)["audit_log"] == 1
    # The second request never reached a provider: each was asked once.
    assert stores.operations(tenant_id) == [
        "database create created",
        "bucket create created",
        "realm create created",
        "billing create created",
    ]
    assert len(MailProvider().outbox(body["adminEmail"])) == 1


def test_a_different_request_for_the_same_tenant_is_refused(podium_env: PodiumEnv) -> None:
    tenant_id, body = new_key("tenant"), tenant_request()
    provision(podium_env, tenant_id, body)
    response = podium_env.post(
        f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant", {**body, "plan": "enterprise"}
    )
    assert response.status_code == 409
    assert "different request" in response.json()["message"]
    assert rows(stores.billing_path(), "select plan from accounts where tenant_id = ?", tenant_id) == [
        ("pro",)
    ]


def test_a_failed_provisioning_repeated_returns_the_same_failure(podium_env: PodiumEnv) -> None:
    tenant_id, body = new_key("tenant") + "-noauth", tenant_request()
    first = provision(podium_env, tenant_id, body)
    operations = stores.operations(tenant_id)
    second = provision(podium_env, tenant_id, body)
    assert second == first
    assert stores.operations(tenant_id) == operations  # nothing was tried again
    assert on_disk(tenant_id) == NOTHING


def test_status_answers_while_provisioning_runs(podium_env: PodiumEnv) -> None:
    # A slow- tenant spends 2 s in each create step.
    tenant_id = new_key("slow")
    podium_env.send(f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant", tenant_request())

    def in_storage() -> dict[str, Any] | None:
        response = podium_env.post(f"/ProvisioningOrchestrator/{tenant_id}/GetStatus")
        if response.status_code != 200:
            return None
        status: dict[str, Any] = response.json()
        return status if status["phase"] == "storage" else None

    running = assert_eventually(in_storage, timeout=20, message="the storage phase")
    assert running is not None
    assert running["isComplete"] is False
    assert running["progress"] == 0.2
    assert running["currentStep"] == "create-bucket"
    assert running["completedSteps"] == ["create-database"]
    assert running["result"] is None
    assert [s["name"] for s in running["saga"]["steps"]] == ["create-database", "create-bucket"]
    assert running["saga"]["steps"][1]["status"] == "registered"  # its undo is recorded before it runs
    done = assert_eventually(
        lambda: (s := get_status(podium_env, tenant_id))["isComplete"] and s, timeout=30, message="the end"
    )
    assert done["phase"] == "completed"
    assert on_disk(tenant_id) == EVERYTHING


BAD_REQUESTS = [
    pytest.param("tenant-ok", b"{not json", "request body is not valid JSON", id="malformed-json"),
    pytest.param(
        "tenant-ok", {"adminEmail": "a@b.example.com", "plan": "pro"}, "name: field required", id="no-name"
    ),
    pytest.param("tenant-ok", {"name": "Acme", "plan": "pro"}, "adminEmail: field required", id="no-email"),
    pytest.param(
        "tenant-ok", {"name": "Acme", "adminEmail": "a@b.example.com"}, "plan: field required", id="no-plan"
    ),
    pytest.param(
        "tenant-ok",
        {"name": "Acme", "adminEmail": "a@b.example.com", "plan": "gold"},
        "plan: Input should be 'free', 'starter', 'pro', 'enterprise' or 'enterprise-invalid'",
        id="unknown-plan",
    ),
    pytest.param(
        "tenant-ok",
        {"name": "Acme", "adminEmail": "not-an-email", "plan": "pro"},
        "adminEmail: String should match pattern",
        id="bad-email",
    ),
    pytest.param(
        "tenant-ok",
        {"name": "", "adminEmail": "a@b.example.com", "plan": "pro"},
        "name: String should have at least 1 character",
        id="empty-name",
    ),
    pytest.param(
        "Bad_Tenant",
        {"name": "Acme", "adminEmail": "a@b.example.com", "plan": "pro"},
        "tenantId (the key): 'Bad_Tenant' must be 3 to 63 lower-case letters",
        id="bad-tenant-id",
    ),
    pytest.param(
        "ab",
        {"name": "Acme", "adminEmail": "a@b.example.com", "plan": "pro"},
        "tenantId (the key): 'ab' must be",
        id="short-tenant-id",
    ),
]


@pytest.mark.parametrize(("key", "body", "message"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(
    podium_env: PodiumEnv, key: str, body: Any, message: str
) -> None:
    tenant_id = key.replace("tenant-ok", new_key("tenant"))
    path = f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant"
    if isinstance(body, bytes):
        response = podium_env.client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = podium_env.post(path, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert podium_env.post(f"/ProvisioningOrchestrator/{tenant_id}/GetStatus").status_code == 404
    if tenant_id != key:  # a valid id: nothing on disk either, and a corrected request can still use it
        assert on_disk(tenant_id) == NOTHING
        assert stores.operations(tenant_id) == []
        assert provision(podium_env, tenant_id, tenant_request())["status"] == "provisioned"


def test_creates_and_deletes_are_idempotent(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    email = f"{new_key('admin')}@acme.example.com"
    creates = {
        "DatabaseService": {"name": "Acme", "adminEmail": email, "plan": "free"},
        "StorageService": {"plan": "free"},
        "AuthService": {"adminEmail": email},
        "BillingService": {"plan": "free", "billingEmail": email},
    }
    for service, body in creates.items():
        first = podium_env.call_private(f"/{service}/{tenant_id}/Create", body)
        assert podium_env.call_private(f"/{service}/{tenant_id}/Create", body) == first
    assert on_disk(tenant_id) == EVERYTHING
    assert resource_counts(tenant_id) == {"databases": 1, "buckets": 1, "realms": 1, "billingAccounts": 1}
    assert tenant_rows(tenant_id)["audit_log"] == 1

    for service in creates:
        assert podium_env.call_private(f"/{service}/{tenant_id}/Delete")["existed"] is True
        assert podium_env.call_private(f"/{service}/{tenant_id}/Delete")["existed"] is False
        response = podium_env.post_private(f"/{service}/{tenant_id}/Get")
        assert response.status_code == 404
    assert on_disk(tenant_id) == NOTHING
    assert not stores.secret_file(tenant_id).exists()  # the realm's delete takes its secret with it
    assert [op for op in stores.operations(tenant_id) if " create " in op] == [
        f"{r} create {outcome}"
        for r in ("database", "bucket", "realm", "billing")
        for outcome in ("created", "existed")
    ]


def test_deleting_what_was_never_created_is_fine(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    for service in ("DatabaseService", "StorageService", "AuthService", "BillingService"):
        assert podium_env.call_private(f"/{service}/{tenant_id}/Delete")["existed"] is False
    assert on_disk(tenant_id) == NOTHING


@pytest.mark.parametrize("key", ["..", "..%2F..%2Fetc", "Tenant"])
def test_resource_services_refuse_ids_that_are_not_tenant_ids(podium_env: PodiumEnv, key: str) -> None:
    response = podium_env.post_private(f"/StorageService/{key}/Delete")
    assert response.status_code == 400
    assert "tenantId (the key)" in response.json()["message"]


RESOURCES = ["DatabaseService", "StorageService", "AuthService", "BillingService"]


@pytest.mark.parametrize("service", RESOURCES)
@pytest.mark.parametrize("handler", ["Create", "Delete"])
def test_resource_services_are_refused_at_the_ingress_and_change_nothing(
    podium_env: PodiumEnv, service: str, handler: str
) -> None:
    tenant_id, body = new_key("tenant"), tenant_request()
    provision(podium_env, tenant_id, body)
    operations, secret = stores.operations(tenant_id), secret_of(tenant_id)
    create = {"name": "Evil", "adminEmail": "e@evil.example.com", "plan": "free", "billingEmail": "e@e.io"}
    fresh = new_key("tenant")

    # A Delete would undo one piece of a provisioned tenant; a Create would make a resource outside any saga.
    for key in (tenant_id, fresh):
        podium_env.assert_private(f"/{service}/{key}/{handler}", create if handler == "Create" else None)
    assert on_disk(tenant_id) == EVERYTHING
    assert on_disk(fresh) == NOTHING
    assert stores.operations(tenant_id) == operations
    assert stores.operations(fresh) == []
    assert secret_of(tenant_id) == secret


def test_no_secret_reaches_the_engine_and_the_file_is_the_owners_only(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    tenant = provision(podium_env, tenant_id, tenant_request())
    client_id = tenant["auth"]["clientId"]
    first = secret_of(tenant_id)["clientSecret"]

    issued = podium_env.call(f"/AuthService/{tenant_id}/RotateSecret")
    path = stores.secret_file(tenant_id)
    assert issued == {"clientId": client_id, "secretVersion": 2, "secretFile": str(path)}
    second = secret_of(tenant_id)
    assert (second["clientId"], second["secretVersion"]) == (client_id, 2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    # The engine holds what the handlers journaled and stored: the client id, never a secret.
    assert engine_holds(podium_env.admin_url, client_id) != []  # the search finds what is there
    for secret in (first, second["clientSecret"]):
        assert engine_holds(podium_env.admin_url, secret) == []
        for file in stores.auth_path().parent.glob("realms.db*"):  # the store and its write-ahead log
            assert secret.encode() not in file.read_bytes()
    assert "clientSecret" not in json.dumps(
        podium_env.call(f"/ProvisioningOrchestrator/{tenant_id}/GetStatus")
    )


def test_a_rotation_replaces_the_secret_and_only_the_store_checks_it(podium_env: PodiumEnv) -> None:
    tenant_id = new_key("tenant")
    client_id = provision(podium_env, tenant_id, tenant_request())["auth"]["clientId"]
    first = secret_of(tenant_id)["clientSecret"]
    assert stores.verify_secret(tenant_id, client_id, first) is True
    assert stores.verify_secret(tenant_id, client_id, first + "x") is False
    assert stores.verify_secret(tenant_id, "cli_someone_else", first) is False

    podium_env.call(f"/AuthService/{tenant_id}/RotateSecret")
    second = secret_of(tenant_id)["clientSecret"]
    assert second != first
    assert stores.verify_secret(tenant_id, client_id, first) is False  # the old secret stops working
    assert stores.verify_secret(tenant_id, client_id, second) is True
    assert podium_env.call_private(f"/AuthService/{tenant_id}/Get")["secretVersion"] == 2
    assert podium_env.post(f"/AuthService/{new_key('tenant')}/RotateSecret").status_code == 404
    # No handler takes a secret (its input would be journaled): the old VerifySecret is gone.
    # On a connection of its own: the ingress may close one after refusing a body it did not read.
    gone = httpx.post(f"{podium_env.ingress_url}/AuthService/{tenant_id}/VerifySecret", json={}, timeout=30)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("clïent-é", "secret"), ("cli_ok", "sécret-ü"), ("", ""), ("\x00", "\ud800")],
    ids=["non-ascii-client-id", "non-ascii-secret", "empty", "control-and-surrogate"],
)
def test_any_text_is_an_answer_from_the_secret_check_never_an_error(
    podium_env: PodiumEnv, client_id: str, secret: str
) -> None:
    # Once a 500: hmac.compare_digest refuses str with non-ASCII characters. Compared as bytes now.
    tenant_id = new_key("tenant")
    provision(podium_env, tenant_id, tenant_request())
    assert stores.verify_secret(tenant_id, client_id, secret) is False
