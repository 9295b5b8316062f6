"""The one writer of members' points: every movement is a ledger entry written with its account's
balance, under that account's row lock, in the transaction of the change that causes it.

Credits (earnings, positive adjustments) open a lot; spending takes from lots first in, first out
(soonest expiry first, then oldest), a refund takes back from its order's own lots, expiry writes
off what a lot has left. So a member's balance is always the sum of the ledger and of the lots'
remainders, and never negative (a check constraint holds both lots and balance at zero or more)."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import NotEnoughPoints
from app.core.ids import new_id
from app.models import LoyaltyAccount, LoyaltyEntry, LoyaltyLot
from app.schemas.loyalty import MAX_POINTS
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column, timestamp
from app.services.loyalty import programs, referrals


@dataclass(frozen=True)
class Movement:
    """What a points event says about one entry."""

    customer_id: uuid.UUID
    kind: str
    points: int
    order_id: uuid.UUID | None
    redemption_id: uuid.UUID | None
    reason: str | None
    balance: int
    at: datetime


_FIELDS = (
    *(column(name) for name in ("customer_id", "kind", "points", "order_id", "redemption_id", "reason", "balance")),
    timestamp("at"),
)
EARNED = Payload(_FIELDS, model=data_model("loyalty.points_earned"))
REDEEMED = Payload(_FIELDS, model=data_model("loyalty.points_redeemed"))
EXPIRED = Payload(_FIELDS, model=data_model("loyalty.points_expired"))
ADJUSTED = Payload(_FIELDS, model=data_model("loyalty.points_adjusted"))
EVENT_OF_KIND = {
    "earn": ("loyalty.points_earned", EARNED),
    "reverse": ("loyalty.points_adjusted", ADJUSTED),
    "adjust": ("loyalty.points_adjusted", ADJUSTED),
    "redeem": ("loyalty.points_redeemed", REDEEMED),
    "redeem_cancel": ("loyalty.points_redeemed", REDEEMED),
    "expire": ("loyalty.points_expired", EXPIRED),
    "referral": ("loyalty.points_earned", EARNED),
    "action": ("loyalty.points_earned", EARNED),
    "merge": ("loyalty.points_adjusted", ADJUSTED),
}

PAID = "('paid', 'partially_refunded')"
_ACTOR = "CAST(:actor AS jsonb)"
_NOW = "CAST(:now AS timestamptz)"


def _events_sql(moved: str, event_type: str, payload: Payload[Any], *, actor: str, at: str) -> str:
    """The outbox rows of `moved` (a CTE with the payload's columns and `workspace_id`)."""
    return outbox.emit_rows_sql(
        f"(SELECT guanxi_uuid7() AS id, {payload.sql('m')} AS data, m.workspace_id FROM {moved} m)",
        workspace_id="new_events.workspace_id",
        event_type=f"'{event_type}'",
        at=at,
        actor=actor,
    )


# Members for the paid orders of workspaces that enrol at the first paid order; a customer who left
# the program stays out.
ENROL_SQL = text(
    f"""
INSERT INTO loyalty_accounts (workspace_id, customer_id, balance, enrolled_at, updated_at)
SELECT DISTINCT o.workspace_id, o.customer_id, 0, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
FROM orders o WHERE o.workspace_id = :ws AND o.id = ANY (CAST(:ids AS uuid[])) AND o.status IN {PAID}
  AND NOT EXISTS (SELECT 1 FROM loyalty_departures d WHERE d.workspace_id = :ws AND d.customer_id = o.customer_id)
ON CONFLICT DO NOTHING
"""
)
# The accounts of the orders' customers, and of whoever holds lots of them (an order moved to
# another customer, by an upsert or a merge, leaves its points where they were earned); locked in
# one order so that two writers never wait on each other. One IN over a UNION, not two INs joined by
# OR: PostgreSQL answers the OR with a scan of every account of the workspace.
LOCK_ORDERS_SQL = text(
    """
SELECT a.customer_id FROM loyalty_accounts a
WHERE a.workspace_id = :ws
  AND a.customer_id IN (
      SELECT o.customer_id FROM orders o WHERE o.workspace_id = :ws AND o.id = ANY (CAST(:ids AS uuid[]))
      UNION
      SELECT l.customer_id FROM loyalty_lots l WHERE l.workspace_id = :ws AND l.order_id = ANY (CAST(:ids AS uuid[])))
ORDER BY a.customer_id
FOR UPDATE
"""
)
_MOVED_COLUMNS = "customer_id, kind, points, order_id, redemption_id, reason, balance, at, workspace_id"
# Each line of a paid order not yet earned on earns once: amount × rate × the multipliers of its
# category, the order's channel and source, and the member's level; rounded down, capped.
EARN_SQL = text(
    f"""
WITH settings AS (SELECT CAST(:program AS jsonb) AS p, CAST(:levels AS jsonb) AS lv),
earned AS (
    SELECT o.customer_id, o.id AS order_id, l.line_no,
           o.ordered_at + make_interval(days => (s.p ->> 'pending_days')::int) AS available_at,
           o.ordered_at + make_interval(months => (s.p ->> 'expiry_months')::int) AS expires_at,
           least(floor(l.quantity * l.unit_price * (s.p ->> 'earn_rate')::numeric
                 * coalesce((s.p -> 'category_multipliers' ->> l.category)::numeric, 1)
                 * coalesce((s.p -> 'channel_multipliers' ->> o.channel)::numeric, 1)
                 * coalesce((s.p -> 'source_multipliers' ->> o.source)::numeric, 1)
                 * coalesce((SELECT (x ->> 'earn_multiplier')::numeric FROM jsonb_array_elements(s.lv) x
                             WHERE x ->> 'code' = a.level), 1)), {MAX_POINTS})::bigint AS points,
           guanxi_uuid7() AS entry_id, guanxi_uuid7() AS lot_id
    FROM settings s
    JOIN orders o ON o.workspace_id = :ws AND o.id = ANY (CAST(:ids AS uuid[]))
    JOIN order_lines l ON l.workspace_id = :ws AND l.order_id = o.id
    JOIN loyalty_accounts a ON a.workspace_id = :ws AND a.customer_id = o.customer_id
    WHERE o.status IN {PAID}
      AND NOT EXISTS (SELECT 1 FROM loyalty_entries e WHERE e.workspace_id = :ws AND e.kind = 'earn'
                      AND e.order_id = o.id AND e.line_no = l.line_no)
),
credits AS (SELECT * FROM earned WHERE points > 0),
entries AS (
    INSERT INTO loyalty_entries (workspace_id, id, customer_id, kind, points, order_id, line_no, actor, created_at)
    SELECT :ws, entry_id, customer_id, 'earn', points, order_id, line_no, CAST(:actor AS jsonb), :now FROM credits
),
lots AS (
    INSERT INTO loyalty_lots (workspace_id, id, customer_id, entry_id, order_id, points, remaining, available_at,
                              expires_at)
    SELECT :ws, lot_id, customer_id, entry_id, order_id, points, points, available_at, expires_at FROM credits
),
per_order AS (SELECT customer_id, order_id, sum(points)::bigint AS points FROM credits GROUP BY customer_id, order_id),
accounts AS (
    UPDATE loyalty_accounts a SET balance = a.balance + s.points, updated_at = :now
    FROM (SELECT customer_id, sum(points) AS points FROM per_order GROUP BY customer_id) s
    WHERE a.workspace_id = :ws AND a.customer_id = s.customer_id
    RETURNING a.customer_id, a.balance
),
moved AS (
    SELECT p.customer_id, 'earn' AS kind, p.points, p.order_id, NULL::uuid AS redemption_id, NULL::text AS reason,
           a.balance - coalesce(sum(p.points) OVER (PARTITION BY p.customer_id ORDER BY p.order_id DESC
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS balance,
           CAST(:now AS timestamptz) AS at, CAST(:ws AS uuid) AS workspace_id
    FROM per_order p JOIN accounts a USING (customer_id)
)
{_events_sql("moved", "loyalty.points_earned", EARNED, actor=_ACTOR, at=_NOW)}
"""
)
# A refund or cancellation takes back the order's points in proportion (all of them when the order
# is refunded or cancelled whole), from what the order's own lots have left, from whoever holds
# them: points already spent or expired are not clawed back from other lots (no debt, the balance
# never goes below zero).
REVERSE_SQL = text(
    f"""
WITH earned AS (
    SELECT o.id AS order_id, o.status, o.total_amount, o.refunded_amount,
           sum(e.points) FILTER (WHERE e.kind = 'earn') AS earned,
           -coalesce(sum(e.points) FILTER (WHERE e.kind = 'reverse'), 0) AS reversed
    FROM orders o JOIN loyalty_entries e ON e.workspace_id = :ws AND e.order_id = o.id
    WHERE o.workspace_id = :ws AND o.id = ANY (CAST(:ids AS uuid[]))
    GROUP BY o.workspace_id, o.id
),
owed AS (
    SELECT order_id,
           CASE WHEN status IN ('refunded', 'cancelled') THEN earned
                WHEN total_amount > 0 THEN floor(earned * refunded_amount / total_amount)::bigint
                ELSE 0 END - reversed AS points
    FROM earned
),
taking AS (
    SELECT l.id AS lot_id, w.order_id, l.customer_id,
           least(l.remaining, w.points - (sum(l.remaining) OVER (PARTITION BY w.order_id ORDER BY l.id) - l.remaining))
               AS take
    FROM owed w JOIN loyalty_lots l ON l.workspace_id = :ws AND l.order_id = w.order_id AND l.remaining > 0
    WHERE w.points > 0
),
taken AS (SELECT * FROM taking WHERE take > 0),
lots AS (
    UPDATE loyalty_lots l SET remaining = l.remaining - t.take
    FROM taken t WHERE l.workspace_id = :ws AND l.id = t.lot_id
),
per_order AS (
    SELECT customer_id, order_id, sum(take)::bigint AS points, guanxi_uuid7() AS entry_id
    FROM taken GROUP BY customer_id, order_id
),
entries AS (
    INSERT INTO loyalty_entries (workspace_id, id, customer_id, kind, points, order_id, reason, actor, created_at)
    SELECT :ws, entry_id, customer_id, 'reverse', -points, order_id, 'refund or cancellation', CAST(:actor AS jsonb),
           :now
    FROM per_order
),
accounts AS (
    UPDATE loyalty_accounts a SET balance = a.balance - s.points, updated_at = :now
    FROM (SELECT customer_id, sum(points) AS points FROM per_order GROUP BY customer_id) s
    WHERE a.workspace_id = :ws AND a.customer_id = s.customer_id
    RETURNING a.customer_id, a.balance
),
moved AS (
    SELECT p.customer_id, 'reverse' AS kind, -p.points AS points, p.order_id, NULL::uuid AS redemption_id,
           'refund or cancellation'::text AS reason,
           a.balance + coalesce(sum(p.points) OVER (PARTITION BY p.customer_id ORDER BY p.order_id DESC
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS balance,
           CAST(:now AS timestamptz) AS at, CAST(:ws AS uuid) AS workspace_id
    FROM per_order p JOIN accounts a USING (customer_id)
)
{_events_sql("moved", "loyalty.points_adjusted", ADJUSTED, actor=_ACTOR, at=_NOW)}
"""
)
# Every workspace's lots past their expiry: what they have left is written off, one `expire` entry
# and event per member. The accounts are locked first (in one order), as every other writer does; a
# second run finds nothing left to expire. The lots are read locked: the statement's snapshot is
# taken before it waits for an account a writer holds, and only a locking read sees the lot as that
# writer left it (a plain read would write off what the lot held before, and the balance would part
# from the ledger). Lots are found through the index on what an open lot's
# expiry is (null once spent): its statistics tell the planner how few are due, which "remaining > 0
# AND expires_at <= now" cannot (the two columns are correlated), and without them it scans every
# member's lots.
EXPIRE_SQL = text(
    f"""
WITH locked AS (
    SELECT a.workspace_id, a.customer_id FROM loyalty_accounts a
    WHERE (a.workspace_id, a.customer_id) IN (
        SELECT workspace_id, customer_id FROM loyalty_lots WHERE (CASE WHEN remaining > 0 THEN expires_at END) <= :now)
    ORDER BY a.workspace_id, a.customer_id
    FOR UPDATE
),
due AS (
    SELECT l.workspace_id, l.customer_id, l.id, l.remaining FROM loyalty_lots l
    JOIN locked k ON k.workspace_id = l.workspace_id AND k.customer_id = l.customer_id
    WHERE (CASE WHEN l.remaining > 0 THEN l.expires_at END) <= :now
    FOR UPDATE OF l
),
cleared AS (UPDATE loyalty_lots l SET remaining = 0 FROM due d WHERE l.workspace_id = d.workspace_id AND l.id = d.id),
per_member AS (
    SELECT workspace_id, customer_id, sum(remaining)::bigint AS points, guanxi_uuid7() AS entry_id
    FROM due GROUP BY workspace_id, customer_id
),
entries AS (
    INSERT INTO loyalty_entries (workspace_id, id, customer_id, kind, points, reason, actor, created_at)
    SELECT workspace_id, entry_id, customer_id, 'expire', -points, 'expired', {outbox.SYSTEM_ACTOR_SQL}, :now
    FROM per_member
),
accounts AS (
    UPDATE loyalty_accounts a SET balance = a.balance - p.points, updated_at = :now
    FROM per_member p WHERE a.workspace_id = p.workspace_id AND a.customer_id = p.customer_id
    RETURNING a.workspace_id, a.customer_id, a.balance
),
moved AS (
    SELECT p.customer_id, 'expire' AS kind, -p.points AS points, NULL::uuid AS order_id, NULL::uuid AS redemption_id,
           'expired'::text AS reason, a.balance, CAST(:now AS timestamptz) AS at, p.workspace_id
    FROM per_member p JOIN accounts a USING (workspace_id, customer_id)
),
events AS (
    {_events_sql("moved", "loyalty.points_expired", EXPIRED, actor=outbox.SYSTEM_ACTOR_SQL, at=_NOW)}
)
SELECT count(*) FROM moved
"""
)
# Spending, oldest first: the lots available now, soonest expiry first, then first in.
TAKE_SQL = text(
    """
WITH open AS (
    SELECT id, remaining,
           sum(remaining) OVER (ORDER BY coalesce(expires_at, 'infinity'), id) AS running
    FROM loyalty_lots
    WHERE workspace_id = :ws AND customer_id = :customer AND remaining > 0
      AND available_at <= :now AND (expires_at IS NULL OR expires_at > :now)
),
taken AS (
    SELECT id, least(remaining, :points - (running - remaining)) AS take FROM open WHERE running - remaining < :points
),
spent AS (
    UPDATE loyalty_lots l SET remaining = l.remaining - t.take FROM taken t WHERE l.workspace_id = :ws AND l.id = t.id
)
SELECT id, take FROM taken
"""
)
# A cancelled redemption's points back to the lots they were taken from.
RETURN_SQL = text(
    """
UPDATE loyalty_lots l SET remaining = l.remaining + r.points
FROM loyalty_redemption_lots r
WHERE r.workspace_id = :ws AND r.redemption_id = :redemption AND l.workspace_id = :ws AND l.id = r.lot_id
"""
)
# Everything one account holds, to another (a merge): its lots keep their dates, its redemptions
# follow them (a cancel gives back to the lots where they are now), and its action awards (those the
# other account has not had for the same action and reference).
MOVE_HOLDINGS_SQL = text(
    """
WITH lots AS (
    UPDATE loyalty_lots SET customer_id = :target WHERE workspace_id = :ws AND customer_id = :source
),
redemptions AS (
    UPDATE loyalty_redemptions SET customer_id = :target WHERE workspace_id = :ws AND customer_id = :source
)
UPDATE loyalty_action_awards a SET customer_id = :target
WHERE a.workspace_id = :ws AND a.customer_id = :source
  AND NOT EXISTS (SELECT 1 FROM loyalty_action_awards t WHERE t.workspace_id = :ws AND t.customer_id = :target
                  AND t.action = a.action AND t.reference = a.reference)
"""
)
EXPIRES_SQL = text("SELECT CAST(:now AS timestamptz) + make_interval(months => :months)")
# What a member can spend now, what is pending, and the next expiry with the points it takes, in one
# pass over the member's open lots.
FIGURES_SQL = text(
    """
WITH open AS (
    SELECT remaining, available_at, expires_at FROM loyalty_lots
    WHERE workspace_id = :ws AND customer_id = :customer AND remaining > 0
),
figures AS (
    SELECT coalesce(sum(remaining) FILTER (WHERE available_at <= :now AND (expires_at IS NULL OR expires_at > :now)),
                    0) AS available,
           coalesce(sum(remaining) FILTER (WHERE available_at > :now AND (expires_at IS NULL OR expires_at > :now)),
                    0) AS pending,
           min(expires_at) FILTER (WHERE expires_at > :now) AS next_expiry
    FROM open
)
SELECT available, pending, next_expiry,
       (SELECT coalesce(sum(remaining), 0) FROM open WHERE expires_at = next_expiry)
FROM figures
"""
)


@dataclass(frozen=True)
class Figures:
    available: int
    pending: int
    expiring_at: datetime | None
    expiring_points: int


def _actor(ctx: Caller) -> str:
    return orjson.dumps(ctx.actor).decode()


async def sync_orders(session: AsyncSession, ctx: Caller, order_ids: list[uuid.UUID]) -> None:
    """The points of orders just written, in their transaction, whichever path wrote them (the API's
    upsert, its batch, the import a page at a time): members enrolled when the program says so, each
    paid line not yet earned on earns, refunds and cancellations take back in proportion, and the
    referrals the orders decide are qualified and rewarded. A fixed number of statements however
    many orders (and a credit per referral rewarded)."""
    if not order_ids:
        return
    program, levels = await programs.documents(session, ctx)
    params: dict[str, Any] = {"ws": ctx.workspace_id, "ids": order_ids, "now": clock.now(), "actor": _actor(ctx)}
    if program["enabled"] and program["enrolment"] == "automatic":
        await session.execute(ENROL_SQL, params)
    if (await session.execute(LOCK_ORDERS_SQL, params)).first():
        if program["enabled"]:
            program_json, levels_json = orjson.dumps(program).decode(), orjson.dumps(levels["levels"]).decode()
            await session.execute(EARN_SQL, {**params, "program": program_json, "levels": levels_json})
        # Reversals follow refunds even after the program is switched off: they undo what was earned.
        await session.execute(REVERSE_SQL, params)
    # Members or not, the orders' customers' referrals: a first paid order may qualify one.
    await referrals.qualify(session, ctx, order_ids, program)


async def expire_due(session: AsyncSession) -> int:
    """Write off what every lot past its expiry has left (all workspaces, one statement); the members
    whose points expired. Running it again changes nothing."""
    return int((await session.execute(EXPIRE_SQL, {"now": clock.now()})).scalar_one())


async def locked_account(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, enrol: bool = False
) -> LoyaltyAccount | None:
    """The member's account under its row lock (enrolled first when asked), or None."""
    if enrol:
        now = clock.now()
        await session.execute(
            insert(LoyaltyAccount)
            .values(workspace_id=ctx.workspace_id, customer_id=customer_id, balance=0, enrolled_at=now, updated_at=now)
            .on_conflict_do_nothing()
        )
    return await session.scalar(
        select(LoyaltyAccount)
        .where(LoyaltyAccount.workspace_id == ctx.workspace_id, LoyaltyAccount.customer_id == customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def figures(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> Figures:
    row = (
        await session.execute(FIGURES_SQL, {"ws": ctx.workspace_id, "customer": customer_id, "now": clock.now()})
    ).one()
    return Figures(int(row[0]), int(row[1]), row[2], int(row[3]))


async def credit(
    session: AsyncSession,
    ctx: Caller,
    account: LoyaltyAccount,
    points: int,
    *,
    kind: str,
    reason: str | None = None,
    redemption_id: uuid.UUID | None = None,
) -> LoyaltyEntry:
    """Points added by hand: a lot available at once, expiring as the program says."""
    program = (await programs.document(session, ctx, programs.PROGRAM)).document
    now = clock.now()
    entry = _entry(ctx, account, kind, points, reason=reason, redemption_id=redemption_id)
    months = program["expiry_months"]
    expires_at = None if months is None else await session.scalar(EXPIRES_SQL, {"now": now, "months": months})
    session.add(entry)
    await session.flush()
    session.add(
        LoyaltyLot(
            workspace_id=ctx.workspace_id,
            id=new_id(),
            customer_id=account.customer_id,
            entry_id=entry.id,
            points=points,
            remaining=points,
            available_at=now,
            expires_at=expires_at,
        )
    )
    moved(session, ctx, account, entry, points)
    return entry


async def debit(
    session: AsyncSession,
    ctx: Caller,
    account: LoyaltyAccount,
    points: int,
    *,
    kind: str,
    reason: str | None = None,
    redemption_id: uuid.UUID | None = None,
) -> tuple[LoyaltyEntry, list[tuple[uuid.UUID, int]]]:
    """Points spent or taken by hand from the available lots, oldest first; 409 with what is
    available when that is too little. Returns the entry and what each lot gave."""
    available = (await figures(session, ctx, account.customer_id)).available
    if available < points:
        raise NotEnoughPoints(f"{points} points asked, {available} available.", available=available)
    taken = (
        await session.execute(
            TAKE_SQL, {"ws": ctx.workspace_id, "customer": account.customer_id, "now": clock.now(), "points": points}
        )
    ).all()
    entry = _entry(ctx, account, kind, -points, reason=reason, redemption_id=redemption_id)
    session.add(entry)
    moved(session, ctx, account, entry, -points)
    return entry, [(lot_id, int(take)) for lot_id, take in taken]


async def give_back(
    session: AsyncSession, ctx: Caller, account: LoyaltyAccount, redemption_id: uuid.UUID, points: int
) -> LoyaltyEntry:
    """A cancelled redemption's points, to the lots they came from (with those lots' expiry)."""
    await session.execute(RETURN_SQL, {"ws": ctx.workspace_id, "redemption": redemption_id})
    entry = _entry(ctx, account, "redeem_cancel", points, reason=None, redemption_id=redemption_id)
    session.add(entry)
    moved(session, ctx, account, entry, points)
    return entry


def _entry(
    ctx: Caller,
    account: LoyaltyAccount,
    kind: str,
    points: int,
    *,
    reason: str | None,
    redemption_id: uuid.UUID | None,
) -> LoyaltyEntry:
    return LoyaltyEntry(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        customer_id=account.customer_id,
        kind=kind,
        points=points,
        redemption_id=redemption_id,
        reason=reason,
        actor=ctx.actor,
        created_at=clock.now(),
    )


def moved(session: AsyncSession, ctx: Caller, account: LoyaltyAccount, entry: LoyaltyEntry, points: int) -> None:
    """The account's balance with its entry, and the entry's event."""
    account.balance += points
    account.updated_at = entry.created_at
    event_type, payload = EVENT_OF_KIND[entry.kind]
    movement = Movement(
        account.customer_id,
        entry.kind,
        points,
        None,
        entry.redemption_id,
        entry.reason,
        account.balance,
        entry.created_at,
    )
    outbox.emit(session, ctx, event_type, payload.data(movement))


async def transfer(session: AsyncSession, ctx: Caller, source: LoyaltyAccount, target: LoyaltyAccount) -> int:
    """What `source` holds moves to `target`, both locked: a `merge` entry on each side (with their
    events), the lots with their pending and expiry dates. Returns the points moved."""
    await session.execute(
        MOVE_HOLDINGS_SQL, {"ws": ctx.workspace_id, "source": source.customer_id, "target": target.customer_id}
    )
    points = source.balance
    if points:
        out = _entry(ctx, source, "merge", -points, reason=f"merged into {target.customer_id}", redemption_id=None)
        into = _entry(ctx, target, "merge", points, reason=f"merged from {source.customer_id}", redemption_id=None)
        session.add_all([out, into])
        moved(session, ctx, source, out, -points)
        moved(session, ctx, target, into, points)
    return points


async def close(session: AsyncSession, ctx: Caller, account: LoyaltyAccount) -> int:
    """A member leaves: the balance is forfeited (`loyalty.points_adjusted`, kind `forfeit`), then the
    account goes with its ledger, lots, redemptions and awards. Returns the points forfeited."""
    forfeited, now = account.balance, clock.now()
    if forfeited:
        movement = Movement(account.customer_id, "forfeit", -forfeited, None, None, "left the program", 0, now)
        outbox.emit(session, ctx, "loyalty.points_adjusted", ADJUSTED.data(movement))
    customer_id = account.customer_id
    session.expunge(account)
    await session.execute(
        delete(LoyaltyAccount).where(
            LoyaltyAccount.workspace_id == ctx.workspace_id, LoyaltyAccount.customer_id == customer_id
        )
    )
    return forfeited
