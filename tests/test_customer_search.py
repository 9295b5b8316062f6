"""Search as people type it: any two adjacent Chinese characters of a name or company, phone numbers
in the forms a create accepts, the exact holder of a phone or email first, within what the caller sees."""

import csv
import io
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.services.customers import customer_search
from tests.factories import Tenant, customer_body
from tests.import_helpers import queue_and_run

# (name, company): long and short names, a compound surname, companies sharing pairs (有限, 公司, 科技).
PEOPLE = [
    ("王小明", "深圳腾达科技有限公司"),
    ("欧阳娜娜", "上海明达物流有限公司"),
    ("李建国", None),
    ("司马相如", "华信科技股份有限公司"),
]
# Pairs none of them holds: reversed, skipping a character, or across the space between name and company.
ABSENT = ["明小", "腾科", "明深", "国李", "限有"]


def _pairs(text: str) -> list[str]:
    return [text[i : i + 2] for i in range(len(text) - 1)]


async def _create(client: httpx.AsyncClient, tenant: Tenant, who: str = "admin", **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers(who))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _found(client: httpx.AsyncClient, tenant: Tenant, q: str, who: str = "admin", **params: Any) -> list[str]:
    response = await client.get(
        "/api/v1/customers", params={"q": q, "limit": 100, **params}, headers=tenant.headers(who)
    )
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["items"]]


