"""Pipelines and opportunities: CRUD with versions, bad input that changes nothing, moves and their
history, reopening, the board against hand-computed figures, visibility by role and workspace, the
lead becoming a prospect, events in the outbox and the change feed, and a real race of two moves."""

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEntry, Opportunity, OpportunityStageChange, OutboxEvent, Pipeline
from tests.factories import Tenant, customer_body

STAGES: list[dict[str, Any]] = [
    {"code": "qualify", "name": "资格确认", "probability": 10, "stale_after_days": 14},
    {"code": "proposal", "name": "方案报价", "probability": 40},
    {"code": "negotiate", "name": "商务谈判", "probability": 75},
    {"code": "won", "name": "赢单", "probability": 100, "kind": "won"},
    {"code": "lost", "name": "丢单", "probability": 0, "kind": "lost", "lost_reason_required": True},
]


async def _pipeline(client: httpx.AsyncClient, tenant: Tenant, name: str = "新业务") -> dict[str, Any]:
    response = await client.post("/api/v1/pipelines", json={"name": name, "stages": STAGES}, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _customer(client: httpx.AsyncClient, tenant: Tenant, owner: str = "admin") -> str:
    body = customer_body(owner_id=str(tenant.users[owner].id))
    response = await client.post("/api/v1/customers", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _opportunity(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, pipeline_id: str, who: str = "admin", **fields: Any
) -> dict[str, Any]:
    body = {"customer_id": customer_id, "pipeline_id": pipeline_id, "title": "年度茶礼团购", "amount": "1000.00"}
    body["currency"] = "CNY"
    response = await client.post("/api/v1/opportunities", json=body | fields, headers=tenant.headers(who))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _move(
    client: httpx.AsyncClient, tenant: Tenant, opportunity: dict[str, Any], stage: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/opportunities/{opportunity['id']}/move",
        json={"stage": stage, **extra},
        headers=tenant.headers() | {"If-Match": f'"{opportunity["version"]}"'},
    )


async def _count(db: AsyncSession, model: Any, tenant: Tenant) -> int:
    return int(await db.scalar(select(func.count()).select_from(model).where(model.workspace_id == tenant.id)) or 0)


async def test_pipeline_crud_with_versions_and_stages(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pipeline = await _pipeline(client, tenant)
    assert [s["code"] for s in pipeline["stages"]] == [s["code"] for s in STAGES]
    assert pipeline["stages"][0] == {**STAGES[0], "kind": "open", "lost_reason_required": False}
    read = await client.get(f"/api/v1/pipelines/{pipeline['id']}", headers=tenant.headers("sales"))
    assert read.status_code == 200 and read.json() == pipeline and read.headers["ETag"] == '"1"'
    await _pipeline(client, tenant, "续约")
    listed = await client.get("/api/v1/pipelines", headers=tenant.headers())
    assert [p["name"] for p in listed.json()["items"]] == ["新业务", "续约"]

    url = f"/api/v1/pipelines/{pipeline['id']}"
    stale = await client.patch(url, json={"name": "x"}, headers=tenant.headers() | {"If-Match": '"9"'})
    assert stale.status_code == 412
    missing = await client.patch(url, json={"name": "x"}, headers=tenant.headers())
    assert missing.status_code == 428
    stages = [*STAGES[:2], {"code": "demo", "name": "演示", "probability": 50}, *STAGES[2:]]
    changed = await client.patch(
        url, json={"name": "大客户", "stages": stages}, headers=tenant.headers() | {"If-Match": '"1"'}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and [s["code"] for s in changed.json()["stages"]][2] == "demo"
    # Sales may read pipelines but not change them.
    refused = await client.post(
        "/api/v1/pipelines", json={"name": "x", "stages": STAGES}, headers=tenant.headers("sales")
    )
    assert refused.status_code == 403
    deleted = await client.delete(url, headers=tenant.headers() | {"If-Match": '"2"'})
    assert deleted.status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404


async def test_bad_pipelines_are_refused_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    bad_bodies: list[dict[str, Any]] = [
        {"name": "x", "stages": []},
        {"name": "x", "stages": [STAGES[0], STAGES[0]]},
        {"name": "x", "stages": [STAGES[3]]},
        {"name": "x", "stages": [{**STAGES[0], "probability": 101}]},
        {"name": "x", "stages": [{**STAGES[0], "lost_reason_required": True}]},
        {"name": "x", "stages": [{**STAGES[0], "code": "Bad Code"}]},
        {"name": "x", "stages": STAGES, "extra": 1},
    ]
    for body in bad_bodies:
        response = await client.post("/api/v1/pipelines", json=body, headers=tenant.headers())
        assert response.status_code == 422, body
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await _count(db, Pipeline, tenant) == 0


async def test_stages_in_use_cannot_be_removed_or_change_kind(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pipeline = await _pipeline(client, tenant)
    customer = await _customer(client, tenant)
    opportunity = await _opportunity(client, tenant, customer, pipeline["id"], stage="proposal")
    url = f"/api/v1/pipelines/{pipeline['id']}"
    headers = tenant.headers() | {"If-Match": '"1"'}
    without = [s for s in STAGES if s["code"] != "proposal"]
    removed = await client.patch(url, json={"stages": without}, headers=headers)
    assert removed.status_code == 409 and removed.json()["stages_in_use"] == ["proposal"]
    rekinded = [{**s, "kind": "won"} if s["code"] == "proposal" else s for s in STAGES]
    assert (await client.patch(url, json={"stages": rekinded}, headers=headers)).json()["stages_in_use"] == ["proposal"]
    # Stages no one stands in go; the one in use keeps its opportunity under its new name.
    kept = [{**STAGES[1], "name": "报价"}, STAGES[3], STAGES[4]]
    changed = await client.patch(url, json={"stages": kept}, headers=headers)
    assert changed.status_code == 200, changed.text
    read = await client.get(f"/api/v1/opportunities/{opportunity['id']}", headers=tenant.headers())
    assert read.json()["stage"] == "proposal"
    live = await client.delete(url, headers=tenant.headers() | {"If-Match": '"2"'})
    assert live.status_code == 409


async def test_opportunity_crud_list_and_search(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    pipeline = await _pipeline(client, tenant)
    customer = await _customer(client, tenant, owner="sales")
    created = await client.post(
        "/api/v1/opportunities",
        json={
            "customer_id": customer,
            "pipeline_id": pipeline["id"],
            "title": "年度茶礼团购",
            "amount": "12900.5",
            "currency": "CNY",
            "expected_close_date": "2026-12-31",
            "source": "展会",
        },
        headers=tenant.headers(),
    )
    assert created.status_code == 201, created.text
    opportunity = created.json()
    assert created.headers["Location"] == f"/api/v1/opportunities/{opportunity['id']}"
    assert opportunity["amount"] == "12900.50" and opportunity["stage"] == "qualify"
    assert opportunity["status"] == "open" and opportunity["owner_id"] == str(tenant.users["sales"].id)
    assert opportunity["expected_close_date"] == "2026-12-31" and opportunity["created_at"].endswith("Z")
    read = await client.get(created.headers["Location"], headers=tenant.headers())
    assert read.json() == opportunity and read.headers["ETag"] == '"1"'

    patched = await client.patch(
        created.headers["Location"],
        json={"amount": "15000", "title": "年度茶礼团购（加量）"},
        headers=tenant.headers() | {"If-Match": '"1"'},
    )
    assert patched.status_code == 200 and patched.json()["amount"] == "15000.00" and patched.json()["version"] == 2
    same = await client.patch(
        created.headers["Location"], json={"amount": "15000.0"}, headers=tenant.headers() | {"If-Match": '"2"'}
    )
    assert same.status_code == 200 and same.json()["version"] == 2
    second = await _opportunity(client, tenant, customer, pipeline["id"], title="办公室绿植租赁", amount="300")

    async def listed(query: str) -> list[str]:
        response = await client.get(f"/api/v1/opportunities?{query}", headers=tenant.headers())
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()["items"]]

    assert await listed("") == [second["id"], opportunity["id"]]
    assert await listed("sort=amount") == [second["id"], opportunity["id"]]
    assert await listed("q=茶礼") == [opportunity["id"]]
    assert await listed("min_amount=1000") == [opportunity["id"]]
    assert await listed("close_from=2026-12-01&close_to=2026-12-31") == [opportunity["id"]]
    assert await listed(f"customer_id={customer}&status=open&stage=qualify") == [second["id"], opportunity["id"]]
    assert await listed("status=won") == []
    page = await client.get("/api/v1/opportunities?limit=1", headers=tenant.headers())
    after = await client.get(
        f"/api/v1/opportunities?limit=1&cursor={page.json()['next_cursor']}", headers=tenant.headers()
    )
    assert [o["id"] for o in after.json()["items"]] == [opportunity["id"]]

    deleted = await client.delete(created.headers["Location"], headers=tenant.headers() | {"If-Match": '"2"'})
    assert deleted.status_code == 204
    assert (await client.get(created.headers["Location"], headers=tenant.headers())).status_code == 404
    assert await listed("") == [second["id"]]
    actions = (await db.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == opportunity["id"]))).all()
    assert sorted(actions) == ["created", "deleted", "updated"]


async def test_bad_opportunities_are_refused_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    pipeline = await _pipeline(client, tenant)
    other_pipeline = await _pipeline(client, tenant, "续约")
    customer = await _customer(client, tenant)
    foreign = await _customer(client, other_tenant)
    good = {"customer_id": customer, "pipeline_id": pipeline["id"], "title": "x", "amount": "10", "currency": "CNY"}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"currency": "USD"}, 422),
        ({"amount": "-1"}, 422),
        ({"amount": -1}, 422),
        ({"amount": "1.001"}, 422),
        ({"amount": 1.5}, 422),
        ({"stage": "nope"}, 422),
        ({"stage": "won"}, 422),
        ({"title": ""}, 422),
        ({"owner_id": str(tenant.id)}, 422),
        ({"customer_id": foreign}, 404),
        ({"pipeline_id": str(tenant.id)}, 404),
        ({"unknown": 1}, 422),
    ]
    for change, status in cases:
        response = await client.post("/api/v1/opportunities", json=good | change, headers=tenant.headers())
        assert response.status_code == status, (change, response.text)
    assert await _count(db, Opportunity, tenant) == 0

    opportunity = await _opportunity(client, tenant, customer, pipeline["id"])
    url = f"/api/v1/opportunities/{opportunity['id']}"
    headers = tenant.headers() | {"If-Match": '"1"'}
    for body in ({"currency": "USD"}, {"amount": "-5"}, {"title": None}, {"stage": "won"}):
        assert (await client.patch(url, json=body, headers=headers)).status_code == 422, body
    # A stage of another pipeline is not a stage of this one.
    other_stage = {"stage": "demo"}
    await client.patch(
        f"/api/v1/pipelines/{other_pipeline['id']}",
        json={"stages": [{"code": "demo", "name": "演示", "probability": 50}]},
        headers=tenant.headers() | {"If-Match": '"1"'},
    )
    assert (await _move(client, tenant, opportunity, **other_stage)).status_code == 422
    assert (await _move(client, tenant, opportunity, "lost")).status_code == 422
    assert (await _move(client, tenant, opportunity, "proposal", lost_reason="x")).status_code == 422
    assert (await _move(client, tenant, opportunity, "qualify")).status_code == 409
    stale = await client.post(f"{url}/move", json={"stage": "proposal"}, headers=tenant.headers() | {"If-Match": '"7"'})
    assert stale.status_code == 412
    unchanged = (await client.get(url, headers=tenant.headers())).json()
    assert unchanged == opportunity
    assert await _count(db, OpportunityStageChange, tenant) == 1


