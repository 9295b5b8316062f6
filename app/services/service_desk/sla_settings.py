"""The workspace's SLA document: policies by priority and tier, business hours, holidays and make-up
working days, read back and replaced as one versioned document; the mainland China calendar loaded
from chinesecalendar as a starting set the workspace then owns."""

from collections.abc import Mapping
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.models import BusinessHours, SlaPolicy
from app.schemas.ticket import CalendarLoad, SlaSettings
from app.services.events import audit
from app.services.identity import workspaces
from app.services.service_desk.sla_clock import DEFAULT_WEEK
from app.services.service_desk.tickets import DEFAULT_POLICIES

# The years the installed chinesecalendar knows: it publishes a year once the State Council has.
CN_YEARS = range(min(chinese_calendar.holidays).year, max(chinese_calendar.holidays).year + 1)


async def get_sla(session: AsyncSession, ctx: Caller) -> dict[str, Any]:
    """What new tickets are timed by: the stored document, or the defaults (version 1) before one."""
    rows = await session.scalars(
        select(SlaPolicy)
        .where(SlaPolicy.workspace_id == ctx.workspace_id)
        .order_by(SlaPolicy.priority, SlaPolicy.tier.nulls_first())
    )
    policies = [
        {
            "priority": p.priority,
            "tier": p.tier,
            "first_response_minutes": p.first_response_minutes,
            "resolution_minutes": p.resolution_minutes,
        }
        for p in rows
    ] or [
        {"priority": priority, "tier": None, "first_response_minutes": response, "resolution_minutes": resolution}
        for priority, (response, resolution) in sorted(DEFAULT_POLICIES.items())
    ]
    hours = await session.get(BusinessHours, ctx.workspace_id)
    if hours is None:
        return {
            "policies": policies,
            "timezone": await workspaces.timezone(session, ctx.workspace_id),
            "weekly": DEFAULT_WEEK,
            "holidays": [],
            "workdays": [],
            "version": 1,
        }
    return {
        "policies": policies,
        "timezone": hours.timezone,
        "weekly": hours.weekly,
        "holidays": sorted(hours.holidays),
        "workdays": sorted(hours.workdays),
        "version": hours.version,
    }


async def set_sla(session: AsyncSession, ctx: Caller, settings: SlaSettings) -> dict[str, Any]:
    """Replaces the document; open tickets keep the deadlines they have."""
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed("Unknown time zone.", loc=["body", "timezone"]) from exc
    keys = [(p.priority, p.tier) for p in settings.policies]
    if len(set(keys)) != len(keys):
        raise ValidationFailed("One policy per priority and tier.", loc=["body", "policies"])
    both = sorted(set(settings.holidays) & set(settings.workdays))
    if both:
        raise ValidationFailed(
            f"{both[0].isoformat()} is both a holiday and a make-up working day.",
            loc=["body", "workdays", settings.workdays.index(both[0])],
        )
    await scoped.one_at_a_time(session, ctx, "sla_policies")
    before = await get_sla(session, ctx)
    await session.execute(text("DELETE FROM sla_policies WHERE workspace_id = :ws"), {"ws": ctx.workspace_id})
    session.add_all(
        SlaPolicy(
            workspace_id=ctx.workspace_id,
            id=new_id(),
            priority=p.priority,
            tier=p.tier,
            first_response_minutes=p.first_response_minutes,
            resolution_minutes=p.resolution_minutes,
        )
        for p in settings.policies
    )
    weekly: dict[str, Any] = {day: [list(period) for period in periods] for day, periods in settings.weekly.items()}
    await _write_hours(
        session,
        ctx,
        before,
        timezone=settings.timezone,
        weekly=weekly,
        holidays=sorted(set(settings.holidays)),
        workdays=sorted(set(settings.workdays)),
    )
    await session.flush()
    return await get_sla(session, ctx)


async def load_calendar(session: AsyncSession, ctx: Caller, request: CalendarLoad) -> dict[str, Any]:
    """Adds the State Council's holidays and make-up working days of `years` to the workspace's own;
    where the two disagree on a date the official calendar wins. Days of other years, and the
    workspace's own days the official calendar does not name, stay."""
    unknown = [year for year in request.years if year not in CN_YEARS]
    if unknown:
        raise ValidationFailed(
            f"The mainland China calendar is known for {CN_YEARS[0]}-{CN_YEARS[-1]}, not {unknown[0]}.",
            loc=["body", "years"],
        )
    years = set(request.years)
    official_holidays = {day for day in chinese_calendar.holidays if day.year in years}
    official_workdays = {day for day in chinese_calendar.workdays if day.year in years}
    await scoped.one_at_a_time(session, ctx, "sla_policies")
    before = await get_sla(session, ctx)
    holidays: set[date] = (set(before["holidays"]) - official_workdays) | official_holidays
    workdays: set[date] = (set(before["workdays"]) - official_holidays) | official_workdays
    await _write_hours(
        session,
        ctx,
        before,
        timezone=before["timezone"],
        weekly=before["weekly"],
        holidays=sorted(holidays),
        workdays=sorted(workdays),
    )
    await session.flush()
    return await get_sla(session, ctx)


async def _write_hours(
    session: AsyncSession,
    ctx: Caller,
    before: dict[str, Any],
    *,
    timezone: str,
    weekly: Mapping[str, Any],
    holidays: list[date],
    workdays: list[date],
) -> None:
    values = {"timezone": timezone, "weekly": weekly, "holidays": holidays, "workdays": workdays}
    version = int(before["version"]) + 1
    await session.execute(
        insert(BusinessHours)
        .values(workspace_id=ctx.workspace_id, version=version, **values)
        .on_conflict_do_update(index_elements=[BusinessHours.workspace_id], set_={**values, "version": version})
    )
    # The row was written by a statement: what the session holds of it is stale.
    hours = await session.get(BusinessHours, ctx.workspace_id)
    if hours is not None:
        await session.refresh(hours)
    audit.record(
        session,
        ctx,
        entity_type="sla_settings",
        entity_id=ctx.workspace_id,
        action="updated",
        changes={"version": {"before": before["version"], "after": version}, **_calendar_changes(before, values)},
    )


def _calendar_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {"before": to_jsonable(before[name]), "after": to_jsonable(after[name])}
        for name in ("timezone", "holidays", "workdays")
        if to_jsonable(before[name]) != to_jsonable(after[name])
    }
