"""The workspace's loyalty program and levels: two versioned documents, replaced whole (PUT with If-Match)."""

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.jsonable import to_jsonable
from app.core.versions import check_version
from app.core.wire import money_text
from app.models import LoyaltyDocument, ValueTier
from app.schemas.loyalty import LevelsIn, ProgramIn
from app.services.events import audit
from app.services.identity import workspaces

PROGRAM = "program"
LEVELS = "levels"
# What a workspace that never saved its program has: nothing earns.
DEFAULT_PROGRAM = ProgramIn.model_validate({"earn_rate": "1"}).model_dump(mode="json")
DEFAULT_LEVELS = LevelsIn(levels=[]).model_dump(mode="json")
_DEFAULTS = {PROGRAM: DEFAULT_PROGRAM, LEVELS: DEFAULT_LEVELS}


async def document(session: AsyncSession, ctx: Caller, kind: str, *, lock: bool = False) -> LoyaltyDocument:
    """The stored document, or the default (version 0, not stored) when the workspace never saved one."""
    stmt = select(LoyaltyDocument).where(LoyaltyDocument.workspace_id == ctx.workspace_id, LoyaltyDocument.kind == kind)
    found = await session.scalar(stmt.with_for_update() if lock else stmt)
    if found is not None:
        return found
    return LoyaltyDocument(workspace_id=ctx.workspace_id, kind=kind, document=_DEFAULTS[kind], version=0)


async def documents(session: AsyncSession, ctx: Caller) -> tuple[dict[str, Any], dict[str, Any]]:
    """The program and levels documents in one statement (the defaults for those never saved)."""
    result = await session.execute(
        select(LoyaltyDocument.kind, LoyaltyDocument.document).where(LoyaltyDocument.workspace_id == ctx.workspace_id)
    )
    stored: dict[str, dict[str, Any]] = dict(result.all())
    return stored.get(PROGRAM, DEFAULT_PROGRAM), stored.get(LEVELS, DEFAULT_LEVELS)


async def get_program(session: AsyncSession, ctx: Caller) -> dict[str, Any]:
    return present_program(await document(session, ctx, PROGRAM), await workspaces.currency(session, ctx.workspace_id))


async def get_levels(session: AsyncSession, ctx: Caller) -> dict[str, Any]:
    return present_levels(await document(session, ctx, LEVELS), await workspaces.currency(session, ctx.workspace_id))


async def put_program(session: AsyncSession, ctx: Caller, data: ProgramIn, *, expected_version: int) -> dict[str, Any]:
    currency = await workspaces.currency(session, ctx.workspace_id)
    return present_program(
        await _replace(session, ctx, PROGRAM, data.model_dump(mode="json"), expected_version), currency
    )


async def put_levels(session: AsyncSession, ctx: Caller, data: LevelsIn, *, expected_version: int) -> dict[str, Any]:
    currency = await workspaces.currency(session, ctx.workspace_id)
    mapped = {level.value_tier for level in data.levels if level.value_tier}
    if mapped:
        known = set(
            await session.scalars(
                select(ValueTier.code).where(ValueTier.workspace_id == ctx.workspace_id, ValueTier.code.in_(mapped))
            )
        )
        for index, level in enumerate(data.levels):
            if level.value_tier and level.value_tier not in known:
                raise ValidationFailed(
                    f"No value tier {level.value_tier} in this workspace.", loc=["body", "levels", index, "value_tier"]
                )
    return present_levels(
        await _replace(session, ctx, LEVELS, data.model_dump(mode="json"), expected_version), currency
    )


async def _replace(
    session: AsyncSession, ctx: Caller, kind: str, new: dict[str, Any], expected_version: int
) -> LoyaltyDocument:
    """The one writer of both documents: version check under the row's lock, audit of what changed."""
    stored = await document(session, ctx, kind, lock=True)
    check_version(stored.version, expected_version, what=f"loyalty {kind}")
    if stored.version and stored.document == new:
        return stored
    changes = {
        key: {"before": to_jsonable(stored.document.get(key)), "after": value}
        for key, value in new.items()
        if stored.document.get(key) != value
    }
    if stored.version == 0:
        session.add(stored)
    stored.document = new
    stored.version += 1
    stored.updated_at = clock.now()
    await session.flush()
    audit.record(
        session, ctx, entity_type=f"loyalty_{kind}", entity_id=ctx.workspace_id, action="updated", changes=changes
    )
    return stored


def _factor(value: str | Decimal) -> str:
    return format(Decimal(value).normalize(), "f")


def present_program(row: LoyaltyDocument, currency: str) -> dict[str, Any]:
    doc = row.document
    return {
        "enabled": doc["enabled"],
        "currency": currency,
        "earn_rate": _factor(doc["earn_rate"]),
        **{
            name: {key: _factor(value) for key, value in doc[name].items()}
            for name in ("category_multipliers", "channel_multipliers", "source_multipliers")
        },
        "pending_days": doc["pending_days"],
        "expiry_months": doc["expiry_months"],
        "enrolment": doc["enrolment"],
        "referrals": _referrals(doc, currency),
        "actions": doc.get("actions", {}),
        "version": row.version,
        "updated_at": row.updated_at if row.version else None,
    }


def referral_settings(doc: dict[str, Any]) -> dict[str, Any]:
    """The program's referral settings; a program saved before they existed has the defaults."""
    settings: dict[str, Any] = doc.get("referrals") or DEFAULT_PROGRAM["referrals"]
    return settings


def _referrals(doc: dict[str, Any], currency: str) -> dict[str, Any]:
    settings = referral_settings(doc)
    return {**settings, "min_order_amount": money_text(Decimal(settings["min_order_amount"]), currency)}


def threshold_text(level: dict[str, Any], currency: str) -> str:
    """A spend threshold in the currency's decimals; a count as a whole number."""
    value = Decimal(level["threshold"])
    return money_text(value, currency) if level["metric"] == "spend" else str(int(value))


def present_levels(row: LoyaltyDocument, currency: str) -> dict[str, Any]:
    doc = row.document
    return {
        "review": doc["review"],
        "window_months": doc["window_months"],
        "levels": [
            {
                "code": level["code"],
                "name": level["name"],
                "metric": level["metric"],
                "threshold": threshold_text(level, currency),
                "earn_multiplier": _factor(level["earn_multiplier"]),
                "discount_percent": _factor(level["discount_percent"]),
                "ticket_priority": level["ticket_priority"],
                "value_tier": level["value_tier"],
            }
            for level in doc["levels"]
        ],
        "version": row.version,
        "updated_at": row.updated_at if row.version else None,
    }
