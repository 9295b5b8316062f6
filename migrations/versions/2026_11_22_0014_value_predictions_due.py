"""customer_values rows whose lifetime-value prediction is due

A figures write (an order, an order import, a merge, the nightly pass) marks the row; the worker
predicts marked rows in batches and clears the mark, so the order's own transaction no longer
computes and writes the prediction.

Revision ID: 8a4c2e7f1b93
Revises: 5d2f8a61c9e3
Create Date: 2026-11-22 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8a4c2e7f1b93"
down_revision: str | None = "5d2f8a61c9e3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customer_values", sa.Column("prediction_due", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.create_index(
        "ix_customer_values_prediction_due",
        "customer_values",
        ["workspace_id", "customer_id"],
        unique=False,
        postgresql_where=sa.text("prediction_due"),
    )


def downgrade() -> None:
    op.drop_index("ix_customer_values_prediction_due", table_name="customer_values")
    op.drop_column("customer_values", "prediction_due")
