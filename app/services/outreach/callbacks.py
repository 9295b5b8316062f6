"""What providers push back on a channel's callback routes: delivery receipts, replies, bounces.

Neither Tencent Cloud nor Alibaba Cloud signs its SMS pushes (their documents define the payload
and the answer only); the route is the credential: an unguessable per-channel token in the path,
rotatable. A reply that is only an unsubscribe word withdraws the customer's consent on the
channel's medium (through the customer's one change writer) and suppresses the number."""

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller, system_caller
from app.core.errors import ValidationFailed
from app.models import Channel, Message
from app.schemas.customer import normalise_email, normalise_phone
from app.schemas.interaction import InteractionIn
from app.schemas.outreach import EmailBounce
from app.services.customers import customers
from app.services.engagement import interactions
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, given
from app.services.outreach import channels, content_rules, messages, suppressions

# A reply that is one of these, alone (case and surrounding blanks aside), unsubscribes.
UNSUBSCRIBE_WORDS = frozenset({"退订", "td", "stop", "unsubscribe"})


# `message.replied`, over the message replied to.
MESSAGE_REPLIED: Payload[Message] = Payload(
    (
        Field("message_id", lambda message: message.id, lambda alias: f"{alias}.id"),
        column("customer_id"),
        column("channel_id"),
        given("interaction_id"),
        given("text"),
        given("unsubscribed"),
    ),
    model=data_model("message.replied"),
)


def is_unsubscribe(text: str) -> bool:
    return text.strip().casefold() in UNSUBSCRIBE_WORDS


def phone(number: str, country_code: str = "86") -> str | None:
    digits = number.strip()
    candidate = digits if digits.startswith("+") else f"+{country_code}{digits.lstrip('0')}"
    try:
        return normalise_phone(candidate)
    except ValueError:
        return None


async def receipt(
    session: AsyncSession, channel: Channel, *, provider_id: str, delivered: bool, code: str | None, detail: str | None
) -> bool:
    """A delivery receipt on the message the provider knows as `provider_id`: `delivered`, or
    `failed` with the provider's code. A receipt for an `unknown` message settles it."""
    message = await session.scalar(
        select(Message)
        .where(
            Message.workspace_id == channel.workspace_id,
            Message.channel_id == channel.id,
            Message.provider_message_id == provider_id,
        )
        .with_for_update()
    )
    if message is None or message.status not in ("sent", "unknown"):
        return False
    now = clock.now()
    _settle(message, now, delivered=delivered, code=code, detail=detail)
    outbox.emit(
        session,
        system_caller(channel.workspace_id),
        "message.delivered" if delivered else "message.failed",
        messages.MESSAGE_EVENT.data(message),
    )
    return True


def _settle(message: Message, now: datetime, *, delivered: bool, code: str | None, detail: str | None) -> None:
    message.updated_at = now
    if delivered:
        message.status, message.delivered_at = "delivered", now
        message.error_code = message.error_message = None
    else:
        message.status, message.failed_at = "failed", now
        message.error_code, message.error_message = (code or "undelivered")[:100], (detail or None) and detail[:500]


async def reply(session: AsyncSession, channel: Channel, *, number: str | None, text: str) -> bool:
    """A customer's reply: matched to the latest message to that number on the channel, logged on
    their timeline (inbound), `message.replied`; an unsubscribe word withdraws consent and
    suppresses the number. False when no message to that number is known."""
    if number is None:
        return False
    message = await session.scalar(
        select(Message)
        .where(
            Message.workspace_id == channel.workspace_id,
            Message.channel_id == channel.id,
            Message.recipient == number,
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
    if message is None:
        return False
    ctx = system_caller(channel.workspace_id)
    unsubscribed = is_unsubscribe(text)
    interaction, _ = await interactions.log(
        session,
        ctx,
        InteractionIn(
            customer_id=message.customer_id,
            channel=content_rules.INTERACTION_CHANNEL.get(channel.kind, "other"),
            direction="inbound",
            occurred_at=clock.now(),
            subject="退订 / unsubscribe" if unsubscribed else "回复 / reply",
            content=text[:10_000],
            source="outreach",
        ),
    )
    if unsubscribed:
        await unsubscribe(session, ctx, channel, message.customer_id, number)
    outbox.emit(
        session,
        ctx,
        "message.replied",
        MESSAGE_REPLIED.data(message, interaction_id=interaction.id, text=text, unsubscribed=unsubscribed),
    )
    return True


async def unsubscribe(
    session: AsyncSession, ctx: Caller, channel: Channel, customer_id: uuid.UUID, address: str
) -> None:
    medium = content_rules.MEDIUM[channel.kind]
    await customers.withdraw_consent(session, ctx, customer_id, medium)
    await suppressions.record(session, ctx, medium=medium, address=address, reason="unsubscribe")


async def email_bounce(session: AsyncSession, token: str, bounce: EmailBounce) -> None:
    channel = await channels.by_callback_token(session, token, ("email",))
    ctx = system_caller(channel.workspace_id)
    try:
        address = normalise_email(bounce.address)
    except ValueError as exc:
        raise ValidationFailed(str(exc), loc=["body", "address"]) from exc
    if bounce.message_id is not None:
        await _bounced(session, ctx, channel, bounce)
    await suppressions.record(session, ctx, medium="email", address=address, reason=bounce.kind, note=bounce.detail)


async def _bounced(session: AsyncSession, ctx: Caller, channel: Channel, bounce: EmailBounce) -> None:
    """The message the bounce names, `failed` when it bounced; 422 for an id of no message of the
    channel (and nothing is recorded)."""
    message = await session.scalar(
        select(Message)
        .where(
            Message.workspace_id == channel.workspace_id,
            Message.channel_id == channel.id,
            Message.id == bounce.message_id,
        )
        .with_for_update()
    )
    if message is None:
        raise ValidationFailed("No message of this channel has that id.", loc=["body", "message_id"])
    if message.status in ("sent", "unknown", "delivered") and bounce.kind == "bounce":
        _settle(message, clock.now(), delivered=False, code="bounce", detail=bounce.detail)
        outbox.emit(session, ctx, "message.failed", messages.MESSAGE_EVENT.data(message))
