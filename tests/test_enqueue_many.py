"""The set-based message writer: `messages.enqueue_many` over a mixed set writes exactly what
`messages.enqueue` writes one customer at a time, and two overlapping sets queue each message once."""

import asyncio
import uuid
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.core.errors import DomainError
from app.models import Interaction, Message, OutboxEvent
from app.schemas.outreach import MessageContent
from app.services.outreach import messages
from tests.factories import Tenant
from tests.outreach_helpers import email_channel, email_content, make_channel, make_customer, send
from tests.outreach_stand_ins import mail_server

TEMPLATE = {
    "name": "会员日",
    "channel": "email",
    "subject": "{{ customer.name }}，会员日快乐",
    "body": "亲爱的{{ customer.name }}：优惠码 {{ vars.coupon }}",
    "variables": ["coupon"],
}


def _refusal(error: DomainError) -> tuple[str, str, str, dict[str, Any]]:
    # A message queued in this run is named by an id each run draws anew.
    extra = {name: "<message id>" if name == "existing_id" else value for name, value in error.extra.items()}
    return type(error).__name__, error.slug, error.detail, extra


async def _rows(session: AsyncSession, workspace_id: uuid.UUID, since: uuid.UUID) -> list[dict[str, Any]]:
    """The messages written after `since`, each with its interaction and that interaction's event,
    without the ids and times each write draws anew."""
    found = (
        await session.execute(
            select(Message, Interaction)
            .join(
                Interaction,
                (Interaction.workspace_id == Message.workspace_id) & (Interaction.id == Message.interaction_id),
            )
            .where(Message.workspace_id == workspace_id, Message.id > since)
            .order_by(Message.customer_id)
        )
    ).all()
    events = {
        event.data["id"]: event
        for event in await session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.workspace_id == workspace_id, OutboxEvent.type == "interaction.created"
            )
        )
    }
    out = []
    for message, interaction in found:
        assert interaction.external_id == f"message:{message.id}"
        event = events[str(interaction.id)]
        data = {k: v for k, v in event.data.items() if k not in ("id", "external_id")}
        out.append(
            {
                "message": {
                    name: getattr(message, name)
                    for name in (
                        "customer_id",
                        "channel_id",
                        "purpose",
                        "status",
                        "recipient",
                        "content",
                        "dedupe_key",
                        "source",
                        "actor",
                        "send_after",
                        "attempts",
                        "created_at",
                    )
                },
                "interaction": {
                    name: getattr(interaction, name)
                    for name in (
                        "customer_id",
                        "user_id",
                        "channel",
                        "direction",
                        "occurred_at",
                        "subject",
                        "content",
                        "participants",
                        "attachments",
                        "source",
                        "created_at",
                        "version",
                    )
                },
                "event": (event.actor, event.occurred_at, data),
            }
        )
    return out


