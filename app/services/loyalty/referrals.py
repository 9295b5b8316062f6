"""Referrals: each customer's code, the link a new customer made with one, its qualification by the
referee's first paid order and its reward in points.

A customer's code is `code_of(id)` (in SQL `guanxi_referral_code(id)`, migration 0036). Every path
that creates a customer makes the referral in the customer's own statement or transaction: the API
and its batch through `customer_insert` (an unknown code is a 422 before anything is written), the
import set-based with `IMPORT_SQL`. The order paths qualify it in the order's transaction through
`points.sync_orders`, which calls `qualify`; the reward is credited through `points.credit`, the one
writer of points."""

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.models import Customer, Referral
from app.services.customers.visibility import visible_customer_clauses
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column, timestamp
from app.services.loyalty import points, programs

CODE = re.compile(r"^[0-9A-F]{16}$")
STATUSES = ("created", "qualified", "rewarded", "refused")
REASONS = ("self_referral", "already_buying", "unknown_code", "window_passed")
_FIELDS = (
    *(
        column(name)
        for name in (
            "id",
            "referrer_id",
            "referee_id",
            "code",
            "status",
            "reason",
            "order_id",
            "referrer_points",
            "referee_points",
        )
    ),
    timestamp("created_at"),
    timestamp("qualified_at"),
    timestamp("rewarded_at"),
)
CREATED = Payload(_FIELDS, model=data_model("referral.created"))
QUALIFIED = Payload(_FIELDS, model=data_model("referral.qualified"))
REWARDED = Payload(_FIELDS, model=data_model("referral.rewarded"))
_PAID = "('paid', 'partially_refunded')"


def code_of(customer_id: uuid.UUID) -> str:
    """The customer's referral code: the random part of its UUIDv7 id, as `guanxi_referral_code`."""
    return customer_id.bytes[8:].hex().upper()


def normalised(code: str) -> str | None:
    """The code as stored (upper case, no spaces), or None when it cannot be one."""
    cleaned = code.strip().replace(" ", "").replace("-", "").upper()
    return cleaned if CODE.match(cleaned) else None


async def referrer_of(session: AsyncSession, ctx: Caller, code: str, *, loc: list[str | int]) -> uuid.UUID:
    """The customer whose code it is (whoever may see it: the code is the proof); 422 at `loc` for
    a code no live customer of the workspace has."""
    wanted = normalised(code)
    found = None
    if wanted is not None:
        found = await session.scalar(
            select(Customer.id).where(
                Customer.workspace_id == ctx.workspace_id,
                func.guanxi_referral_code(Customer.id) == wanted,
                Customer.deleted_at.is_(None),
            )
        )
    if found is None:
        raise ValidationFailed(f"No customer has the referral code {code!r}.", loc=loc, error_type="unknown_code")
    return found


@dataclass(frozen=True)
class NewReferral:
    """A referral written with its referee's insert (`customer_insert`)."""

    id: uuid.UUID
    referrer_id: uuid.UUID
    code: str

    def params(self, referee_id: uuid.UUID, at: datetime) -> dict[str, Any]:
        row = SimpleNamespace(
            id=self.id,
            referrer_id=self.referrer_id,
            referee_id=referee_id,
            code=self.code,
            status="created",
            reason=None,
            order_id=None,
            referrer_points=0,
            referee_points=0,
            created_at=at,
            qualified_at=None,
            rewarded_at=None,
        )
        return {
            "referral_id": self.id,
            "referrer_id": self.referrer_id,
            "referral_code": self.code,
            "referral_event_id": new_id(),
            "referral_data": CREATED.data(row),
        }


NO_REFERRAL: dict[str, Any] = dict.fromkeys(
    ("referral_id", "referrer_id", "referral_code", "referral_event_id", "referral_data")
)


async def new_referral(session: AsyncSession, ctx: Caller, code: str | None) -> NewReferral | None:
    """The referral a create with `referral_code` makes (422 for an unknown code). A new customer
    can neither be its own referrer nor have bought already: those refusals arise on imports that
    match an existing customer, and at qualification."""
    if code is None:
        return None
    referrer = await referrer_of(session, ctx, code, loc=["body", "referral_code"])
    return NewReferral(new_id(), referrer, code_of(referrer))


