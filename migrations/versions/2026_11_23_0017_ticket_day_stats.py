"""daily ticket figures per workspace, kept by triggers, for the service report

Revision ID: 9d4b2e7f1c83
Revises: 6e1a9c3d7b20
Create Date: 2026-11-23 01:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9d4b2e7f1c83"
down_revision: str | None = "6e1a9c3d7b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What one ticket adds to its day's figures; the triggers, the backfill and the report's partial days
# all read it, so the three cannot disagree. Response times go into logarithmic buckets 2 % wide
# (γ = 1.01 / 0.99): a median read off them is within 1 % of the exact one.
LATENCY_BUCKET = """
CREATE FUNCTION guanxi_latency_bucket(seconds double precision) RETURNS smallint
-- No time (no response yet) is no bucket: least() would otherwise turn it into the last one. Not
-- declared STRICT, which would keep the planner from inlining it (a call per ticket, twice as slow).
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN seconds IS NULL THEN NULL WHEN seconds <= 1 THEN 0
                ELSE least(ceil(ln(seconds) / ln(1.01 / 0.99)), 32767) END::smallint
$$
"""

# The columns of a ticket its figures read, in guanxi_ticket_stat's order.
STAT_COLUMNS = (
    "created_at, status, first_response_breached, resolution_breached, csat_score, first_responded_at, resolved_at"
)

TICKET_STAT = """
CREATE FUNCTION guanxi_ticket_stat(
    created_at timestamptz, status text, first_response_breached boolean, resolution_breached boolean,
    csat_score smallint, first_responded_at timestamptz, resolved_at timestamptz, tz text
)
RETURNS TABLE (day date, judged integer, met integer, csat integer, rated integer,
               first_response_bucket smallint, resolution_bucket smallint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (created_at AT TIME ZONE tz)::date,
           (status IN ('resolved', 'closed') OR first_response_breached OR resolution_breached)::integer,
           (status IN ('resolved', 'closed') AND NOT first_response_breached AND NOT resolution_breached)::integer,
           coalesce(csat_score, 0)::integer,
           (csat_score IS NOT NULL)::integer,
           guanxi_latency_bucket(extract(epoch FROM first_responded_at - created_at)::double precision),
           guanxi_latency_bucket(extract(epoch FROM resolved_at - created_at)::double precision)
$$
"""

# Appends signed rows (+1 for a row as it is now, -1 for a row as it was): no trigger ever updates a
# figure row, so concurrent ticket writes never wait on one another here. guanxi_compact_ticket_stats()
# folds the appended rows into one per key; readers sum whatever is there.
TRACK_BODY = """
    WITH changes AS ({changes}),
    facts AS (
        SELECT c.sign, c.workspace_id, c.type, c.channel, c.category_id, s.*
        FROM changes c
        -- A workspace being deleted takes its figures with it: its tickets' rows add nothing.
        JOIN workspaces w ON w.id = c.workspace_id
        CROSS JOIN LATERAL guanxi_ticket_stat({stat_columns}, w.timezone) s
    ),
    counted AS (
        INSERT INTO ticket_day_counts (workspace_id, day, type, channel, category_id, tickets, sla_judged,
                                       sla_met, csat_sum, csat_count)
        SELECT workspace_id, day, type, channel, category_id, sum(sign), sum(sign * judged), sum(sign * met),
               sum(sign * csat), sum(sign * rated)
        FROM facts GROUP BY 1, 2, 3, 4, 5
        HAVING sum(sign) <> 0 OR sum(sign * judged) <> 0 OR sum(sign * met) <> 0
            OR sum(sign * csat) <> 0 OR sum(sign * rated) <> 0
    )
    INSERT INTO ticket_day_latency (workspace_id, day, metric, bucket, tickets)
    SELECT f.workspace_id, f.day, m.metric, m.bucket, sum(f.sign)
    FROM facts f
    CROSS JOIN LATERAL (VALUES ('first_response', f.first_response_bucket),
                               ('resolution', f.resolution_bucket)) m(metric, bucket)
    WHERE m.bucket IS NOT NULL
    GROUP BY 1, 2, 3, 4 HAVING sum(f.sign) <> 0;
"""

_STAT_OF_C = ", ".join(f"c.{column.strip()}" for column in STAT_COLUMNS.split(","))
_CHANGED = f"workspace_id, type, channel, category_id, {STAT_COLUMNS}"
CHANGES = {
    "INSERT": f"SELECT {_CHANGED}, 1 AS sign FROM new_rows",
    "DELETE": f"SELECT {_CHANGED}, -1 AS sign FROM old_rows",
    "UPDATE": f"SELECT {_CHANGED}, 1 AS sign FROM new_rows UNION ALL SELECT {_CHANGED}, -1 FROM old_rows",
}

TRACK_FUNCTION = (
    "CREATE FUNCTION guanxi_track_ticket_stats() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
    + "\n".join(
        f"    {'IF' if n == 0 else 'ELSIF'} TG_OP = '{op_name}' THEN{TRACK_BODY.format(changes=changes, stat_columns=_STAT_OF_C)}"
        for n, (op_name, changes) in enumerate(CHANGES.items())
    )
    + "    END IF;\n    RETURN NULL;\nEND\n$$"
)

# One statement: the appended rows of a key go and their sum comes in their place, atomically, so a
# reader sees the figures before or after, never half. Rows appended after the statement's snapshot
# stay for the next run.
COMPACT_FUNCTION = """
CREATE FUNCTION guanxi_compact_ticket_stats() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    folded integer := 0;
    n integer;
BEGIN
    -- One fold at a time: two at once would each write a row for a key both saw appended to.
    IF NOT pg_try_advisory_xact_lock(hashtext('guanxi_compact_ticket_stats')) THEN
        RETURN 0;
    END IF;
    WITH touched AS (
        SELECT DISTINCT workspace_id, day, type, channel, category_id FROM ticket_day_counts WHERE NOT compacted
    ),
    gone AS (
        DELETE FROM ticket_day_counts c USING touched k
        WHERE c.workspace_id = k.workspace_id AND c.day = k.day AND c.type = k.type AND c.channel = k.channel
          AND c.category_id IS NOT DISTINCT FROM k.category_id
        RETURNING c.*
    )
    INSERT INTO ticket_day_counts (workspace_id, day, type, channel, category_id, tickets, sla_judged, sla_met,
                                   csat_sum, csat_count, compacted)
    SELECT workspace_id, day, type, channel, category_id, sum(tickets), sum(sla_judged), sum(sla_met),
           sum(csat_sum), sum(csat_count), true
    FROM gone GROUP BY 1, 2, 3, 4, 5
    HAVING sum(tickets) <> 0 OR sum(sla_judged) <> 0 OR sum(sla_met) <> 0 OR sum(csat_sum) <> 0
        OR sum(csat_count) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    folded := folded + n;
    WITH touched AS (
        SELECT DISTINCT workspace_id, day, metric, bucket FROM ticket_day_latency WHERE NOT compacted
    ),
    gone AS (
        DELETE FROM ticket_day_latency l USING touched k
        WHERE l.workspace_id = k.workspace_id AND l.day = k.day AND l.metric = k.metric AND l.bucket = k.bucket
        RETURNING l.*
    )
    INSERT INTO ticket_day_latency (workspace_id, day, metric, bucket, tickets, compacted)
    SELECT workspace_id, day, metric, bucket, sum(tickets), true
    FROM gone GROUP BY 1, 2, 3, 4 HAVING sum(tickets) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN folded + n;
END
$$
"""

_STAT_OF_T = ", ".join(f"t.{column.strip()}" for column in STAT_COLUMNS.split(","))
BACKFILL_COUNTS = """
INSERT INTO ticket_day_counts (workspace_id, day, type, channel, category_id, tickets, sla_judged, sla_met,
                               csat_sum, csat_count, compacted)
SELECT t.workspace_id, s.day, t.type, t.channel, t.category_id, count(*), sum(s.judged), sum(s.met), sum(s.csat),
       sum(s.rated), true
FROM tickets t JOIN workspaces w ON w.id = t.workspace_id CROSS JOIN LATERAL guanxi_ticket_stat({stat_columns}, w.timezone) s
GROUP BY 1, 2, 3, 4, 5
"""

BACKFILL_LATENCY = """
INSERT INTO ticket_day_latency (workspace_id, day, metric, bucket, tickets, compacted)
SELECT t.workspace_id, s.day, m.metric, m.bucket, count(*), true
FROM tickets t JOIN workspaces w ON w.id = t.workspace_id CROSS JOIN LATERAL guanxi_ticket_stat({stat_columns}, w.timezone) s
CROSS JOIN LATERAL (VALUES ('first_response', s.first_response_bucket), ('resolution', s.resolution_bucket))
    m(metric, bucket)
WHERE m.bucket IS NOT NULL
GROUP BY 1, 2, 3, 4
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ticket_day_counts (
            workspace_id uuid NOT NULL
                CONSTRAINT fk_ticket_day_counts_workspace_id_workspaces REFERENCES workspaces (id) ON DELETE CASCADE,
            day date NOT NULL,
            type varchar(16) NOT NULL,
            channel varchar(16) NOT NULL,
            category_id uuid,
            tickets integer NOT NULL,
            sla_judged integer NOT NULL,
            sla_met integer NOT NULL,
            csat_sum integer NOT NULL,
            csat_count integer NOT NULL,
            compacted boolean NOT NULL DEFAULT false
        )
        """
    )
    op.execute("CREATE INDEX ix_ticket_day_counts_workspace_id_day ON ticket_day_counts (workspace_id, day)")
    op.execute("CREATE INDEX ix_ticket_day_counts_appended ON ticket_day_counts (workspace_id) WHERE NOT compacted")
    op.execute(
        """
        CREATE TABLE ticket_day_latency (
            workspace_id uuid NOT NULL
                CONSTRAINT fk_ticket_day_latency_workspace_id_workspaces REFERENCES workspaces (id) ON DELETE CASCADE,
            day date NOT NULL,
            metric varchar(16) NOT NULL,
            bucket smallint NOT NULL,
            tickets integer NOT NULL,
            compacted boolean NOT NULL DEFAULT false
        )
        """
    )
    op.execute("CREATE INDEX ix_ticket_day_latency_workspace_id_day ON ticket_day_latency (workspace_id, day)")
    op.execute("CREATE INDEX ix_ticket_day_latency_appended ON ticket_day_latency (workspace_id) WHERE NOT compacted")
    # The report's CSAT by tier and by segment reads only rated tickets, from the index alone.
    op.execute(
        "CREATE INDEX ix_tickets_rated ON tickets (workspace_id, created_at) INCLUDE (customer_id, csat_score, tier) "
        "WHERE csat_score IS NOT NULL"
    )
    op.execute(LATENCY_BUCKET)
    op.execute(TICKET_STAT)
    op.execute(TRACK_FUNCTION)
    op.execute(COMPACT_FUNCTION)
    for event, referencing in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER tickets_stats_{event.lower()} AFTER {event} ON tickets REFERENCING {referencing} "
            "FOR EACH STATEMENT EXECUTE FUNCTION guanxi_track_ticket_stats()"
        )
    op.execute(
        """
        CREATE FUNCTION guanxi_truncate_ticket_stats() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE ticket_day_counts, ticket_day_latency;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER tickets_stats_truncate AFTER TRUNCATE ON tickets "
        "FOR EACH STATEMENT EXECUTE FUNCTION guanxi_truncate_ticket_stats()"
    )
    op.execute(BACKFILL_COUNTS.format(stat_columns=_STAT_OF_T))
    op.execute(BACKFILL_LATENCY.format(stat_columns=_STAT_OF_T))


def downgrade() -> None:
    for event in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER tickets_stats_{event} ON tickets")
    op.execute("DROP FUNCTION guanxi_truncate_ticket_stats()")
    op.execute("DROP FUNCTION guanxi_compact_ticket_stats()")
    op.execute("DROP FUNCTION guanxi_track_ticket_stats()")
    op.execute(
        "DROP FUNCTION guanxi_ticket_stat(timestamptz, text, boolean, boolean, smallint, timestamptz, timestamptz, text)"
    )
    op.execute("DROP FUNCTION guanxi_latency_bucket(double precision)")
    op.execute("DROP INDEX ix_tickets_rated")
    op.execute("DROP TABLE ticket_day_latency")
    op.execute("DROP TABLE ticket_day_counts")
