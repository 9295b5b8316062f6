"""Data cleaning: candidate duplicates, merging customers into one, and undoing a recent merge."""

import uuid
from datetime import date, timedelta
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.models import Customer, CustomerIdentity, CustomerMerge
from app.schemas.customer import MAX_CONTACT_POINTS, MAX_TAGS
from app.services.customers import customers, relations
from app.services.customers.customer_output import ADDRESS_FIELDS, event_data
from app.services.customers.visibility import visible_customer_clauses, visible_customer_ids_sql
from app.services.events import audit, outbox
from app.services.loyalty import merges as loyalty_merges
from app.services.value import customer_values

UNDO_WINDOW = timedelta(hours=24)
MAX_ABSORBED = 10
# The survivor's single-valued fields a merge may take from an absorbed customer; its lists are joined.
CHOOSABLE = tuple(
    name
    for name in (*customers.PLAIN_FIELDS, *ADDRESS_FIELDS)
    if name not in ("emails", "phones", "tags", "preferences")
)
_KEPT = (*CHOOSABLE, "emails", "phones", "tags")
# Rows that follow the customer; a merge re-points them and keeps their ids to move them back. A
# voucher follows its holder; voiding it gives its points back to whichever account holds the
# redemption that paid for it.
MOVABLE = ("interactions", "tasks", "tickets", "orders", "stage_history", "tier_changes", "loyalty_vouchers")

# The rule: two visible customers are candidates when their names are similar (pg_trgm similarity of
# the lower-cased names at least the threshold) and they share a company or a city; the answer is the
# `pairs` best pairs, by score, then ids. Comparing every pair of a city is quadratic (a city of
# 80,000 customers is 3.2 billion comparisons), so the pairs are found without it, in two exact steps:
#
# 1. Pairs whose names have the same trigram set (score exactly 1), by grouping on the set. When
#    there are at least `pairs` of them, they are the answer: nothing scores higher.
# 2. Otherwise a prefix-filtered similarity join (Bayardo et al., "Scaling up all pairs similarity
#    search", 2007): with a customer's trigrams ordered rarest first, two names with Jaccard
#    similarity ≥ t share a trigram between the shorter name's first n − ⌈2t/(1+t)·n⌉ + 1 and the
#    longer's first n − ⌈t·n⌉ + 1 trigrams, so only pairs sharing one there, in the same company or
#    city, are scored. It runs first at a high threshold (its prefixes are one or two trigrams long),
#    and again at the caller's only when that finds fewer than `pairs`.
NAME_TRIGRAMS = """
    SELECT c.id, c.name, c.company, c.city, t.grams
    FROM customers c, LATERAL (SELECT show_trgm(lower(c.name)) AS grams) t
    WHERE c.workspace_id = :ws AND c.deleted_at IS NULL AND c.id IN ({visible})
      AND (c.company IS NOT NULL OR c.city IS NOT NULL) AND cardinality(t.grams) > 0
"""
SAME_TRIGRAMS_SQL = """
WITH people AS MATERIALIZED ({people}),
groups AS (
    SELECT array_agg(id) AS ids FROM people WHERE city IS NOT NULL GROUP BY grams, city HAVING count(*) > 1
    UNION ALL
    SELECT array_agg(id) FROM people WHERE company IS NOT NULL GROUP BY grams, company HAVING count(*) > 1
),
pairs AS (
    SELECT DISTINCT a.id AS a, b.id AS b FROM groups g, unnest(g.ids) AS a(id), unnest(g.ids) AS b(id)
    WHERE a.id < b.id
)
SELECT p.a, p.b, CAST(1 AS real) AS score,
       x.company IS NOT NULL AND x.company = y.company, x.city IS NOT NULL AND x.city = y.city
FROM (SELECT * FROM pairs ORDER BY a, b LIMIT :pairs) p
JOIN customers x ON x.workspace_id = :ws AND x.id = p.a
JOIN customers y ON y.workspace_id = :ws AND y.id = p.b
ORDER BY p.a, p.b
"""
SIMILAR_TRIGRAMS_SQL = """
WITH people AS MATERIALIZED ({people}),
grams AS MATERIALIZED (
    SELECT p.id, p.company, p.city, cardinality(p.grams) AS n, g.gram FROM people p, unnest(p.grams) AS g(gram)
),
frequency AS (SELECT gram, count(*) AS f FROM grams GROUP BY gram),
prefixes AS MATERIALIZED (
    SELECT * FROM (
        SELECT g.*, row_number() OVER (PARTITION BY g.id ORDER BY f.f, g.gram) AS k,
               -- The slack keeps float rounding from shortening a prefix.
               g.n - ceil(t * g.n - 1e-9) + 1 AS probe_length,
               g.n - ceil(2 * t / (1 + t) * g.n - 1e-9) + 1 AS index_length
        FROM grams g JOIN frequency f USING (gram), (SELECT CAST(:threshold AS float8) AS t) threshold
    ) ranked
    WHERE k <= probe_length
),
candidates AS (
    SELECT a.id AS a, b.id AS b FROM prefixes a JOIN prefixes b ON b.gram = a.gram AND b.city = a.city
    WHERE (a.n, a.id) < (b.n, b.id) AND a.k <= a.index_length
    UNION
    SELECT a.id, b.id FROM prefixes a JOIN prefixes b ON b.gram = a.gram AND b.company = a.company
    WHERE (a.n, a.id) < (b.n, b.id) AND a.k <= a.index_length
)
SELECT least(x.id, y.id) AS a, greatest(x.id, y.id) AS b, similarity(lower(x.name), lower(y.name)) AS score,
       x.company IS NOT NULL AND x.company = y.company, x.city IS NOT NULL AND x.city = y.city
FROM candidates c JOIN people x ON x.id = c.a JOIN people y ON y.id = c.b
WHERE similarity(lower(x.name), lower(y.name)) >= CAST(:threshold AS float8)
ORDER BY score DESC, a, b
LIMIT :pairs
"""
# Above this, step 2's prefixes are a customer's one or two rarest trigrams.
HIGH_THRESHOLD = 0.8
# The scan reads every visible customer of the workspace: more than a request's usual statement time.
SCAN_SECONDS = 60
SCAN_SETTINGS = f"SET LOCAL statement_timeout = '{SCAN_SECONDS}s'; SET LOCAL work_mem = '256MB'"
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


