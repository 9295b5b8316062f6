"""The value report: customers and revenue by tier and RFM segment, tier migration, top customers."""

from datetime import datetime
from typing import Any

from sqlalchemy import desc, func, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.core.wire import money_text
from app.models import Customer, CustomerValue, TierChange
from app.services.customers.visibility import visible_customer_clauses
from app.services.identity import workspaces


async def value_report(
    session: AsyncSession, ctx: Caller, *, since: datetime, until: datetime, top: int
) -> dict[str, Any]:
    """Aggregated in SQL over the customers the caller may see."""
    currency = await workspaces.currency(session, ctx.workspace_id)
    visible = select(Customer.id).where(*visible_customer_clauses(ctx)).cte("visible")
    base = (
        select(CustomerValue)
        .where(CustomerValue.workspace_id == ctx.workspace_id, CustomerValue.customer_id.in_(select(visible.c.id)))
        .subquery()
    )

    async def grouped(column: Any) -> list[dict[str, Any]]:
        rows = await session.execute(
            select(column, func.count(), func.coalesce(func.sum(base.c.total_spend), 0))
            .group_by(column)
            .order_by(column)
        )
        return [{"key": key, "customers": n, "revenue": money_text(revenue, currency)} for key, n, revenue in rows]

    by_tier = await grouped(base.c.tier)
    by_segment = await grouped(base.c.rfm_segment)
    before = _tier_at(ctx, since, "before")
    after = _tier_at(ctx, until, "after")
    migration = await session.execute(
        select(before.c.to_tier, after.c.to_tier, func.count())
        .select_from(after.outerjoin(before, before.c.customer_id == after.c.customer_id))
        .where(after.c.customer_id.in_(select(visible.c.id)), before.c.to_tier.is_distinct_from(after.c.to_tier))
        .group_by(before.c.to_tier, after.c.to_tier)
        .order_by(func.count().desc())
    )
    top_rows = await session.execute(
        select(Customer.id, Customer.code, Customer.name, CustomerValue.total_spend, CustomerValue.tier)
        .join(
            CustomerValue,
            (CustomerValue.workspace_id == Customer.workspace_id) & (CustomerValue.customer_id == Customer.id),
        )
        .where(*visible_customer_clauses(ctx))
        .order_by(desc(CustomerValue.total_spend), Customer.id)
        .limit(top)
    )
    return {
        "by_tier": by_tier,
        "by_rfm_segment": by_segment,
        "tier_migration": {
            "since": since,
            "until": until,
            "moves": [{"from_tier": f, "to_tier": t, "customers": n} for f, t, n in migration],
        },
        "top_customers": [
            {"id": cid, "code": code, "name": name, "total_spend": money_text(spend, currency), "tier": tier}
            for cid, code, name, spend, tier in top_rows
        ],
    }


def _tier_at(ctx: Caller, moment: datetime, name: str) -> Any:
    """Each customer's tier at a moment: the last change up to it."""
    return (
        select(TierChange.customer_id, TierChange.to_tier)
        .where(TierChange.workspace_id == ctx.workspace_id, TierChange.changed_at <= moment)
        .ext(distinct_on(TierChange.customer_id))
        .order_by(TierChange.customer_id, TierChange.changed_at.desc(), TierChange.id.desc())
        .subquery(name)
    )


def as_csv_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["section", "key", "customers", "revenue"]]
    for section in ("by_tier", "by_rfm_segment"):
        rows += [[section, str(r["key"] or ""), str(r["customers"]), r["revenue"]] for r in report[section]]
    rows += [
        ["tier_migration", f"{m['from_tier'] or ''}->{m['to_tier'] or ''}", str(m["customers"]), ""]
        for m in report["tier_migration"]["moves"]
    ]
    rows += [["top_customers", c["name"], "1", c["total_spend"]] for c in report["top_customers"]]
    return rows
