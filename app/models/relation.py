"""Relations between customers: a person's company, a company's parent, who referred whom, family."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKeyConstraint, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey

RELATION_KINDS = ("contact_of", "subsidiary_of", "referred_by", "family_of")


class CustomerRelation(TenantKey, Base):
    """`from_customer_id` is `kind` of `to_customer_id` (a contact of a company, a subsidiary of a
    parent, referred by a referrer; family either way). Removed relations keep their row
    (`deleted_at`), so a merge's undo can bring back what the merge dropped."""

    __tablename__ = "customer_relations"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "from_customer_id"], ["customers.workspace_id", "customers.id"]),
        ForeignKeyConstraint(["workspace_id", "to_customer_id"], ["customers.workspace_id", "customers.id"]),
        CheckConstraint("from_customer_id <> to_customer_id", name="not_self"),
        CheckConstraint(f"kind IN ({', '.join(repr(k) for k in RELATION_KINDS)})", name="kind"),
        # One live relation of a kind per ordered pair; it also serves the outgoing side of a list.
        Index(
            "uq_customer_relations_workspace_id_from_to_kind",
            "workspace_id",
            "from_customer_id",
            "to_customer_id",
            "kind",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "ix_customer_relations_workspace_id_to_customer_id",
            "workspace_id",
            "to_customer_id",
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # Family is symmetric: A family_of B and B family_of A are one relation.
        Index(
            "uq_customer_relations_family_pair",
            "workspace_id",
            func.least(text("from_customer_id"), text("to_customer_id")),
            func.greatest(text("from_customer_id"), text("to_customer_id")),
            unique=True,
            postgresql_where=text("kind = 'family_of' AND deleted_at IS NULL"),
        ),
        # A customer was referred by one referrer at most.
        Index(
            "uq_customer_relations_one_referrer",
            "workspace_id",
            "from_customer_id",
            unique=True,
            postgresql_where=text("kind = 'referred_by' AND deleted_at IS NULL"),
        ),
    )

    from_customer_id: Mapped[uuid.UUID]
    to_customer_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    created_by: Mapped[dict[str, Any]]
    deleted_at: Mapped[datetime | None]
