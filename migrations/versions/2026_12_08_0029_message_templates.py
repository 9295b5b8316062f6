"""message templates for outreach, and every version each had

Revision ID: c174c1b061a8
Revises: 6b3fdf69cc7c
Create Date: 2026-12-08 00:20:30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c174c1b061a8"
down_revision: str | None = "6b3fdf69cc7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_templates",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("sms_template_code", sa.String(length=64), nullable=True),
        sa.Column("sms_sign_name", sa.String(length=64), nullable=True),
        sa.Column("sms_params", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("variables", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("channel IN ('email', 'sms', 'wecom', 'http')", name=op.f("ck_message_templates_channel")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_message_templates_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_message_templates")),
    )
    op.create_index(
        "uq_message_templates_workspace_id_name_locale",
        "message_templates",
        ["workspace_id", "name", sa.literal_column("coalesce(locale, '')")],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "message_template_revisions",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "template_id"],
            ["message_templates.workspace_id", "message_templates.id"],
            name=op.f("fk_message_template_revisions_workspace_id_template_id_message_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "template_id", "version", name=op.f("pk_message_template_revisions")),
    )


def downgrade() -> None:
    op.drop_table("message_template_revisions")
    op.drop_index(
        "uq_message_templates_workspace_id_name_locale",
        table_name="message_templates",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_table("message_templates")
