"""Interactions: logging contacts with customers, by people and by partner systems' imports."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.batches import Done, apply_each
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.masking import mask_for
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.models import Interaction, User, Workspace
from app.schemas.interaction import InteractionIn, InteractionPatch, Location
from app.services.customers.visibility import require_visible, through_customer
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, timestamp

FIELDS = ("channel", "direction", "occurred_at", "duration_seconds", "subject", "content", "outcome", "next_step")
VISIT_FIELDS = ("location", "checked_in_at", "checked_out_at")
VISIT = "visit"


async def _visible_customer(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> None:
    await require_visible(session, ctx, customer_id)


async def _check_outcome(session: AsyncSession, ctx: Caller, outcome: str | None, loc: list[str | int]) -> None:
    if outcome is None:
        return
    allowed = await session.scalar(select(Workspace.interaction_outcomes).where(Workspace.id == ctx.workspace_id))
    check_outcome(outcome, allowed or [], loc)


def check_outcome(outcome: str, allowed: list[str], loc: list[str | int]) -> None:
    """An outcome is one of the workspace's list."""
    if outcome not in allowed:
        raise ValidationFailed(f"Unknown outcome '{outcome}'; this workspace uses {allowed}.", loc=loc)


def check_visit(
    channel: str, checked_in_at: datetime | None, checked_out_at: datetime | None, loc: list[str | int]
) -> None:
    """Check-in and check-out times belong to visits; a check-out follows a check-in, never before it."""
    for name, at in (("checked_in_at", checked_in_at), ("checked_out_at", checked_out_at)):
        if at is not None and channel != VISIT:
            raise ValidationFailed(f"Only a visit has {name}; this contact's channel is '{channel}'.", loc=[*loc, name])
    if checked_out_at is None:
        return
    if checked_in_at is None:
        raise ValidationFailed("A check-out needs a check-in.", loc=[*loc, "checked_out_at"])
    if checked_out_at < checked_in_at:
        raise ValidationFailed("A check-out cannot come before the check-in.", loc=[*loc, "checked_out_at"])


def _location(location: Location | None) -> dict[str, Any] | None:
    return None if location is None else location.model_dump(mode="json")


async def _check_user(session: AsyncSession, ctx: Caller, user_id: uuid.UUID, loc: list[str | int]) -> None:
    found = await session.scalar(select(User.id).where(User.workspace_id == ctx.workspace_id, User.id == user_id))
    if found is None:
        raise ValidationFailed("Not a user of this workspace.", loc=loc)


