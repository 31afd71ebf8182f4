from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from podium.testing import PodiumEnv, new_key
from services.provisioning import stores


@pytest.fixture
def podium_app() -> Any:
    # Imported here, not at the top: pytest loads this conftest before the podium plugin has put the
    # engine's request-identity key in the environment, and the app reads it when it is built.
    from tests.systems.provisioning.apps import app

    return app


def tenant_request(**overrides: Any) -> dict[str, Any]:
    """A ProvisionTenant body with a fresh admin email, so the outbox count belongs to this test."""
    body: dict[str, Any] = {
        "name": "Acme Corp",
        "adminEmail": f"{new_key('admin')}@acme.example.com",
        "plan": "pro",
    }
    body.update(overrides)
    return body


def provision(env: PodiumEnv, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    tenant: dict[str, Any] = env.call(f"/ProvisioningOrchestrator/{tenant_id}/ProvisionTenant", body)
    return tenant


def get_status(env: PodiumEnv, tenant_id: str) -> dict[str, Any]:
    status: dict[str, Any] = env.call(f"/ProvisioningOrchestrator/{tenant_id}/GetStatus")
    return status


def rows(path: Any, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on a SQLite file (read directly from disk, not through the services)."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        return list(db.execute(query, args).fetchall())


def on_disk(tenant_id: str) -> dict[str, bool]:
    """Which of the tenant's resources exist on disk (a partial bucket folder counts)."""
    database_files = [
        stores.database_path(tenant_id).with_name(stores.database_path(tenant_id).name + suffix)
        for suffix in ("", "-journal", "-wal", "-shm")
    ]
    realm = stores.auth_path().exists() and bool(
        rows(stores.auth_path(), "select 1 from realms where tenant_id = ?", tenant_id)
    )
    billing = stores.billing_path().exists() and bool(
        rows(stores.billing_path(), "select 1 from accounts where tenant_id = ?", tenant_id)
    )
    return {
        "database": any(f.exists() for f in database_files),
        "bucket": stores.bucket_path(tenant_id).exists(),
        "realm": realm,
        "billing": billing,
    }


NOTHING = {"database": False, "bucket": False, "realm": False, "billing": False}
EVERYTHING = {"database": True, "bucket": True, "realm": True, "billing": True}


def tenant_rows(tenant_id: str) -> dict[str, int]:
    """Row counts of every table in the tenant's database."""
    path = stores.database_path(tenant_id)
    return {table: rows(path, f"select count(*) from {table}")[0][0] for table in stores.TABLES}


def _holds(database: Path, tenant_id: str) -> bool:
    try:
        return bool(rows(database, "select 1 from tenant where id = ?", tenant_id))
    except sqlite3.OperationalError:  # another test's database, being created or dropped right now
        return False


def resource_counts(tenant_id: str) -> dict[str, int]:
    """How many of each resource exist for the tenant: a duplicate under any name would show here."""
    databases = [
        path for path in stores.database_path(tenant_id).parent.glob("*.db") if _holds(path, tenant_id)
    ]
    buckets = [
        marker
        for marker in stores.bucket_path(tenant_id).parent.glob("*/bucket.json")
        if json.loads(marker.read_text())["tenantId"] == tenant_id
    ]
    realms = rows(stores.auth_path(), "select count(*) from realms where tenant_id = ?", tenant_id)
    accounts = rows(stores.billing_path(), "select count(*) from accounts where tenant_id = ?", tenant_id)
    return {
        "databases": len(databases),
        "buckets": len(buckets),
        "realms": realms[0][0],
        "billingAccounts": accounts[0][0],
    }


def secret_of(tenant_id: str) -> dict[str, Any]:
    """The admin client's secret file, as an operator on the provider's host reads it."""
    found: dict[str, Any] = json.loads(stores.secret_file(tenant_id).read_text())
    return found
