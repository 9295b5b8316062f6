"""loyalty_day_figures: the ledger's movements per workspace, local day and kind, appended by
statement triggers on loyalty_entries, folded by guanxi_compact_loyalty_figures() and counted again
when the workspace's zone changes, for the loyalty report

Revision ID: 7c3f1a9e5d62
Revises: 5c7e2a9d4b11
Create Date: 2026-12-08 04:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7c3f1a9e5d62"
down_revision: str | None = "5c7e2a9d4b11"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Appends signed rows (an entry as it is now counts +1, as it was −1): no trigger updates a figure
# row, so two ledger writes never wait on one another here. The workspace's time zone is read under a
# key-share lock: a change of zone (which holds the workspace's row for update) waits for this write's
# commit and rebuilds after it, or this write waits and reads the new zone. A workspace being deleted
# takes its figures with it: its entries' rows add nothing.
TRACK_BODY = """
    WITH changes AS ({changes}),
    zones AS (
        SELECT id, timezone FROM workspaces WHERE id IN (SELECT workspace_id FROM changes) FOR KEY SHARE
    )
    INSERT INTO loyalty_day_figures (workspace_id, day, kind, entries, points)
    SELECT c.workspace_id, (c.created_at AT TIME ZONE z.timezone)::date, c.kind, sum(c.sign), sum(c.sign * c.points)
    FROM changes c JOIN zones z ON z.id = c.workspace_id
    GROUP BY 1, 2, 3 HAVING sum(c.sign) <> 0 OR sum(c.sign * c.points) <> 0;
"""
_CHANGED = "workspace_id, created_at, kind, points"
CHANGES = {
    "INSERT": f"SELECT {_CHANGED}, 1 AS sign FROM new_rows",
    "DELETE": f"SELECT {_CHANGED}, -1 AS sign FROM old_rows",
    "UPDATE": f"SELECT {_CHANGED}, 1 AS sign FROM new_rows UNION ALL SELECT {_CHANGED}, -1 FROM old_rows",
}
TRACK_FUNCTION = (
    "CREATE FUNCTION guanxi_track_loyalty_figures() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
    + "\n".join(
        f"    {'IF' if n == 0 else 'ELSIF'} TG_OP = '{op_name}' THEN{TRACK_BODY.format(changes=changes)}"
        for n, (op_name, changes) in enumerate(CHANGES.items())
    )
    + "    END IF;\n    RETURN NULL;\nEND\n$$"
)

# A key's appended rows go and their sum comes in their place in one statement, so a reader sees the
# figures before or after, never half; rows appended after its snapshot stay for the next run. The
# workspaces are key-share locked first, in a statement of their own: a change of zone in flight
# (which rebuilds the workspace's figures under its row lock) is waited for before any figure row is
# taken, so neither waits on the other's rows.
COMPACT_FUNCTION = """
CREATE FUNCTION guanxi_compact_loyalty_figures() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    locked uuid[];
    n integer;
BEGIN
    -- One fold at a time: two at once would each write a row for a key both saw appended to.
    IF NOT pg_try_advisory_xact_lock(hashtext('guanxi_compact_loyalty_figures')) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(id) INTO locked FROM (
        SELECT id FROM workspaces
        WHERE id IN (SELECT workspace_id FROM loyalty_day_figures WHERE NOT compacted)
        ORDER BY id FOR KEY SHARE
    ) w;
    WITH touched AS (
        SELECT DISTINCT workspace_id, day, kind FROM loyalty_day_figures
        WHERE NOT compacted AND workspace_id = ANY (locked)
    ),
    gone AS (
        DELETE FROM loyalty_day_figures f USING touched k
        WHERE f.workspace_id = k.workspace_id AND f.day = k.day AND f.kind = k.kind
        RETURNING f.*
    )
    INSERT INTO loyalty_day_figures (workspace_id, day, kind, entries, points, compacted)
    SELECT workspace_id, day, kind, sum(entries), sum(points), true
    FROM gone GROUP BY 1, 2, 3 HAVING sum(entries) <> 0 OR sum(points) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$