async def test_a_batch_writes_what_single_sends_write(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = ZoneInfo(tenant.workspace.timezone)
    local = clock.now().astimezone(zone)
    start, end = (local - timedelta(hours=1)).strftime("%H:%M"), (local + timedelta(hours=1)).strftime("%H:%M")
    with mail_server() as mail:
        channel = await make_channel(
            client,
            tenant,
            email_channel(mail, quiet_hours={"start": start, "end": end}, frequency_cap={"count": 1, "hours": 24}),
        )
    made = await client.post("/api/v1/message-templates", json=TEMPLATE, headers=tenant.headers())
    assert made.status_code == 201, made.text
    consent = {"email": True}
    sent = {name: await make_customer(client, tenant, name=name, consent=consent) for name in ("王芳", "李娜", "赵敏")}
    declined = await make_customer(client, tenant, name="李雷", consent={"email": False})
    suppressed = await make_customer(client, tenant, name="周杰", consent=consent)
    capped = await make_customer(client, tenant, name="陈静", consent=consent)
    no_address = await make_customer(client, tenant, name="孙丽", emails=[], consent=consent)
    queued_before = await make_customer(client, tenant, name="吴磊", consent=consent)
    added = await client.post(
        "/api/v1/suppressions",
        json={"medium": "email", "address": suppressed["emails"][0], "reason": "bounce"},
        headers=tenant.headers(),
    )
    assert added.status_code == 201
    # One marketing message reaches the cap; one is already queued under its key.
    await send(client, tenant, capped["id"], channel["id"], email_content(), purpose="marketing")
    before = await send(
        client, tenant, queued_before["id"], channel["id"], email_content(), purpose="marketing", dedupe_key="k-吴磊"
    )
    since = uuid.UUID(before["id"])
    recipients: dict[uuid.UUID, str | None] = {
        uuid.UUID(customer["id"]): f"k-{customer['name']}"
        for customer in (*sent.values(), declined, suppressed, capped, no_address, queued_before)
    }
    # A key another customer of the set has, and a customer nobody can see.
    recipients[uuid.UUID(sent["赵敏"]["id"])] = "k-王芳"
    recipients[uuid.uuid4()] = "k-nobody"
    ctx = system_caller(tenant.id)
    arguments: dict[str, Any] = {
        "channel_id": uuid.UUID(channel["id"]),
        "purpose": "marketing",
        "content": messages.FromTemplate(uuid.UUID(made.json()["id"]), {"coupon": "VIP"}),
        "source": "test",
    }
    now = clock.now()
    monkeypatch.setattr(clock, "now", lambda: now)

    one_by_one: dict[uuid.UUID, Any] = {}
    savepoint = await db.begin_nested()
    for customer_id, key in recipients.items():
        try:
            message, created = await messages.enqueue(db, ctx, customer_id=customer_id, dedupe_key=key, **arguments)
            one_by_one[customer_id] = (message.id if not created else "created", created)
        except DomainError as exc:
            one_by_one[customer_id] = _refusal(exc)
    singles = await _rows(db, tenant.id, since)
    await savepoint.rollback()

    savepoint = await db.begin_nested()
    done = await messages.enqueue_many(db, ctx, recipients=recipients, **arguments)
    batched = await _rows(db, tenant.id, since)
    await savepoint.rollback()
    as_batch: dict[uuid.UUID, Any] = {customer_id: _refusal(error) for customer_id, error in done.refused.items()}
    for customer_id, message_id in done.messages.items():
        created = customer_id in done.created
        as_batch[customer_id] = (message_id if not created else "created", created)

    assert as_batch == one_by_one
    assert batched == singles
    slugs = {customer_id: outcome[1] for customer_id, outcome in one_by_one.items()}
    assert slugs == {
        uuid.UUID(sent["王芳"]["id"]): True,
        uuid.UUID(sent["李娜"]["id"]): True,
        uuid.UUID(sent["赵敏"]["id"]): "conflict",
        uuid.UUID(declined["id"]): "consent_required",
        uuid.UUID(suppressed["id"]): "suppressed",
        uuid.UUID(capped["id"]): "frequency_capped",
        uuid.UUID(no_address["id"]): "validation-failed",
        uuid.UUID(queued_before["id"]): False,
        **{customer_id: "not-found" for customer_id, key in recipients.items() if key == "k-nobody"},
    }
    assert one_by_one[uuid.UUID(queued_before["id"])] == (uuid.UUID(before["id"]), False)
    # Marketing in the channel's quiet hours waits for their end; the interaction is on the timeline.
    assert len(singles) == 2
    for row in singles:
        assert row["message"]["send_after"].astimezone(zone).strftime("%H:%M") == end
        assert row["message"]["content"]["subject"].endswith("，会员日快乐")
        assert row["interaction"]["direction"] == "outbound" and row["interaction"]["source"] == "outreach"


async def test_overlapping_batches_with_the_same_keys_queue_each_message_once(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    with mail_server() as mail:
        channel = await make_channel(live_client, live_tenant, email_channel(mail))
    customers = [uuid.UUID((await make_customer(live_client, live_tenant))["id"]) for _ in range(12)]
    keys = {customer_id: f"promo:{customer_id}" for customer_id in customers}
    first = {customer_id: keys[customer_id] for customer_id in customers[:8]}
    # The second set overlaps the first, listed the other way round.
    second = {customer_id: keys[customer_id] for customer_id in reversed(customers[4:])}
    ctx = system_caller(live_tenant.id)
    arguments: dict[str, Any] = {
        "channel_id": uuid.UUID(channel["id"]),
        "purpose": "transactional",
        "content": MessageContent.model_validate(email_content()),
        "source": "test",
    }

    queued, release = asyncio.Event(), asyncio.Event()

    async def queue(recipients: dict[uuid.UUID, str | None], hold: bool = False) -> messages.Enqueued:
        async with app.state.sessions() as session:
            done = await messages.enqueue_many(session, ctx, recipients=recipients, **arguments)
            if hold:
                queued.set()
                await release.wait()
            await session.commit()
            return done

    # The first set is queued and not yet committed when the second starts: the second waits on
    # the keys they share and then finds the first's messages.
    holding = asyncio.create_task(queue(dict(first), hold=True))
    await queued.wait()
    waiting = asyncio.create_task(queue(dict(second)))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    release.set()
    one, two = await holding, await waiting
    assert not one.refused and not two.refused
    assert one.created == set(first) and two.created == set(second) - set(first)
    for customer_id in set(first) & set(second):
        assert two.messages[customer_id] == one.messages[customer_id]
    async with app.state.sessions() as session:
        rows = (await session.execute(select(Message.customer_id, Message.dedupe_key, Message.interaction_id).where(
            Message.workspace_id == live_tenant.id))).all()  # fmt: skip
        logged = await session.scalars(
            select(Interaction.external_id).where(Interaction.workspace_id == live_tenant.id)
        )
        assert len(logged.all()) == len(customers)
    assert sorted((row.customer_id, row.dedupe_key) for row in rows) == sorted(keys.items())
    assert all(row.interaction_id is not None for row in rows)
    # Both sets again, at once: nothing new.
    again = await asyncio.gather(queue(dict(first)), queue(dict(second)))
    assert not any(done.created or done.refused for done in again)
