"""customers.search_bigrams: the pairs of adjacent Chinese characters of the search text, kept by
PostgreSQL and indexed, so any two characters of a name or company find the customer; a finer sample
of the search text for the planner

Revision ID: 5d1b7e3a9c24
Revises: 1731bfcdaa4d
Create Date: 2026-12-07 21:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5d1b7e3a9c24"
down_revision: str | None = "1731bfcdaa4d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # pg_trgm finds no trigram in a two-character query, and in a database with the C locale none in
    # Chinese text at all. The bigrams are the adjacent pairs inside each run of non-ASCII, non-space
    # characters: Latin text, digits and emails keep the trigram index, and the search asks for the
    # bigrams of the query by this same function, so both sides always agree.
    op.execute(
        r"""
        CREATE FUNCTION guanxi_bigrams(value text) RETURNS text[]
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
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
    # A generated column rather than an index on the expression: a search that walks the customers
    # in id order tests the pairs of each row it passes, and computing them there costs more than
    # reading the row. Every writer keeps search_text current; PostgreSQL keeps this from it.
    op.execute(
        "ALTER TABLE customers ADD COLUMN search_bigrams text[] NOT NULL "
        "GENERATED ALWAYS AS (guanxi_bigrams(search_text)) STORED"
    )
    op.execute(
        "CREATE INDEX ix_customers_workspace_id_search_bigrams ON customers USING gin (workspace_id, search_bigrams)"
    )
    # The planner estimates a LIKE on the search text from a sample of it; at the default size the
    # sample cannot tell a substring of 0.1 % of the customers from one of 1 %, and it picks between
    # reading the matches and walking the customers in id order on that estimate.
    op.execute("ALTER TABLE customers ALTER COLUMN search_text SET STATISTICS 1000")


def downgrade() -> None:
    op.execute("ALTER TABLE customers ALTER COLUMN search_text SET STATISTICS -1")
    op.execute("DROP INDEX ix_customers_workspace_id_search_bigrams")
    op.execute("ALTER TABLE customers DROP COLUMN search_bigrams")
    op.execute("DROP FUNCTION guanxi_bigrams(text)")