def import_sql(match: str) -> str:
    """The referrals of an import batch's staged rows that carry a code (`$1` workspace, `$2` now,
    `$3` the import's match key, `$4` its mode, `$5` the actor), one per referee: the customer the
    row created, or in an upsert the one it matched. A referee that has a referral already keeps
    it (a re-run changes nothing); a code no one has, the referrer itself, or a referee with paid
    orders is a `refused` referral with that reason. `match` is the import's matching expression
    over the staged row `s`."""
    return f"""
WITH staged AS (
    SELECT s.row_number, s.referral_code AS code,
           coalesce((SELECT c.id FROM customers c WHERE c.workspace_id = $1 AND c.id = s.customer_id),
                    CASE WHEN $4 = 'upsert' THEN {match} END) AS referee_id
    FROM import_stage s WHERE s.referral_code IS NOT NULL
),
candidates AS (
    SELECT DISTINCT ON (st.referee_id) st.referee_id, st.code,
           (SELECT r.id FROM customers r WHERE r.workspace_id = $1 AND guanxi_referral_code(r.id) = st.code
              AND r.deleted_at IS NULL) AS referrer_id
    FROM staged st
    WHERE st.referee_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM referrals x WHERE x.workspace_id = $1 AND x.referee_id = st.referee_id)
    ORDER BY st.referee_id, st.row_number DESC
),
judged AS (
    SELECT c.*, guanxi_uuid7() AS id,
           CASE WHEN c.referrer_id IS NULL THEN 'unknown_code'
                WHEN c.referrer_id = c.referee_id THEN 'self_referral'
                WHEN EXISTS (SELECT 1 FROM orders o WHERE o.workspace_id = $1 AND o.customer_id = c.referee_id
                             AND o.status IN {_PAID}) THEN 'already_buying' END AS reason
    FROM candidates c
),
inserted AS (
    INSERT INTO referrals (workspace_id, id, referrer_id, referee_id, code, status, reason, order_id,
                           referrer_points, referee_points, created_at, refused_at, updated_at, version)
    SELECT $1, id, referrer_id, referee_id, code, CASE WHEN reason IS NULL THEN 'created' ELSE 'refused' END,
           reason, NULL, 0, 0, $2::timestamptz, CASE WHEN reason IS NOT NULL THEN $2::timestamptz END,
           $2::timestamptz, 1
    FROM judged
    ON CONFLICT DO NOTHING
    RETURNING *
),
emitted AS (
    {
        outbox.emit_rows_sql(
            f"(SELECT guanxi_uuid7() AS id, {CREATED.sql('i')} AS data FROM inserted i)",
            workspace_id="$1",
            event_type="'referral.created'",
            at="$2::timestamptz",
            actor="$5::jsonb",
        )
    }
)
SELECT count(*) FROM inserted
"""


# The referrals of the orders' customers still open: refused when the referee had paid before the
# referral, qualified by the earliest paid order within the window at or above the amount, refused
# when a paid order comes only after the window. Locked so that concurrent orders of one referee
# qualify it once: the second waits, then finds it no longer `created`.
QUALIFY_SQL = text(
    f"""
WITH candidates AS (
    SELECT r.id, r.referee_id, r.created_at FROM referrals r
    WHERE r.workspace_id = :ws AND r.status = 'created'
      AND r.referee_id IN (SELECT o.customer_id FROM orders o
                           WHERE o.workspace_id = :ws AND o.id = ANY (CAST(:ids AS uuid[])) AND o.status IN {_PAID})
    ORDER BY r.id
    FOR UPDATE
),
paid AS (
    SELECT c.id AS referral_id, o.id AS order_id, o.ordered_at, o.total_amount - o.refunded_amount AS amount,
           c.created_at, c.created_at + make_interval(days => :days) AS until
    FROM candidates c
    JOIN orders o ON o.workspace_id = :ws AND o.customer_id = c.referee_id AND o.status IN {_PAID}
),
judged AS (
    SELECT c.id,
           EXISTS (SELECT 1 FROM paid p WHERE p.referral_id = c.id AND p.ordered_at < p.created_at) AS bought_before,
           (SELECT p.order_id FROM paid p
            WHERE p.referral_id = c.id AND p.ordered_at >= p.created_at AND p.ordered_at <= p.until
              AND p.amount >= CAST(:min_amount AS numeric)
            ORDER BY p.ordered_at, p.order_id LIMIT 1) AS order_id,
           EXISTS (SELECT 1 FROM paid p WHERE p.referral_id = c.id AND p.ordered_at > p.until) AS late
    FROM candidates c
),
decided AS (
    SELECT id, order_id,
           CASE WHEN bought_before THEN 'already_buying'
                WHEN order_id IS NULL AND late THEN 'window_passed' END AS reason
    FROM judged
    WHERE bought_before OR order_id IS NOT NULL OR late
)
UPDATE referrals r
SET status = CASE WHEN d.reason IS NULL THEN 'qualified' ELSE 'refused' END, reason = d.reason,
    order_id = CASE WHEN d.reason IS NULL THEN d.order_id END,
    qualified_at = CASE WHEN d.reason IS NULL THEN CAST(:now AS timestamptz) END,
    refused_at = CASE WHEN d.reason IS NOT NULL THEN CAST(:now AS timestamptz) END,
    updated_at = :now, version = r.version + 1
FROM decided d
WHERE r.workspace_id = :ws AND r.id = d.id
RETURNING r.id, r.status
"""
)