async def log(session: AsyncSession, ctx: Caller, data: InteractionIn) -> tuple[Interaction, bool]:
    """Record a contact (a visit with where and when the salesperson checked in and out); with an
    external id, the same contact pushed again changes nothing. Returns (interaction, created)."""
    await _visible_customer(session, ctx, data.customer_id)
    check_visit(data.channel, data.checked_in_at, data.checked_out_at, ["body"])
    await _check_outcome(session, ctx, data.outcome, ["body", "outcome"])
    user_id = data.user_id or ctx.user_id
    if data.user_id is not None:
        await _check_user(session, ctx, data.user_id, ["body", "user_id"])
    for i, participant in enumerate(data.participants.users):
        await _check_user(session, ctx, participant, ["body", "participants", "users", i])
    now = clock.now()
    values = {
        "workspace_id": ctx.workspace_id,
        "id": new_id(),
        "customer_id": data.customer_id,
        "user_id": user_id,
        "channel": data.channel,
        "direction": data.direction,
        "occurred_at": data.occurred_at,
        "duration_seconds": data.duration_seconds,
        "participants": to_jsonable(data.participants.model_dump()),
        "subject": data.subject,
        "content": data.content,
        "outcome": data.outcome,
        "next_step": data.next_step,
        "attachments": {"items": [to_jsonable(a.model_dump(mode="json")) for a in data.attachments]},
        "source": data.source,
        "external_id": data.external_id,
        "location": _location(data.location),
        "checked_in_at": data.checked_in_at,
        "checked_out_at": data.checked_out_at,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    statement = insert(Interaction).values(values).on_conflict_do_nothing().returning(Interaction.id)
    inserted = await session.scalar(statement)
    if inserted is None:
        existing = await session.scalar(
            select(Interaction).where(
                Interaction.workspace_id == ctx.workspace_id,
                Interaction.source == data.source,
                Interaction.external_id == data.external_id,
            )
        )
        assert existing is not None, "the conflict was on the external id"
        # Another customer's contact under the same external id: a caller that cannot see that
        # customer learns nothing of it.
        await _visible_customer(session, ctx, existing.customer_id)
        return existing, False
    interaction = await get(session, ctx, inserted)
    outbox.emit(session, ctx, "interaction.created", event_data(interaction))
    return interaction, True


async def get(session: AsyncSession, ctx: Caller, interaction_id: uuid.UUID, *, lock: bool = False) -> Interaction:
    statement = through_customer(Interaction, ctx).where(
        Interaction.id == interaction_id, Interaction.deleted_at.is_(None)
    )
    return await scoped.one(session, statement, missing="No interaction with that id.", lock=lock)


async def update(
    session: AsyncSession, ctx: Caller, interaction_id: uuid.UUID, patch: InteractionPatch, *, expected_version: int
) -> Interaction:
    """Change a contact, checking out of an open visit included; the contact as changed is checked as
    a whole, as a new one is."""
    interaction = await get(session, ctx, interaction_id, lock=True)
    check_version(interaction.version, expected_version, what="interaction")
    given = patch.model_fields_set
    for name in ("channel", "direction", "occurred_at"):
        if name in given and getattr(patch, name) is None:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
    if "outcome" in given:
        await _check_outcome(session, ctx, patch.outcome, ["body", "outcome"])
    after = {name: getattr(patch, name) if name in given else getattr(interaction, name) for name in FIELDS}
    after |= {name: getattr(patch, name) if name in given else getattr(interaction, name) for name in VISIT_FIELDS}
    if "location" in given:
        after["location"] = _location(patch.location)
    check_visit(after["channel"], after["checked_in_at"], after["checked_out_at"], ["body"])
    changes: audit.Changes = {}
    for name in (*FIELDS, *VISIT_FIELDS):
        if after[name] != getattr(interaction, name):
            changes[name] = {"before": to_jsonable(getattr(interaction, name)), "after": to_jsonable(after[name])}
            setattr(interaction, name, after[name])
    audit.record_update(session, ctx, interaction, entity_type="interaction", changes=changes)
    if changes:
        outbox.emit(session, ctx, "interaction.updated", event_data(interaction) | {"changed_fields": list(changes)})
    return interaction


async def delete(session: AsyncSession, ctx: Caller, interaction_id: uuid.UUID, *, expected_version: int) -> None:
    interaction = await get(session, ctx, interaction_id, lock=True)
    check_version(interaction.version, expected_version, what="interaction")
    interaction.deleted_at = clock.now()
    interaction.version += 1
    audit.record(session, ctx, entity_type="interaction", entity_id=interaction.id, action="deleted", changes={})
    # The tombstone a syncing app removes its copy by.
    outbox.emit(
        session,
        ctx,
        "interaction.deleted",
        {"id": str(interaction.id), "customer_id": str(interaction.customer_id), "version": interaction.version},
    )


async def list_interactions(
    session: AsyncSession,
    ctx: Caller,
    *,
    customer_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    channel: str | None,
    outcome: str | None,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Interaction], str | None]:
    """Newest first, over the customers the caller may see."""
    if customer_id is not None:
        await _visible_customer(session, ctx, customer_id)
    stmt = through_customer(Interaction, ctx).where(Interaction.deleted_at.is_(None))
    filters: list[Any] = [
        Interaction.customer_id == customer_id if customer_id else None,
        Interaction.user_id == user_id if user_id else None,
        Interaction.channel == channel if channel else None,
        Interaction.outcome == outcome if outcome else None,
        Interaction.occurred_at >= occurred_from if occurred_from else None,
        Interaction.occurred_at < occurred_to if occurred_to else None,
    ]
    stmt = stmt.where(*(f for f in filters if f is not None))
    keys = [SortKey(Interaction.occurred_at, descending=True), SortKey(Interaction.id, descending=True)]
    return await keyset_page(session, stmt, keys, list_name="interactions", limit=limit, cursor=cursor)


async def set_outcomes(session: AsyncSession, ctx: Caller, outcomes: list[str]) -> list[str]:
    workspace = await session.get(Workspace, ctx.workspace_id)
    assert workspace is not None
    workspace.interaction_outcomes = list(dict.fromkeys(outcomes))
    return workspace.interaction_outcomes


