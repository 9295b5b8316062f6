"""Every path that emits an event writes the `data` its catalogue entry promises.

One workspace goes through every path that emits: the API's single and batch requests, the file
imports, and the worker's jobs (value recompute, lifecycle rules by order and the nightly pass,
segment refresh, SLA breaches, endpoint disabling). Each event it leaves in the outbox is checked,
as delivered, against its type's schema in the OpenAPI document's `webhooks` section, with objects
closed: a key the schema does not declare fails as a missing or mistyped one does."""

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import jsonschema_rs
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.core.wire import currency_places
from app.models import (
    Customer,
    CustomerRelation,
    Interaction,
    Order,
    OrderLine,
    OutboxEvent,
    Segment,
    StageHistory,
    Ticket,
    TierChange,
)
from app.services.customers import customer_output, relations
from app.services.engagement import interactions
from app.services.events.event_catalogue import CATALOGUE, data_model
from app.services.events.payloads import Payload
from app.services.events.webhook_delivery import envelope
from app.services.loyalty import referrals
from app.services.segments import lifecycle, segments
from app.services.service_desk import tickets
from app.services.value import customer_values, orders
from app.workers import loyalty as loyalty_jobs
from tests.factories import Tenant, customer_body
from tests.import_helpers import queue_and_run
from tests.outreach_helpers import aliyun_channel, random_mobile, run_worker, sms_content, tencent_channel
from tests.outreach_stand_ins import sms_server
from tests.receiver import Answer, Receiver
from tests.webhook_helpers import run_due

Validators = dict[str, jsonschema_rs.Draft202012Validator]

ORDER_FILE = {"订单号": "external_id", "客户编号": "customer_code", "下单时间": "ordered_at", "状态": "status"}
ORDER_FILE |= {"商品编码": "sku", "商品": "product_name", "数量": "quantity", "单价": "unit_price"}
ORDER_FILE |= {"发货状态": "fulfilment_status", "运单号": "tracking_reference"}
CONTACT_FILE = {"客户编号": "customer_code", "渠道": "channel", "方向": "direction", "时间": "occurred_at"}
CONTACT_FILE |= {"编号": "external_id"}
CUSTOMER_FILE = {"姓名": "name", "手机": "phone", "城市": "city"}


def _closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


async def _validators(client: httpx.AsyncClient) -> Validators:
    """The request body schema of each webhook in the published OpenAPI document."""
    spec = (await client.get("/openapi.json")).json()
    components = _closed(spec["components"])
    validators = {}
    for name, operation in spec["webhooks"].items():
        body = operation["post"]["requestBody"]["content"]["application/json"]["schema"]
        validators[name] = jsonschema_rs.Draft202012Validator(
            {**_closed(body), "components": components}, validate_formats=True
        )
    return validators


def _problems(validators: Validators, events: list[OutboxEvent]) -> list[str]:
    return [
        f"{event.type} {list(error.instance_path)}: {error.message}"
        for event in events
        for error in validators[event.type].iter_errors(envelope(event))
    ]