async def candidate_pairs(
    session: AsyncSession, ctx: Caller, *, threshold: float, pairs: int
) -> list[tuple[uuid.UUID, uuid.UUID, float, bool, bool]]:
    """The `pairs` best (id, id, score, same company, same city) pairs, best first, ids ascending."""
    visible, scope = visible_customer_ids_sql(ctx)
    people = NAME_TRIGRAMS.format(visible=visible)
    params = {"ws": ctx.workspace_id, "pairs": pairs, **scope}
    for statement in SCAN_SETTINGS.split("; "):
        await session.execute(text(statement))
    # On the session's own asyncpg connection, to give the statements the scan's client-side timeout
    # too (the engine's applies to every statement, and SQLAlchemy cannot lift it for one).
    connection: asyncpg.Connection = (await (await session.connection()).get_raw_connection()).driver_connection

    async def fetch(sql: str, values: dict[str, Any]) -> list[asyncpg.Record]:
        compiled = text(sql).compile(dialect=_DIALECT)
        args = [values[name] for name in compiled.positiontup or []]
        return list(await connection.fetch(str(compiled), *args, timeout=SCAN_SECONDS + 2))

    found = await fetch(SAME_TRIGRAMS_SQL.format(people=people), params)
    for level in sorted({max(threshold, HIGH_THRESHOLD), threshold}, reverse=True):
        if len(found) >= pairs:
            break
        found = await fetch(SIMILAR_TRIGRAMS_SQL.format(people=people), {**params, "threshold": level})
    return [(a, b, float(score), bool(company), bool(city)) for a, b, score, company, city in found]


async def find_duplicates(session: AsyncSession, ctx: Caller, *, threshold: float, limit: int) -> list[dict[str, Any]]:
    """Pairs with similar names (trigrams) in the same company or city, joined into groups."""
    rows = await candidate_pairs(session, ctx, threshold=threshold, pairs=limit * 5)
    parent: dict[uuid.UUID, uuid.UUID] = {}

    def root(node: uuid.UUID) -> uuid.UUID:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    reasons: dict[uuid.UUID, set[str]] = {}
    scores: dict[uuid.UUID, float] = {}
    for a, b, score, same_company, same_city in rows:
        parent[root(a)] = root(b)
        found = {"similar name", *(["same company"] if same_company else []), *(["same city"] if same_city else [])}
        for node in (a, b):
            reasons.setdefault(node, set()).update(found)
            scores[node] = max(scores.get(node, 0.0), float(score))
    groups: dict[uuid.UUID, list[uuid.UUID]] = {}
    for node in parent:
        groups.setdefault(root(node), []).append(node)
    result: list[dict[str, Any]] = [
        {
            "customer_ids": sorted(str(m) for m in members),
            "score": round(max(scores[m] for m in members), 3),
            "reasons": sorted(set().union(*(reasons[m] for m in members))),
        }
        for members in groups.values()
        if len(members) > 1
    ]
    return sorted(result, key=lambda group: -group["score"])[:limit]