async def test_moves_history_won_lost_and_reopen(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    pipeline = await _pipeline(client, tenant)
    customer = await _customer(client, tenant)
    opportunity = await _opportunity(client, tenant, customer, pipeline["id"])
    moved = await _move(client, tenant, opportunity, "proposal")
    assert moved.status_code == 200 and moved.json()["stage"] == "proposal" and moved.json()["version"] == 2
    lost = await _move(client, tenant, moved.json(), "lost", lost_reason="预算不足")
    assert lost.status_code == 200, lost.text
    assert lost.json()["status"] == "lost" and lost.json()["lost_reason"] == "预算不足" and lost.json()["closed_at"]

    refused = await _move(client, tenant, lost.json(), "negotiate")
    assert refused.status_code == 409
    assert refused.json()["allowed"] == [] and "negotiate" in refused.json()["allowed_with_reopen"]
    reopened = await _move(client, tenant, lost.json(), "negotiate", reopen=True)
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    assert reopened.json()["closed_at"] is None and reopened.json()["lost_reason"] is None
    won = await _move(client, tenant, reopened.json(), "won")
    assert won.json()["status"] == "won"

    history = await client.get(f"/api/v1/opportunities/{opportunity['id']}/history", headers=tenant.headers())
    steps = [(h["from_stage"], h["to_stage"], h["to_kind"]) for h in history.json()["items"]]
    assert steps == [
        (None, "qualify", "open"),
        ("qualify", "proposal", "open"),
        ("proposal", "lost", "lost"),
        ("lost", "negotiate", "open"),
        ("negotiate", "won", "won"),
    ]
    items = history.json()["items"]
    assert items[0]["seconds_in_previous"] is None and all(h["seconds_in_previous"] >= 0 for h in items[1:])
    assert items[2]["lost_reason"] == "预算不足" and items[1]["actor"]["id"] == str(tenant.users["admin"].id)

    types = (
        await db.scalars(
            select(OutboxEvent.type)
            .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type.startswith("opportunity."))
            .order_by(OutboxEvent.id)
        )
    ).all()
    assert types == [
        "opportunity.created",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.lost",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.won",
    ]
    won_event = await db.scalar(
        select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "opportunity.won")
    )
    assert won_event is not None
    assert won_event.data["from_stage"] == "negotiate" and won_event.data["amount"] == "1000.00"
    assert won_event.data["customer_id"] == customer


