"""Message templates for outreach (email, SMS, WeCom robot, HTTP) and every version they had."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKeyConstraint, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey

TEMPLATE_CHANNELS = ("email", "sms", "wecom", "http")


class MessageTemplate(TenantKey, Base):
    """The current version of a template; `version` is its ETag and the number of its newest
    `MessageTemplateRevision`. Deleted templates keep their row (`deleted_at`), so the versions
    that sent messages name stay readable."""

    __tablename__ = "message_templates"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        CheckConstraint(f"channel IN ({', '.join(repr(c) for c in TEMPLATE_CHANNELS)})", name="channel"),
        # One live template per name and locale (no locale counts as one).
        Index(
            "uq_message_templates_workspace_id_name_locale",
            "workspace_id",
            "name",
            func.coalesce(text("locale"), text("''")),
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(8))
    locale: Mapped[str | None] = mapped_column(String(35))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    sms_template_code: Mapped[str | None] = mapped_column(String(64))
    sms_sign_name: Mapped[str | None] = mapped_column(String(64))
    # Provider parameter name -> template expression, in the order the provider takes them.
    sms_params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    # Names of the caller-supplied `vars.*` the template may use.
    variables: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[dict[str, Any]]
    deleted_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class MessageTemplateRevision(Base):
    """What a template held at one version, written with that version: a message records the
    template id and version it was rendered from, and this row is what that version said."""

    __tablename__ = "message_template_revisions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "template_id"],
            ["message_templates.workspace_id", "message_templates.id"],
            ondelete="CASCADE",
        ),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    template_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The template's fields at this version, as `present` shows them (name ... variables).
    content: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[dict[str, Any]]
