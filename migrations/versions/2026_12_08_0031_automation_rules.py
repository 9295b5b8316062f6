"""automation rules and their runs; care rules become automation rules

Revision ID: 3f1c2a9d7b10
Revises: c7e1a0d29f41
Create Date: 2026-12-08 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3f1c2a9d7b10"
down_revision: str | None = "c7e1a0d29f41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A care rule is a date trigger (its lead as a negative offset) with one create_task action; it keeps
# its id, so /care-rules/{id} still names it.
CARE_TO_AUTOMATION = """
INSERT INTO automation_rules (workspace_id, id, name, active, trigger_kind, trigger, actions, managed_by,
                              created_at, updated_at, version)
SELECT workspace_id, id, name, active, 'date',
       jsonb_build_object(
           'kind', 'date',
           'date', CASE kind WHEN 'birthday' THEN 'birthday' WHEN 'custom_date' THEN 'custom_field' ELSE 'fixed' END,
           'field_key', field_key, 'month', month, 'day', day, 'calendar', calendar,
           'offset_days', -lead_days, 'audience', NULL),
       jsonb_build_array(jsonb_build_object(
           'type', 'create_task', 'title', task_title, 'kind', 'care', 'priority', 'normal',
           'due_in_days', 0, 'assignee_id', NULL)),
       'care_rules', created_at, updated_at, version
FROM care_rules
"""

# The reminders care rules already made become their runs (`care:<rule>:<customer>:<year>`), so a
# run in the same year after the move makes none again.
CARE_TASKS_TO_RUNS = """
INSERT INTO automation_runs (workspace_id, id, rule_id, trigger_key, customer_id, event_id, occasion,
                             depth, outcome, reason, actions, ran_at)
SELECT t.workspace_id, guanxi_uuid7(), r.id, substr(t.dedupe_key, 80), t.customer_id, NULL,
       (t.due_at AT TIME ZONE coalesce(w.timezone, 'UTC'))::date, 0, 'ok', NULL,
       '[{"index": 0, "type": "create_task", "outcome": "ok"}]'::jsonb, t.created_at
FROM tasks t
JOIN automation_rules r ON r.workspace_id = t.workspace_id AND r.id = CAST(substr(t.dedupe_key, 6, 36) AS uuid)
JOIN workspaces w ON w.id = t.workspace_id
WHERE t.origin = 'care' AND t.dedupe_key ~ '^care:[0-9a-f-]{36}:[0-9a-f-]{36}:'
  AND substr(t.dedupe_key, 43, 36) = t.customer_id::text
ON CONFLICT DO NOTHING
"""

AUTOMATION_TO_CARE = """
INSERT INTO care_rules (workspace_id, id, name, kind, calendar, month, day, field_key, lead_days, task_title,
                        active, created_at, updated_at, version)
SELECT workspace_id, id, name,
       CASE trigger ->> 'date' WHEN 'birthday' THEN 'birthday' WHEN 'custom_field' THEN 'custom_date'
                               ELSE 'fixed_date' END,
       trigger ->> 'calendar', CAST(trigger ->> 'month' AS smallint), CAST(trigger ->> 'day' AS smallint),
       trigger ->> 'field_key', -CAST(trigger ->> 'offset_days' AS smallint), actions -> 0 ->> 'title',
       active, created_at, updated_at, version
FROM automation_rules WHERE managed_by = 'care_rules' AND deleted_at IS NULL
"""


def upgrade() -> None:
    op.create_table(
        "automation_rules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("trigger_kind", sa.String(length=16), nullable=False),
        sa.Column("trigger", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("actions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("listening_since_txid", sa.BigInteger(), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("managed_by", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_automation_rules_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_automation_rules")),
    )
    op.create_index(
        "ix_automation_rules_event_type",
        "automation_rules",
        ["workspace_id", "event_type"],
        postgresql_where=sa.text("active AND deleted_at IS NULL AND trigger_kind = 'event'"),
    )
    op.create_index(
        "ix_automation_rules_next_run_at",
        "automation_rules",
        ["next_run_at"],
        postgresql_where=sa.text("active AND deleted_at IS NULL AND trigger_kind = 'schedule'"),
    )
    op.create_table(
        "automation_runs",
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("trigger_key", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("occasion", sa.Date(), nullable=True),
        sa.Column("depth", sa.SmallInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("actions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_automation_runs_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "rule_id"],
            ["automation_rules.workspace_id", "automation_rules.id"],
            name=op.f("fk_automation_runs_workspace_id_rule_id_automation_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_automation_runs")),
    )
    op.create_index(
        "uq_automation_runs_rule_trigger_customer",
        "automation_runs",
        ["workspace_id", "rule_id", "trigger_key", "customer_id"],
        unique=True,
    )
    op.create_index("ix_automation_runs_workspace_id_rule_id_id", "automation_runs", ["workspace_id", "rule_id", "id"])
    op.create_table(
        "automation_event_cursors",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_automation_event_cursors_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_automation_event_cursors")),
    )
    op.execute(CARE_TO_AUTOMATION)
    op.execute(CARE_TASKS_TO_RUNS)
    op.drop_table("care_rules")


def downgrade() -> None:
    op.create_table(
        "care_rules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("calendar", sa.String(length=9), server_default="gregorian", nullable=False),
        sa.Column("month", sa.SmallInteger(), nullable=True),
        sa.Column("day", sa.SmallInteger(), nullable=True),
        sa.Column("field_key", sa.String(length=64), nullable=True),
        sa.Column("lead_days", sa.SmallInteger(), nullable=False),
        sa.Column("task_title", sa.String(length=300), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_care_rules_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_care_rules")),
    )
    op.execute(AUTOMATION_TO_CARE)
    op.drop_table("automation_event_cursors")
    op.drop_index("ix_automation_runs_workspace_id_rule_id_id", table_name="automation_runs")
    op.drop_index("uq_automation_runs_rule_trigger_customer", table_name="automation_runs")
    op.drop_table("automation_runs")
    op.drop_index(
        "ix_automation_rules_next_run_at",
        table_name="automation_rules",
        postgresql_where=sa.text("active AND deleted_at IS NULL AND trigger_kind = 'schedule'"),
    )
    op.drop_index(
        "ix_automation_rules_event_type",
        table_name="automation_rules",
        postgresql_where=sa.text("active AND deleted_at IS NULL AND trigger_kind = 'event'"),
    )
    op.drop_table("automation_rules")