async def test_board_figures_equal_hand_computed_for_what_the_caller_sees(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    pipeline = await _pipeline(client, tenant)
    mine = await _customer(client, tenant, owner="sales")
    theirs = await _customer(client, tenant, owner="sales_west")
    deals = [
        (mine, "qualify", "100.00"),
        (mine, "qualify", "33.33"),
        (mine, "proposal", "1000.00"),
        (theirs, "proposal", "500.00"),
        (theirs, "negotiate", "200.00"),
    ]
    for customer, stage, amount in deals:
        await _opportunity(client, tenant, customer, pipeline["id"], stage=stage, amount=amount)
    deleted = await _opportunity(client, tenant, mine, pipeline["id"], amount="999")
    await client.delete(f"/api/v1/opportunities/{deleted['id']}", headers=tenant.headers() | {"If-Match": '"1"'})

    async def board(who: str) -> dict[str, tuple[int, str, str]]:
        response = await client.get(
            f"/api/v1/opportunities/board?pipeline_id={pipeline['id']}", headers=tenant.headers(who)
        )
        assert response.status_code == 200, response.text
        assert response.json()["currency"] == "CNY"
        return {s["code"]: (s["count"], s["amount"], s["weighted_amount"]) for s in response.json()["stages"]}

    zero = (0, "0.00", "0.00")
    assert await board("admin") == {
        "qualify": (2, "133.33", "13.33"),
        "proposal": (2, "1500.00", "600.00"),
        "negotiate": (1, "200.00", "150.00"),
        "won": zero,
        "lost": zero,
    }
    assert await board("sales") == {
        "qualify": (2, "133.33", "13.33"),
        "proposal": (1, "1000.00", "400.00"),
        "negotiate": zero,
        "won": zero,
        "lost": zero,
    }
    missing = await client.get(f"/api/v1/opportunities/board?pipeline_id={tenant.id}", headers=tenant.headers())
    assert missing.status_code == 404
    assert (await client.get("/api/v1/opportunities/board", headers=tenant.headers())).status_code == 422


async def test_visibility_own_team_all_and_other_workspace(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    pipeline = await _pipeline(client, tenant)
    by_owner = {}
    for owner in ("sales", "sales2", "sales_west"):
        customer = await _customer(client, tenant, owner=owner)
        by_owner[owner] = (await _opportunity(client, tenant, customer, pipeline["id"], title=owner))["id"]

    async def seen(who: str, headers: dict[str, str] | None = None) -> set[str]:
        response = await client.get("/api/v1/opportunities", headers=headers or tenant.headers(who))
        return {o["title"] for o in response.json()["items"]}

    assert await seen("sales") == {"sales"}
    assert await seen("manager") == {"sales", "sales2"}
    assert await seen("admin") == {"sales", "sales2", "sales_west"}
    assert await seen("", other_tenant.headers()) == set()
    west = f"/api/v1/opportunities/{by_owner['sales_west']}"
    assert (await client.get(west, headers=tenant.headers("sales"))).status_code == 404
    assert (await client.get(west, headers=other_tenant.headers())).status_code == 404
    moved = await client.post(
        f"{west}/move", json={"stage": "proposal"}, headers=tenant.headers("sales") | {"If-Match": "*"}
    )
    assert moved.status_code == 404
    readonly = await client.post(
        "/api/v1/opportunities",
        json={
            "customer_id": str(tenant.id),
            "pipeline_id": pipeline["id"],
            "title": "x",
            "amount": 1,
            "currency": "CNY",
        },
        headers=tenant.headers("readonly"),
    )
    assert readonly.status_code == 403
    other_board = await client.get(
        f"/api/v1/opportunities/board?pipeline_id={pipeline['id']}", headers=other_tenant.headers()
    )
    assert other_board.status_code == 404


async def test_a_lead_with_an_open_opportunity_becomes_a_prospect(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pipeline = await _pipeline(client, tenant)
    customer = await _customer(client, tenant)
    lead = await client.post(f"/api/v1/customers/{customer}/stage", json={"stage": "lead"}, headers=tenant.headers())
    assert lead.status_code == 200, lead.text
    await _opportunity(client, tenant, customer, pipeline["id"])
    stage = await client.get(f"/api/v1/customers/{customer}/stage", headers=tenant.headers())
    assert stage.json()["stage"] == "prospect", stage.text


async def test_events_reach_the_change_feed_of_those_who_see_the_customer(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    pipeline = await _pipeline(live_client, live_tenant)
    customer = await _customer(live_client, live_tenant, owner="sales_west")
    opportunity = await _opportunity(live_client, live_tenant, customer, pipeline["id"])
    await _move(live_client, live_tenant, opportunity, "proposal")

    async def feed(who: str) -> list[dict[str, Any]]:
        response = await live_client.get("/api/v1/changes?type=opportunity.*", headers=live_tenant.headers(who))
        if response.status_code == 503:
            # A busy shared server: the feed asks to be retried.
            return []
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    # Events show once every older transaction in the cluster has ended: wait for ours.
    async with asyncio.timeout(120):
        seen = await feed("sales_west")
        while len(seen) < 2:
            await asyncio.sleep(0.1)
            seen = await feed("sales_west")
    assert [e["type"] for e in seen] == ["opportunity.created", "opportunity.stage_changed"]
    assert seen[0]["data"]["id"] == opportunity["id"] and seen[1]["data"]["to_stage"] == "proposal"
    assert await feed("sales") == []


async def test_two_concurrent_moves_from_one_version_have_one_winner(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    pipeline = await _pipeline(live_client, live_tenant)
    customer = await _customer(live_client, live_tenant)
    for _ in range(3):
        opportunity = await _opportunity(live_client, live_tenant, customer, pipeline["id"])
        answers = await asyncio.gather(
            _move(live_client, live_tenant, opportunity, "proposal"),
            _move(live_client, live_tenant, opportunity, "negotiate"),
        )
        assert sorted(a.status_code for a in answers) == [200, 412], [a.text for a in answers]
        history = await live_client.get(
            f"/api/v1/opportunities/{opportunity['id']}/history", headers=live_tenant.headers()
        )
        assert len(history.json()["items"]) == 2
