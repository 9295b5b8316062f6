"""Outreach through HTTP against real stand-ins: channels and their write-only secrets, messages and
the rules they obey, the worker sending at most once, provider callbacks."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pgqueuer import AsyncpgDriver, Queries
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.db import asyncpg_dsn
from app.core.secret_box import InvalidToken, SecretBox
from app.core.settings import DEVELOPMENT_SECRET_KEY, get_settings
from app.models import AuditEntry, Channel, Interaction, Message, OutboxEvent, Suppression
from app.services.events import webhook_signing
from app.services.outreach import callbacks, channels, messages, providers, sending
from app.services.outreach.providers import Result, aliyun_sms
from app.workers import outreach as outreach_jobs
from app.workers.worker import Worker
from tests.factories import Tenant
from tests.outreach_helpers import (
    SMTP_PASSWORD,
    aliyun_channel,
    email_channel,
    email_content,
    events,
    make_channel,
    make_customer,
    message_rows,
    run_worker,
    send,
    sms_content,
    tencent_channel,
    wecom_channel,
)
from tests.outreach_stand_ins import ALIYUN_SECRET, TENCENT_KEY, WECOM_KEY, certificates, mail_server, sms_server
from tests.receiver import Answer, Receiver, free_port

SECRETS = (SMTP_PASSWORD, ALIYUN_SECRET, TENCENT_KEY, WECOM_KEY)


async def test_channels_keep_secrets_write_only_everywhere(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    with mail_server() as mail:
        async with sms_server() as sms:
            bodies = [email_channel(mail), aliyun_channel(sms), tencent_channel(sms), wecom_channel(sms)]
            texts = []
            created = []
            for body in bodies:
                response = await client.post("/api/v1/channels", json=body, headers=tenant.headers())
                assert response.status_code == 201, response.text
                assert response.headers["Location"] == f"/api/v1/channels/{response.json()['id']}"
                created.append(response.json())
                texts.append(response.text)
            listed = await client.get("/api/v1/channels", headers=tenant.headers())
            texts.append(listed.text)
            assert len(listed.json()["items"]) == 4
            one = await client.get(f"/api/v1/channels/{created[1]['id']}", headers=tenant.headers())
            assert one.headers["ETag"] == '"1"'
            patched = await client.patch(
                f"/api/v1/channels/{created[1]['id']}",
                json={"name": "短信", "secrets": {"access_key_secret": ALIYUN_SECRET + "x"}},
                headers={**tenant.headers(), "If-Match": '"1"'},
            )
            assert patched.status_code == 200 and patched.json()["version"] == 2
            texts.append(patched.text)
            tested = await client.post(f"/api/v1/channels/{created[3]['id']}/test", json={}, headers=tenant.headers())
            assert tested.json()["outcome"] == "accepted", tested.text
            texts.append(tested.text)
    assert created[0]["settings"]["host"] == "127.0.0.1" and created[1]["secrets_set"] == ["access_key_secret"]
    audit = (await db.scalars(select(AuditEntry).where(AuditEntry.workspace_id == tenant.id))).all()
    outbox_rows = (await db.scalars(select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id))).all()
    stored = (await db.scalars(select(Channel.sealed_secrets).where(Channel.workspace_id == tenant.id))).all()
    everything = "".join(texts) + orjson.dumps([a.changes for a in audit]).decode()
    everything += orjson.dumps([e.data for e in outbox_rows]).decode() + "".join(stored)
    for secret in (*SECRETS, ALIYUN_SECRET + "x"):
        assert secret not in everything
    assert {a.action for a in audit} >= {"created", "updated"}


async def test_channel_input_is_checked(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = tenant.headers()
    missing_secret = {
        "kind": "sms_tencent",
        "name": "x",
        "settings": {"secret_id": "a", "sdk_app_id": "1", "sign_name": "s"},
    }
    assert (await client.post("/api/v1/channels", json=missing_secret, headers=headers)).status_code == 422
    bad_kind = {"kind": "fax", "name": "x", "settings": {}, "secrets": {}}
    assert (await client.post("/api/v1/channels", json=bad_kind, headers=headers)).status_code == 422
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    url = f"/api/v1/channels/{channel['id']}"
    bad_patch = await client.patch(url, json={"settings": {"port": 0}}, headers={**headers, "If-Match": '"1"'})
    assert bad_patch.status_code == 422 and bad_patch.json()["errors"][0]["loc"][:2] == ["body", "settings"]
    assert (await client.patch(url, json={"name": "y"}, headers=headers)).status_code == 428
    assert (await client.patch(url, json={"name": "y"}, headers={**headers, "If-Match": '"7"'})).status_code == 412
    assert (await client.delete(url, headers={**headers, "If-Match": '"1"'})).status_code == 204
    assert (await client.get(url, headers=headers)).status_code == 404
    # Sales may send but not configure channels.
    assert (await client.get("/api/v1/channels", headers=tenant.headers("sales"))).status_code == 403


async def test_another_workspaces_ids_are_404(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
        customer = await make_customer(client, tenant)
        message = await send(client, tenant, customer["id"], channel["id"], email_content())
        other = other_tenant.headers()
        assert (await client.get(f"/api/v1/channels/{channel['id']}", headers=other)).status_code == 404
        assert (await client.get(f"/api/v1/messages/{message['id']}", headers=other)).status_code == 404
        assert (
            await client.post(f"/api/v1/channels/{channel['id']}/test", json={"to": "a@b.cn"}, headers=other)
        ).status_code == 404
        own_customer = await make_customer(client, other_tenant)
        body = {
            "customer_id": own_customer["id"],
            "channel_id": channel["id"],
            "purpose": "transactional",
            "content": email_content(),
        }
        assert (await client.post("/api/v1/messages", json=body, headers=other)).status_code == 404
        body = {
            "customer_id": customer["id"],
            "channel_id": channel["id"],
            "purpose": "transactional",
            "content": email_content(),
        }
        assert (await client.post("/api/v1/messages", json=body, headers=other)).status_code == 404
        listed = await client.get("/api/v1/messages", headers=other)
        assert listed.json()["items"] == []


async def test_channel_test_answers_the_providers_code(client: httpx.AsyncClient, tenant: Tenant) -> None:
    async with sms_server() as sms:
        sms.aliyun = [{"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": "r"}]
        channel = await make_channel(client, tenant, aliyun_channel(sms))
        response = await client.post(
            f"/api/v1/channels/{channel['id']}/test",
            json={"to": "13800138000", "content": sms_content()},
            headers=tenant.headers(),
        )
        assert sms.unverified == []
    assert response.status_code == 200
    assert response.json() == {
        "outcome": "rejected",
        "provider_message_id": None,
        "code": "isv.MOBILE_NUMBER_ILLEGAL",
        "message": "非法手机号",
        "retryable": False,
    }
    assert sms.received[0][1]["PhoneNumbers"] == "13800138000" and sms.received[0][1]["OutId"] == "test"


@pytest.mark.parametrize("tls", ["tls", "starttls"])
async def test_email_over_tls_verifies_the_servers_certificate(
    client: httpx.AsyncClient, tenant: Tenant, tls: Literal["tls", "starttls"]
) -> None:
    ours, strangers = certificates(), certificates("Another CA")

    async def test_send(channel: dict[str, Any]) -> dict[str, Any]:
        url = f"/api/v1/channels/{channel['id']}/test"
        response = await client.post(url, json={"to": "zhang.wei@example.com"}, headers=tenant.headers())
        assert response.status_code == 200, response.text
        return dict(response.json())

    with mail_server(tls, ours.server) as mail:
        body = email_channel(mail)
        body["settings"]["tls"] = tls
        system_roots = await make_channel(client, tenant, body)
        body["settings"]["ca_certificate"] = strangers.ca_pem
        wrong_ca = await make_channel(client, tenant, body)
        body["settings"]["ca_certificate"] = ours.ca_pem
        trusted = await make_channel(client, tenant, body)
        refusals = [await test_send(system_roots), await test_send(wrong_ca)]
        accepted = await test_send(trusted)
    for refused in refusals:
        assert (refused["outcome"], refused["code"]) == ("rejected", "tls_certificate"), refused
        assert refused["message"].startswith("the server's certificate failed verification: ")
        assert "unable to get local issuer certificate" in refused["message"]
    assert accepted["outcome"] == "accepted", accepted
    assert mail.over_tls == [True] and len(mail.received) == 1
    assert SMTP_PASSWORD not in str(refusals)


async def test_starttls_is_never_skipped_for_a_server_without_it(client: httpx.AsyncClient, tenant: Tenant) -> None:
    with mail_server() as plain:
        body = email_channel(plain)
        body["settings"]["tls"] = "starttls"
        channel = await make_channel(client, tenant, body)
        response = await client.post(
            f"/api/v1/channels/{channel['id']}/test", json={"to": "zhang.wei@example.com"}, headers=tenant.headers()
        )
    refused = response.json()
    assert (refused["outcome"], refused["code"]) == ("rejected", "connect_failed") and "STARTTLS" in refused["message"]
    assert plain.received == []


async def test_a_ca_certificate_that_is_no_pem_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    with mail_server() as mail:
        body = email_channel(mail)
        body["settings"]["ca_certificate"] = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
        response = await client.post("/api/v1/channels", json=body, headers=tenant.headers())
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"][-2:] == ["settings", "ca_certificate"] and "not a PEM certificate" in error["msg"]


async def test_an_email_is_sent_by_the_worker_once_and_is_on_the_timeline(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    with mail_server() as mail:
        channel = await make_channel(live_client, live_tenant, email_channel(mail))
        customer = await make_customer(live_client, live_tenant)
        message = await send(live_client, live_tenant, customer["id"], channel["id"], email_content())
        assert message["status"] == "queued" and message["recipient"] == customer["emails"][0]
        assert await run_worker(app, database_url) == 1
        # Another pass finds nothing: a sent message is never sent again.
        assert await run_worker(app, database_url) == 0
    assert len(mail.received) == 1
    received = mail.received[0]
    assert received["Subject"] == "生日快乐" and received["To"] == customer["emails"][0]
    assert received.get_content().strip() == "张先生，祝您生日快乐！"
    assert received["Message-ID"] == f"<{message['id']}@guanxi>"
    got = (await live_client.get(f"/api/v1/messages/{message['id']}", headers=live_tenant.headers())).json()
    assert got["status"] == "sent" and got["provider_message_id"] == f"{message['id']}@guanxi" and got["attempts"] == 1
    [sent] = await events(app, live_tenant.id, "message.sent")
    assert sent.data["id"] == message["id"] and sent.data["status"] == "sent"
    async with app.state.sessions() as session:
        interaction = await session.scalar(
            select(Interaction).where(Interaction.id == uuid.UUID(got["interaction_id"]))
        )
    assert interaction is not None and interaction.direction == "outbound" and interaction.channel == "email"
    listed = await live_client.get(
        "/api/v1/messages", params={"customer_id": customer["id"], "status": "sent"}, headers=live_tenant.headers()
    )
    assert [m["id"] for m in listed.json()["items"]] == [message["id"]]


async def test_sms_through_aliyun_and_tencent_are_signed_and_take_the_providers_ids(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    async with sms_server() as sms:
        aliyun = await make_channel(live_client, live_tenant, aliyun_channel(sms))
        tencent = await make_channel(live_client, live_tenant, tencent_channel(sms))
        customer = await make_customer(live_client, live_tenant)
        first = await send(live_client, live_tenant, customer["id"], aliyun["id"], sms_content())
        numbered = {"template_code": "1234567", "template_params": {"2": "1234", "10": "末", "1": "张伟"}}
        second = await send(live_client, live_tenant, customer["id"], tencent["id"], numbered)
        await run_worker(app, database_url)
    assert sms.unverified == []
    by_id = {m.id: m for m in await message_rows(app, live_tenant.id)}
    assert by_id[uuid.UUID(first["id"])].status == "sent"
    assert by_id[uuid.UUID(first["id"])].provider_message_id == "biz-1"
    assert by_id[uuid.UUID(second["id"])].status == "sent"
    assert (by_id[uuid.UUID(second["id"])].provider_message_id or "").startswith("serial-")
    kinds = dict(sms.received)
    assert kinds["aliyun"]["TemplateCode"] == "SMS_123456789"
    assert orjson.loads(kinds["aliyun"]["TemplateParam"]) == {"name": "张伟", "code": "1234"}
    assert kinds["tencent"]["PhoneNumberSet"] == [customer["phones"][0]]
    assert kinds["tencent"]["TemplateParamSet"] == ["张伟", "1234", "末"]


async def test_marketing_without_consent_is_409_and_queues_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    customer = await make_customer(client, tenant, consent={"sms": True})
    refused = await send(
        client, tenant, customer["id"], channel["id"], email_content(), purpose="marketing", expect=409
    )
    assert refused["type"].endswith("/consent_required")
    assert (await db.scalar(select(Message.id).where(Message.workspace_id == tenant.id))) is None
    assert (await db.scalar(select(Interaction.id).where(Interaction.workspace_id == tenant.id))) is None
    # Transactional mail needs no marketing consent.
    await send(client, tenant, customer["id"], channel["id"], email_content())


async def test_suppressed_addresses_are_refused(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    customer = await make_customer(client, tenant, consent={"email": True})
    address = customer["emails"][0]
    added = await client.post(
        "/api/v1/suppressions",
        json={"medium": "email", "address": address.upper(), "reason": "unsubscribe"},
        headers=tenant.headers(),
    )
    assert added.status_code == 201 and added.json()["address"] == address
    again = await client.post(
        "/api/v1/suppressions", json={"medium": "email", "address": address}, headers=tenant.headers()
    )
    assert again.status_code == 409 and again.json()["existing_id"] == added.json()["id"]
    refused = await send(
        client, tenant, customer["id"], channel["id"], email_content(), purpose="marketing", expect=409
    )
    assert refused["type"].endswith("/suppressed")
    assert (await db.scalar(select(Message.id).where(Message.workspace_id == tenant.id))) is None
    # An unsubscribe stops marketing only; a bounce stops everything.
    await send(client, tenant, customer["id"], channel["id"], email_content())
    removed = await client.delete(f"/api/v1/suppressions/{added.json()['id']}", headers=tenant.headers())
    assert removed.status_code == 204
    await client.post(
        "/api/v1/suppressions",
        json={"medium": "email", "address": address, "reason": "bounce"},
        headers=tenant.headers(),
    )
    refused = await send(client, tenant, customer["id"], channel["id"], email_content(), expect=409)
    assert refused["type"].endswith("/suppressed")
    listed = await client.get(
        "/api/v1/suppressions", params={"medium": "email", "address": address}, headers=tenant.headers()
    )
    assert [s["reason"] for s in listed.json()["items"]] == ["bounce"]
    bad = await client.post("/api/v1/suppressions", json={"medium": "sms", "address": "nope"}, headers=tenant.headers())
    assert bad.status_code == 422


async def test_the_frequency_cap_refuses_the_next_marketing_message(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail, frequency_cap={"count": 2, "hours": 24}))
    customer = await make_customer(client, tenant, consent={"email": True})
    for _ in range(2):
        await send(client, tenant, customer["id"], channel["id"], email_content(), purpose="marketing")
    refused = await send(
        client, tenant, customer["id"], channel["id"], email_content(), purpose="marketing", expect=409
    )
    assert refused["type"].endswith("/frequency_capped") and refused["cap"] == {"count": 2, "hours": 24}
    count = await db.scalar(select(text("count(*)")).select_from(Message).where(Message.workspace_id == tenant.id))
    assert count == 2
    await send(client, tenant, customer["id"], channel["id"], email_content())


async def test_marketing_in_quiet_hours_waits_for_their_end(client: httpx.AsyncClient, tenant: Tenant) -> None:
    zone = ZoneInfo(tenant.workspace.timezone)
    now = clock.now().astimezone(zone)
    # Quiet from an hour ago to an hour from now, in the workspace's zone.
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M")
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail, quiet_hours={"start": start, "end": end}))
    customer = await make_customer(client, tenant, consent={"email": True})
    marketing = await send(client, tenant, customer["id"], channel["id"], email_content(), purpose="marketing")
    waits = datetime.fromisoformat(marketing["send_after"])
    assert marketing["send_after"].endswith("Z")
    assert waits.astimezone(zone).strftime("%H:%M") == end and timedelta(minutes=59) <= waits - now <= timedelta(
        hours=1
    )
    transactional = await send(client, tenant, customer["id"], channel["id"], email_content())
    assert transactional["send_after"] <= transactional["created_at"]


async def test_the_workspaces_quiet_hours_hold_marketing_on_channels_without_their_own(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    before = (await client.get("/api/v1/workspace", headers=tenant.headers())).json()
    assert before["quiet_hours"] is None
    bad = await client.patch(
        "/api/v1/workspace",
        json={"name": "新名字", "quiet_hours": {"start": "24:00", "end": "07:30"}},
        headers={**tenant.headers(), "If-Match": f'"{before["version"]}"'},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "quiet_hours", "start"]
    assert (await client.get("/api/v1/workspace", headers=tenant.headers())).json() == before
    # Quiet from an hour ago to an hour from now in New York, the workspace's zone from now on.
    now = clock.now().astimezone(ZoneInfo("America/New_York"))
    start, end, later, latest = ((now + timedelta(hours=h)).strftime("%H:%M") for h in (-1, 1, 2, 3))
    patch = {"timezone": "America/New_York", "quiet_hours": {"start": start, "end": end}}
    patched = await client.patch(
        "/api/v1/workspace", json=patch, headers={**tenant.headers(), "If-Match": f'"{before["version"]}"'}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["quiet_hours"] == {"start": start, "end": end}
    [entry] = (
        await db.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "workspace", AuditEntry.entity_id == tenant.id)
        )
    ).all()
    assert entry.changes["quiet_hours"] == {"before": None, "after": f"{start}-{end}"}
    with mail_server() as mail:
        inherits = await make_channel(client, tenant, email_channel(mail))
        own = await make_channel(client, tenant, email_channel(mail, quiet_hours={"start": later, "end": latest}))
        never = await make_channel(client, tenant, email_channel(mail, quiet_hours={"start": "00:00", "end": "00:00"}))
    customer = await make_customer(client, tenant, consent={"email": True})

    async def waits(channel: dict[str, Any], purpose: str = "marketing") -> timedelta:
        message = await send(client, tenant, customer["id"], channel["id"], email_content(), purpose=purpose)
        return datetime.fromisoformat(message["send_after"]) - datetime.fromisoformat(message["created_at"])

    # The default, in the workspace's zone: marketing waits until its end, an hour from now.
    assert timedelta(minutes=59) <= await waits(inherits) <= timedelta(hours=1)
    assert await waits(inherits, purpose="transactional") == timedelta(0)
    # A channel's own quiet hours (later today) replace the default; equal times mean none.
    assert await waits(own) == timedelta(0)
    assert await waits(never) == timedelta(0)
    cleared = await client.patch(
        "/api/v1/workspace",
        json={"quiet_hours": None},
        headers={**tenant.headers(), "If-Match": f'"{before["version"] + 1}"'},
    )
    assert cleared.status_code == 200 and cleared.json()["quiet_hours"] is None
    assert await waits(inherits) == timedelta(0)


@pytest.mark.parametrize(
    ("at", "until"),
    [
        ("2026-12-08T21:59:59", "2026-12-08T21:59:59"),
        ("2026-12-08T22:00:00", "2026-12-09T07:30:00"),
        ("2026-12-09T00:00:00", "2026-12-09T07:30:00"),
        ("2026-12-09T07:29:59", "2026-12-09T07:30:00"),
        ("2026-12-09T07:30:00", "2026-12-09T07:30:00"),
        # The night the clocks go forward: 07:30 is still 07:30 local, an hour less in UTC.
        ("2026-03-08T01:00:00", "2026-03-08T07:30:00"),
    ],
)
def test_quiet_hours_end_at_their_local_end(at: str, until: str) -> None:
    zone = ZoneInfo("America/New_York")
    now = datetime.fromisoformat(at).replace(tzinfo=zone).astimezone(UTC)
    waits = messages.after_quiet_hours(now, "America/New_York", "22:00", "07:30")
    assert waits.astimezone(zone).replace(tzinfo=None) == datetime.fromisoformat(until)


async def test_a_dedupe_key_is_one_message(client: httpx.AsyncClient, tenant: Tenant) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    customer = await make_customer(client, tenant)
    first = await send(client, tenant, customer["id"], channel["id"], email_content(), dedupe_key="birthday-2026")
    again = await send(
        client, tenant, customer["id"], channel["id"], email_content(), dedupe_key="birthday-2026", expect=200
    )
    assert again["id"] == first["id"]
    other = await make_customer(client, tenant)
    clash = await send(
        client, tenant, other["id"], channel["id"], email_content(), dedupe_key="birthday-2026", expect=409
    )
    assert clash["existing_id"] == first["id"]
    bad = await send(client, tenant, customer["id"], channel["id"], {"subject": "no body"}, expect=422)
    assert bad["errors"][0]["loc"] == ["body", "content", "body"]


async def test_a_transient_refusal_is_retried_and_a_permanent_one_fails(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    with mail_server() as mail:
        mail.script = ["451 4.3.0 try again later", "250 OK", "550 5.1.1 no such user"]
        channel = await make_channel(live_client, live_tenant, email_channel(mail))
        customer = await make_customer(live_client, live_tenant)
        message = await send(live_client, live_tenant, customer["id"], channel["id"], email_content())
        await run_worker(app, database_url)
        [row] = await message_rows(app, live_tenant.id)
        assert row.status == "queued" and row.error_code == "451" and row.send_after > clock.now()
        await run_worker(app, database_url, clock.now() + timedelta(minutes=1))
        [row] = await message_rows(app, live_tenant.id)
        assert row.status == "sent" and row.attempts == 2
        failing = await send(live_client, live_tenant, customer["id"], channel["id"], email_content())
        await run_worker(app, database_url, clock.now() + timedelta(minutes=1))
    got = (await live_client.get(f"/api/v1/messages/{failing['id']}", headers=live_tenant.headers())).json()
    assert got["status"] == "failed" and got["error_code"] == "550"
    [failed] = await events(app, live_tenant.id, "message.failed")
    assert failed.data["id"] == failing["id"] and failed.data["error_code"] == "550"
    assert len(mail.received) == 1 and message["id"] in mail.received[0]["Message-ID"]


async def test_a_message_whose_worker_died_mid_send_is_unknown_and_never_resent(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    async with sms_server() as sms:
        channel = await make_channel(live_client, live_tenant, tencent_channel(sms))
        customer = await make_customer(live_client, live_tenant)
        message = await send(live_client, live_tenant, customer["id"], channel["id"], sms_content())
        # A worker claimed it (committed `sending`, with a lease) and died before recording anything.
        async with app.state.sessions() as session:
            await session.execute(
                update(Message)
                .where(Message.id == uuid.UUID(message["id"]))
                .values(status="sending", attempts=1, locked_until=clock.now() - timedelta(seconds=1))
            )
            await session.commit()
        await run_worker(app, database_url)
        await run_worker(app, database_url, clock.now() + timedelta(hours=3))
    assert sms.received == []
    got = (await live_client.get(f"/api/v1/messages/{message['id']}", headers=live_tenant.headers())).json()
    assert got["status"] == "unknown" and got["error_code"] == "lease_expired" and got["attempts"] == 1


async def test_a_live_worker_slower_than_its_lease_records_the_truth_but_never_requeues(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    async with sms_server() as sms:
        channel = await make_channel(live_client, live_tenant, tencent_channel(sms))
        customer = await make_customer(live_client, live_tenant)
        taken = await send(live_client, live_tenant, customer["id"], channel["id"], sms_content())
        refused = await send(live_client, live_tenant, customer["id"], channel["id"], sms_content())
        pairs = [(live_tenant.id, uuid.UUID(m["id"])) for m in (taken, refused)]
        t0 = clock.now()
        # A live worker claims both, then stalls past its lease; the sweep declares them `unknown`.
        async with app.state.sessions() as session:
            claimed, _ = await sending.claim(session, pairs, now=t0, lease=timedelta(seconds=1))
            await session.commit()
        async with app.state.sessions() as session:
            assert await sending.expire_leases(session, now=t0 + timedelta(seconds=2)) == 2
            await session.commit()
        # Its late outcomes: the provider took one; it refused the other for a reason worth a retry.
        by_id = {str(c.id): c for c in claimed}
        outcomes = [
            (by_id[taken["id"]], Result.accepted("serial-late")),
            (by_id[refused["id"]], Result.rejected("LimitExceeded", "try later", retryable=True)),
        ]
        async with app.state.sessions() as session:
            await sending.record(session, outcomes, now=t0 + timedelta(seconds=3))
            await session.commit()
        await run_worker(app, database_url, t0 + timedelta(hours=3))
    assert sms.received == []
    rows = {str(r.id): r for r in await message_rows(app, live_tenant.id)}
    assert rows[taken["id"]].status == "sent" and rows[taken["id"]].provider_message_id == "serial-late"
    # Shown `unknown` once, so not queued again: failed with the provider's code, attempted once.
    late = rows[refused["id"]]
    assert (late.status, late.error_code, late.attempts) == ("failed", "LimitExceeded", 1)
    assert late.failed_at is not None
    assert [e.data["id"] for e in await events(app, live_tenant.id, "message.sent")] == [taken["id"]]
    assert [e.data["id"] for e in await events(app, live_tenant.id, "message.failed")] == [refused["id"]]


async def test_a_job_whose_worker_died_before_claiming_is_handed_over_again(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    async with sms_server() as sms:
        channel = await make_channel(live_client, live_tenant, tencent_channel(sms))
        customer = await make_customer(live_client, live_tenant)
        message = await send(live_client, live_tenant, customer["id"], channel["id"], sms_content())
        t0 = clock.now()
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            queries = Queries(AsyncpgDriver(conn))
            assert await outreach_jobs.dispatch(app.state.sessions, queries, now=t0) == 1
            # A worker took the job off the queue and was killed before it claimed anything.
            await conn.execute("UPDATE pgqueuer SET status = 'picked' WHERE entrypoint = $1", outreach_jobs.SEND)
            assert await outreach_jobs.dispatch(app.state.sessions, queries, now=t0 + timedelta(seconds=30)) == 0
            later = t0 + sending.JOB_LEASE + timedelta(seconds=1)
            assert await outreach_jobs.dispatch(app.state.sessions, queries, now=later) == 1
            rows = await conn.fetch(
                "DELETE FROM pgqueuer WHERE entrypoint = $1 RETURNING status::text, payload", outreach_jobs.SEND
            )
        finally:
            await conn.close()
        assert sorted(r["status"] for r in rows) == ["picked", "queued"]
        async with providers.http_session(10, allow_private=True) as http:
            for row in rows:
                await outreach_jobs.send(
                    app.state.sessions, http, row["payload"], now=lambda: later, settings=get_settings()
                )
    assert len(sms.received) == 1
    got = (await live_client.get(f"/api/v1/messages/{message['id']}", headers=live_tenant.headers())).json()
    assert got["status"] == "sent" and got["attempts"] == 1


async def test_a_lost_connection_after_the_request_is_unknown(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    async with sms_server() as sms:
        body = aliyun_channel(sms)
        body["settings"]["endpoint"] = sms.url("drop")
        channel = await make_channel(live_client, live_tenant, body)
        customer = await make_customer(live_client, live_tenant)
        message = await send(live_client, live_tenant, customer["id"], channel["id"], sms_content())
        await run_worker(app, database_url)
        await run_worker(app, database_url, clock.now() + timedelta(hours=3))
    got = (await live_client.get(f"/api/v1/messages/{message['id']}", headers=live_tenant.headers())).json()
    assert got["status"] == "unknown" and got["attempts"] == 1
    assert ALIYUN_SECRET not in (got["error_message"] or "")


async def test_receipts_replies_and_unsubscribe_through_the_callbacks(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    async with sms_server() as sms:
        tencent = await make_channel(live_client, live_tenant, tencent_channel(sms))
        aliyun = await make_channel(live_client, live_tenant, aliyun_channel(sms))
        customer = await make_customer(live_client, live_tenant, consent={"sms": True, "email": True})
        first = await send(live_client, live_tenant, customer["id"], tencent["id"], sms_content(), purpose="marketing")
        second = await send(live_client, live_tenant, customer["id"], aliyun["id"], sms_content())
        await run_worker(app, database_url)
    rows = {str(m.id): m for m in await message_rows(app, live_tenant.id)}
    mobile = customer["phones"][0].removeprefix("+86")
    status_url = tencent["callback_urls"]["receipts"]
    report = [{"mobile": mobile, "nationcode": "86", "report_status": "SUCCESS", "errmsg": "DELIVRD",
               "description": "用户短信送达成功", "sid": rows[first["id"]].provider_message_id,
               "user_receive_time": "2026-12-08 08:03:04"}]  # fmt: skip
    answered = await live_client.post(status_url, json=report)
    assert answered.status_code == 200 and answered.json() == {"result": 0, "errmsg": "OK"}
    aliyun_report = [
        {"phone_number": mobile, "success": False, "err_code": "MK:0001", "err_msg": "空号", "biz_id": "biz-1",
         "send_time": "2026-12-08 08:00:00", "report_time": "2026-12-08 08:00:05"}
    ]  # fmt: skip
    assert (await live_client.post(aliyun["callback_urls"]["receipts"], json=aliyun_report)).json()["code"] == 0
    got = {
        m["id"]: m for m in (await live_client.get("/api/v1/messages", headers=live_tenant.headers())).json()["items"]
    }
    assert got[first["id"]]["status"] == "delivered" and got[second["id"]]["status"] == "failed"
    assert got[second["id"]]["error_code"] == "MK:0001"
    reply = {"mobile": mobile, "nationcode": "86", "text": " td ", "sign": "关系科技", "time": 1765180000}
    assert (await live_client.post(tencent["callback_urls"]["replies"], json=reply)).status_code == 200
    fetched = (await live_client.get(f"/api/v1/customers/{customer['id']}", headers=live_tenant.headers())).json()
    assert fetched["consent"]["sms"] is False and fetched["consent"]["email"] is True
    [replied] = await events(app, live_tenant.id, "message.replied")
    assert replied.data["unsubscribed"] is True and replied.data["message_id"] == first["id"]
    [consent] = await events(app, live_tenant.id, "consent.changed")
    assert consent.data["changed"] == ["sms"] and consent.data["after"]["sms"] is False
    assert {e.type for e in await events(app, live_tenant.id)} >= {
        "message.delivered",
        "message.failed",
        "customer.updated",
    }
    async with app.state.sessions() as session:
        suppressed = await session.scalar(select(Suppression).where(Suppression.workspace_id == live_tenant.id))
        inbound = await session.scalar(
            select(Interaction).where(Interaction.workspace_id == live_tenant.id, Interaction.direction == "inbound")
        )
    assert suppressed is not None and suppressed.address == customer["phones"][0] and suppressed.reason == "unsubscribe"
    assert inbound is not None and inbound.content == "td"
    refused = await send(
        live_client, live_tenant, customer["id"], tencent["id"], sms_content(), purpose="marketing", expect=409
    )
    assert refused["type"].endswith("/suppressed")
    # A rotated token retires the old addresses.
    rotated = await live_client.post(
        f"/api/v1/channels/{tencent['id']}/rotate-callback-token", headers=live_tenant.headers()
    )
    assert rotated.status_code == 200 and rotated.json()["callback_urls"]["receipts"] != status_url
    assert (await live_client.post(status_url, json=report)).status_code == 404


async def test_an_email_bounce_suppresses_the_address(client: httpx.AsyncClient, tenant: Tenant) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    customer = await make_customer(client, tenant)
    bounce_url = channel["callback_urls"]["receipts"]
    bounced = await client.post(
        bounce_url, json={"address": customer["emails"][0], "kind": "bounce", "detail": "550 5.1.1"}
    )
    assert bounced.status_code == 200
    refused = await send(client, tenant, customer["id"], channel["id"], email_content(), expect=409)
    assert refused["type"].endswith("/suppressed")
    assert (await client.post(bounce_url, json={"address": "not an address"})).status_code == 422
    unknown = {"address": customer["emails"][0], "message_id": str(uuid.uuid4())}
    wrong_id = await client.post(bounce_url, json=unknown)
    assert wrong_id.status_code == 422 and wrong_id.json()["errors"][0]["loc"] == ["body", "message_id"]
    wrong = bounce_url.replace(channel["callback_urls"]["receipts"].split("/")[-3], "x" * 43)
    assert (await client.post(wrong, json={"address": customer["emails"][0]})).status_code == 404


async def test_messages_follow_the_customers_visibility_and_mask_addresses(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    theirs = await make_customer(client, tenant, who="sales2")
    message = await send(client, tenant, theirs["id"], channel["id"], email_content(), who="sales2")
    assert (await client.get(f"/api/v1/messages/{message['id']}", headers=tenant.headers("sales"))).status_code == 404
    await send(client, tenant, theirs["id"], channel["id"], email_content(), who="sales", expect=404)
    masked = (await client.get(f"/api/v1/messages/{message['id']}", headers=tenant.headers("readonly"))).json()
    assert masked["recipient"] != theirs["emails"][0] and "***@" in masked["recipient"]
    assert (await client.post("/api/v1/messages", json={}, headers=tenant.headers("readonly"))).status_code == 403


async def test_rotation_seals_every_channel_under_the_newest_key(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    old = get_settings()
    new_key = Fernet.generate_key().decode()
    current = old.secret_keys or DEVELOPMENT_SECRET_KEY
    rotated = old.model_copy(update={"secret_keys": f"{new_key},{current}"})
    assert await channels.reseal_all(db, rotated) >= 1
    sealed = await db.scalar(select(Channel.sealed_secrets).where(Channel.id == uuid.UUID(channel["id"])))
    assert sealed is not None
    # The newest key alone opens it now; the old one no longer does.
    assert SecretBox(new_key).open(sealed) == {"password": SMTP_PASSWORD}
    with pytest.raises(InvalidToken):
        SecretBox(current).open(sealed)


async def test_a_running_worker_sends_what_a_commit_queued(
    live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    with mail_server() as mail:
        channel = await make_channel(live_client, live_tenant, email_channel(mail))
        customers = [await make_customer(live_client, live_tenant) for _ in range(12)]
        # With the periodic sweep an hour away, only the NOTIFY sent at commit can wake the worker.
        worker = Worker(get_settings(), database_url, sweep_seconds=3600)
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.ready.wait(), timeout=10)
            for customer in customers:
                await send(live_client, live_tenant, customer["id"], channel["id"], email_content())
            async with asyncio.timeout(15):
                while len(mail.received) < len(customers):  # noqa: ASYNC110 - the SMTP server runs in a thread
                    await asyncio.sleep(0.05)
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, timeout=20)
        # Jobs of one message each, yet a few connections: they are kept open between jobs.
        assert mail.connections <= 4
    assert sorted(m["To"] for m in mail.received) == sorted(c["emails"][0] for c in customers)
    listed = (
        await live_client.get("/api/v1/messages", params={"status": "sent"}, headers=live_tenant.headers())
    ).json()
    assert len(listed["items"]) == len(customers)


async def test_the_same_dedupe_key_sent_at_once_is_one_message(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    with mail_server() as mail:
        channel = await make_channel(live_client, live_tenant, email_channel(mail))
    customer = await make_customer(live_client, live_tenant)
    body = {
        "customer_id": customer["id"],
        "channel_id": channel["id"],
        "purpose": "transactional",
        "content": email_content(),
        "dedupe_key": "order-42-shipped",
    }
    responses = await asyncio.gather(
        *(live_client.post("/api/v1/messages", json=body, headers=live_tenant.headers()) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await message_rows(app, live_tenant.id)) == 1


async def test_http_and_robot_channels_send_signed_and_answer_by_status(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str, receiver: Receiver
) -> None:
    secret = webhook_signing.new_secret()
    receiver.secrets = [secret]
    # 503: not processed, tried again later; then 500: it may have been, so `unknown`.
    receiver.script = [Answer(503), Answer(200, body=b'{"id": "partner-7"}'), Answer(500)]
    http_body = {
        "kind": "http",
        "name": "partner",
        "settings": {"url": receiver.url},
        "secrets": {"signing_secret": secret},
    }
    channel = await make_channel(live_client, live_tenant, http_body)
    customer = await make_customer(live_client, live_tenant)
    first = await send(live_client, live_tenant, customer["id"], channel["id"], {"text": "新订单"})
    await run_worker(app, database_url)
    await run_worker(app, database_url, clock.now() + timedelta(minutes=1))
    second = await send(live_client, live_tenant, customer["id"], channel["id"], {"text": "再一条"})
    await run_worker(app, database_url, clock.now() + timedelta(minutes=1))
    async with sms_server() as sms:
        robot = await make_channel(live_client, live_tenant, wecom_channel(sms))
        notice = await send(live_client, live_tenant, customer["id"], robot["id"], {"text": "客户来电"})
        await run_worker(app, database_url, clock.now() + timedelta(minutes=1))
    got = {m.id: m for m in await message_rows(app, live_tenant.id)}
    assert got[uuid.UUID(first["id"])].status == "sent" and got[uuid.UUID(first["id"])].attempts == 2
    assert got[uuid.UUID(first["id"])].provider_message_id == "partner-7"
    assert got[uuid.UUID(second["id"])].status == "unknown"
    assert got[uuid.UUID(notice["id"])].status == "sent"
    body = orjson.loads(receiver.received[0].body)
    assert body["id"] == first["id"] and body["content"] == {"text": "新订单"} and body["to"] is None
    assert receiver.received[0].headers["webhook-id"] == first["id"]
    assert sms.received == [("wecom", {"msgtype": "text", "text": {"content": "客户来电"}})]


def test_the_rpc_signature_matches_alibaba_clouds_worked_example() -> None:
    """The example of Alibaba Cloud's RPC signature document (ECS DescribeRegions, GET, AccessKey
    secret `testsecret`), whose published signature is OLeaidS1JvxuMvnyHOwuJ+uX5qY=."""
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert aliyun_sms.signature(params, "GET", "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_only_an_unsubscribe_word_alone_unsubscribes() -> None:
    assert all(callbacks.is_unsubscribe(text) for text in ("退订", " TD ", "stop", "Unsubscribe", "td\n"))
    assert not any(callbacks.is_unsubscribe(text) for text in ("不要退订", "STOP it", "t", "好的"))


async def test_a_message_from_a_template_is_rendered_for_the_customer_and_sent(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    headers = live_tenant.headers()
    email = {
        "name": "生日祝福",
        "channel": "email",
        "subject": "{{ customer.name }}，生日快乐",
        "body": "亲爱的{{ customer.name }}：优惠码 {{ vars.coupon }}",
        "html": "<p>亲爱的{{ customer.name }}</p>",
        "variables": ["coupon"],
    }
    template = (await live_client.post("/api/v1/message-templates", json=email, headers=headers)).json()
    sms = {
        "name": "提醒",
        "channel": "sms",
        "body": "{{ customer.name }}您好",
        "sms_template_code": "SMS_154950909",
        "sms_sign_name": "模板签名",
        "sms_params": {"name": "{{ customer.name }}"},
    }
    sms_template = (await live_client.post("/api/v1/message-templates", json=sms, headers=headers)).json()
    with mail_server() as mail:
        async with sms_server() as stand_in:
            channel = await make_channel(live_client, live_tenant, email_channel(mail))
            aliyun = await make_channel(live_client, live_tenant, aliyun_channel(stand_in))
            customer = await make_customer(live_client, live_tenant, name="王芳")
            body = {"customer_id": customer["id"], "channel_id": channel["id"], "purpose": "transactional"}
            message = await send(
                live_client, live_tenant, customer["id"], channel["id"], None, template_id=template["id"],
                variables={"coupon": "BDAY-2026"},
            )  # fmt: skip
            assert message["content"]["subject"] == "王芳，生日快乐"
            assert message["content"]["template_id"] == template["id"]
            await send(live_client, live_tenant, customer["id"], aliyun["id"], None, template_id=sms_template["id"])
            wrong = await live_client.post(
                "/api/v1/messages", json={**body, "template_id": sms_template["id"]}, headers=headers
            )
            assert wrong.status_code == 422 and wrong.json()["errors"][0]["loc"] == ["body", "template_id"]
            missing = await live_client.post(
                "/api/v1/messages", json={**body, "template_id": template["id"]}, headers=headers
            )
            assert missing.status_code == 422
            both = await live_client.post(
                "/api/v1/messages",
                json={**body, "template_id": template["id"], "content": email_content()},
                headers=headers,
            )
            assert both.status_code == 422
            await run_worker(app, database_url)
    [received] = mail.received
    assert received["Subject"] == "王芳，生日快乐"
    assert received.get_body(("plain",)).get_content().strip() == "亲爱的王芳：优惠码 BDAY-2026"  # type: ignore[union-attr]
    assert received.get_body(("html",)).get_content().strip() == "<p>亲爱的王芳</p>"  # type: ignore[union-attr]
    [(_, form)] = stand_in.received
    assert form["SignName"] == "模板签名" and orjson.loads(form["TemplateParam"]) == {"name": "王芳"}


async def test_refusals_before_the_provider_took_anything_are_retried(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    closed = free_port()
    async with sms_server() as sms:
        sms.aliyun = [
            {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"},
            {"Code": "OK", "BizId": "b-2"},
        ]
        mail = {"kind": "email", "name": "nowhere", "settings": {"host": "127.0.0.1", "port": closed, "tls": "none",
                "from_address": "crm@guanxi.test"}, "secrets": {"password": SMTP_PASSWORD}}  # fmt: skip
        email = await make_channel(live_client, live_tenant, mail)
        aliyun = await make_channel(live_client, live_tenant, aliyun_channel(sms))
        customer = await make_customer(live_client, live_tenant)
        by_mail = await send(live_client, live_tenant, customer["id"], email["id"], email_content())
        by_sms = await send(live_client, live_tenant, customer["id"], aliyun["id"], sms_content())
        await run_worker(app, database_url)
        rows = {str(m.id): m for m in await message_rows(app, live_tenant.id)}
        assert rows[by_mail["id"]].status == "queued" and rows[by_mail["id"]].error_code == "connect_failed"
        assert rows[by_sms["id"]].status == "queued" and rows[by_sms["id"]].error_code == "isv.BUSINESS_LIMIT_CONTROL"
        await run_worker(app, database_url, clock.now() + timedelta(minutes=1))
        rows = {str(m.id): m for m in await message_rows(app, live_tenant.id)}
        assert rows[by_sms["id"]].status == "sent" and rows[by_sms["id"]].provider_message_id == "b-2"
        assert rows[by_mail["id"]].status == "queued" and rows[by_mail["id"]].attempts == 2
        # A robot whose address does not answer: its key, which rides in the URL, is not in the answer.
        robot = wecom_channel(sms)
        robot["settings"]["endpoint"] = f"http://127.0.0.1:{closed}/cgi-bin/webhook/send"
        channel = await make_channel(live_client, live_tenant, robot)
        tested = await live_client.post(
            f"/api/v1/channels/{channel['id']}/test", json={}, headers=live_tenant.headers()
        )
    assert tested.json()["outcome"] == "rejected" and tested.json()["code"] == "connect_failed"
    assert tested.json()["retryable"] is True and WECOM_KEY not in tested.text
    assert SMTP_PASSWORD not in (rows[by_mail["id"]].error_message or "")


async def test_an_idempotency_key_replays_the_first_send(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    with mail_server() as mail:
        channel = await make_channel(client, tenant, email_channel(mail))
    customer = await make_customer(client, tenant)
    body = {"customer_id": customer["id"], "channel_id": channel["id"], "purpose": "transactional"}
    headers = {**tenant.headers(), "Idempotency-Key": "send-1"}
    first = await client.post("/api/v1/messages", json={**body, "content": email_content()}, headers=headers)
    again = await client.post("/api/v1/messages", json={**body, "content": email_content()}, headers=headers)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await client.post(
        "/api/v1/messages", json={**body, "content": {"subject": "x", "body": "y"}}, headers=headers
    )
    assert other.status_code == 422
    count = await db.scalar(select(text("count(*)")).select_from(Message).where(Message.workspace_id == tenant.id))
    assert count == 1
