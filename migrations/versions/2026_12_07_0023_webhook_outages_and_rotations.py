"""webhooks through outages and rotations: an endpoint's failing streak (`failing_since`), deliveries
held while their endpoint is disabled (state `held`) and a retry schedule that restarts
(`schedule_offset`), and every secret replaced within its overlap kept signing (`previous_secrets`)

Endpoints disabled at upgrade are marked for the workers to hold their pending deliveries
(`settling`); a secret still in its overlap moves into `previous_secrets`. The downgrade makes held
deliveries pending again and keeps, of the secrets still signing, the one that signs longest.

Revision ID: 1731bfcdaa4d
Revises: 5c3e8a1f0b62
Create Date: 2026-12-07 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1731bfcdaa4d"
down_revision: str | None = "5c3e8a1f0b62"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_endpoints", sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "webhook_endpoints",
        sa.Column(
            "previous_secrets", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )  # fmt: skip
    op.execute("""
        UPDATE webhook_endpoints
        SET previous_secrets = jsonb_build_array(jsonb_build_object(
            'secret', previous_secret,
            'expires_at', to_char(previous_secret_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
        WHERE previous_secret IS NOT NULL AND previous_secret_expires_at > now()
    """)
    op.drop_column("webhook_endpoints", "previous_secret_expires_at")
    op.drop_column("webhook_endpoints", "previous_secret")
    op.add_column(
        "webhook_deliveries",
        sa.Column("schedule_offset", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "webhook_endpoints", sa.Column("settling", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    # The workers hold the pending deliveries of endpoints disabled now, a batch at a time.
    op.execute("UPDATE webhook_endpoints SET settling = true WHERE NOT enabled")
    op.create_index(
        "ix_webhook_deliveries_held",
        "webhook_deliveries",
        ["workspace_id", "endpoint_id"],
        unique=False,
        postgresql_where=sa.text("state = 'held'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_deliveries_held", table_name="webhook_deliveries", postgresql_where=sa.text("state = 'held'")
    )
    op.execute("UPDATE webhook_deliveries SET state = 'pending' WHERE state = 'held'")
    op.drop_column("webhook_deliveries", "schedule_offset")
    op.add_column("webhook_endpoints", sa.Column("previous_secret", sa.String(length=100), nullable=True))
    op.add_column(
        "webhook_endpoints", sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("""
        UPDATE webhook_endpoints e
        SET previous_secret = last.secret, previous_secret_expires_at = last.expires_at
        FROM (
            SELECT DISTINCT ON (workspace_id, id) workspace_id, id, s->>'secret' AS secret,
                   (s->>'expires_at')::timestamptz AS expires_at
            FROM webhook_endpoints, jsonb_array_elements(previous_secrets) AS s
            ORDER BY workspace_id, id, (s->>'expires_at')::timestamptz DESC
        ) last
        WHERE e.workspace_id = last.workspace_id AND e.id = last.id
    """)
    op.drop_column("webhook_endpoints", "previous_secrets")
    op.drop_column("webhook_endpoints", "settling")
    op.drop_column("webhook_endpoints", "failing_since")