class Paths:
    """Runs each path in turn and keeps the events each one wrote."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, tenant: Tenant) -> None:
        self.app, self.client, self.tenant = app, client, tenant
        self.seen: set[uuid.UUID] = set()
        self.by_path: dict[str, list[OutboxEvent]] = {}

    async def run(self, path: str, emits: set[str], step: Callable[[], Awaitable[object]]) -> None:
        """Run `step`, then check that it emitted every type of `emits` (and keep what it emitted)."""
        await step()
        async with self.app.state.sessions() as session:
            rows = (await session.scalars(select(OutboxEvent).where(OutboxEvent.workspace_id == self.tenant.id))).all()
        new = [row for row in rows if row.id not in self.seen]
        self.seen |= {row.id for row in new}
        self.by_path[path] = new
        missing = emits - {row.type for row in new}
        assert not missing, f"{path} emitted no {sorted(missing)}"

    async def call(self, method: str, url: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        headers = {**self.tenant.headers(), **kwargs.pop("headers", {})}
        response = await self.client.request(method, f"/api/v1{url}", headers=headers, **kwargs)
        assert response.status_code == expect, response.text
        body = dict(response.json()) if response.content else {}
        # Every item of a batch must have gone in.
        assert all(item["status"] < 300 for item in body.get("results", [])), response.text
        return body

    async def customer(self, **fields: Any) -> dict[str, Any]:
        return await self.call("POST", "/customers", 201, json=customer_body(**fields))

    async def patch_customer(self, customer_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        version = (await self.call("GET", f"/customers/{customer_id}", 200))["version"]
        return await self.call(
            "PATCH", f"/customers/{customer_id}", 200, json=patch, headers={"If-Match": f'"{version}"'}
        )


def _file(mapping: dict[str, str], rows: list[dict[str, str]]) -> bytes:
    lines = [",".join(mapping), *(",".join(row.get(field, "") for field in mapping.values()) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


async def _drive_every_path(
    app: FastAPI,
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    tenant: Tenant,
    receiver: Receiver,
    database_url: str,
) -> Paths:
    paths = Paths(app, client, tenant)
    ctx = system_caller(tenant.id)
    if_match = {"If-Match": '"1"'}
    made: dict[str, dict[str, Any]] = {}

    async def create() -> None:
        made["a"] = await paths.customer(tags=["vip"])
        made["b"] = await paths.customer()

    await paths.run("customer API", {"customer.created"}, create)

    async def batch_create() -> None:
        body = {"items": [customer_body(), customer_body()]}
        results = (await paths.call("POST", "/customers/batch", 207, json=body))["results"]
        made["c"], made["d"] = ({"id": r["id"]} for r in results)

    await paths.run("customer batch", {"customer.created"}, batch_create)
    a, b, c, d = (made[key]["id"] for key in "abcd")
    await paths.run(
        "customer PATCH",
        {"customer.updated"},
        lambda: paths.patch_customer(a, {"title": "总监"}),
    )
    await paths.run(
        "customer batch update",
        {"customer.updated"},
        lambda: paths.call(
            "PATCH", "/customers/batch", 207, json={"items": [{"id": c, "version": 1, "patch": {"title": "经理"}}]}
        ),
    )

    async def delete_and_restore() -> None:
        await paths.call("DELETE", f"/customers/{d}", 204, headers=if_match)
        await paths.call("POST", f"/customers/{d}/restore", 200)

    await paths.run("customer delete and restore", {"customer.deleted", "customer.restored"}, delete_and_restore)

    async def merge_and_undo() -> None:
        merged = await paths.call("POST", f"/customers/{a}/merge", 200, json={"absorb": [d]})
        await paths.call("POST", f"/customers/merges/{merged['merge_id']}/undo", 200)

    await paths.run("customer merge and undo", {"customer.merged", "customer.merge_undone"}, merge_and_undo)

    async def relate_and_remove() -> None:
        relation = await paths.call(
            "POST", f"/customers/{a}/relations", 201, json={"kind": "family_of", "to_customer_id": b}
        )
        await paths.call("DELETE", f"/customers/{b}/relations/{relation['id']}", 204)

    await paths.run("customer relations", {"customer.relation_added", "customer.relation_removed"}, relate_and_remove)

    now = clock.now()
    contact = {"customer_id": a, "channel": "phone", "direction": "outbound", "occurred_at": now.isoformat()}
    await paths.run(
        "interaction API", {"interaction.created"}, lambda: paths.call("POST", "/interactions", 201, json=contact)
    )
    await paths.run(
        "interaction batch import",
        {"interaction.created"},
        lambda: paths.call("POST", "/interactions/import", 207, json={"items": [{**contact, "external_id": "C-1"}]}),
    )

    async def visit_check_out_and_delete() -> None:
        visit = {
            **contact,
            "channel": "visit",
            "location": {"latitude": 31.2304, "longitude": 121.4737, "accuracy_m": 8, "address": "南京东路 1 号"},
            "checked_in_at": now.isoformat(),
        }
        logged = await paths.call("POST", "/interactions", 201, json=visit)
        out = {"checked_out_at": (now + timedelta(minutes=40)).isoformat()}
        await paths.call("PATCH", f"/interactions/{logged['id']}", 200, json=out, headers=if_match)
        await paths.call("DELETE", f"/interactions/{logged['id']}", 204, headers={"If-Match": '"2"'})

    await paths.run(
        "visit check-out and delete",
        {"interaction.created", "interaction.updated", "interaction.deleted"},
        visit_check_out_and_delete,
    )

    async def tasks() -> None:
        task = await paths.call(
            "POST", "/tasks", 201, json={"customer_id": a, "title": "回电", "due_at": now.isoformat()}
        )
        await paths.call("POST", f"/tasks/{task['id']}/complete", 200, json={})
        other = await paths.call(
            "POST", "/tasks", 201, json={"customer_id": a, "title": "上门", "due_at": now.isoformat()}
        )
        later = {"due_at": (now + timedelta(days=1)).isoformat()}
        await paths.call("PATCH", f"/tasks/{other['id']}", 200, json=later, headers=if_match)
        await paths.call("POST", f"/tasks/{other['id']}/cancel", 200)

    await paths.run("task API", {"task.created", "task.completed", "task.updated", "task.cancelled"}, tasks)

    async def ticket_workflow() -> None:
        body = {"customer_id": a, "type": "complaint", "channel": "phone", "subject": "包装破损"}
        ticket = (await paths.call("POST", "/tickets", 201, json=body))["id"]
        admin = str(tenant.users["admin"].id)
        await paths.call("PATCH", f"/tickets/{ticket}", 200, json={"assignee_id": admin}, headers=if_match)
        for status in ("in_progress", "resolved", "in_progress", "resolved", "closed"):
            await paths.call("POST", f"/tickets/{ticket}/transition", 200, json={"status": status})
        other = (await paths.call("POST", "/tickets", 201, json=body))["id"]
        await paths.call("POST", f"/tickets/{other}/escalate", 200)
        await paths.call("POST", f"/tickets/{other}/transition", 200, json={"status": "resolved"})
        token = (await paths.call("POST", f"/tickets/{other}/csat-request", 200))["token"]
        await paths.call("POST", f"/csat/{token}", 200, json={"score": 4})

    ticket_types = {"ticket.created", "ticket.assigned", "ticket.status_changed", "ticket.resolved"}
    ticket_types |= {"ticket.reopened", "ticket.closed", "ticket.escalated", "ticket.csat_received"}
    await paths.run("ticket API", ticket_types, ticket_workflow)

    async def breach() -> None:
        body = {"customer_id": b, "type": "inquiry", "channel": "email", "subject": "发票"}
        ticket = (await paths.call("POST", "/tickets", 201, json=body))["id"]
        async with app.state.sessions() as session:
            past = clock.now() - timedelta(minutes=1)
            await session.execute(
                update(Ticket)
                .where(Ticket.workspace_id == tenant.id, Ticket.id == ticket)
                .values(first_response_due_at=past, resolution_due_at=past)
            )
            assert await tickets.mark_breaches(session) == 2
            await session.commit()

    await paths.run("SLA breach job", {"ticket.sla_breached"}, breach)

    order = {
        "external_id": "SO-1",
        "customer_id": a,
        "ordered_at": now.isoformat(),
        "currency": "CNY",
        "total_amount": "20000.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20000.00"}],
    }
    # A first order: the customer's tier and stage follow in its transaction.
    await paths.run(
        "order API",
        {"order.created", "tier.changed", "lifecycle.stage_changed"},
        lambda: paths.call("POST", "/orders", 201, json=order),
    )
    await paths.run(
        "order API update",
        {"order.updated"},
        lambda: paths.call("POST", "/orders", 200, json={**order, "status": "cancelled"}),
    )

    async def fulfilment_moves() -> None:
        stored = await paths.call("POST", "/orders", 200, json=order)
        moved = {"status": "shipped", "tracking_reference": "SF100", "note": "顺丰"}
        version = {"If-Match": f'"{stored["version"]}"'}
        await paths.call("POST", f"/orders/{stored['id']}/fulfilment", 200, json=moved, headers=version)

    await paths.run("order fulfilment API", {"order.fulfilment_changed"}, fulfilment_moves)
    await paths.run(
        "order API fulfilment",
        {"order.fulfilment_changed"},
        lambda: paths.call("POST", "/orders", 200, json={**order, "fulfilment_status": "delivered"}),
    )
    await paths.run(
        "order batch",
        {"order.created"},
        lambda: paths.call("POST", "/orders/batch", 207, json={"items": [{**order, "external_id": "SO-2"}]}),
    )
    await paths.run(
        "order batch fulfilment",
        {"order.fulfilment_changed"},
        lambda: paths.call(
            "POST",
            "/orders/batch",
            207,
            json={"items": [{**order, "external_id": "SO-2", "fulfilment_status": "shipped"}]},
        ),
    )

    b_code = (await paths.call("GET", f"/customers/{b}", 200))["code"]
    line = {"customer_code": b_code, "ordered_at": "2026-03-01 10:00", "sku": "CUP", "product_name": "杯"}
    order_rows = [{**line, "external_id": "F-1", "quantity": "2", "unit_price": "9000"}]

    async def order_file(rows: list[dict[str, str]], mode: str) -> None:
        upload = ("订单.csv", _file(ORDER_FILE, rows))
        _, job = await queue_and_run(
            app, pool, client, tenant, upload, kind="orders", mapping=ORDER_FILE, who="admin", form={"mode": mode}
        )
        assert job.status == "done", job.error

    await paths.run(
        "order import",
        {"order.created", "tier.changed", "lifecycle.stage_changed"},
        lambda: order_file(order_rows, "create_only"),
    )
    await paths.run(
        "order import upsert",
        {"order.updated", "order.fulfilment_changed"},
        lambda: order_file(
            [{**order_rows[0], "status": "cancelled", "fulfilment_status": "shipped", "tracking_reference": "SF9"}],
            "upsert",
        ),
    )

    async def contact_file() -> None:
        row = {"customer_code": b_code, "channel": "phone", "direction": "inbound", "occurred_at": "2026-03-01 10:00"}
        upload = ("联系.csv", _file(CONTACT_FILE, [{**row, "external_id": "F-C-1"}]))
        _, job = await queue_and_run(
            app, pool, client, tenant, upload, kind="interactions", mapping=CONTACT_FILE, who="admin", form={}
        )
        assert job.status == "done", job.error

    await paths.run("interaction import", {"interaction.created"}, contact_file)

    async def customer_file(mode: str) -> None:
        upload = ("客户.csv", _file(CUSTOMER_FILE, [{"name": "王芳", "phone": "13900139000", "city": f"{mode}市"}]))
        form = {"mode": mode, "match_on": "phone"} if mode == "upsert" else {}
        _, job = await queue_and_run(
            app, pool, client, tenant, upload, kind="customers", mapping=CUSTOMER_FILE, who="admin", form=form
        )
        assert job.status == "done", job.error

    await paths.run("customer import", {"customer.created"}, lambda: customer_file("create_only"))

    async def referred_file() -> None:
        mapping = {"姓名": "name", "推荐码": "referral_code"}
        upload = ("推荐.csv", _file(mapping, [{"name": "赵磊", "referral_code": referrals.code_of(uuid.UUID(a))}]))
        _, job = await queue_and_run(
            app, pool, client, tenant, upload, kind="customers", mapping=mapping, who="admin", form={}
        )
        assert job.status == "done", job.error

    await paths.run("customer import with a referral code", {"referral.created"}, referred_file)
    await paths.run("customer import upsert", {"customer.updated"}, lambda: customer_file("upsert"))

    async def recompute() -> None:
        async with app.state.sessions() as session:
            # A tier the figures no longer give: the full pass moves it back, with an event.
            await session.execute(
                text("UPDATE customer_values SET tier = NULL WHERE workspace_id = :ws"), {"ws": tenant.id}
            )
            await customer_values.recompute_workspace(session, ctx)
            await session.commit()

    await paths.run("value recompute job", {"tier.changed"}, recompute)
    await paths.run(
        "lifecycle move by hand",
        {"lifecycle.stage_changed"},
        lambda: paths.call("POST", f"/customers/{c}/stage", 200, json={"stage": "prospect", "reason": "展会"}),
    )
    # Customers without a stage yet are leads to the rules.
    await paths.run(
        "lifecycle nightly pass",
        {"lifecycle.stage_changed"},
        lambda: lifecycle.apply_rules_in_chunks(app.state.sessions, ctx, chunk=2, parallel=2),
    )

    segment_id = (
        await paths.call(
            "POST",
            "/segments",
            201,
            json={"name": "VIP", "filter": {"field": "tags", "op": "contains", "value": "vip"}},
        )
    )["id"]

    async def refresh() -> None:
        async with app.state.sessions() as session:
            segment = await session.get(Segment, (tenant.id, uuid.UUID(segment_id)))
            assert segment is not None
            await segments.refresh(session, segment)
            await session.commit()

    await paths.run("segment refresh", {"segment.member_added"}, refresh)
    await paths.patch_customer(a, {"tags": []})
    await paths.run("segment refresh after a change", {"segment.member_removed"}, refresh)

    team = await paths.call("POST", "/teams", 201, json={"name": "North"})
    await paths.run("team added", {"team.created"}, lambda: paths.call("POST", "/teams", 201, json={"name": "South"}))
    await paths.run(
        "team renamed",
        {"team.updated"},
        lambda: paths.call("PATCH", f"/teams/{team['id']}", 200, json={"name": "Nord"}, headers={"If-Match": "*"}),
    )
    await paths.run(
        "team deleted",
        {"team.deleted"},
        lambda: paths.call("DELETE", f"/teams/{team['id']}", 204, headers={"If-Match": "*"}),
    )
    user = {"email": "new.hire@example.com", "name": "王芳", "password": "a-long-password", "role": "sales"}
    user_id = (await paths.call("POST", "/users", 201, json=user))["id"]
    await paths.run(
        "user added",
        {"user.created"},
        lambda: paths.call("POST", "/users", 201, json={**user, "email": "second.hire@example.com"}),
    )
    await paths.run(
        "user offboarded",
        {"user.updated"},
        lambda: paths.call("PATCH", f"/users/{user_id}", 200, json={"is_active": False}, headers={"If-Match": "*"}),
    )
    await paths.run(
        "password reset",
        {"user.password_changed"},
        lambda: paths.call("POST", f"/users/{user_id}/password", 200, json={"new_password": "another-password"}),
    )

    receiver.script = [Answer(410)]
    endpoint = await paths.call(
        "POST", "/webhook-endpoints", 201, json={"url": receiver.url, "event_types": ["webhook.ping"]}
    )
    receiver.secrets = [str(endpoint["secret"])]
    await paths.run(
        "webhook ping", {"webhook.ping"}, lambda: paths.call("POST", f"/webhook-endpoints/{endpoint['id']}/ping", 202)
    )
    await paths.run(
        "webhook delivery job", {"webhook_endpoint.disabled"}, lambda: run_due(app, pool, tenant.id, clock.now())
    )
    await paths.run(
        "consent PATCH", {"consent.changed"}, lambda: paths.patch_customer(b, {"consent": {"sms": True, "email": None}})
    )
    await _drive_outreach(paths, database_url, b)

    async def automation_run() -> None:
        # A rule for today's birthdays whose webhook is requested and whose static list is gone.
        today = clock.now().astimezone(ZoneInfo("Asia/Shanghai")).date()
        await paths.customer(birthday=today.replace(year=1988).isoformat())
        hook = await paths.call(
            "POST", "/webhook-endpoints", 201, json={"url": receiver.url, "event_types": ["order.*"]}
        )
        receiver.secrets.append(str(hook["secret"]))
        listed = await paths.call("POST", "/segments", 201, json={"name": "生日", "kind": "static"})
        actions = [
            {"type": "call_webhook", "endpoint_id": hook["id"]},
            {"type": "add_to_segment", "segment_id": listed["id"]},
        ]
        body = {"name": "生日", "trigger": {"kind": "date", "date": "birthday"}, "actions": actions}
        rule = await paths.call("POST", "/automation-rules", 201, json=body)
        await paths.call("DELETE", f"/segments/{listed['id']}", 204, headers={"If-Match": "*"})
        await paths.call("POST", f"/automation-rules/{rule['id']}/run", 200)

    await paths.run("automation run", {"automation.webhook_requested", "automation.run_failed"}, automation_run)
    await _drive_loyalty(paths, a)
    return paths


async def _drive_loyalty(paths: Paths, customer_id: str) -> None:
    """Earning with an order (one of it old enough for its points to expire), a refund's reversal,
    an adjustment, a redemption and its cancel, a reward's voucher spent on an order, a voucher issued
    by hand and voided, a level review, and the expiry job."""
    program = {"enabled": True, "earn_rate": "1", "expiry_months": 1}
    await paths.call("PUT", "/loyalty/program", 200, json=program, headers={"If-Match": "*"})
    levels = {"levels": [{"code": "silver", "name": "银卡", "metric": "spend", "threshold": "1"}]}
    await paths.call("PUT", "/loyalty/levels", 200, json=levels, headers={"If-Match": "*"})
    line = {"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "100.00"}
    order = {"customer_id": customer_id, "currency": "CNY", "total_amount": "100.00", "lines": [line]}
    old = (clock.now() - timedelta(days=45)).isoformat()

    async def earn() -> None:
        await paths.call("POST", "/orders", 201, json={**order, "external_id": "L-1", "ordered_at": old})
        await paths.call(
            "POST", "/orders", 201, json={**order, "external_id": "L-2", "ordered_at": clock.now().isoformat()}
        )

    await paths.run("loyalty earning", {"loyalty.points_earned"}, earn)

    async def reverse_and_adjust() -> None:
        refund = {**order, "external_id": "L-2", "ordered_at": clock.now().isoformat(), "status": "partially_refunded"}
        await paths.call("POST", "/orders", 200, json={**refund, "refunded_amount": "10.00"})
        adjustment = {"customer_id": customer_id, "points": 10, "reason": "补偿"}
        await paths.call("POST", "/loyalty/adjustments", 200, json=adjustment)

    await paths.run("loyalty reversal and adjustment", {"loyalty.points_adjusted"}, reverse_and_adjust)

    async def redeem_and_cancel() -> None:
        body = {"customer_id": customer_id, "points": 5, "description": "gift"}
        redemption = await paths.call(
            "POST", "/loyalty/redemptions", 201, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        await paths.call("POST", f"/loyalty/redemptions/{redemption['id']}/cancel", 200)

    await paths.run("loyalty redemption and cancel", {"loyalty.points_redeemed"}, redeem_and_cancel)

    async def vouchers() -> None:
        reward = {"name": "茶具", "points_cost": 5, "kind": "discount_amount", "value": "10", "stock": 2}
        reward_id = (await paths.call("POST", "/rewards", 201, json=reward))["id"]
        bought = await paths.call(
            "POST",
            f"/rewards/{reward_id}/redeem",
            201,
            json={"customer_id": customer_id},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        spent_on = {**order, "external_id": "L-3", "ordered_at": clock.now().isoformat()}
        order_id = (await paths.call("POST", "/orders", 201, json=spent_on))["id"]
        await paths.call("POST", "/vouchers/redeem", 200, json={"code": bought["code"], "order_id": order_id})
        offer = {
            "customer_id": customer_id,
            "name": "新客礼",
            "kind": "discount_percent",
            "value": "5",
            "reason": "新客",
        }
        offered = await paths.call("POST", "/vouchers", 201, json=offer)
        await paths.call("POST", f"/vouchers/{offered['id']}/void", 200)

    await paths.run("vouchers", {"voucher.issued", "voucher.redeemed", "voucher.voided"}, vouchers)
    await paths.run(
        "loyalty level review", {"loyalty.level_changed"}, lambda: paths.call("POST", "/loyalty/levels/review", 200)
    )
    await paths.run(
        "loyalty expiry job", {"loyalty.points_expired"}, lambda: loyalty_jobs.expire_points(paths.app.state.sessions)
    )

    async def refer() -> None:
        rewards = {"referrer_points": 50, "referee_points": 20}
        await paths.call(
            "PUT", "/loyalty/program", 200, json={**program, "referrals": rewards}, headers={"If-Match": "*"}
        )
        code = (await paths.call("GET", f"/customers/{customer_id}/loyalty", 200))["referral_code"]
        referee = await paths.customer(referral_code=code)
        first = {**order, "customer_id": referee["id"], "external_id": "R-1", "ordered_at": clock.now().isoformat()}
        await paths.call("POST", "/orders", 201, json=first)

    await paths.run("referral and its reward", {"referral.created", "referral.qualified", "referral.rewarded"}, refer)

    async def sell() -> None:
        stages = [
            {"code": "qualify", "name": "资格确认", "probability": 10},
            {"code": "won", "name": "赢单", "probability": 100, "kind": "won"},
            {"code": "lost", "name": "丢单", "probability": 0, "kind": "lost", "lost_reason_required": True},
        ]
        pipeline = await paths.call("POST", "/pipelines", 201, json={"name": "新业务", "stages": stages})
        deal = {
            "customer_id": customer_id,
            "pipeline_id": pipeline["id"],
            "title": "团购",
            "amount": "10",
            "currency": "CNY",
        }
        won = await paths.call("POST", "/opportunities", 201, json=deal)
        won = await paths.call("PATCH", f"/opportunities/{won['id']}", 200, json={"amount": "12.50"},
                               headers={"If-Match": "*"})  # fmt: skip
        await paths.call(
            "POST", f"/opportunities/{won['id']}/move", 200, json={"stage": "won"}, headers={"If-Match": "*"}
        )
        lost = await paths.call("POST", "/opportunities", 201, json=deal)
        close = {"stage": "lost", "lost_reason": "预算"}
        await paths.call("POST", f"/opportunities/{lost['id']}/move", 200, json=close, headers={"If-Match": "*"})
        await paths.call("DELETE", f"/opportunities/{lost['id']}", 204, headers={"If-Match": "*"})

    opportunity_events = {"created", "updated", "stage_changed", "won", "lost", "deleted"}
    await paths.run("opportunities", {f"opportunity.{e}" for e in opportunity_events}, sell)


async def _drive_outreach(paths: Paths, database_url: str, customer_id: str) -> None:
    """Messages sent by the worker, a receipt, a refusal, and a reply that unsubscribes."""
    app = paths.app
    async with sms_server() as sms:
        sms.aliyun = [{"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号"}]
        tencent = await paths.call("POST", "/channels", 201, json=tencent_channel(sms))
        aliyun = await paths.call("POST", "/channels", 201, json=aliyun_channel(sms))
        customer = await paths.call("PATCH", f"/customers/{customer_id}", 200, json={"phones": [random_mobile()]},
                                    headers={"If-Match": "*"})  # fmt: skip
        for channel in (tencent, aliyun):
            body = {"customer_id": customer_id, "channel_id": channel["id"], "purpose": "marketing",
                    "content": sms_content()}  # fmt: skip
            await paths.call("POST", "/messages", 201, json=body)
        await paths.run("message worker", {"message.sent", "message.failed"}, lambda: run_worker(app, database_url))
        sent = (await paths.call("GET", "/messages", 200, params={"status": "sent"}))["items"][0]
        mobile = customer["phones"][0].removeprefix("+86")
        report = [{"mobile": mobile, "report_status": "SUCCESS", "sid": sent["provider_message_id"]}]
        await paths.run(
            "SMS receipt",
            {"message.delivered"},
            lambda: paths.call("POST", tencent["callback_urls"]["receipts"].removeprefix("/api/v1"), 200, json=report),
        )
        reply = {"mobile": mobile, "nationcode": "86", "text": "退订"}
        await paths.run(
            "SMS reply",
            {"message.replied", "consent.changed"},
            lambda: paths.call("POST", tencent["callback_urls"]["replies"].removeprefix("/api/v1"), 200, json=reply),
        )


@pytest.fixture
async def every_path(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    receiver: Receiver,
    database_url: str,
) -> Paths:
    return await _drive_every_path(app, pool, live_client, live_tenant, receiver, database_url)


async def test_every_event_of_every_path_matches_its_catalogue_schema(
    every_path: Paths, live_client: httpx.AsyncClient
) -> None:
    validators = await _validators(live_client)
    assert set(validators) == {event.name for event in CATALOGUE}
    problems = {path: found for path, events in every_path.by_path.items() if (found := _problems(validators, events))}
    assert not problems, problems
    emitted: dict[str, set[str]] = defaultdict(set)
    for path, events in every_path.by_path.items():
        for event in events:
            emitted[event.type].add(path)
    # A new event type needs a path here.
    assert set(emitted) == {event.name for event in CATALOGUE}, sorted({e.name for e in CATALOGUE} - set(emitted))


def _canonical(value: Any) -> Any:
    """The value with its timestamps as datetimes: PostgreSQL and Python write fractions of a
    second with different trailing zeros. Everything else must match character for character."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


