"""Messages to customers: the one writer (`enqueue`) that the API and automation rules both use,
and the reads. The rules a send obeys live here, so no path can skip them."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.core.ids import new_id
from app.core.masking import is_masked, mask_email, mask_phone
from app.core.pagination import SortKey, keyset_page
from app.models import Channel, Customer, Message
from app.schemas.interaction import InteractionIn
from app.schemas.outreach import MessageContent
from app.services.customers.visibility import require_visible, through_customer
from app.services.engagement import interactions
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column, timestamp
from app.services.identity import workspaces
from app.services.outreach import channels, content_rules, message_templates, suppressions


@dataclass(frozen=True)
class FromTemplate:
    """Content rendered now from a message template (`message_templates.render_for_customer`) of the
    channel's kind, with the template's declared `variables`."""

    template_id: uuid.UUID
    variables: Mapping[str, Any]


# The template channel each channel kind sends.
TEMPLATE_CHANNEL = {"email": "email", "sms_aliyun": "sms", "sms_tencent": "sms", "wecom_robot": "wecom", "http": "http"}


class ConsentRequired(Conflict):
    title, slug = "Consent required", "consent_required"


class Suppressed(Conflict):
    title, slug = "Address suppressed", "suppressed"


class FrequencyCapped(Conflict):
    title, slug = "Frequency cap reached", "frequency_capped"


# `message.sent`, `message.delivered` and `message.failed`, over the message's row.
MESSAGE_EVENT: Payload[Message] = Payload(
    (
        column("id"),
        column("customer_id"),
        column("channel_id"),
        column("purpose"),
        column("status"),
        column("source"),
        column("dedupe_key"),
        column("provider_message_id"),
        column("error_code"),
        column("error_message"),
        timestamp("sent_at"),
        timestamp("delivered_at"),
        timestamp("failed_at"),
    ),
    model=data_model("message.sent"),
)


async def enqueue(
    session: AsyncSession,
    ctx: Caller,
    *,
    customer_id: uuid.UUID,
    channel_id: uuid.UUID,
    purpose: str,
    content: MessageContent | FromTemplate,
    dedupe_key: str | None,
    source: str,
) -> tuple[Message, bool]:
    """Queue one message to a customer, in the caller's transaction; returns (message, created).

    - `customer_id`: a customer `ctx` may see (NotFound otherwise, as for a deleted one).
    - `channel_id`: a channel of the workspace (NotFound otherwise).
    - `purpose`: `transactional` or `marketing`.
    - `content`: `MessageContent` as the channel's kind needs it (ValidationFailed otherwise), or
      `FromTemplate(template_id, variables)`: a message template of the channel's kind rendered for
      the customer now (NotFound for an unknown template; ValidationFailed for another kind's, for
      variables missing or undeclared, or a render that fails). The address is the customer's
      first email (email) or phone (SMS): ValidationFailed when there is none.
    - `dedupe_key`: the same key in the workspace is the same message: a second call returns the
      first message and `created=False`, whatever else it says; None makes the message's own id the
      key. Automation passes e.g. f"rule:{rule_id}:{trigger_key}:{customer_id}".
    - `source`: who asked, stored on the message (`api`, `automation:<rule id>`...).

    Refusals (nothing is queued, nothing written): `Suppressed` (409 `suppressed`: the address is
    on the suppression list; an unsubscribe refuses marketing only), `ConsentRequired` (409
    `consent_required`: marketing without the customer's consent on the channel's consent key),
    `FrequencyCapped` (409 `frequency_capped`: the channel's marketing cap for this customer is
    reached). Marketing created during quiet hours (the channel's, else the workspace's default, in
    the workspace's time zone) waits until they end (`send_after`); transactional messages never wait.
    The message is also an outbound interaction on the customer's timeline; the workers are woken at
    commit. Statuses: queued, sending, sent, delivered, failed, unknown."""
    await require_visible(session, ctx, customer_id)
    channel = await channels.get(session, ctx, channel_id)
    if dedupe_key is not None and (existing := await _by_dedupe_key(session, ctx, dedupe_key)) is not None:
        return _same_message(existing, customer_id)
    template: dict[str, Any] = {}
    if isinstance(content, FromTemplate):
        content, template = await _rendered(session, ctx, channel, customer_id, content)
    content_rules.check(channel.kind, content, ["body", "content"])
    customer = await session.scalar(
        select(Customer).where(Customer.workspace_id == ctx.workspace_id, Customer.id == customer_id)
    )
    assert customer is not None
    recipient = _recipient(channel, customer)
    medium = content_rules.MEDIUM.get(channel.kind)
    if medium is not None and recipient is not None:
        suppressed = await suppressions.find(session, ctx.workspace_id, medium, recipient)
        if suppressed is not None and (suppressed.reason != "unsubscribe" or purpose == "marketing"):
            raise Suppressed(
                f"The customer's {medium} address is on the suppression list ({suppressed.reason}).",
                suppression_id=str(suppressed.id),
            )
    now = clock.now()
    send_after = now
    if purpose == "marketing":
        if medium is not None and customer.consent.get(medium) is not True:
            raise ConsentRequired(
                f"Marketing on this channel needs the customer's `{medium}` consent.", consent_key=medium
            )
        await _check_cap(session, ctx, channel, customer_id, now)
        # The channel's own quiet hours, else the workspace's; equal start and end: none at all.
        zone, window = await workspaces.quiet_hours(session, ctx.workspace_id)
        if channel.quiet_start and channel.quiet_end:
            window = (channel.quiet_start, channel.quiet_end)
        if window is not None:
            send_after = after_quiet_hours(now, zone, *window)
    message_id = new_id()
    inserted = await session.scalar(
        insert(Message)
        .values(
            workspace_id=ctx.workspace_id,
            id=message_id,
            customer_id=customer_id,
            channel_id=channel.id,
            purpose=purpose,
            status="queued",
            recipient=recipient,
            content={**content.model_dump(exclude_none=True), **template},
            dedupe_key=dedupe_key or str(message_id),
            source=source,
            actor=ctx.actor,
            send_after=send_after,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Message.id)
    )
    if inserted is None:
        # Another transaction queued the same key meanwhile.
        existing = await _by_dedupe_key(session, ctx, dedupe_key or "")
        if existing is None:
            raise Conflict("A message with this dedupe key is being queued; retry.")
        return _same_message(existing, customer_id)
    interaction, _ = await interactions.log(
        session,
        ctx,
        InteractionIn(
            customer_id=customer_id,
            channel=content_rules.INTERACTION_CHANNEL.get(channel.kind, "other"),
            direction="outbound",
            occurred_at=now,
            subject=(content.subject or content.template_code or channel.name)[:300],
            content=content.body or content.text or _params_text(content),
            source="outreach",
            external_id=f"message:{message_id}",
        ),
    )
    message = await get(session, ctx, message_id)
    message.interaction_id = interaction.id
    if send_after <= now:
        await outbox.wake_workers(session)
    return message, True


async def _rendered(
    session: AsyncSession, ctx: Caller, channel: Channel, customer_id: uuid.UUID, source: FromTemplate
) -> tuple[MessageContent, dict[str, Any]]:
    """The template rendered for the customer, as content for the channel, and what names it."""
    kind = await message_templates.get(session, ctx, source.template_id)
    if kind.channel != TEMPLATE_CHANNEL[channel.kind]:
        raise ValidationFailed(
            f"This is a `{kind.channel}` template; the channel sends `{TEMPLATE_CHANNEL[channel.kind]}`.",
            loc=["body", "template_id"],
        )
    rendered = await message_templates.render_for_customer(
        session, ctx, template_id=source.template_id, customer_id=customer_id, variables=source.variables
    )
    if rendered.channel == "email":
        fields: dict[str, Any] = {"subject": rendered.subject, "body": rendered.text, "html": rendered.html}
    elif rendered.channel == "sms":
        fields = {
            "text": rendered.text,
            "template_code": rendered.sms_template_code,
            "template_params": rendered.sms_params,
            "sign_name": rendered.sms_sign_name,
        }
    else:
        fields = {"text": rendered.text}
    try:
        content = MessageContent.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(
            f"The rendered message does not fit: {first['msg']}", loc=["body", "template_id"]
        ) from exc
    return content, {"template_id": str(rendered.template_id), "template_version": rendered.template_version}


async def _by_dedupe_key(session: AsyncSession, ctx: Caller, key: str) -> Message | None:
    return await session.scalar(scoped.in_workspace(Message, ctx).where(Message.dedupe_key == key))


def _same_message(existing: Message, customer_id: uuid.UUID) -> tuple[Message, bool]:
    if existing.customer_id != customer_id:
        raise Conflict("This dedupe key names a message to another customer.", existing_id=str(existing.id))
    return existing, False


def _recipient(channel: Channel, customer: Customer) -> str | None:
    medium = content_rules.MEDIUM.get(channel.kind)
    if medium is None:
        return None
    addresses = customer.emails if medium == "email" else customer.phones
    if not addresses:
        raise ValidationFailed(
            f"The customer has no {'email address' if medium == 'email' else 'phone number'}.",
            loc=["body", "customer_id"],
        )
    return addresses[0]


async def _check_cap(
    session: AsyncSession, ctx: Caller, channel: Channel, customer_id: uuid.UUID, now: datetime
) -> None:
    if channel.cap_count is None or channel.cap_hours is None:
        return
    # Two sends to the same customer and channel at once would both count the same past.
    lock_key = f"message-cap:{ctx.workspace_id}:{customer_id}:{channel.id}"
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(lock_key, 0))))
    sent = await session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.workspace_id == ctx.workspace_id,
            Message.customer_id == customer_id,
            Message.channel_id == channel.id,
            Message.purpose == "marketing",
            Message.status != "failed",
            Message.created_at > now - timedelta(hours=channel.cap_hours),
        )
    )
    if (sent or 0) >= channel.cap_count:
        raise FrequencyCapped(
            f"This customer already has {sent} marketing message(s) on this channel in the last "
            f"{channel.cap_hours} h (cap {channel.cap_count}).",
            cap={"count": channel.cap_count, "hours": channel.cap_hours},
        )


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def after_quiet_hours(now: datetime, zone: str, start: str, end: str) -> datetime:
    """`now`, or the end of the quiet hours (local `start`–`end`, across midnight when `start` is
    later) that `now` falls in."""
    begins, ends = _clock(start), _clock(end)
    if begins == ends:
        return now
    local = now.astimezone(ZoneInfo(zone))
    at = local.time().replace(tzinfo=None)
    quiet = begins <= at < ends if begins < ends else (at >= begins or at < ends)
    if not quiet:
        return now
    end_day = local.date() if at < ends else local.date() + timedelta(days=1)
    return datetime.combine(end_day, ends, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _params_text(content: MessageContent) -> str | None:
    if not content.template_params:
        return None
    return ", ".join(f"{k}={v}" for k, v in content.template_params.items())


async def get(session: AsyncSession, ctx: Caller, message_id: uuid.UUID) -> Message:
    statement = through_customer(Message, ctx).where(Message.id == message_id)
    return await scoped.one(session, statement, missing="No message with that id.")


async def list_page(
    session: AsyncSession,
    ctx: Caller,
    *,
    customer_id: uuid.UUID | None,
    channel_id: uuid.UUID | None,
    status: str | None,
    purpose: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Message], str | None]:
    """Newest first; only messages to customers the caller may see."""
    statement = through_customer(Message, ctx)
    if customer_id is not None:
        statement = statement.where(Message.customer_id == customer_id)
    if channel_id is not None:
        statement = statement.where(Message.channel_id == channel_id)
    if status is not None:
        statement = statement.where(Message.status == status)
    if purpose is not None:
        statement = statement.where(Message.purpose == purpose)
    rows, next_cursor = await keyset_page(
        session, statement, [SortKey(Message.id, descending=True)], list_name="messages", limit=limit, cursor=cursor
    )
    return list(rows), next_cursor


def present(message: Message, ctx: Caller) -> dict[str, Any]:
    recipient = message.recipient
    if recipient is not None and is_masked(ctx):
        recipient = mask_email(recipient) if "@" in recipient else mask_phone(recipient)
    return {
        "id": message.id,
        "customer_id": message.customer_id,
        "channel_id": message.channel_id,
        "purpose": message.purpose,
        "status": message.status,
        "recipient": recipient,
        "content": message.content,
        "dedupe_key": message.dedupe_key,
        "source": message.source,
        "send_after": message.send_after,
        "attempts": message.attempts,
        "provider_message_id": message.provider_message_id,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "interaction_id": message.interaction_id,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
        "delivered_at": message.delivered_at,
        "failed_at": message.failed_at,
    }
