"""guanxi_bigrams() and a GIN index of the bigrams of customers' search text: any two characters of a
Chinese name or company find the customer

Revision ID: 5d1b7e3a9c24
Revises: b81d4e0c9a27
Create Date: 2026-12-07 21:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5d1b7e3a9c24"
down_revision: str | None = "b81d4e0c9a27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # pg_trgm finds no trigram in a two-character query, and in a database with the C locale none in
    # Chinese text at all. The bigrams are the adjacent pairs inside each run of non-ASCII,
    # non-space characters: Latin text, digits and e-mail addresses keep the trigram index, and the
    # search asks for the bigrams of the query by this same function, so both sides always agree.
    # An index on the expression, not a stored column: every writer already keeps search_text
    # current, and the table's rows stay as narrow as they were. COST 10, not plpgsql's 100: in a scan
    # of the customers in id order the planner would price it on every row, and go parallel for a
    # first page, though it runs only on the rows the LIKE beside it has already matched.
    op.execute(
        r"""
        CREATE FUNCTION guanxi_bigrams(value text) RETURNS text[]
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE COST 10 AS $$
        DECLARE
            run text;
            pairs text[] := '{}';
        BEGIN
            FOR run IN SELECT (regexp_matches(value, '[^\x01-\x7f\s]{2,}', 'g'))[1] LOOP
                FOR i IN 1 .. length(run) - 1 LOOP
                    pairs := pairs || substr(run, i, 2);
                END LOOP;
            END LOOP;
            RETURN pairs;
        END
        $$
        """
    )
    op.execute(
        "CREATE INDEX ix_customers_workspace_id_search_bigrams ON customers "
        "USING gin (workspace_id, guanxi_bigrams(search_text))"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_customers_workspace_id_search_bigrams")
    op.execute("DROP FUNCTION guanxi_bigrams(text)")