async def merge(
    session: AsyncSession, ctx: Caller, survivor_id: uuid.UUID, absorb: list[uuid.UUID], choose: dict[str, uuid.UUID]
) -> CustomerMerge:
    if not absorb or len(absorb) > MAX_ABSORBED or survivor_id in absorb or len(set(absorb)) != len(absorb):
        raise ValidationFailed(f"Absorb 1 to {MAX_ABSORBED} other, distinct customers.", loc=["body", "absorb"])
    for field, source in choose.items():
        if field not in CHOOSABLE:
            raise ValidationFailed(f"'{field}' cannot be chosen.", loc=["body", "fields", field])
        if source != survivor_id and source not in absorb:
            raise ValidationFailed("Choose values from the merged customers only.", loc=["body", "fields", field])
    ids = [survivor_id, *absorb]
    rows = (
        await session.scalars(
            select(Customer)
            .where(Customer.id.in_(ids), *visible_customer_clauses(ctx, include_deleted=True))
            .with_for_update()
        )
    ).all()
    by_id = {c.id: c for c in rows}
    if len(by_id) != len(ids):
        raise NotFound("No customer with one of those ids.")
    if any(c.deleted_at is not None for c in rows):
        raise Conflict("Merging with a deleted customer is refused; restore it first.")
    survivor = by_id[survivor_id]
    now = clock.now()
    snapshot: dict[str, Any] = {
        "survivor_before": to_jsonable({name: getattr(survivor, name) for name in _KEPT}),
        "absorbed": {str(a): to_jsonable(event_data(by_id[a])) for a in absorb},
        "moved": {},
    }
    new = {field: getattr(by_id[source], field) for field, source in choose.items()}
    absorbed_identities = await session.execute(
        text(
            "DELETE FROM customer_identities WHERE workspace_id = :ws AND customer_id = ANY(:ids) RETURNING kind, value"
        ),
        {"ws": ctx.workspace_id, "ids": absorb},
    )
    moved_keys = absorbed_identities.all()
    joined_keys = {
        "emails": [v for k, v in moved_keys if k == "email"],
        "phones": [v for k, v in moved_keys if k == "phone"],
    }
    for name in ("emails", "phones"):
        new[name] = list(dict.fromkeys([*getattr(survivor, name), *joined_keys[name]]))[:MAX_CONTACT_POINTS]
    new["tags"] = list(dict.fromkeys([*survivor.tags, *(t for a in absorb for t in by_id[a].tags)]))[:MAX_TAGS]
    changes = customers.assign(survivor, new)
    if moved_keys:
        await session.execute(
            text(
                "INSERT INTO customer_identities (workspace_id, kind, value, customer_id) "
                "SELECT :ws, k, v, :survivor FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS t(k, v) "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "ws": ctx.workspace_id,
                "survivor": survivor_id,
                "kinds": [k for k, _ in moved_keys],
                "values": [v for _, v in moved_keys],
            },
        )
    for table in MOVABLE:
        # The old owner of each row is kept, so an undo can hand every row back to its customer.
        moved = await session.execute(
            text(
                f"WITH old AS (SELECT id, customer_id FROM {table} "
                f"WHERE workspace_id = :ws AND customer_id = ANY(:ids) FOR UPDATE) "
                f"UPDATE {table} t SET customer_id = :survivor FROM old "
                f"WHERE t.workspace_id = :ws AND t.id = old.id RETURNING t.id, old.customer_id"
            ),
            {"ws": ctx.workspace_id, "survivor": survivor_id, "ids": absorb},
        )
        per_owner: dict[str, list[str]] = {}
        for row_id, owner in moved:
            per_owner.setdefault(str(owner), []).append(str(row_id))
        snapshot["moved"][table] = per_owner
    joined = await session.execute(
        text(
            "INSERT INTO segment_members (workspace_id, segment_id, customer_id, added_at) "
            "SELECT workspace_id, segment_id, :survivor, added_at FROM segment_members "
            "WHERE workspace_id = :ws AND customer_id = ANY(:ids) ON CONFLICT DO NOTHING RETURNING segment_id"
        ),
        {"ws": ctx.workspace_id, "survivor": survivor_id, "ids": absorb},
    )
    # Memberships the survivor gained; the absorbed customers keep their own rows.
    snapshot["segments_joined"] = [str(row[0]) for row in joined]
    # Points, lots and level go to the survivor through the ledger; an undo leaves them there.
    snapshot["loyalty_points_moved"] = await loyalty_merges.follow_merge(session, ctx, survivor_id, absorb)
    snapshot["relations"] = await relations.follow_merge(session, ctx, survivor_id, absorb, now=now)
    await session.execute(
        text(
            "UPDATE audit_log SET entity_id = :survivor WHERE workspace_id = :ws AND entity_type = 'customer' "
            "AND entity_id = ANY(:ids)"
        ),
        {"ws": ctx.workspace_id, "survivor": survivor_id, "ids": absorb},
    )
    for absorbed_id in absorb:
        absorbed = by_id[absorbed_id]
        absorbed.deleted_at = now
        absorbed.version += 1
        absorbed.updated_at = now
    customers.record_change(session, ctx, survivor, changes)
    record = CustomerMerge(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        survivor_id=survivor_id,
        absorbed_ids=absorb,
        snapshot=snapshot,
        merged_by=ctx.actor,
        merged_at=now,
    )
    session.add(record)
    await session.flush()
    # Both sides: the orders moved, so the absorbed customers' figures go to zero.
    await customer_values.refresh_customers(session, ctx, [survivor_id, *absorb])
    audit.record(
        session,
        ctx,
        entity_type="customer",
        entity_id=survivor_id,
        action="merged",
        changes={"absorbed": {"before": None, "after": [str(a) for a in absorb]}},
    )
    outbox.emit(
        session,
        ctx,
        "customer.merged",
        {"survivor_id": str(survivor_id), "absorbed_ids": [str(a) for a in absorb], "merge_id": str(record.id)},
    )
    return record


