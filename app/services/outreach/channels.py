"""Channels: the provider accounts messages go out on. Their secrets are write-only: sealed with the
workspace-independent key list (`app.core.secret_box`) on the way in, opened only to send."""

import secrets
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import NotFound, ValidationFailed
from app.core.pagination import SortKey, keyset_page
from app.core.secret_box import SecretBox, box
from app.core.settings import Settings, get_settings
from app.core.versions import check_version
from app.models import Channel
from app.schemas.outreach import SECRETS, SETTINGS, ChannelIn, ChannelPatch, ChannelTestIn, MessageContent
from app.services.events import audit, webhook_targets
from app.services.outreach import content_rules
from app.services.outreach.providers import Account, Outgoing, Result, http_session, provider

# Settings that name a URL a request goes to: each obeys the webhooks' target rules.
URL_SETTINGS = ("endpoint", "url")
CALLBACK_BASE = "/api/v1/channel-callbacks"


def new_callback_token() -> str:
    return secrets.token_urlsafe(32)


async def _check_urls(kind_settings: dict[str, Any], loc: list[str | int]) -> None:
    allow_private = get_settings().webhook_allow_private_targets
    for name in URL_SETTINGS:
        if name in kind_settings:
            try:
                await webhook_targets.check_target(str(kind_settings[name]), allow_private=allow_private)
            except webhook_targets.TargetBlocked as exc:
                raise ValidationFailed(str(exc), loc=[*loc, name], error_type="blocked_target") from exc


async def create(session: AsyncSession, ctx: Caller, data: ChannelIn) -> Channel:
    kind_settings = data.settings.model_dump(mode="json")
    await _check_urls(kind_settings, ["body", "settings"])
    sealed = box(get_settings()).seal(_present_secrets(data.secrets.model_dump()))
    now = clock.now()
    channel = Channel(
        workspace_id=ctx.workspace_id,
        kind=data.kind,
        name=data.name,
        settings=kind_settings,
        sealed_secrets=sealed,
        callback_token=new_callback_token(),
        quiet_start=data.quiet_hours.start if data.quiet_hours else None,
        quiet_end=data.quiet_hours.end if data.quiet_hours else None,
        cap_count=data.frequency_cap.count if data.frequency_cap else None,
        cap_hours=data.frequency_cap.hours if data.frequency_cap else None,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(channel)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="channel",
        entity_id=channel.id,
        action="created",
        changes={
            "kind": {"before": None, "after": data.kind},
            "name": {"before": None, "after": data.name},
            "settings": {"before": None, "after": kind_settings},
            # Which secrets were set, never what they are.
            "secrets": {"before": None, "after": sorted(_present_secrets(data.secrets.model_dump()))},
        },
    )
    return channel


async def get(session: AsyncSession, ctx: Caller, channel_id: uuid.UUID, *, lock: bool = False) -> Channel:
    statement = scoped.in_workspace(Channel, ctx).where(Channel.id == channel_id, Channel.deleted_at.is_(None))
    return await scoped.one(session, statement, missing="No channel with that id.", lock=lock)


async def list_page(
    session: AsyncSession, ctx: Caller, *, kind: str | None, limit: int, cursor: str | None
) -> tuple[list[Channel], str | None]:
    statement = scoped.in_workspace(Channel, ctx).where(Channel.deleted_at.is_(None))
    if kind:
        statement = statement.where(Channel.kind == kind)
    rows, next_cursor = await keyset_page(
        session, statement, [SortKey(Channel.id)], list_name="channels", limit=limit, cursor=cursor
    )
    return list(rows), next_cursor


async def update(
    session: AsyncSession, ctx: Caller, channel_id: uuid.UUID, patch: ChannelPatch, *, expected_version: int
) -> Channel:
    channel = await get(session, ctx, channel_id, lock=True)
    check_version(channel.version, expected_version, what="channel")
    sent = patch.model_fields_set
    changes: audit.Changes = {}
    if "name" in sent and patch.name is not None and patch.name != channel.name:
        changes["name"] = {"before": channel.name, "after": patch.name}
        channel.name = patch.name
    if "settings" in sent and patch.settings is not None:
        merged = _validated(SETTINGS[channel.kind], {**channel.settings, **patch.settings}, "settings")
        await _check_urls(merged, ["body", "settings"])
        if merged != channel.settings:
            changes["settings"] = {"before": channel.settings, "after": merged}
            channel.settings = merged
    if "secrets" in sent and patch.secrets is not None:
        secret_box = box(get_settings())
        current = secret_box.open(channel.sealed_secrets)
        merged = _present_secrets({**current, **patch.secrets})
        _validated(SECRETS[channel.kind], merged, "secrets")
        channel.sealed_secrets = secret_box.seal(merged)
        changes["secrets"] = {"before": None, "after": sorted(patch.secrets)}
    if "quiet_hours" in sent:
        after = (patch.quiet_hours.start, patch.quiet_hours.end) if patch.quiet_hours else (None, None)
        if after != (channel.quiet_start, channel.quiet_end):
            changes["quiet_hours"] = {"before": _quiet(channel), "after": patch.quiet_hours and after}
            channel.quiet_start, channel.quiet_end = after
    if "frequency_cap" in sent:
        cap = (patch.frequency_cap.count, patch.frequency_cap.hours) if patch.frequency_cap else (None, None)
        if cap != (channel.cap_count, channel.cap_hours):
            changes["frequency_cap"] = {"before": _cap(channel), "after": patch.frequency_cap and cap}
            channel.cap_count, channel.cap_hours = cap
    audit.record_update(session, ctx, channel, entity_type="channel", changes=changes)
    return channel