async def qualify(session: AsyncSession, ctx: Caller, order_ids: list[uuid.UUID], program: dict[str, Any]) -> None:
    """The referrals the orders just written decide (see QUALIFY_SQL), in the orders' transaction;
    a qualified one is rewarded at once when the program is on and gives points."""
    settings = programs.referral_settings(program)
    now = clock.now()
    decided = (
        await session.execute(
            QUALIFY_SQL,
            {
                "ws": ctx.workspace_id,
                "ids": order_ids,
                "now": now,
                "days": settings["window_days"],
                "min_amount": str(Decimal(settings["min_order_amount"])),
            },
        )
    ).all()
    qualified = [referral_id for referral_id, status in decided if status == "qualified"]
    if not qualified:
        return
    rows = (
        await session.scalars(
            select(Referral)
            .where(Referral.workspace_id == ctx.workspace_id, Referral.id.in_(qualified))
            .order_by(Referral.id)
            .execution_options(populate_existing=True)
        )
    ).all()
    rewarding = program["enabled"] and (settings["referrer_points"] or settings["referee_points"])
    for row in rows:
        outbox.emit(session, ctx, "referral.qualified", QUALIFIED.data(row))
        if not rewarding:
            continue
        assert row.referrer_id is not None  # a referral without a referrer is refused at creation
        gains = {row.referrer_id: settings["referrer_points"], row.referee_id: settings["referee_points"]}
        # Both accounts locked in one order, as every writer of points locks them.
        for customer_id in sorted(gains):
            account = await points.locked_account(session, ctx, customer_id, enrol=gains[customer_id] > 0)
            if account is not None and gains[customer_id] > 0:
                await points.credit(
                    session, ctx, account, gains[customer_id], kind="referral", reason=f"referral {row.id}"
                )
        row.status = "rewarded"
        row.referrer_points = settings["referrer_points"]
        row.referee_points = settings["referee_points"]
        row.rewarded_at = now
        row.updated_at = now
        row.version += 1
        outbox.emit(session, ctx, "referral.rewarded", REWARDED.data(row))
    await session.flush()


def _visible(ctx: Caller) -> Select[Referral]:
    """Referrals whose referee the caller may see."""
    return (
        select(Referral)
        .join(Customer, (Customer.workspace_id == Referral.workspace_id) & (Customer.id == Referral.referee_id))
        .where(Referral.workspace_id == ctx.workspace_id, *visible_customer_clauses(ctx))
    )


async def get(session: AsyncSession, ctx: Caller, referral_id: uuid.UUID) -> Referral:
    return await scoped.one(
        session, _visible(ctx).where(Referral.id == referral_id), missing="No referral with that id."
    )


async def list_referrals(
    session: AsyncSession,
    ctx: Caller,
    *,
    referrer_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Referral], str | None]:
    """Newest first, of the referees the caller may see."""
    stmt = _visible(ctx)
    if referrer_id is not None:
        stmt = stmt.where(Referral.referrer_id == referrer_id)
    if status is not None:
        stmt = stmt.where(Referral.status == status)
    return await keyset_page(
        session, stmt, [SortKey(Referral.id, descending=True)], list_name="referrals", limit=limit, cursor=cursor
    )


def present(row: Referral) -> dict[str, Any]:
    return {
        "id": row.id,
        "referrer_id": row.referrer_id,
        "referee_id": row.referee_id,
        "code": row.code,
        "status": row.status,
        "reason": row.reason,
        "order_id": row.order_id,
        "referrer_points": row.referrer_points,
        "referee_points": row.referee_points,
        "created_at": row.created_at,
        "qualified_at": row.qualified_at,
        "rewarded_at": row.rewarded_at,
        "refused_at": row.refused_at,
        "version": row.version,
    }