async def undo(session: AsyncSession, ctx: Caller, merge_id: uuid.UUID) -> CustomerMerge:
    """Within 24 hours: the absorbed customers come back with their rows; the survivor's fields too."""
    record = await session.scalar(
        select(CustomerMerge)
        .where(CustomerMerge.workspace_id == ctx.workspace_id, CustomerMerge.id == merge_id)
        .with_for_update()
    )
    if record is None:
        raise NotFound("No merge with that id.")
    if record.undone_at is not None:
        raise Conflict("This merge was already undone.")
    if clock.now() - record.merged_at > UNDO_WINDOW:
        raise Conflict("Merges can be undone for 24 hours only.")
    survivor = await session.scalar(
        select(Customer)
        .where(Customer.id == record.survivor_id, *visible_customer_clauses(ctx, include_deleted=True))
        .with_for_update()
    )
    if survivor is None:
        raise NotFound("The surviving customer is gone.")
    snapshot = record.snapshot
    for table, per_owner in snapshot["moved"].items():
        for owner, ids in per_owner.items():
            await session.execute(
                text(
                    f"UPDATE {table} SET customer_id = :owner WHERE workspace_id = :ws "
                    f"AND id = ANY(CAST(:ids AS uuid[])) AND customer_id = :survivor"
                ),
                {"ws": ctx.workspace_id, "owner": uuid.UUID(owner), "survivor": survivor.id, "ids": ids},
            )
    await session.execute(
        text(
            "DELETE FROM segment_members WHERE workspace_id = :ws AND customer_id = :survivor "
            "AND segment_id = ANY(CAST(:segments AS uuid[]))"
        ),
        {"ws": ctx.workspace_id, "survivor": survivor.id, "segments": snapshot["segments_joined"]},
    )
    # Merges recorded before relations existed have none to give back.
    await relations.undo_merge(session, ctx, snapshot.get("relations", {"moved": [], "removed": []}))
    before = snapshot["survivor_before"]
    added = {("email", e) for e in survivor.emails if e not in before["emails"]} | {
        ("phone", p) for p in survivor.phones if p not in before["phones"]
    }
    changes = customers.assign(survivor, {name: _from_json(name, before[name]) for name in _KEPT})
    for kind, value in added:
        await session.execute(
            text("DELETE FROM customer_identities WHERE workspace_id = :ws AND kind = :kind AND value = :value"),
            {"ws": ctx.workspace_id, "kind": kind, "value": value},
        )
    for absorbed_id in record.absorbed_ids:
        absorbed = await session.get(Customer, (ctx.workspace_id, absorbed_id))
        assert absorbed is not None
        absorbed.deleted_at = None
        absorbed.version += 1
        session.add_all(
            CustomerIdentity(workspace_id=ctx.workspace_id, kind=kind, value=value, customer_id=absorbed_id)
            for kind, values in (("email", absorbed.emails), ("phone", absorbed.phones))
            for value in values
        )
    customers.record_change(session, ctx, survivor, changes)
    record.undone_at = clock.now()
    await session.flush()
    await customer_values.refresh_customers(session, ctx, [survivor.id, *record.absorbed_ids])
    outbox.emit(session, ctx, "customer.merge_undone", {"merge_id": str(record.id)})
    return record


def _from_json(name: str, value: Any) -> Any:
    """A column's value from the JSON a snapshot holds (dates and ids as strings)."""
    python_type = Customer.__table__.c[name].type.python_type
    if value is None or python_type in (str, list):
        return value
    if python_type is date:
        return date.fromisoformat(value)
    if python_type is uuid.UUID:
        return uuid.UUID(value)
    raise TypeError(f"no JSON form for {name}")
