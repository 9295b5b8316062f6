"""Outreach test helpers: channel bodies for the stand-ins, customers, and one worker pass through
the real job queue (the dispatch reaction enqueues on pgqueuer, the SEND job function runs)."""

import random
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from pgqueuer import AsyncpgDriver, Queries
from sqlalchemy import select

from app.core import clock
from app.core.db import asyncpg_dsn
from app.core.settings import get_settings
from app.models import Message, OutboxEvent
from app.services.outreach import providers
from app.workers import outreach as outreach_jobs
from tests.factories import Tenant, customer_body
from tests.outreach_stand_ins import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_ID,
    TENCENT_KEY,
    WECOM_KEY,
    MailServer,
    SmsServer,
)

SMTP_PASSWORD = "smtp-password-Qe93kLm1"


def email_channel(mail: MailServer, **extra: Any) -> dict[str, Any]:
    settings = {"host": "127.0.0.1", "port": mail.port, "tls": "none", "from_address": "crm@guanxi.test"}
    return {"kind": "email", "name": "邮件", "settings": settings, "secrets": {"password": SMTP_PASSWORD}, **extra}


def aliyun_channel(sms: SmsServer, **extra: Any) -> dict[str, Any]:
    settings = {"access_key_id": ALIYUN_KEY_ID, "sign_name": "关系科技", "endpoint": sms.url("aliyun")}
    return {
        "kind": "sms_aliyun",
        "name": "阿里云短信",
        "settings": settings,
        "secrets": {"access_key_secret": ALIYUN_SECRET},
        **extra,
    }


def tencent_channel(sms: SmsServer, **extra: Any) -> dict[str, Any]:
    settings = {
        "secret_id": TENCENT_ID,
        "sdk_app_id": "1400006666",
        "sign_name": "关系科技",
        "endpoint": sms.url("tencent"),
    }
    return {
        "kind": "sms_tencent",
        "name": "腾讯云短信",
        "settings": settings,
        "secrets": {"secret_key": TENCENT_KEY},
        **extra,
    }


def wecom_channel(sms: SmsServer) -> dict[str, Any]:
    return {
        "kind": "wecom_robot",
        "name": "群机器人",
        "settings": {"endpoint": sms.url("wecom")},
        "secrets": {"key": WECOM_KEY},
    }


def random_mobile() -> str:
    return f"+86138{random.randrange(10**8):08d}"


async def make_channel(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/channels", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_customer(client: httpx.AsyncClient, tenant: Tenant, who: str = "admin", **fields: Any) -> dict[str, Any]:
    body = customer_body(phones=[random_mobile()], **fields)
    response = await client.post("/api/v1/customers", json=body, headers=tenant.headers(who))
    assert response.status_code == 201, response.text
    return dict(response.json())


def email_content() -> dict[str, Any]:
    return {"subject": "生日快乐", "body": "张先生，祝您生日快乐！"}


def sms_content() -> dict[str, Any]:
    return {"template_code": "SMS_123456789", "template_params": {"name": "张伟", "code": "1234"}}


async def send(
    client: httpx.AsyncClient,
    tenant: Tenant,
    customer_id: str,
    channel_id: str,
    content: dict[str, Any] | None,
    *,
    purpose: str = "transactional",
    expect: int = 201,
    who: str = "admin",
    **extra: Any,
) -> dict[str, Any]:
    body = {"customer_id": customer_id, "channel_id": channel_id, "purpose": purpose, **extra}
    if content is not None:
        body["content"] = content
    response = await client.post("/api/v1/messages", json=body, headers=tenant.headers(who))
    assert response.status_code == expect, response.text
    return dict(response.json())


async def run_worker(app: FastAPI, database_url: str, now: datetime | None = None) -> int:
    """One worker pass: the dispatch reaction queues jobs on pgqueuer, then each queued SEND job's
    payload runs through the job function. Returns how many jobs ran."""
    at = now or clock.now()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await outreach_jobs.dispatch(app.state.sessions, Queries(AsyncpgDriver(conn)), now=at)
        rows = await conn.fetch("DELETE FROM pgqueuer WHERE entrypoint = $1 RETURNING payload", outreach_jobs.SEND)
    finally:
        await conn.close()
    async with providers.http_session(10, allow_private=True) as http:
        for row in rows:
            await outreach_jobs.send(app.state.sessions, http, row["payload"], now=lambda: at, settings=get_settings())
    return len(rows)


async def message_rows(app: FastAPI, workspace_id: uuid.UUID) -> list[Message]:
    async with app.state.sessions() as session:
        return list(
            (
                await session.scalars(select(Message).where(Message.workspace_id == workspace_id).order_by(Message.id))
            ).all()
        )


async def events(app: FastAPI, workspace_id: uuid.UUID, event_type: str | None = None) -> list[OutboxEvent]:
    async with app.state.sessions() as session:
        statement = select(OutboxEvent).where(OutboxEvent.workspace_id == workspace_id).order_by(OutboxEvent.id)
        if event_type:
            statement = statement.where(OutboxEvent.type == event_type)
        return list((await session.scalars(statement)).all())
