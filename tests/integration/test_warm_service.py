"""The answer service with the Postgres warm tier: audit, misses, tenant keys and the webhook
ledger there."""

from __future__ import annotations

import time

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from serving.app import create_app
from serving.settings import ServeSettings
from serving.signatures import sign
from stores import open_store
from stores.postgres import PostgresAuditLog, PostgresChangeLedger, PostgresTenantKeys
from tests.factories import make_snapshot

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer t"}


def _store_url(tmp_path_str: str) -> str:
    url = f"sqlite:///{tmp_path_str}/k.db"
    store = open_store(url)
    store.publish(make_snapshot("v1"), activate=True)
    store.close()
    return url


async def test_misses_and_webhook_deliveries_go_to_postgres(dsn: str, tmp_path: object) -> None:
    url = _store_url(str(tmp_path))
    settings = ServeSettings(
        store=url, admin_token="t", webhook_secret="s3cret", warm_dsn=dsn, knowledge=None
    )
    keys = PostgresTenantKeys(dsn)
    acme = {"X-API-Key": keys.issue("acme").key}  # issued by another process, in Postgres
    keys.close()
    app: Litestar = create_app(settings)
    async with AsyncTestClient(app) as client:
        answer = (
            await client.post(
                "/v1/answer", json={"question": "what is the meaning of life"}, headers=acme
            )
        ).json()
        assert answer["layer"] == "SAFE"
        body = b'{"changed": ["policies/refunds.md"]}'
        stamp = int(time.time())
        delivery = await client.post(
            "/v1/webhooks/knowledge-changed",
            content=body,
            headers={
                "X-Ragc-Signature": sign("s3cret", body, timestamp=stamp),
                "content-type": "application/json",
            },
        )
        assert delivery.status_code == 202
        misses = (await client.get("/v1/misses", headers=ADMIN)).json()

    assert misses["misses"][0]["normalized"] == "what is the meaning of life"
    assert misses["misses"][0]["tenants"] == ["acme"]  # the key's tenant, named by no one
    log = PostgresAuditLog(dsn)
    ledger = PostgresChangeLedger(dsn)
    try:
        assert [m.normalized for m in log.misses()] == ["what is the meaning of life"]
        assert [d.changed for d in ledger.entries()] == [("policies/refunds.md",)]
    finally:
        log.close()
        ledger.close()