async def _both(
    db: AsyncSession,
    event_type: str,
    row: Any,
    from_python: dict[str, Any],
    sql: Callable[[str], str],
    given: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload of one stored row as the per-row path builds it (`from_python`) and as a
    set-based statement writes it (`sql` over a row alias, with `given` values as `:given_<name>`
    jsonb parameters). The per-row one is checked against the type's catalogue model."""
    table = type(row).__table__
    keys = [column.name for column in table.primary_key.columns]
    where = " AND ".join(f"x.{name} = :{name}" for name in keys)
    params = {
        # The workspace's currency (CNY), in which set-based statements write amounts.
        "money_places": currency_places("CNY"),
        **{name: getattr(row, name) for name in keys},
        **{f"given_{name}": orjson.dumps(value).decode() for name, value in (given or {}).items()},
    }
    from_sql = (await db.execute(text(f"SELECT {sql('x')} FROM {table.name} x WHERE {where}"), params)).scalar_one()
    data_model(event_type).model_validate(from_python)
    return _canonical(from_sql), _canonical(from_python)


def _payload(payload: Payload[Any], **given: str) -> Callable[[str], str]:
    return lambda alias: payload.sql(alias, **given)


async def test_the_python_and_sql_sides_of_each_serialiser_write_the_same_data(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    headers = tenant.headers()
    address = {"country": "CN", "province": "广东省", "city": "深圳市", "street": "科技园 1 号"}
    body = customer_body(phones=["+8613800138000"], birthday="1988-04-12", address=address, tags=["vip"])
    customer_id = (await client.post("/api/v1/customers", json={**body, "custom_fields": {}}, headers=headers)).json()[
        "id"
    ]
    order = {
        "external_id": "SO-1",
        "customer_id": customer_id,
        "ordered_at": "2026-03-01T02:00:00.5Z",
        "currency": "CNY",
        "total_amount": "20000.50",
        "lines": [
            {"sku": "TEA", "product_name": "龙井", "category": "tea", "quantity": "1.50", "unit_price": "13333.67"}
        ],
    }
    assert (await client.post("/api/v1/orders", json=order, headers=headers)).status_code == 201
    relative = (await client.post("/api/v1/customers", json=customer_body(), headers=headers)).json()["id"]
    related = await client.post(
        f"/api/v1/customers/{customer_id}/relations",
        json={"kind": "family_of", "to_customer_id": relative, "note": "表兄"},
        headers=headers,
    )
    assert related.status_code == 201, related.text
    removed = await client.delete(f"/api/v1/customers/{customer_id}/relations/{related.json()['id']}", headers=headers)
    assert removed.status_code == 204
    contact = {
        "customer_id": customer_id,
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": "2026-03-01T02:00:00Z",
        "attachments": [{"url": "https://files.example.com/q.pdf", "name": "报价单"}],
    }
    assert (await client.post("/api/v1/interactions", json=contact, headers=headers)).status_code == 201
    moved = await client.post(
        f"/api/v1/customers/{customer_id}/stage", json={"stage": "lead", "reason": "展会"}, headers=headers
    )
    assert moved.status_code == 200
    db.expunge_all()
    ws = tenant.id
    customer = await db.get(Customer, (ws, uuid.UUID(customer_id)))
    stored_order = await db.scalar(select(Order).where(Order.workspace_id == ws))
    lines = list((await db.scalars(select(OrderLine).where(OrderLine.workspace_id == ws))).all())
    interaction = await db.scalar(select(Interaction).where(Interaction.workspace_id == ws))
    stays = (await db.scalars(select(StageHistory).where(StageHistory.workspace_id == ws))).all()
    tier_change = await db.scalar(select(TierChange).where(TierChange.workspace_id == ws))
    relation = await db.scalar(select(CustomerRelation).where(CustomerRelation.workspace_id == ws))
    assert customer and stored_order and lines and interaction and tier_change and stays and relation
    changed = {"changed_fields": ["status"]}
    pairs = [
        await _both(
            db, "customer.created", customer, customer_output.event_data(customer), customer_output.customer_json_sql
        ),
        await _both(
            db,
            "order.created",
            stored_order,
            orders.event_data(stored_order, lines),
            _payload(orders.ORDER_EVENT),
        ),
        await _both(
            db,
            "order.updated",
            stored_order,
            orders.event_data(stored_order, lines, changed_fields=["status"]),
            _payload(orders.ORDER_CHANGED_EVENT, changed_fields="CAST(:given_changed_fields AS jsonb)"),
            changed,
        ),
        await _both(
            db, "interaction.created", interaction, interactions.event_data(interaction), _payload(interactions.EVENT)
        ),
        await _both(
            db,
            "tier.changed",
            tier_change,
            customer_values.TIER_CHANGED.data(tier_change),
            _payload(customer_values.TIER_CHANGED),
        ),
        await _both(
            db,
            "customer.relation_removed",
            relation,
            relations.RELATION_EVENT.data(relation),
            _payload(relations.RELATION_EVENT),
        ),
        *[
            await _both(
                db,
                "lifecycle.stage_changed",
                stay,
                lifecycle.STAGE_CHANGED.data(stay),
                _payload(lifecycle.STAGE_CHANGED),
            )
            for stay in stays
        ],
    ]
    for from_sql, from_python in pairs:
        assert from_sql == from_python
