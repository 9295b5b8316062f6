"""Lead scoring: the rules document (GET/PUT /lead-scoring, If-Match, admins only), scores equal to
hand-computed values, decay by whole half-lives, the score as a filter field, a re-run that changes
nothing, and bad input that changes nothing."""

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.models import AuditEntry, Customer, CustomerLeadScore, Interaction
from app.services.segments import lead_scoring
from app.workers import segments as segment_jobs
from tests.factories import Tenant, customer_body
from tests.test_workers import _job_sessions, _order

RULES: list[dict[str, Any]] = [
    {"name": "Shenzhen", "filter": {"field": "city", "op": "eq", "value": "深圳市"}, "points": 30},
    {
        "name": "Talked to us",
        "filter": {"field": "activity.interactions_365d", "op": "gte", "value": 1},
        "points": 25,
        "decays": True,
    },
    {"name": "VIP tag", "filter": {"field": "tags", "op": "contains", "value": "vip"}, "points": -10},
    {"name": "Bought", "filter": {"field": "value.order_count", "op": "gte", "value": 1}, "points": 15},
]
DOCUMENT = {"rules": RULES, "half_life_days": 10}


def _if_match(tenant: Tenant, version: object, who: str = "admin") -> dict[str, str]:
    return {**tenant.headers(who), "If-Match": f'"{version}"'}


async def _rules(client: httpx.AsyncClient, tenant: Tenant, who: str = "readonly") -> dict[str, Any]:
    response = await client.get("/api/v1/lead-scoring", headers=tenant.headers(who))
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{response.json()["version"]}"'
    return dict(response.json())


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _contact(client: httpx.AsyncClient, tenant: Tenant, customer: str, days_ago: int) -> None:
    body = {
        "customer_id": customer,
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": (clock.now() - timedelta(days=days_ago)).isoformat(),
    }
    assert (await client.post("/api/v1/interactions", json=body, headers=tenant.headers())).status_code == 201


async def _scores(db: AsyncSession, tenant: Tenant) -> dict[str, int]:
    rows = await db.execute(
        select(CustomerLeadScore.customer_id, CustomerLeadScore.score).where(
            CustomerLeadScore.workspace_id == tenant.id
        )
    )
    return {str(customer): score for customer, score in rows.all()}


async def _search(client: httpx.AsyncClient, tenant: Tenant, filter_: object) -> set[str]:
    response = await client.post(
        "/api/v1/customers/search", json={"filter": filter_, "limit": 100}, headers=tenant.headers()
    )
    assert response.status_code == 200, response.text
    return {c["id"] for c in response.json()["items"]}


