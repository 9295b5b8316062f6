"""Messages to customers: the one writer (`enqueue_many`, and `enqueue` for one customer) that the
API and automation rules both use, and the reads. The rules a send obeys live here, so no path can
skip them."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError
from sqlalchemy import Text, any_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, DomainError, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.masking import is_masked, mask_email, mask_phone
from app.core.pagination import SortKey, keyset_page
from app.models import Channel, Customer, Message
from app.schemas.outreach import MessageContent
from app.services.customers.visibility import through_customer, visible_customer_clauses
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


@dataclass(frozen=True)
class Content:
    """A customer's content, and what names its template (none for content given as is)."""

    content: MessageContent
    names: dict[str, Any]


@dataclass
class Enqueued:
    """What `enqueue_many` did for each customer: its message (queued now, or found by its dedupe
    key), or why it queued none."""

    messages: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    # The customers whose message this call queued.
    created: set[uuid.UUID] = field(default_factory=set)
    refused: dict[uuid.UUID, DomainError] = field(default_factory=dict)

    def merge(self, other: "Enqueued") -> None:
        self.messages |= other.messages
        self.created |= other.created
        self.refused |= other.refused


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
    `enqueue_many` for one customer, whose refusal is raised.

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
    done = await enqueue_many(
        session,
        ctx,
        recipients={customer_id: dedupe_key},
        channel_id=channel_id,
        purpose=purpose,
        content=content,
        source=source,
    )
    if customer_id in done.refused:
        raise done.refused[customer_id]
    message = await get(session, ctx, done.messages[customer_id])
    return message, customer_id in done.created


async def enqueue_many(
    session: AsyncSession,
    ctx: Caller,
    *,
    recipients: Mapping[uuid.UUID, str | None],
    channel_id: uuid.UUID,
    purpose: str,
    content: MessageContent | FromTemplate,
    source: str,
) -> Enqueued:
    """`enqueue`'s rules over a set of customers (`recipients`: each customer's dedupe key, or
    None), in the caller's transaction and a few statements whatever the set's size: the customers,
    their template values, suppressions, caps and existing keys are each read in one statement, the
    messages, their interactions and the interactions' events written in one.

    Raised for the whole set, before anything is written: what concerns the channel, the template
    and static content (NotFound, ValidationFailed). Returned per customer in `refused`, the error
    `enqueue` raises for it: NotFound (not visible), ValidationFailed (a render or content that
    fails, no address), `Suppressed`, `ConsentRequired`, `FrequencyCapped`, Conflict (the key names
    another customer's message, or is being queued by another transaction). Customers whose key
    repeats an earlier one's in the set are treated as sends after it."""
    out = Enqueued()
    customers = {
        row.id: row
        for row in await session.execute(
            select(Customer.id, Customer.emails, Customer.phones, Customer.consent).where(
                Customer.id == any_(scoped.ids(list(recipients))), *visible_customer_clauses(ctx)
            )
        )
    }
    for customer_id in recipients:
        if customer_id not in customers:
            out.refused[customer_id] = NotFound("No customer with that id.")
    pending = [customer_id for customer_id in recipients if customer_id in customers]
    if not pending:
        return out
    channel = await channels.get(session, ctx, channel_id)
    keys = {customer_id: key for customer_id in pending if (key := recipients[customer_id]) is not None}
    for customer_id, existing in (await _by_dedupe_keys(session, ctx, keys)).items():
        _settle(out, customer_id, existing)
    later: dict[uuid.UUID, str | None] = {}
    first_of: set[str] = set()
    for customer_id in pending:
        key = keys.get(customer_id)
        if key is not None and customer_id not in out.messages and customer_id not in out.refused:
            if key in first_of:
                later[customer_id] = key
            first_of.add(key)
    pending = [c for c in pending if c not in out.messages and c not in out.refused and c not in later]
    if not pending:
        return out
    contents = await _contents(session, ctx, channel, pending, content)
    medium = content_rules.MEDIUM.get(channel.kind)
    addresses: dict[uuid.UUID, str | None] = {}
    for customer_id in pending:
        made = contents[customer_id]
        if isinstance(made, DomainError):
            out.refused[customer_id] = made
        elif (address := _recipient(medium, customers[customer_id])) is None and medium is not None:
            noun = "email address" if medium == "email" else "phone number"
            out.refused[customer_id] = ValidationFailed(f"The customer has no {noun}.", loc=["body", "customer_id"])
        else:
            addresses[customer_id] = address
    if medium is not None:
        suppressed = await suppressions.find_many(
            session, ctx.workspace_id, medium, {a for a in addresses.values() if a is not None}
        )
        for customer_id, address in list(addresses.items()):
            found = suppressed.get(address or "")
            if found is not None and (found.reason != "unsubscribe" or purpose == "marketing"):
                out.refused[customer_id] = Suppressed(
                    f"The customer's {medium} address is on the suppression list ({found.reason}).",
                    suppression_id=str(found.id),
                )
                del addresses[customer_id]
    now = clock.now()
    send_after = now
    if purpose == "marketing":
        if medium is not None:
            for customer_id in list(addresses):
                if customers[customer_id].consent.get(medium) is not True:
                    out.refused[customer_id] = ConsentRequired(
                        f"Marketing on this channel needs the customer's `{medium}` consent.", consent_key=medium
                    )
                    del addresses[customer_id]
        for customer_id, refusal in (await _capped(session, ctx, channel, list(addresses), now)).items():
            out.refused[customer_id] = refusal
            del addresses[customer_id]
        # The channel's own quiet hours, else the workspace's; equal start and end: none at all.
        zone, window = await workspaces.quiet_hours(session, ctx.workspace_id)
        if channel.quiet_start and channel.quiet_end:
            window = (channel.quiet_start, channel.quiet_end)
        if window is not None:
            send_after = after_quiet_hours(now, zone, *window)
    if addresses:
        queued = await _write(session, ctx, channel, addresses, contents, keys, purpose, source, send_after, now)
        for customer_id, message_id in queued.items():
            out.messages[customer_id] = message_id
            out.created.add(customer_id)
        raced = {c: keys.get(c) or "" for c in addresses if c not in queued}
        taken = await _by_dedupe_keys(session, ctx, raced)
        for customer_id in raced:
            if customer_id in taken:
                _settle(out, customer_id, taken[customer_id])
            else:
                out.refused[customer_id] = Conflict("A message with this dedupe key is being queued; retry.")
        if queued and send_after <= now:
            await outbox.wake_workers(session)
    if later:
        out.merge(
            await enqueue_many(
                session, ctx, recipients=later, channel_id=channel_id, purpose=purpose, content=content, source=source
            )
        )
    return out


