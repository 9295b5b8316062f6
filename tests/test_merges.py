"""Candidate duplicates, merging customers with everything that follows them, and undo."""

import random

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.core.ids import new_id
from app.models import Customer, Interaction, OutboxEvent
from app.services.customers import customer_merges
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_similar_names_in_one_company_are_candidates(client: httpx.AsyncClient, tenant: Tenant) -> None:
    a = await _customer(client, tenant, name="Zhang Weiming", company="星河贸易")
    b = await _customer(client, tenant, name="Zhang Wei-ming", company="星河贸易")
    await _customer(client, tenant, name="Zhang Weiming", company="别的公司")
    await _customer(client, tenant, name="Li Na", company="星河贸易")
    groups = (await client.get("/api/v1/customers/duplicates", headers=tenant.headers())).json()["items"]
    assert [sorted(g["customer_ids"]) for g in groups] == [sorted([a, b])]
    assert set(groups[0]["reasons"]) == {"similar name", "same company"}
    assert groups[0]["score"] > 0.5


async def test_merge_moves_related_records_and_can_be_undone(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    keep = await _customer(client, tenant, name="张伟", title="经理", emails=["a@example.com"])
    dup = await _customer(client, tenant, name="张伟 (重复)", title="总监", emails=["b@example.com"], tags=["vip"])
    contact = {"customer_id": dup, "channel": "phone", "direction": "inbound", "occurred_at": clock.now().isoformat()}
    assert (await client.post("/api/v1/interactions", json=contact, headers=tenant.headers())).status_code == 201
    merged = await client.post(
        f"/api/v1/customers/{keep}/merge", json={"absorb": [dup], "fields": {"title": dup}}, headers=tenant.headers()
    )
    assert merged.status_code == 200, merged.text
    survivor = (await client.get(f"/api/v1/customers/{keep}", headers=tenant.headers())).json()
    assert (
        survivor["title"] == "总监"
        and survivor["emails"] == ["a@example.com", "b@example.com"]
        and survivor["tags"] == ["vip"]
    )
    assert (await client.get(f"/api/v1/customers/{dup}", headers=tenant.headers())).status_code == 404
    moved = await db.scalar(select(Interaction.customer_id).where(Interaction.workspace_id == tenant.id))
    assert str(moved) == keep
    assert (
        "customer.merged"
        in (await db.scalars(select(OutboxEvent.type).where(OutboxEvent.workspace_id == tenant.id))).all()
    )
    undone = await client.post(f"/api/v1/customers/merges/{merged.json()['merge_id']}/undo", headers=tenant.headers())
    assert undone.status_code == 200
    back = (await client.get(f"/api/v1/customers/{dup}", headers=tenant.headers())).json()
    assert back["emails"] == ["b@example.com"]
    restored = (await client.get(f"/api/v1/customers/{keep}", headers=tenant.headers())).json()
    assert restored["title"] == "经理" and restored["emails"] == ["a@example.com"]
    db.expire_all()
    owner = await db.scalar(select(Interaction.customer_id).where(Interaction.workspace_id == tenant.id))
    assert str(owner) == dup
    again = await client.post(f"/api/v1/customers/merges/{merged.json()['merge_id']}/undo", headers=tenant.headers())
    assert again.status_code == 409


async def test_merges_refuse_deleted_foreign_and_bad_requests(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    keep = await _customer(client, tenant)
    gone = await _customer(client, tenant)
    await client.delete(f"/api/v1/customers/{gone}", headers={**tenant.headers(), "If-Match": '"1"'})
    foreign = await _customer(client, other_tenant)
    url = f"/api/v1/customers/{keep}/merge"
    assert (await client.post(url, json={"absorb": [gone]}, headers=tenant.headers())).status_code == 409
    assert (await client.post(url, json={"absorb": [foreign]}, headers=tenant.headers())).status_code == 404
    assert (await client.post(url, json={"absorb": [keep]}, headers=tenant.headers())).status_code == 422
    other = await _customer(client, tenant)
    bad_field = await client.post(url, json={"absorb": [other], "fields": {"code": other}}, headers=tenant.headers())
    assert bad_field.status_code == 422
    assert (await client.post(url, json={"absorb": [other]}, headers=tenant.headers("sales"))).status_code == 403
    assert await db.scalar(select(Customer.deleted_at).where(Customer.id == other)) is None


# The rule as one brute-force statement (every pair of a company or city compared): the reference the
# two-step search must match, pair for pair and in the same order.
BRUTE_FORCE_PAIRS = """
SELECT a.id, b.id, similarity(lower(a.name), lower(b.name)) AS score,
       a.company IS NOT NULL AND a.company = b.company, a.city IS NOT NULL AND a.city = b.city
FROM customers a
JOIN customers b ON b.workspace_id = a.workspace_id AND b.id > a.id AND b.deleted_at IS NULL
     AND ((a.company IS NOT NULL AND a.company = b.company) OR (a.city IS NOT NULL AND a.city = b.city))
WHERE a.workspace_id = :ws AND a.deleted_at IS NULL AND similarity(lower(a.name), lower(b.name)) >= :threshold
ORDER BY score DESC, a.id, b.id
LIMIT :pairs
"""


async def test_candidate_pairs_match_comparing_every_pair(db: AsyncSession, tenant: Tenant) -> None:
    rng = random.Random(7)
    pinyin = ["Zhang Weiming", "Zhang Wei-ming", "zhang wei ming", "Zhang Weimin", "Weiming Zhang", "Li Na", "Li Nana"]
    names = [
        rng.choice(["王", "李", "张", "陈", "欧阳"])
        + "".join(rng.choice("伟芳娜敏静明") for _ in range(rng.randint(1, 2)))
        for _ in range(260)
    ]
    names += [rng.choice(pinyin) for _ in range(80)] + ["张伟 先生", "张伟", "---", "?"] * 5
    rows = [
        {
            "id": new_id(),
            "code": f"T-{n:05d}",
            "name": name,
            "company": rng.choice(["星河贸易", "华信科技", "东方电子", None, None]),
            "city": rng.choice(["深圳市", "广州市", "上海市", None]),
            "deleted_at": clock.now() if rng.random() < 0.05 else None,
        }
        for n, name in enumerate(names)
    ]
    await db.execute(
        text(
            "INSERT INTO customers (workspace_id, id, code, kind, name, company, city, search_text, deleted_at) "
            "VALUES (:ws, :id, :code, 'individual', :name, :company, :city, :search_text, :deleted_at)"
        ),
        [{"ws": tenant.id, "search_text": row["name"], **row} for row in rows],
    )
    ctx = system_caller(tenant.id)
    for threshold in (0.1, 0.3, 0.5, 0.6875, 0.8, 1.0):
        for pairs in (3, 40, 100_000):
            expected = (
                await db.execute(text(BRUTE_FORCE_PAIRS), {"ws": tenant.id, "threshold": threshold, "pairs": pairs})
            ).all()
            found = await customer_merges.candidate_pairs(db, ctx, threshold=threshold, pairs=pairs)
            assert found == [(a, b, score, bool(company), bool(city)) for a, b, score, company, city in expected], (
                threshold,
                pairs,
            )
            assert len(expected) == min(pairs, len(expected)) and expected, (threshold, pairs)