async def _mixed_customers(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> dict[str, str]:
    """A: Shenzhen, VIP, last contact 25 days ago; B: Beijing, one order, never contacted, created
    now; C: Shenzhen, last contact 12 days ago (and one 40 days ago); D: nothing that scores."""
    a = await _customer(client, tenant, address={"city": "深圳市"}, tags=["vip"])
    b = await _customer(client, tenant, address={"city": "北京市"})
    c = await _customer(client, tenant, address={"city": "深圳市"})
    d = await _customer(client, tenant, address={"city": "上海市"})
    await _contact(client, tenant, a, 25)
    await _contact(client, tenant, c, 12)
    await _contact(client, tenant, c, 40)
    await _order(client, tenant, b)
    # Created long before their contacts: the decay counts from the last contact.
    await db.execute(
        update(Customer)
        .where(Customer.workspace_id == tenant.id, Customer.id.in_([uuid.UUID(a), uuid.UUID(c), uuid.UUID(d)]))
        .values(created_at=clock.now() - timedelta(days=100))
    )
    await db.commit()
    return {"A": a, "B": b, "C": c, "D": d}


async def _save(client: httpx.AsyncClient, tenant: Tenant, document: dict[str, Any], version: object) -> dict[str, Any]:
    response = await client.put("/api/v1/lead-scoring", json=document, headers=_if_match(tenant, version))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_scores_equal_hand_computed_values_and_decay_by_whole_half_lives(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    ids = await _mixed_customers(client, tenant, db)
    other = await _customer(client, other_tenant, address={"city": "深圳市"})
    saved = await _save(client, tenant, DOCUMENT, 0)
    assert saved["version"] == 1 and saved["recompute_pending"] is True
    now = clock.now()
    assert await segment_jobs.score_leads(_job_sessions(db), now=now, parallel=1) == 3
    # A: 30 + 25 halved twice (25 days, half-life 10), toward zero: 6, - 10 = 26. B: 15, never
    # contacted, created now: the contact rule does not match. C: 30 + 25 halved once = 42. D: 0.
    expected = {ids["A"]: 26, ids["B"]: 15, ids["C"]: 42}
    assert await _scores(db, tenant) == expected
    assert other not in await _scores(db, other_tenant)
    read = await _rules(client, tenant)
    assert read["recompute_pending"] is False and read["scored_at"] is not None

    # The same day again: not due, and a forced pass over small ranges changes nothing.
    assert await segment_jobs.score_leads(_job_sessions(db), now=now, parallel=1) == 0
    document = {**DOCUMENT, "rules": [{**rule, "decays": rule.get("decays", False)} for rule in RULES]}
    ctx = system_caller(tenant.id)
    again = await lead_scoring.recompute_in_chunks(_job_sessions(db), ctx, document, now=now, chunk=2, parallel=1)
    assert again == 0
    assert await _scores(db, tenant) == expected

    # Ten days on, the daily pass halves once more: A 30 + 25/8 - 10 = 23, C 30 + 25/4 = 36.
    later = now + timedelta(days=10)
    assert await segment_jobs.score_leads(_job_sessions(db), now=later, parallel=1) == 2
    assert await _scores(db, tenant) == {ids["A"]: 23, ids["B"]: 15, ids["C"]: 36}
    assert await segment_jobs.score_leads(_job_sessions(db), now=later, parallel=1) == 0


async def test_the_score_is_a_filter_field_and_drops_to_zero_with_the_rules(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    ids = await _mixed_customers(client, tenant, db)
    saved = await _save(client, tenant, DOCUMENT, "*")
    await segment_jobs.score_leads(_job_sessions(db), now=clock.now(), parallel=1)
    assert await _search(client, tenant, {"field": "lead_score", "op": "gte", "value": 26}) == {ids["A"], ids["C"]}
    assert await _search(client, tenant, {"field": "lead_score", "op": "eq", "value": 0}) == {ids["D"]}
    between = {"field": "lead_score", "op": "between", "value": [1, 30]}
    assert await _search(client, tenant, between) == {ids["A"], ids["B"]}
    preview = await client.post(
        "/api/v1/segments/preview",
        json={"filter": {"field": "lead_score", "op": "gt", "value": 20}},
        headers=tenant.headers(),
    )
    assert preview.status_code == 200 and preview.json()["count"] == 2
    fields = (await client.get("/api/v1/segments/fields", headers=tenant.headers())).json()
    described = next(f for f in fields["items"] if f["field"] == "lead_score")
    assert described["type"] == "integer"

    # Only the Shenzhen rule left: B and the contact points go; D stays without a row.
    await _save(client, tenant, {"rules": RULES[:1], "half_life_days": 10}, saved["version"])
    assert await segment_jobs.score_leads(_job_sessions(db), now=clock.now(), parallel=1) == 3
    assert await _scores(db, tenant) == {ids["A"]: 30, ids["B"]: 0, ids["C"]: 30}
    assert await _search(client, tenant, {"field": "lead_score", "op": "eq", "value": 0}) == {ids["B"], ids["D"]}


async def test_only_admins_write_the_rules_everyone_reads_them_and_each_workspace_has_its_own(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    assert await _rules(client, tenant) == {
        "rules": [],
        "half_life_days": 30,
        "version": 0,
        "updated_at": None,
        "scored_at": None,
        "recompute_pending": False,
    }
    for role in ("manager", "sales", "support", "readonly"):
        refused = await client.put("/api/v1/lead-scoring", json=DOCUMENT, headers=_if_match(tenant, 0, role))
        assert refused.status_code == 403, role
    saved = await _save(client, tenant, DOCUMENT, 0)
    for role in ("manager", "sales", "support", "readonly"):
        assert (await _rules(client, tenant, role))["version"] == 1
    assert saved["rules"][0] == {**RULES[0], "decays": False}
    assert (await _rules(client, other_tenant))["version"] == 0
    # The same document again changes nothing; a change is version 2, audited.
    assert (await _save(client, tenant, DOCUMENT, 1))["version"] == 1
    assert (await _save(client, tenant, {**DOCUMENT, "half_life_days": 7}, 1))["version"] == 2
    entries = (
        await db.scalars(
            select(AuditEntry.changes)
            .where(AuditEntry.workspace_id == tenant.id, AuditEntry.entity_type == "lead_scoring_rules")
            .order_by(AuditEntry.id)
        )
    ).all()
    assert entries[-1] == {"half_life_days": {"before": 10, "after": 7}}
    stale = await client.put("/api/v1/lead-scoring", json=DOCUMENT, headers=_if_match(tenant, 1))
    assert stale.status_code == 412
    missing = await client.put("/api/v1/lead-scoring", json=DOCUMENT, headers=tenant.headers())
    assert missing.status_code == 428


def _with_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {"rules": [RULES[0], rule], "half_life_days": 10}


@pytest.mark.parametrize(
    ("document", "loc"),
    [
        (
            _with_rule({"name": "x", "filter": {"field": "shoe_size", "op": "eq", "value": 1}, "points": 5}),
            ["body", "rules", 1, "filter", "field"],
        ),
        (
            _with_rule({"name": "x", "filter": {"and": [{"field": "city", "op": "gte", "value": "a"}]}, "points": 5}),
            ["body", "rules", 1, "filter", "and", 0, "op"],
        ),
        (
            _with_rule({"name": "x", "filter": {"field": "lead_score", "op": "gte", "value": 1}, "points": 5}),
            ["body", "rules", 1, "filter", "field"],
        ),
        (_with_rule({"name": "x", "filter": RULES[0]["filter"], "points": 1001}), ["body", "rules", 1, "points"]),
        (_with_rule({"name": "x", "filter": RULES[0]["filter"], "points": -1001}), ["body", "rules", 1, "points"]),
        ({"rules": [RULES[0]] * 51}, ["body", "rules"]),
        ({"rules": [], "half_life_days": 0}, ["body", "half_life_days"]),
        (
            _with_rule({"name": "x", "filter": RULES[0]["filter"], "points": 1, "weight": 2}),
            ["body", "rules", 1, "weight"],
        ),
    ],
)
async def test_bad_rules_are_422_with_where_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, document: dict[str, Any], loc: list[object]
) -> None:
    saved = await _save(client, tenant, DOCUMENT, 0)
    response = await client.put("/api/v1/lead-scoring", json=document, headers=_if_match(tenant, 1))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert loc in [error["loc"] for error in response.json()["errors"]], response.json()
    assert await _rules(client, tenant) == saved


async def test_a_rule_whose_custom_field_is_gone_scores_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    field = await client.post(
        "/api/v1/custom-fields", json={"key": "budget", "label": "Budget", "type": "integer"}, headers=tenant.headers()
    )
    assert field.status_code == 201, field.text
    rich = await _customer(client, tenant, address={"city": "深圳市"}, custom_fields={"budget": 500})
    big_budget = {"name": "Budget", "filter": {"field": "custom.budget", "op": "gte", "value": 100}, "points": 40}
    await _save(client, tenant, {"rules": [RULES[0], big_budget], "half_life_days": 10}, 0)
    await segment_jobs.score_leads(_job_sessions(db), now=clock.now(), parallel=1)
    assert (await _scores(db, tenant))[rich] == 70
    deleted = await client.delete(f"/api/v1/custom-fields/{field.json()['id']}", headers=_if_match(tenant, 1))
    assert deleted.status_code == 204, deleted.text
    document = (await _rules(client, tenant)) | {}
    ctx = system_caller(tenant.id)
    rules = {"rules": document["rules"], "half_life_days": document["half_life_days"]}
    assert await lead_scoring.recompute_in_chunks(_job_sessions(db), ctx, rules, now=clock.now(), parallel=1) == 1
    assert (await _scores(db, tenant))[rich] == 30


async def test_contacts_of_deleted_interactions_do_not_hold_the_score_up(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    await db.execute(
        update(Customer)
        .where(Customer.workspace_id == tenant.id, Customer.id == uuid.UUID(customer))
        .values(created_at=clock.now() - timedelta(days=100))
    )
    await _contact(client, tenant, customer, 1)
    await _contact(client, tenant, customer, 35)
    await db.execute(
        update(Interaction)
        .where(Interaction.workspace_id == tenant.id, Interaction.occurred_at > clock.now() - timedelta(days=2))
        .values(deleted_at=clock.now())
    )
    await db.commit()
    await _save(client, tenant, {"rules": [RULES[1]], "half_life_days": 10}, 0)
    now: datetime = clock.now()
    await segment_jobs.score_leads(_job_sessions(db), now=now, parallel=1)
    # The live contact is 35 days old: three half-lives, 25 / 8 = 3.
    assert (await _scores(db, tenant))[customer] == 3


async def test_the_customer_list_sorts_by_score_page_by_page(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    ids = await _mixed_customers(client, tenant, db)
    await _save(client, tenant, DOCUMENT, 0)
    await segment_jobs.score_leads(_job_sessions(db), now=clock.now(), parallel=1)
    order: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"sort": "-lead_score", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await client.get("/api/v1/customers", params=params, headers=tenant.headers())
        assert page.status_code == 200, page.text
        order += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert order == [ids["C"], ids["A"], ids["B"], ids["D"]]
    ascending = await client.get("/api/v1/customers", params={"sort": "lead_score"}, headers=tenant.headers())
    assert [item["id"] for item in ascending.json()["items"]] == [ids["D"], ids["B"], ids["A"], ids["C"]]


async def test_concurrent_first_saves_have_exactly_one_winner(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    responses = await asyncio.gather(
        *(
            live_client.put(
                "/api/v1/lead-scoring",
                json={**DOCUMENT, "half_life_days": days},
                headers=_if_match(live_tenant, 0),
            )
            for days in range(1, 6)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 412, 412, 412, 412]
    read = await live_client.get("/api/v1/lead-scoring", headers=live_tenant.headers())
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert read.json()["version"] == 1 and read.json()["half_life_days"] == winner["half_life_days"]