"""

# Days are local: a workspace whose zone changes has its figures counted again in the new zone, in
# the transaction of the change. Its row is taken for update first (the API's update already holds
# it), so ledger writes that read the old zone have committed and are counted here, and later ones
# wait and read the new zone.
REZONE_FUNCTION = """
CREATE FUNCTION guanxi_rezone_loyalty_figures() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM workspaces WHERE id = NEW.id FOR UPDATE;
    DELETE FROM loyalty_day_figures WHERE workspace_id = NEW.id;
    INSERT INTO loyalty_day_figures (workspace_id, day, kind, entries, points, compacted)
    SELECT workspace_id, (created_at AT TIME ZONE NEW.timezone)::date, kind, count(*), sum(points), true
    FROM loyalty_entries WHERE workspace_id = NEW.id
    GROUP BY 1, 2, 3;
    RETURN NULL;
END
$$
"""

BACKFILL = """
INSERT INTO loyalty_day_figures (workspace_id, day, kind, entries, points, compacted)
SELECT e.workspace_id, (e.created_at AT TIME ZONE w.timezone)::date, e.kind, count(*), sum(e.points), true
FROM loyalty_entries e JOIN workspaces w ON w.id = e.workspace_id
GROUP BY 1, 2, 3
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE loyalty_day_figures (
            workspace_id uuid NOT NULL
                CONSTRAINT fk_loyalty_day_figures_workspace_id_workspaces REFERENCES workspaces (id) ON DELETE CASCADE,
            day date NOT NULL,
            kind varchar(16) NOT NULL,
            entries bigint NOT NULL,
            points bigint NOT NULL,
            compacted boolean NOT NULL DEFAULT false
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_loyalty_day_figures_workspace_id_day ON loyalty_day_figures (workspace_id, day) "
        "INCLUDE (kind, entries, points)"
    )
    op.execute("CREATE INDEX ix_loyalty_day_figures_appended ON loyalty_day_figures (workspace_id) WHERE NOT compacted")
    # The report reads the entries of a period's partial first and last days live: from this index
    # alone, however large the ledger.
    op.execute(
        "CREATE INDEX ix_loyalty_entries_workspace_id_created_at ON loyalty_entries (workspace_id, created_at) "
        "INCLUDE (kind, points)"
    )
    op.execute(TRACK_FUNCTION)
    op.execute(COMPACT_FUNCTION)
    op.execute(REZONE_FUNCTION)
    op.execute(
        "CREATE TRIGGER workspaces_rezone_loyalty_figures AFTER UPDATE OF timezone ON workspaces FOR EACH ROW "
        "WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone) EXECUTE FUNCTION guanxi_rezone_loyalty_figures()"
    )
    for event, referencing in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER loyalty_entries_figures_{event.lower()} AFTER {event} ON loyalty_entries "
            f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION guanxi_track_loyalty_figures()"
        )
    op.execute(
        """
        CREATE FUNCTION guanxi_truncate_loyalty_figures() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE loyalty_day_figures;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER loyalty_entries_figures_truncate AFTER TRUNCATE ON loyalty_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION guanxi_truncate_loyalty_figures()"
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    for event in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER loyalty_entries_figures_{event} ON loyalty_entries")
    op.execute("DROP TRIGGER workspaces_rezone_loyalty_figures ON workspaces")
    op.execute("DROP FUNCTION guanxi_rezone_loyalty_figures()")
    op.execute("DROP FUNCTION guanxi_truncate_loyalty_figures()")
    op.execute("DROP FUNCTION guanxi_compact_loyalty_figures()")
    op.execute("DROP FUNCTION guanxi_track_loyalty_figures()")
    op.execute("DROP INDEX ix_loyalty_entries_workspace_id_created_at")
    op.execute("DROP TABLE loyalty_day_figures")