async def outcomes(session: AsyncSession, ctx: Caller) -> list[str]:
    return list(
        await session.scalar(select(Workspace.interaction_outcomes).where(Workspace.id == ctx.workspace_id)) or []
    )


def present(interaction: Interaction, ctx: Caller) -> dict[str, Any]:
    """The API shape, its participants' contacts masked for a caller without the PII scope."""
    return {
        "id": interaction.id,
        "customer_id": interaction.customer_id,
        "user_id": interaction.user_id,
        "channel": interaction.channel,
        "direction": interaction.direction,
        "occurred_at": interaction.occurred_at,
        "duration_seconds": interaction.duration_seconds,
        "participants": mask_for(ctx, interaction.participants),
        "subject": interaction.subject,
        "content": interaction.content,
        "outcome": interaction.outcome,
        "next_step": interaction.next_step,
        "attachments": interaction.attachments.get("items", []),
        "source": interaction.source,
        "external_id": interaction.external_id,
        "location": interaction.location,
        "checked_in_at": interaction.checked_in_at,
        "checked_out_at": interaction.checked_out_at,
        "created_at": interaction.created_at,
        "updated_at": interaction.updated_at,
        "version": interaction.version,
    }


# `interaction.created`; over an interactions row.
EVENT: Payload[Interaction] = Payload(
    (
        column("id"),
        column("customer_id"),
        column("user_id"),
        column("channel"),
        column("direction"),
        timestamp("occurred_at"),
        column("duration_seconds"),
        column("participants"),
        column("subject"),
        column("content"),
        column("outcome"),
        column("next_step"),
        Field(
            "attachments",
            lambda interaction: interaction.attachments.get("items", []),
            lambda alias: f"coalesce({alias}.attachments -> 'items', '[]'::jsonb)",
        ),
        column("source"),
        column("external_id"),
        column("location"),
        timestamp("checked_in_at"),
        timestamp("checked_out_at"),
        timestamp("created_at"),
        timestamp("updated_at"),
        column("version"),
    ),
    model=data_model("interaction.created"),
)


def log_rows_sql(rows: str) -> str:
    """SQL of `log` for many contacts at once, as two CTEs of a WITH (`logged_rows`, the
    interactions inserted, and `logged_events`, their `interaction.created` events): `rows` is a
    SELECT with the columns id, customer_id, user_id, channel, direction, subject, content, source
    and external_id, checked by its caller; no participants, attachments, outcome or duration.
    They occur at `:now`, by `:actor` (jsonb) of workspace `:ws`."""
    return f"""logged_rows AS (
    INSERT INTO interactions (workspace_id, id, customer_id, user_id, channel, direction, occurred_at, participants,
                              subject, content, attachments, source, external_id, created_at, updated_at, version)
    SELECT CAST(:ws AS uuid), r.id, r.customer_id, r.user_id, r.channel, r.direction, CAST(:now AS timestamptz),
           '{{"users": [], "contacts": []}}', r.subject, r.content, '{{"items": []}}', r.source, r.external_id,
           CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
    FROM ({rows}) r
    RETURNING *
),
logged_events AS (
    {_LOGGED_EVENTS}
)"""


_LOGGED_EVENTS = outbox.emit_rows_sql(
    f"(SELECT guanxi_uuid7() AS id, {EVENT.sql('c')} AS data FROM logged_rows c)",
    workspace_id="CAST(:ws AS uuid)",
    event_type="'interaction.created'",
    at="CAST(:now AS timestamptz)",
    actor="CAST(:actor AS jsonb)",
)


def event_data(interaction: Interaction) -> dict[str, Any]:
    return EVENT.data(interaction)


def _imported(index: int, raw: Any) -> InteractionIn:
    data = InteractionIn.model_validate(raw)
    if data.external_id is None:
        raise ValidationFailed("Imported interactions need an external_id.", loc=["items", index, "external_id"])
    return data


async def import_many(session: AsyncSession, ctx: Caller, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Up to 100 contacts, each idempotent by (`source`, `external_id`) and in its own savepoint.
    A result per item: 201 (new), 200 (already there) or the item's problem."""

    async def write(data: InteractionIn) -> Done:
        interaction, created = await log(session, ctx, data)
        return Done(201 if created else 200, interaction.id, interaction.version)

    return await apply_each(session, items, _imported, write)
