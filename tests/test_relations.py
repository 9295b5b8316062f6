"""Relations between customers: each kind's rules, cycles (a real race included), what each role
sees, timelines, events, filters and segments, and merges with their undo."""

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CustomerRelation, OutboxEvent, Segment
from app.services.segments import segments
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant, kind: str = "individual", **fields: Any) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(kind=kind, **fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _relate(
    client: httpx.AsyncClient, tenant: Tenant, from_id: str, kind: str, to_id: str, who: str = "admin", **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/customers/{from_id}/relations",
        json={"kind": kind, "to_customer_id": to_id, **extra},
        headers=tenant.headers(who),
    )


async def _related(client: httpx.AsyncClient, tenant: Tenant, from_id: str, kind: str, to_id: str) -> str:
    response = await _relate(client, tenant, from_id, kind, to_id)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _listed(client: httpx.AsyncClient, tenant: Tenant, customer_id: str, who: str = "admin") -> list[Any]:
    response = await client.get(f"/api/v1/customers/{customer_id}/relations", headers=tenant.headers(who))
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_a_contact_shows_on_both_customers_with_its_direction_timeline_and_event(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    person = await _customer(client, tenant, name="王小明")
    company = await _customer(client, tenant, "company", name="深圳腾达科技")
    created = await _relate(client, tenant, person, "contact_of", company, note="采购负责人")
    assert created.status_code == 201, created.text
    relation = created.json()
    assert created.headers["Location"] == f"/api/v1/customers/{person}/relations/{relation['id']}"
    assert (relation["kind"], relation["direction"], relation["note"]) == ("contact_of", "outgoing", "采购负责人")
    assert relation["other"]["id"] == company and relation["other"]["name"] == "深圳腾达科技"
    assert relation["other"]["kind"] == "company" and relation["created_by"]["type"] == "user"

    from_company = await _listed(client, tenant, company)
    assert [(r["id"], r["direction"], r["other"]["id"]) for r in from_company] == [(relation["id"], "incoming", person)]
    assert [r["direction"] for r in await _listed(client, tenant, person)] == ["outgoing"]
    read = await client.get(f"/api/v1/customers/{company}/relations/{relation['id']}", headers=tenant.headers())
    assert read.status_code == 200 and read.json()["direction"] == "incoming"

    for customer_id, direction, other in ((person, "outgoing", company), (company, "incoming", person)):
        timeline = await client.get(f"/api/v1/customers/{customer_id}/timeline", headers=tenant.headers())
        changes = [i["data"] for i in timeline.json()["items"] if i["data"].get("action") == "relation_added"]
        assert [c["changes"]["relation"]["after"] for c in changes] == [
            {"id": relation["id"], "kind": "contact_of", "direction": direction, "customer_id": other}
        ]
    events = (await db.scalars(select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id))).all()
    added = [e.data for e in events if e.type == "customer.relation_added"]
    assert added == [
        {
            "id": relation["id"],
            "kind": "contact_of",
            "from_customer_id": person,
            "to_customer_id": company,
            "note": "采购负责人",
            "created_at": added[0]["created_at"],
            "created_by": {"type": "user", "id": str(tenant.users["admin"].id)},
            "removed_at": None,
        }
    ]


async def test_removing_a_relation_leaves_both_lists_and_is_on_both_timelines(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    a = await _customer(client, tenant)
    b = await _customer(client, tenant)
    relation = await _related(client, tenant, a, "family_of", b)
    url = f"/api/v1/customers/{b}/relations/{relation}"
    assert (await client.delete(url, headers=tenant.headers())).status_code == 204
    assert await _listed(client, tenant, a) == [] and await _listed(client, tenant, b) == []
    again = await client.delete(url, headers=tenant.headers())
    assert again.status_code == 404 and again.headers["content-type"] == "application/problem+json"
    for customer_id in (a, b):
        timeline = (await client.get(f"/api/v1/customers/{customer_id}/timeline", headers=tenant.headers())).json()
        actions = [i["data"]["action"] for i in timeline["items"] if i["type"] == "change"]
        assert actions[:2] == ["relation_removed", "relation_added"]
    removed = await db.scalar(
        select(OutboxEvent).where(
            OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "customer.relation_removed"
        )
    )
    assert removed is not None and removed.data["id"] == relation and removed.data["removed_at"] is not None
    # Removed, the pair may be related again: a new relation.
    assert await _related(client, tenant, b, "family_of", a) != relation


async def test_each_kind_refuses_ends_of_the_wrong_kind_and_a_relation_to_itself(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    person = await _customer(client, tenant)
    other_person = await _customer(client, tenant)
    company = await _customer(client, tenant, "company")
    cases = [
        (person, "contact_of", person, "to_customer_id"),
        (company, "contact_of", company, "to_customer_id"),
        (company, "contact_of", person, "kind"),
        (person, "contact_of", other_person, "to_customer_id"),
        (person, "subsidiary_of", company, "kind"),
        (company, "subsidiary_of", person, "to_customer_id"),
        (company, "family_of", person, "kind"),
        (person, "family_of", company, "to_customer_id"),
    ]
    for from_id, kind, to_id, field in cases:
        response = await _relate(client, tenant, from_id, kind, to_id)
        assert response.status_code == 422, (kind, response.text)
        assert response.json()["errors"][0]["loc"] == ["body", field], (kind, response.text)
    for body in (
        {"kind": "cousin_of", "to_customer_id": company},
        {"kind": "contact_of", "to_customer_id": "not-an-id"},
        {"kind": "contact_of", "to_customer_id": company, "weight": 3},
        {"kind": "contact_of"},
        {"kind": "contact_of", "to_customer_id": company, "note": "x" * 501},
    ):
        response = await client.post(f"/api/v1/customers/{person}/relations", json=body, headers=tenant.headers())
        assert response.status_code == 422, (body, response.text)
    assert (await db.scalars(select(CustomerRelation).where(CustomerRelation.workspace_id == tenant.id))).all() == []


async def test_repeats_and_a_second_referrer_are_409_naming_the_existing_relation(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    person = await _customer(client, tenant)
    relative = await _customer(client, tenant)
    company = await _customer(client, tenant, "company")
    referrer = await _customer(client, tenant)
    contact = await _related(client, tenant, person, "contact_of", company)
    family = await _related(client, tenant, person, "family_of", relative)
    referral = await _related(client, tenant, person, "referred_by", referrer)
    for from_id, kind, to_id, existing in (
        (person, "contact_of", company, contact),
        (relative, "family_of", person, family),
        (person, "referred_by", referrer, referral),
        (person, "referred_by", relative, referral),
    ):
        response = await _relate(client, tenant, from_id, kind, to_id)
        assert response.status_code == 409, response.text
        assert response.json()["existing_id"] == existing
    # A customer may refer many, and be a contact of many companies.
    await _related(client, tenant, relative, "referred_by", referrer)
    await _related(client, tenant, person, "contact_of", await _customer(client, tenant, "company"))


async def test_subsidiary_and_referral_cycles_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    a, b, c = [await _customer(client, tenant, "company") for _ in range(3)]
    await _related(client, tenant, a, "subsidiary_of", b)
    await _related(client, tenant, b, "subsidiary_of", c)
    for from_id, to_id in ((c, a), (b, a), (c, b)):
        response = await _relate(client, tenant, from_id, "subsidiary_of", to_id)
        assert response.status_code == 409, response.text
        assert "cycle" in response.json()["detail"]
    # Two parents are no cycle.
    await _related(client, tenant, a, "subsidiary_of", c)
    x, y = [await _customer(client, tenant) for _ in range(2)]
    await _related(client, tenant, x, "referred_by", y)
    assert (await _relate(client, tenant, y, "referred_by", x)).status_code == 409


async def test_concurrent_opposite_subsidiaries_have_exactly_one_winner(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    for _ in range(4):
        a, b = [await _customer(live_client, live_tenant, "company") for _ in range(2)]
        answers = await asyncio.gather(
            _relate(live_client, live_tenant, a, "subsidiary_of", b),
            _relate(live_client, live_tenant, b, "subsidiary_of", a),
        )
        assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
        assert len(await _listed(live_client, live_tenant, a)) == 1
    # Family has no hierarchy: the unique pair index makes the concurrent reverse a 409 as well.
    p, q = [await _customer(live_client, live_tenant) for _ in range(2)]
    answers = await asyncio.gather(
        _relate(live_client, live_tenant, p, "family_of", q), _relate(live_client, live_tenant, q, "family_of", p)
    )
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]


async def test_other_workspaces_ids_are_404(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    mine = await _customer(client, tenant)
    company = await _customer(client, tenant, "company")
    theirs = await _customer(client, other_tenant, "company")
    their_person = await _customer(client, other_tenant)
    their_relation = await _related(client, other_tenant, their_person, "contact_of", theirs)
    assert (await _relate(client, tenant, mine, "contact_of", theirs)).status_code == 404
    assert (await _relate(client, tenant, their_person, "contact_of", company)).status_code == 404
    for method in ("GET", "DELETE"):
        for url in (
            f"/api/v1/customers/{their_person}/relations/{their_relation}",
            f"/api/v1/customers/{mine}/relations/{their_relation}",
        ):
            assert (await client.request(method, url, headers=tenant.headers())).status_code == 404
    assert (
        await client.get(f"/api/v1/customers/{their_person}/relations", headers=tenant.headers())
    ).status_code == 404
    assert len(await _listed(client, other_tenant, their_person)) == 1


async def test_each_role_sees_relations_only_between_customers_it_sees(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sales = str(tenant.users["sales"].id)
    own = await _customer(client, tenant, owner_id=sales)
    own_company = await _customer(client, tenant, "company", owner_id=sales)
    west = await _customer(client, tenant, "company", owner_id=str(tenant.users["sales_west"].id))
    with_own = await _related(client, tenant, own, "contact_of", own_company)
    with_west = await _related(client, tenant, own, "referred_by", west)
    assert {r["id"] for r in await _listed(client, tenant, own)} == {with_own, with_west}
    for who in ("sales", "manager"):
        assert [r["id"] for r in await _listed(client, tenant, own, who)] == [with_own]
        hidden = await client.get(f"/api/v1/customers/{own}/relations/{with_west}", headers=tenant.headers(who))
        assert hidden.status_code == 404
        invisible = await client.get(f"/api/v1/customers/{west}/relations", headers=tenant.headers(who))
        assert invisible.status_code == 404
        assert (await _relate(client, tenant, own_company, "subsidiary_of", west, who)).status_code == 404
        assert (await _relate(client, tenant, west, "subsidiary_of", own_company, who)).status_code == 404
    # The rules see every relation: a second referrer is refused, naming the one the caller cannot see.
    second = await _relate(client, tenant, own, "referred_by", await _customer(client, tenant, owner_id=sales), "sales")
    assert second.status_code == 409 and second.json()["existing_id"] == with_west
    # Read-only callers read and cannot write.
    assert {r["id"] for r in await _listed(client, tenant, own, "readonly")} == {with_own, with_west}
    relative = await _customer(client, tenant, owner_id=sales)
    assert (await _relate(client, tenant, own, "family_of", relative, "readonly")).status_code == 403
    assert (await _relate(client, tenant, own, "family_of", relative, "sales")).status_code == 201
    # The salesperson may cut its customer's link to one it cannot see, and then set its own.
    cut = await client.delete(f"/api/v1/customers/{own}/relations/{with_west}", headers=tenant.headers("sales"))
    assert cut.status_code == 204
    assert (await _relate(client, tenant, own, "referred_by", own_company, "sales")).status_code == 201
    # But not from the far end, which it cannot see.
    assert (
        await client.delete(f"/api/v1/customers/{west}/relations/{with_own}", headers=tenant.headers("sales"))
    ).status_code == 404


async def _search(client: httpx.AsyncClient, tenant: Tenant, filter_: Any, who: str = "admin") -> set[str]:
    response = await client.post(
        "/api/v1/customers/search", json={"filter": filter_, "limit": 100}, headers=tenant.headers(who)
    )
    assert response.status_code == 200, response.text
    return {c["id"] for c in response.json()["items"]}


async def test_filters_test_relations_as_sets_of_related_customers(client: httpx.AsyncClient, tenant: Tenant) -> None:
    company, other_company, parent = [await _customer(client, tenant, "company") for _ in range(3)]
    alice, bob, carol = [await _customer(client, tenant) for _ in range(3)]
    await _related(client, tenant, alice, "contact_of", company)
    await _related(client, tenant, bob, "contact_of", other_company)
    await _related(client, tenant, company, "subsidiary_of", parent)
    await _related(client, tenant, carol, "referred_by", alice)
    await _related(client, tenant, bob, "family_of", carol)

    def rule(field: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"field": field, "op": op, **({"value": value} if value is not None else {})}

    everyone = {company, other_company, parent, alice, bob, carol}
    assert await _search(client, tenant, rule("relation.contact_of", "eq", company)) == {alice}
    assert await _search(client, tenant, rule("relation.contact_of", "in", [company, other_company])) == {alice, bob}
    assert await _search(client, tenant, rule("relation.contact_of", "is_not_null")) == {alice, bob}
    assert await _search(client, tenant, rule("relation.contact_of", "is_null")) == everyone - {alice, bob}
    assert await _search(client, tenant, rule("relation.contact_of", "neq", company)) == everyone - {alice}
    assert await _search(client, tenant, rule("relation.has_contact", "is_not_null")) == {company, other_company}
    assert await _search(client, tenant, rule("relation.subsidiary_of", "eq", parent)) == {company}
    assert await _search(client, tenant, rule("relation.parent_of", "is_not_null")) == {parent}
    assert await _search(client, tenant, rule("relation.referred_by", "eq", alice)) == {carol}
    assert await _search(client, tenant, rule("relation.referrer_of", "is_not_null")) == {alice}
    assert await _search(client, tenant, rule("relation.family_of", "eq", bob)) == {carol}
    assert await _search(client, tenant, rule("relation.family_of", "eq", carol)) == {bob}
    combined = {"and": [rule("relation.has_contact", "is_not_null"), rule("relation.subsidiary_of", "is_not_null")]}
    assert await _search(client, tenant, combined) == {company}
    for bad in (
        rule("relation.contact_of", "contains", company),
        rule("relation.contact_of", "eq", "not-an-id"),
        rule("relation.contact_of", "is_null", company),
        rule("relation.contact_of", "in", []),
        rule("relation.cousin_of", "is_null"),
    ):
        response = await client.post("/api/v1/customers/search", json={"filter": bad}, headers=tenant.headers())
        assert response.status_code == 422, (bad, response.text)
    fields = (await client.get("/api/v1/segments/fields", headers=tenant.headers())).json()["items"]
    listed = {f["field"] for f in fields}
    assert {"relation.contact_of", "relation.referrer_of", "relation.family_of"} <= listed


async def test_a_relation_filter_sees_only_relations_to_customers_the_caller_sees(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sales = str(tenant.users["sales"].id)
    own = await _customer(client, tenant, owner_id=sales)
    west = await _customer(client, tenant, "company", owner_id=str(tenant.users["sales_west"].id))
    await _related(client, tenant, own, "contact_of", west)
    rule = {"field": "relation.contact_of", "op": "is_not_null"}
    assert await _search(client, tenant, rule) == {own}
    assert await _search(client, tenant, rule, "sales") == set()


async def test_a_dynamic_segment_of_referrers_follows_relations(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    referrer, friend, stranger = [await _customer(client, tenant) for _ in range(3)]
    created = await client.post(
        "/api/v1/segments",
        json={"name": "Referrers", "filter": {"field": "relation.referrer_of", "op": "is_not_null"}},
        headers=tenant.headers(),
    )
    assert created.status_code == 201, created.text
    segment = await db.get(Segment, (tenant.id, uuid.UUID(created.json()["id"])))
    assert segment is not None
    assert await segments.refresh(db, segment) == (0, 0)
    relation = await _related(client, tenant, friend, "referred_by", referrer)
    assert await segments.refresh(db, segment) == (1, 0)
    members = (await client.get(f"/api/v1/segments/{segment.id}/members", headers=tenant.headers())).json()
    assert [m["id"] for m in members["items"]] == [referrer]
    await client.delete(f"/api/v1/customers/{friend}/relations/{relation}", headers=tenant.headers())
    assert await segments.refresh(db, segment) == (0, 1)
    assert stranger not in {m["id"] for m in members["items"]}


async def _ends(db: AsyncSession, tenant: Tenant) -> dict[str, tuple[str, str, str, bool]]:
    db.expunge_all()
    rows = (await db.scalars(select(CustomerRelation).where(CustomerRelation.workspace_id == tenant.id))).all()
    return {str(r.id): (r.kind, str(r.from_customer_id), str(r.to_customer_id), r.deleted_at is None) for r in rows}


async def test_a_merge_re_points_relations_drops_what_would_break_a_rule_and_undo_restores_them(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    keep, dup, group = [await _customer(client, tenant, "company", name=n) for n in ("腾达", "腾达(重复)", "集团")]
    alice, bob = [await _customer(client, tenant) for _ in range(2)]
    # Moved: bob's contact of the duplicate, and the duplicate's parent.
    bob_to_dup = await _related(client, tenant, bob, "contact_of", dup)
    dup_in_group = await _related(client, tenant, dup, "subsidiary_of", group)
    # Dropped: alice's contact of the duplicate (keep's contact already), the duplicate's referral
    # by keep (keep's by itself), and holding's place under the duplicate (under keep, with keep
    # under holding, a cycle).
    alice_to_keep = await _related(client, tenant, alice, "contact_of", keep)
    alice_to_dup = await _related(client, tenant, alice, "contact_of", dup)
    dup_by_keep = await _related(client, tenant, dup, "referred_by", keep)
    holding = await _customer(client, tenant, "company", name="控股")
    keep_in_holding = await _related(client, tenant, keep, "subsidiary_of", holding)
    holding_in_dup = await _related(client, tenant, holding, "subsidiary_of", dup)
    before = await _ends(db, tenant)

    merged = await client.post(f"/api/v1/customers/{keep}/merge", json={"absorb": [dup]}, headers=tenant.headers())
    assert merged.status_code == 200, merged.text
    after = await _ends(db, tenant)
    assert after[bob_to_dup] == ("contact_of", bob, keep, True)
    assert after[dup_in_group] == ("subsidiary_of", keep, group, True)
    assert after[alice_to_keep] == before[alice_to_keep]
    assert after[keep_in_holding] == before[keep_in_holding]
    for dropped in (alice_to_dup, dup_by_keep, holding_in_dup):
        assert after[dropped][3] is False, dropped
    listed = {r["id"]: (r["direction"], r["other"]["id"]) for r in await _listed(client, tenant, keep)}
    assert listed == {
        bob_to_dup: ("incoming", bob),
        dup_in_group: ("outgoing", group),
        alice_to_keep: ("incoming", alice),
        keep_in_holding: ("outgoing", holding),
    }

    undone = await client.post(f"/api/v1/customers/merges/{merged.json()['merge_id']}/undo", headers=tenant.headers())
    assert undone.status_code == 200, undone.text
    assert await _ends(db, tenant) == before
    assert {r["id"] for r in await _listed(client, tenant, dup)} == {
        bob_to_dup,
        dup_in_group,
        alice_to_dup,
        dup_by_keep,
        holding_in_dup,
    }
