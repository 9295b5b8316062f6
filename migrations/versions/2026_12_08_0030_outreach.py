"""outreach: channels (secrets sealed), messages to customers, the suppression list

Revision ID: c7e1a0d29f41
Revises: c174c1b061a8
Create Date: 2026-12-08 00:20:33
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c7e1a0d29f41"
down_revision: str | None = "c174c1b061a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sealed_secrets", sa.Text(), nullable=False),
        sa.Column("callback_token", sa.String(length=64), nullable=False),
        sa.Column("quiet_start", sa.String(length=5), nullable=True),
        sa.Column("quiet_end", sa.String(length=5), nullable=True),
        sa.Column("cap_count", sa.Integer(), nullable=True),
        sa.Column("cap_hours", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_channels_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_channels")),
    )
    op.create_index("uq_channels_callback_token", "channels", ["callback_token"], unique=True)
    op.create_table(
        "suppressions",
        sa.Column("medium", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_suppressions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_suppressions")),
    )
    op.create_index("uq_suppressions_address", "suppressions", ["workspace_id", "medium", "address"], unique=True)
    op.create_table(
        "messages",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("actor", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("send_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queued_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.String(length=500), nullable=True),
        sa.Column("interaction_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "channel_id"],
            ["channels.workspace_id", "channels.id"],
            name=op.f("fk_messages_workspace_id_channel_id_channels"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_messages_workspace_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_messages_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_cap", "messages", ["workspace_id", "customer_id", "channel_id", "created_at"], unique=False
    )
    op.create_index("ix_messages_customer", "messages", ["workspace_id", "customer_id", "id"], unique=False)
    op.create_index(
        "ix_messages_due", "messages", ["send_after"], unique=False, postgresql_where=sa.text("status = 'queued'")
    )
    op.create_index("ix_messages_provider_id", "messages", ["channel_id", "provider_message_id"], unique=False)
    op.create_index(
        "ix_messages_recipient", "messages", ["workspace_id", "channel_id", "recipient", "id"], unique=False
    )
    op.create_index(
        "ix_messages_sending",
        "messages",
        ["locked_until"],
        unique=False,
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.create_index("uq_messages_dedupe_key", "messages", ["workspace_id", "dedupe_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_messages_dedupe_key", table_name="messages")
    op.drop_index("ix_messages_sending", table_name="messages", postgresql_where=sa.text("status = 'sending'"))
    op.drop_index("ix_messages_recipient", table_name="messages")
    op.drop_index("ix_messages_provider_id", table_name="messages")
    op.drop_index("ix_messages_due", table_name="messages", postgresql_where=sa.text("status = 'queued'"))
    op.drop_index("ix_messages_customer", table_name="messages")
    op.drop_index("ix_messages_cap", table_name="messages")
    op.drop_table("messages")
    op.drop_index("uq_suppressions_address", table_name="suppressions")
    op.drop_table("suppressions")
    op.drop_index("uq_channels_callback_token", table_name="channels")
    op.drop_table("channels")
