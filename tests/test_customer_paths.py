"""Every path that writes a customer writes what the API's PATCH writes (audit entry, a
`customer.updated` event in the catalogue's schema, the search text), and export then import gives
back the customers it exported."""

import csv
import io
import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import openpyxl
import pytest
from fastapi import FastAPI

from app.services.bulk import exports, import_jobs
from tests.factories import Tenant, customer_body


async def _event_validator(client: httpx.AsyncClient, event_type: str) -> jsonschema_rs.Validator:
    """The published OpenAPI document's schema of the webhook delivering `event_type`."""
    spec = (await client.get("/openapi.json")).json()
    body = spec["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**body, "components": spec["components"]})


async def _events(pool: asyncpg.Pool, tenant: Tenant, event_type: str, customer_id: str) -> list[dict[str, Any]]:
    """The customer's events of a type as a webhook delivers them, oldest first."""
    rows = await pool.fetch(
        "SELECT id, type, occurred_at, workspace_id, actor, data FROM outbox_events "
        "WHERE workspace_id = $1 AND type = $2 AND data ->> 'id' = $3 ORDER BY occurred_at, id",
        tenant.id,
        event_type,
        customer_id,
    )
    return [
        {
            "id": str(row["id"]),
            "type": row["type"],
            "occurred_at": row["occurred_at"].isoformat(),
            "workspace_id": str(row["workspace_id"]),
            "actor": row["actor"],
            "data": row["data"],
        }
        for row in rows
    ]


async def _assert_changed_like_a_patch(
    client: httpx.AsyncClient, pool: asyncpg.Pool, tenant: Tenant, customer_id: str, *, name: str, fields: set[str]
) -> None:
    """The customer now named `name` has an audit entry and a valid `customer.updated` event for
    the change of `fields`, and search finds it by the new name."""
    entries = (await client.get(f"/api/v1/customers/{customer_id}/audit", headers=tenant.headers())).json()["items"]
    assert any(fields <= set(entry["changes"]) for entry in entries), entries
    [event] = await _events(pool, tenant, "customer.updated", customer_id)
    (await _event_validator(client, "customer.updated")).validate(event)
    assert fields <= set(event["data"]["changed_fields"]) and event["data"]["name"] == name
    current = (await client.get(f"/api/v1/customers/{customer_id}", headers=tenant.headers())).json()
    assert _as_shown(event["data"]) == _as_shown(current)
    found = (await client.get("/api/v1/customers", params={"q": name}, headers=tenant.headers())).json()["items"]
    assert [customer["id"] for customer in found] == [customer_id]


def _as_shown(customer: dict[str, Any]) -> dict[str, Any]:
    """A customer's fields, times as instants (an event and a response may write them differently)."""
    times = ("created_at", "updated_at", "deleted_at")
    shown = {k: v for k, v in customer.items() if k != "changed_fields" and k not in times}
    return shown | {k: customer[k] and datetime.fromisoformat(customer[k]) for k in times}


async def _create(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _import(
    app: FastAPI,
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    tenant: Tenant,
    name: str,
    content: bytes,
    mapping: dict[str, str],
    **form: str,
) -> dict[str, Any]:
    queued = await client.post(
        "/api/v1/imports",
        files={"file": (name, content)},
        data={"mapping": json.dumps(mapping), **form},
        headers=tenant.headers(),
    )
    assert queued.status_code == 202, queued.text
    job = await import_jobs.process(app.state.job_sessions, pool, tenant.id, uuid.UUID(queued.json()["id"]))
    return dict(import_jobs.present(job))


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


async def test_a_patch_writes_audit_event_and_search_text(
    live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    customer = await _create(live_client, live_tenant, name="Wang Fang")
    patched = await live_client.patch(
        f"/api/v1/customers/{customer['id']}",
        json={"name": "Ouyang Mingyue"},
        headers={**live_tenant.headers(), "If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    await _assert_changed_like_a_patch(
        live_client, pool, live_tenant, customer["id"], name="Ouyang Mingyue", fields={"name"}
    )


async def test_a_batch_update_writes_what_a_patch_writes(
    live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    customer = await _create(live_client, live_tenant, name="Wang Fang")
    response = await live_client.patch(
        "/api/v1/customers/batch",
        json={"items": [{"id": customer["id"], "version": 1, "patch": {"name": "Ouyang Mingyue"}}]},
        headers=live_tenant.headers(),
    )
    assert [r["status"] for r in response.json()["results"]] == [200], response.text
    await _assert_changed_like_a_patch(
        live_client, pool, live_tenant, customer["id"], name="Ouyang Mingyue", fields={"name"}
    )


async def test_an_import_upsert_writes_what_a_patch_writes(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    customer = await _create(live_client, live_tenant, name="Wang Fang", phones=["13800138000"])
    content = _csv([["姓名", "手机", "城市"], ["Ouyang Mingyue", "138 0013 8000", "深圳市"]])
    job = await _import(
        app, pool, live_client, live_tenant, "a.csv", content, {"姓名": "name", "手机": "phone", "城市": "city"},
        mode="upsert", match_on="phone",
    )  # fmt: skip
    assert job["progress"]["updated"] == 1, job
    await _assert_changed_like_a_patch(
        live_client, pool, live_tenant, customer["id"], name="Ouyang Mingyue", fields={"name", "city"}
    )
    # The same file again changes nothing, so it writes no second entry or event.
    again = await _import(
        app, pool, live_client, live_tenant, "a.csv", content, {"姓名": "name", "手机": "phone", "城市": "city"},
        mode="upsert", match_on="phone",
    )  # fmt: skip
    assert again["progress"]["skipped"] == 1
    assert len(await _events(pool, live_tenant, "customer.updated", customer["id"])) == 1


async def test_a_merge_writes_what_a_patch_writes_for_the_survivor(
    live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    survivor = await _create(live_client, live_tenant, name="Wang Fang")
    absorbed = await _create(live_client, live_tenant, name="Ouyang Mingyue", tags=["vip"])
    merged = await live_client.post(
        f"/api/v1/customers/{survivor['id']}/merge",
        json={"absorb": [absorbed["id"]], "fields": {"name": absorbed["id"]}},
        headers=live_tenant.headers(),
    )
    assert merged.status_code == 200, merged.text
    await _assert_changed_like_a_patch(
        live_client, pool, live_tenant, survivor["id"], name="Ouyang Mingyue", fields={"name", "emails", "tags"}
    )


async def test_an_imported_customer_is_created_with_the_apis_event(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    content = _csv([["name", "phone", "tags"], ["Ouyang Mingyue", "13800138000", "vip;华南"]])
    job = await _import(
        app, pool, live_client, live_tenant, "a.csv", content, {"name": "name", "phone": "phone", "tags": "tags"}
    )
    assert job["progress"]["created"] == 1, job
    [imported] = (await live_client.get("/api/v1/customers", headers=live_tenant.headers())).json()["items"]
    [event] = await _events(pool, live_tenant, "customer.created", imported["id"])
    (await _event_validator(live_client, "customer.created")).validate(event)
    assert _as_shown(event["data"]) == _as_shown(imported)
    made = await _create(live_client, live_tenant, name="Wang Fang")
    [api_event] = await _events(pool, live_tenant, "customer.created", made["id"])
    assert set(api_event["data"]) == set(event["data"])


async def test_a_phone_on_an_earlier_row_is_reported_on_the_phone_column(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    content = _csv(
        [["姓名", "邮箱", "手机"], ["张伟", "a@example.com", "13800138000"], ["李娜", "b@example.com", "13800138000"]]
    )
    job = await _import(
        app, pool, live_client, live_tenant, "a.csv", content, {"姓名": "name", "邮箱": "email", "手机": "phone"}
    )
    assert job["progress"]["failed"] == 1
    report = await live_client.get(f"/api/v1/imports/{job['id']}/errors", headers=live_tenant.headers())
    [row] = list(csv.DictReader(io.StringIO(report.text)))
    assert row["row"] == "3" and row["column"] == "手机" and "+8613800138000" in row["reason"]


_DEFINITIONS = [
    {"key": "interests", "label": "兴趣", "type": "multiselect", "rules": {"options": ["茶", "酒", "书"]}},
    {"key": "score", "label": "评分", "type": "number"},
    {"key": "member", "label": "会员", "type": "boolean"},
    {"key": "joined", "label": "入会", "type": "date"},
    {"key": "level", "label": "等级", "type": "text"},
]
_CUSTOMERS = [
    {
        "name": '=HYPERLINK("x")',
        "kind": "company",
        "emails": ["a@example.com", "b@example.com"],
        "phones": ["+8613800138000", "+8613900139000"],
        "company": "星河贸易",
        "title": "-经理",
        "gender": "female",
        "birthday": "1988-04-12",
        "address": {
            "country": "CN",
            "province": "广东省",
            "city": "深圳市",
            "district": "南山区",
            "street": "科技园路 1 号",
            "postcode": "518000",
        },
        "source": "trade_show",
        "tags": ["vip", "华南", "重点"],
        "custom_fields": {
            "interests": ["茶", "书"],
            "score": -2.5,
            "member": True,
            "joined": "2024-01-31",
            "level": "+1",
        },
        "notes": "第一行\n'=第二行",
    },
    {"name": "李娜", "phones": ["+8613700137000"], "tags": ["new"], "custom_fields": {"member": False}},
]
_UNCHANGED = ("name", "kind", "emails", "phones", "company", "title", "gender", "birthday", "address", "source")


@pytest.mark.parametrize("file_format", ["csv", "xlsx"])
async def test_export_then_import_gives_back_the_customers(
    app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_other_tenant: Tenant,
    pool: asyncpg.Pool,
    file_format: str,
) -> None:
    for tenant in (live_tenant, live_other_tenant):
        for definition in _DEFINITIONS:
            made = await live_client.post("/api/v1/custom-fields", json=definition, headers=tenant.headers())
            assert made.status_code == 201, made.text
    originals = [await _create(live_client, live_tenant, **body) for body in _CUSTOMERS]
    queued = await live_client.post("/api/v1/exports", json={"format": file_format}, headers=live_tenant.headers())
    await exports.process(app.state.sessions, uuid.UUID(queued.json()["id"]), live_tenant.id)
    download = await live_client.get(f"/api/v1/exports/{queued.json()['id']}/download", headers=live_tenant.headers())
    assert download.status_code == 200
    if file_format == "csv":
        header = next(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    else:
        header = [
            str(c)
            for c in next(openpyxl.load_workbook(io.BytesIO(download.content)).active.iter_rows(values_only=True))
        ]
    mapping = {column: column for column in header if column not in ("code", "created_at")}

    # Into another workspace, as new customers: the same fields come back.
    job = await _import(app, pool, live_client, live_other_tenant, f"e.{file_format}", download.content, mapping)
    assert job["progress"] == {**job["progress"], "created": len(_CUSTOMERS), "failed": 0}, job
    copies = (await live_client.get("/api/v1/customers", headers=live_other_tenant.headers())).json()["items"]
    by_name = {copy["name"]: copy for copy in copies}
    for original in originals:
        copy = by_name[original["name"]]
        assert {f: copy[f] for f in _UNCHANGED} == {f: original[f] for f in _UNCHANGED}
        assert copy["tags"] == original["tags"] and copy["custom_fields"] == original["custom_fields"]
        assert copy["notes"] == original["notes"]

    # Back into the same workspace, matched on the code: nothing differs, so nothing changes.
    again = await _import(
        app, pool, live_client, live_tenant, f"e.{file_format}", download.content, {**mapping, "code": "code"},
        mode="upsert", match_on="code",
    )  # fmt: skip
    assert again["progress"]["updated"] == 0 and again["progress"]["skipped"] == len(_CUSTOMERS), again
    for original in originals:
        now = (await live_client.get(f"/api/v1/customers/{original['id']}", headers=live_tenant.headers())).json()
        assert now == original
