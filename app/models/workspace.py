"""Workspaces: the tenants every other row belongs to."""

import uuid
from datetime import datetime

from sqlalchemy import ForeignKeyConstraint, String, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.core.ids import new_id
from app.models.base import Base

DEFAULT_CUSTOMER_CODE_PATTERN = "KH-{yyyy}-{seq:06}"


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        # The default assignee is a user of this workspace; added after both tables exist (they refer
        # to each other).
        ForeignKeyConstraint(
            ["id", "default_assignee_id"],
            ["users.workspace_id", "users.id"],
            use_alter=True,
            name="fk_workspaces_default_assignee_id_users",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    customer_code_pattern: Mapped[str] = mapped_column(String(64), server_default=DEFAULT_CUSTOMER_CODE_PATTERN)
    # Orders are recorded in this currency, so spend figures add up.
    currency: Mapped[str] = mapped_column(String(3), server_default="CNY")
    # Local time for contact-hour preferences and "today" in task views.
    timezone: Mapped[str] = mapped_column(String(64), server_default="Asia/Shanghai")
    interaction_outcomes: Mapped[list[str]] = mapped_column(
        ARRAY(String(32)),
        server_default=text(
            "ARRAY['reached', 'no_answer', 'interested', 'not_interested', 'issue_raised', 'order_placed']"
        ),
    )
    # Quiet hours (local "HH:MM", start after end spans midnight) for channels without their own.
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    # Tasks for a customer without an owner go to this user (app/services/engagement/assignees.py).
    default_assignee_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    version: Mapped[int] = mapped_column(server_default=text("1"))