# Each message's interaction on the timeline, through the interactions' own SQL.
_LOGGED = interactions.log_rows_sql(
    "SELECT w.interaction_id AS id, w.customer_id, CAST(:user AS uuid) AS user_id,"
    " CAST(:interaction_channel AS text) AS channel, 'outbound' AS direction, w.subject, w.text AS content,"
    " 'outreach' AS source, 'message:' || w.id AS external_id FROM queued q JOIN wanted w ON w.id = q.id"
)
_WRITE_SQL = f"""
WITH wanted AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:customers AS uuid[]), CAST(:recipients AS text[]),
                         CAST(:contents AS jsonb[]), CAST(:keys AS text[]), CAST(:interactions AS uuid[]),
                         CAST(:subjects AS text[]), CAST(:texts AS text[]))
        AS w(id, customer_id, recipient, content, dedupe_key, interaction_id, subject, text)
),
queued AS (
    -- In key order: two transactions queueing overlapping sets wait for each other, never deadlock.
    INSERT INTO messages (workspace_id, id, customer_id, channel_id, purpose, status, recipient, content,
                          dedupe_key, source, actor, send_after, attempts, interaction_id, created_at, updated_at)
    SELECT CAST(:ws AS uuid), w.id, w.customer_id, CAST(:channel AS uuid), CAST(:purpose AS text), 'queued',
           w.recipient, w.content, w.dedupe_key, CAST(:source AS text), CAST(:actor AS jsonb),
           CAST(:send_after AS timestamptz), 0, w.interaction_id, CAST(:now AS timestamptz),
           CAST(:now AS timestamptz)
    FROM wanted w ORDER BY w.dedupe_key
    ON CONFLICT DO NOTHING
    RETURNING id, customer_id
),
{_LOGGED}
SELECT customer_id, id FROM queued
"""


async def _write(
    session: AsyncSession,
    ctx: Caller,
    channel: Channel,
    addresses: Mapping[uuid.UUID, str | None],
    contents: Mapping[uuid.UUID, Content | DomainError],
    keys: Mapping[uuid.UUID, str],
    purpose: str,
    source: str,
    send_after: datetime,
    now: datetime,
) -> dict[uuid.UUID, uuid.UUID]:
    """The messages, their interactions and the interactions' `interaction.created` events, in one
    statement; returns the customers whose message it inserted (a key queued meanwhile by another
    transaction inserts nothing)."""
    columns: dict[str, list[Any]] = {
        name: [] for name in ("ids", "customers", "recipients", "contents", "keys", "interactions", "subjects", "texts")
    }
    for customer_id, address in addresses.items():
        made = contents[customer_id]
        assert not isinstance(made, DomainError)
        message_id = new_id()
        columns["ids"].append(message_id)
        columns["customers"].append(customer_id)
        columns["recipients"].append(address)
        columns["contents"].append(orjson.dumps({**made.content.model_dump(exclude_none=True), **made.names}).decode())
        columns["keys"].append(keys.get(customer_id) or str(message_id))
        columns["interactions"].append(new_id())
        columns["subjects"].append((made.content.subject or made.content.template_code or channel.name)[:300])
        columns["texts"].append(made.content.body or made.content.text or _params_text(made.content))
    rows = await session.execute(
        text(_WRITE_SQL),
        {
            **columns,
            "ws": ctx.workspace_id,
            "channel": channel.id,
            "purpose": purpose,
            "source": source,
            "actor": orjson.dumps(ctx.actor).decode(),
            "send_after": send_after,
            "now": now,
            "user": ctx.user_id,
            "interaction_channel": content_rules.INTERACTION_CHANNEL.get(channel.kind, "other"),
        },
    )
    return {row.customer_id: row.id for row in rows}


