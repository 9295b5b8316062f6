"""guanxi_customer_search_text(): the one definition of a customer's search text

Revision ID: 7c2e5a9d4f61
Revises: 3f8a1c6e2d47
Create Date: 2026-12-07 19:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7c2e5a9d4f61"
down_revision: str | None = "3f8a1c6e2d47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every writer of customers (API create and change, batch, import, merge, bench seed) computes
    # search_text with this. One expression without a sub-select, declared STABLE like the functions
    # it calls, so PostgreSQL inlines it into a bulk statement rather than calling it row by row.
    # Phones are E.164: '+' is only ever their first character, so dropping every '+' keeps the digits.
    op.execute(
        """
        CREATE FUNCTION guanxi_customer_search_text(name text, code text, emails text[], phones text[], company text)
        RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT lower(concat_ws(' ', name, code, NULLIF(array_to_string(emails, ' '), ''),
                NULLIF(translate(array_to_string(phones, ' '), '+', ''), ''), NULLIF(company, '')))
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION guanxi_customer_search_text(text, text, text[], text[], text)")