async def delete(session: AsyncSession, ctx: Caller, channel_id: uuid.UUID, *, expected_version: int) -> None:
    """Soft: its messages keep naming it; its callbacks stop answering and nothing more is sent on it."""
    channel = await get(session, ctx, channel_id, lock=True)
    check_version(channel.version, expected_version, what="channel")
    now = clock.now()
    channel.deleted_at = now
    channel.updated_at = now
    channel.version += 1
    audit.record(
        session,
        ctx,
        entity_type="channel",
        entity_id=channel.id,
        action="deleted",
        changes={"deleted_at": {"before": None, "after": now.isoformat()}},
    )


async def rotate_callback_token(session: AsyncSession, ctx: Caller, channel_id: uuid.UUID) -> Channel:
    """A new token: the old callback URLs answer 404 from now on."""
    channel = await get(session, ctx, channel_id, lock=True)
    channel.callback_token = new_callback_token()
    channel.version += 1
    channel.updated_at = clock.now()
    audit.record(session, ctx, entity_type="channel", entity_id=channel.id, action="callback_token_rotated", changes={})
    return channel


async def by_callback_token(session: AsyncSession, token: str, kinds: tuple[str, ...]) -> Channel:
    found = await session.scalar(
        select(Channel).where(Channel.callback_token == token, Channel.deleted_at.is_(None), Channel.kind.in_(kinds))
    )
    if found is None:
        raise NotFound("No channel has this callback address.")
    return found


def account(channel: Channel, secret_box: SecretBox) -> Account:
    return Account(kind=channel.kind, settings=channel.settings, secrets=secret_box.open(channel.sealed_secrets))


async def test_send(session: AsyncSession, ctx: Caller, channel_id: uuid.UUID, request: ChannelTestIn) -> Result:
    """Send one test message now, outside the queue, and answer the provider's outcome."""
    channel = await get(session, ctx, channel_id)
    settings = get_settings()
    content = request.content or _test_content(channel.kind)
    content_rules.check(channel.kind, content, ["body", "content"])
    needs_address = channel.kind in ("email", "sms_aliyun", "sms_tencent")
    to = None
    if needs_address:
        if not request.to:
            raise ValidationFailed("This channel sends to an address: give `to`.", loc=["body", "to"])
        to = content_rules.recipient_of(channel.kind, request.to, ["body", "to"])
    return await send_once(channel, settings, Outgoing(to=to, content=content.model_dump(), reference="test"))


async def send_once(channel: Channel, settings: Settings, outgoing: Outgoing) -> Result:
    async with http_session(2, allow_private=settings.webhook_allow_private_targets) as http:
        adapter = provider(account(channel, box(settings)), http)
        try:
            return await adapter.send(outgoing)
        finally:
            await adapter.close()


def _test_content(kind: str) -> MessageContent:
    if kind == "email":
        return MessageContent(subject="Guanxi test", body="This is a test message from Guanxi.")
    if kind in ("sms_aliyun", "sms_tencent"):
        raise ValidationFailed("SMS tests need `content` with the provider's template code.", loc=["body", "content"])
    return MessageContent(text="Guanxi test message")


def _present_secrets(values: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _validated(model: type[Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return dict(model.model_validate(values).model_dump(mode="json"))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(
            first["msg"], loc=["body", where, *[str(p) for p in first["loc"]]], error_type=first["type"]
        ) from exc


def _quiet(channel: Channel) -> dict[str, str] | None:
    if channel.quiet_start is None or channel.quiet_end is None:
        return None
    return {"start": channel.quiet_start, "end": channel.quiet_end}


def _cap(channel: Channel) -> dict[str, int] | None:
    if channel.cap_count is None or channel.cap_hours is None:
        return None
    return {"count": channel.cap_count, "hours": channel.cap_hours}


def present(channel: Channel) -> dict[str, Any]:
    base = f"{CALLBACK_BASE}/{channel.callback_token}"
    callbacks = {
        "email": {"receipts": f"{base}/email/bounce", "replies": None},
        "sms_aliyun": {"receipts": f"{base}/aliyun/report", "replies": f"{base}/aliyun/reply"},
        "sms_tencent": {"receipts": f"{base}/tencent/status", "replies": f"{base}/tencent/reply"},
    }.get(channel.kind, {"receipts": None, "replies": None})
    return {
        "id": channel.id,
        "kind": channel.kind,
        "name": channel.name,
        "settings": channel.settings,
        "secrets_set": sorted(SECRETS[channel.kind].model_fields),
        "quiet_hours": _quiet(channel),
        "frequency_cap": _cap(channel),
        "callback_urls": callbacks,
        "created_at": channel.created_at,
        "updated_at": channel.updated_at,
        "version": channel.version,
    }


RESEAL_BATCH = 500


async def reseal_all(session: AsyncSession, settings: Settings) -> int:
    """Every channel's secrets sealed again under the first key of GUANXI_SECRET_KEYS (deleted
    channels too): once it has run, older keys can leave the list. Returns how many."""
    secret_box = box(settings)
    count = 0
    last: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        statement = select(Channel).order_by(Channel.workspace_id, Channel.id).limit(RESEAL_BATCH).with_for_update()
        if last is not None:
            statement = statement.where(tuple_(Channel.workspace_id, Channel.id) > tuple_(*last))
        rows = list((await session.scalars(statement)).all())
        for channel in rows:
            channel.sealed_secrets = secret_box.reseal(channel.sealed_secrets)
        await session.flush()
        count += len(rows)
        if len(rows) < RESEAL_BATCH:
            return count
        last = (rows[-1].workspace_id, rows[-1].id)