async def test_every_two_character_window_of_names_and_companies_finds_exactly_its_holders(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = {name: await _create(client, tenant, name=name, company=company) for name, company in PEOPLE}
    windows = {pair for name, company in PEOPLE for pair in _pairs(name) + _pairs(company or "")}
    assert len(windows) > 25
    for pair in sorted(windows):
        holders = {created[name]["id"] for name, company in PEOPLE if pair in name or pair in (company or "")}
        assert set(await _found(client, tenant, pair)) == holders, pair
    for pair in ABSENT:
        assert await _found(client, tenant, pair) == [], pair


async def test_longer_chinese_queries_match_as_substrings(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ming = await _create(client, tenant, name="王小明", company="深圳腾达科技有限公司")
    await _create(client, tenant, name="王小红", company="腾飞科技有限公司")
    assert await _found(client, tenant, "腾达科技") == [ming["id"]]
    assert await _found(client, tenant, "深圳腾达科技有限公司") == [ming["id"]]
    assert await _found(client, tenant, "王小明") == [ming["id"]]
    assert await _found(client, tenant, "腾达科技有限公司 ") == [ming["id"]]


async def test_company_customers_are_found_by_a_pair_of_their_name(client: httpx.AsyncClient, tenant: Tenant) -> None:
    firm = await _create(client, tenant, kind="company", name="深圳腾达科技有限公司")
    assert await _found(client, tenant, "腾达") == [firm["id"]]


async def test_a_pair_finds_a_customer_after_each_write_path_changes_the_name_or_company(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    customer = await _create(client, tenant, name="王小明")
    patched = await client.patch(
        f"/api/v1/customers/{customer['id']}",
        json={"name": "赵大勇", "company": "远航国际贸易"},
        headers={**tenant.headers(), "If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    assert await _found(client, tenant, "小明") == []
    assert await _found(client, tenant, "大勇") == await _found(client, tenant, "航国") == [customer["id"]]

    batch = await client.post(
        "/api/v1/customers/batch",
        json={"items": [customer_body(name="钱多多", company="星河贸易")]},
        headers=tenant.headers(),
    )
    assert batch.status_code == 207, batch.text
    added = batch.json()["results"][0]["id"]
    changed = await client.patch(
        "/api/v1/customers/batch",
        json={"items": [{"id": added, "version": 1, "patch": {"company": "金桥物流"}}]},
        headers=tenant.headers(),
    )
    assert changed.json()["results"][0]["status"] == 200, changed.text
    assert await _found(client, tenant, "多多") == await _found(client, tenant, "桥物") == [added]
    assert await _found(client, tenant, "星河") == []

    absorbed = await _create(client, tenant, name="钱多多", company="天成医疗器械")
    merged = await client.post(
        f"/api/v1/customers/{added}/merge",
        json={"absorb": [absorbed["id"]], "fields": {"company": absorbed["id"]}},
        headers=tenant.headers(),
    )
    assert merged.status_code == 200, merged.text
    assert await _found(client, tenant, "医疗") == [added]


async def test_an_imported_customer_is_found_by_a_pair_of_its_company(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["姓名", "公司"], ["孙悟空", "花果山水帘洞有限公司"]])
    upload = ("客户.csv", buffer.getvalue().encode("utf-8"))
    mapping = {"姓名": "name", "公司": "company"}
    await queue_and_run(
        app, pool, live_client, live_tenant, upload, kind="customers", mapping=mapping, who="admin", form={}
    )
    [found] = (await live_client.get("/api/v1/customers", params={"q": "帘洞"}, headers=live_tenant.headers())).json()[
        "items"
    ]
    assert found["name"] == "孙悟空"


async def test_phone_queries_in_every_written_form_find_the_holder(client: httpx.AsyncClient, tenant: Tenant) -> None:
    mobile = await _create(client, tenant, name="张伟", phones=["13912345678"])
    landline = await _create(client, tenant, name="李娜", phones=["021-62345678"])
    await _create(client, tenant, name="刘洋", phones=["13800138000"])
    for q in ("139 1234 5678", "139-1234-5678", "+86 139 1234 5678", "+8613912345678", "139-1234", "+86 139"):
        assert await _found(client, tenant, q) == [mobile["id"]], q
    for q in ("021-62345678", "(021) 6234 5678", "+86 21 6234 5678", "021-6234", "6234-5678"):
        assert await _found(client, tenant, q) == [landline["id"]], q
    for q in ("137 0000 0000", "139-4321"):
        assert await _found(client, tenant, q) == [], q


async def test_a_whole_phone_number_finds_only_its_holder(client: httpx.AsyncClient, tenant: Tenant) -> None:
    # Created first (a lower id), and its email holds the digits: a part of the number finds it first.
    lookalike = await _create(client, tenant, name="刘洋", emails=["8613912345678@qq.com"])
    holder = await _create(client, tenant, name="张伟", phones=["+86 139 1234 5678"])
    for q in ("139 1234 5678", "13912345678", "+86 139-1234-5678"):
        assert await _found(client, tenant, q) == [holder["id"]], q
    assert await _found(client, tenant, "1391234") == [lookalike["id"], holder["id"]]
    # Among the deleted, who hold no number in the identities, the digits find it.
    deleted = await client.delete(f"/api/v1/customers/{holder['id']}", headers={**tenant.headers(), "If-Match": '"1"'})
    assert deleted.status_code == 204, deleted.text
    assert await _found(client, tenant, "139 1234 5678") == []
    assert await _found(client, tenant, "139 1234 5678", deleted="only") == [holder["id"]]


async def test_an_exact_email_puts_its_holder_first(client: httpx.AsyncClient, tenant: Tenant) -> None:
    lookalike = await _create(client, tenant, emails=["xli@example.com"])
    holder = await _create(client, tenant, emails=["li@example.com"])
    assert await _found(client, tenant, "LI@example.com") == [holder["id"], lookalike["id"]]


async def test_a_masked_caller_finds_by_pairs_but_never_by_phone(client: httpx.AsyncClient, tenant: Tenant) -> None:
    lookalike = await _create(client, tenant, name="客户8613912345678")
    holder = await _create(client, tenant, name="王小明", phones=["13912345678"])
    assert await _found(client, tenant, "小明", who="readonly") == [holder["id"]]
    for q in ("139 1234 5678", "139-1234", "+86 139"):
        # Only the name that spells the digits; the holder's phone stays out of reach, and out of the order.
        assert await _found(client, tenant, q, who="readonly") == [lookalike["id"]], q


async def test_search_stays_in_the_workspace_and_the_callers_visibility(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await _create(client, other_tenant, name="王小明", company="深圳腾达科技", phones=["13912345678"])
    for q in ("小明", "腾达", "139 1234 5678"):
        assert await _found(client, tenant, q) == [], q
    owned = await _create(client, tenant, name="王小明", owner_id=str(tenant.users["sales"].id))
    others = await _create(client, tenant, name="欧阳小明", owner_id=str(tenant.users["sales_west"].id))
    assert await _found(client, tenant, "小明", who="sales") == [owned["id"]]
    assert await _found(client, tenant, "小明", who="manager") == [owned["id"]]
    assert await _found(client, tenant, "小明") == [owned["id"], others["id"]]


async def test_soft_deleted_customers_are_found_only_among_the_deleted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    gone = await _create(client, tenant, name="王小明")
    deleted = await client.delete(f"/api/v1/customers/{gone['id']}", headers={**tenant.headers(), "If-Match": '"1"'})
    assert deleted.status_code == 204, deleted.text
    assert await _found(client, tenant, "小明") == []
    assert await _found(client, tenant, "小明", deleted="only") == [gone["id"]]


async def test_a_pair_search_pages_and_refuses_another_phases_cursor(client: httpx.AsyncClient, tenant: Tenant) -> None:
    made = [await _create(client, tenant, name=f"{surname}小明") for surname in "王李张刘陈"]
    first = (await client.get("/api/v1/customers", params={"q": "小明", "limit": 3}, headers=tenant.headers())).json()
    second = (
        await client.get(
            "/api/v1/customers",
            params={"q": "小明", "limit": 3, "cursor": first["next_cursor"]},
            headers=tenant.headers(),
        )
    ).json()
    assert [c["id"] for c in first["items"] + second["items"]] == sorted(c["id"] for c in made)
    assert second["next_cursor"] is None
    # One character pages by name prefix: its cursor is not this search's.
    await _create(client, tenant, name="王芳")
    prefix = (await client.get("/api/v1/customers", params={"q": "王", "limit": 1}, headers=tenant.headers())).json()
    assert prefix["next_cursor"] is not None
    refused = await client.get(
        "/api/v1/customers", params={"q": "小明", "cursor": prefix["next_cursor"]}, headers=tenant.headers()
    )
    assert refused.status_code == 422


@pytest.mark.parametrize("q", ["王", "wa", "13"])
async def test_one_or_two_characters_without_a_chinese_pair_match_name_prefixes(
    client: httpx.AsyncClient, tenant: Tenant, q: str
) -> None:
    starts = await _create(client, tenant, name=f"{q}小明", phones=["13912345678"])
    await _create(client, tenant, name=f"小{q}明", emails=[f"x{q}y@example.com"])
    assert await _found(client, tenant, q) == [starts["id"]]


async def test_longer_chinese_queries_take_the_pairs_where_trigrams_cannot_read_chinese(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the C locale pg_trgm takes no trigram from Chinese text: the pairs serve every query."""
    monkeypatch.setattr(customer_search, "_chinese_trigrams", False)
    ming = await _create(client, tenant, name="王小明", company="深圳腾达科技有限公司")
    await _create(client, tenant, name="王小红", company="腾飞科技有限公司")
    for who in ("admin", "readonly"):
        assert await _found(client, tenant, "腾达科技", who=who) == [ming["id"]], who
        assert await _found(client, tenant, "王小明", who=who) == [ming["id"]], who
        assert await _found(client, tenant, "达腾科技", who=who) == [], who