async def _contents(
    session: AsyncSession,
    ctx: Caller,
    channel: Channel,
    customer_ids: list[uuid.UUID],
    content: MessageContent | FromTemplate,
) -> dict[uuid.UUID, Content | DomainError]:
    """Each customer's content: given content is checked once (raised), a template is rendered for
    each customer (a failure is that customer's)."""
    if not isinstance(content, FromTemplate):
        content_rules.check(channel.kind, content, ["body", "content"])
        return dict.fromkeys(customer_ids, Content(content, {}))
    kind = await message_templates.get(session, ctx, content.template_id)
    if kind.channel != TEMPLATE_CHANNEL[channel.kind]:
        raise ValidationFailed(
            f"This is a `{kind.channel}` template; the channel sends `{TEMPLATE_CHANNEL[channel.kind]}`.",
            loc=["body", "template_id"],
        )
    rendered = await message_templates.render_for_customers(
        session, ctx, template_id=content.template_id, customer_ids=customer_ids, variables=content.variables
    )
    out: dict[uuid.UUID, Content | DomainError] = {}
    for customer_id, made in rendered.items():
        try:
            if isinstance(made, DomainError):
                raise made
            built = _as_content(made)
            content_rules.check(channel.kind, built.content, ["body", "content"])
            out[customer_id] = built
        except DomainError as exc:
            out[customer_id] = exc
    return out


def _as_content(rendered: message_templates.Rendered) -> Content:
    """The rendered template as content for the channel, and what names it."""
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
    return Content(content, {"template_id": str(rendered.template_id), "template_version": rendered.template_version})


async def _by_dedupe_keys(
    session: AsyncSession, ctx: Caller, keys: Mapping[uuid.UUID, str]
) -> dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]]:
    """For each customer whose key names a message: that message's (id, customer)."""
    if not keys:
        return {}
    rows = await session.execute(
        select(Message.dedupe_key, Message.id, Message.customer_id).where(
            Message.workspace_id == ctx.workspace_id,
            Message.dedupe_key == any_(bindparam(None, list(set(keys.values())), type_=ARRAY(Text()))),
        )
    )
    found = {row.dedupe_key: (row.id, row.customer_id) for row in rows}
    return {customer_id: found[key] for customer_id, key in keys.items() if key in found}


def _settle(out: Enqueued, customer_id: uuid.UUID, existing: tuple[uuid.UUID, uuid.UUID]) -> None:
    message_id, owner = existing
    if owner != customer_id:
        out.refused[customer_id] = Conflict(
            "This dedupe key names a message to another customer.", existing_id=str(message_id)
        )
    else:
        out.messages[customer_id] = message_id


def _recipient(medium: str | None, customer: Any) -> str | None:
    """The customer's first address on the channel's medium (None for channels with none)."""
    if medium is None:
        return None
    addresses = customer.emails if medium == "email" else customer.phones
    return addresses[0] if addresses else None


_CAP_LOCKS_SQL = """
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT hashtextextended(CAST(:prefix AS text) || c || ':' || CAST(:channel AS text), 0) AS k
    FROM unnest(CAST(:customers AS uuid[])) AS c ORDER BY 1
) ordered
"""


async def _capped(
    session: AsyncSession, ctx: Caller, channel: Channel, customer_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, FrequencyCapped]:
    """The customers whose marketing cap on the channel is reached."""
    if channel.cap_count is None or channel.cap_hours is None or not customer_ids:
        return {}
    # Two sends to the same customer and channel at once would both count the same past; the
    # locks are taken in one order, so two overlapping sets wait for each other, never deadlock.
    await session.execute(
        text(_CAP_LOCKS_SQL),
        {"prefix": f"message-cap:{ctx.workspace_id}:", "channel": str(channel.id), "customers": customer_ids},
    )
    counted = await session.execute(
        select(Message.customer_id, func.count())
        .where(
            Message.workspace_id == ctx.workspace_id,
            Message.customer_id == any_(scoped.ids(customer_ids)),
            Message.channel_id == channel.id,
            Message.purpose == "marketing",
            Message.status != "failed",
            Message.created_at > now - timedelta(hours=channel.cap_hours),
        )
        .group_by(Message.customer_id)
    )
    return {
        customer_id: FrequencyCapped(
            f"This customer already has {sent} marketing message(s) on this channel in the last "
            f"{channel.cap_hours} h (cap {channel.cap_count}).",
            cap={"count": channel.cap_count, "hours": channel.cap_hours},
        )
        for customer_id, sent in counted.all()
        if sent >= channel.cap_count
    }


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
