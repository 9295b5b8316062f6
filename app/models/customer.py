"""The customer file: profiles, their unique contact points and the per-workspace code counter."""

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Computed, Date, ForeignKeyConstraint, Index, String, Text, Uuid, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class Customer(TenantKey, Base):
    __tablename__ = "customers"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "owner_id"], ["users.workspace_id", "users.id"]),
        Index("uq_customers_workspace_id_code", "workspace_id", "code", unique=True),
        Index("ix_customers_workspace_id_created_at_id", "workspace_id", "created_at", "id"),
        Index("ix_customers_workspace_id_owner_id", "workspace_id", "owner_id"),
        Index("ix_customers_workspace_id_city", "workspace_id", "city"),
        Index("ix_customers_tags", "tags", postgresql_using="gin"),
        Index(
            "ix_customers_custom_fields",
            "custom_fields",
            postgresql_using="gin",
            postgresql_ops={"custom_fields": "jsonb_path_ops"},
        ),
        # workspace_id in the index (btree_gin): a search reads only its own tenant's entries.
        Index(
            "ix_customers_workspace_id_search_text",
            "workspace_id",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        ),
        Index("ix_customers_workspace_id_search_bigrams", "workspace_id", "search_bigrams", postgresql_using="gin"),
    )

    code: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    emails: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    phones: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    company: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    gender: Mapped[str | None] = mapped_column(String(16))
    birthday: Mapped[date | None] = mapped_column(Date)
    country: Mapped[str | None] = mapped_column(String(2))
    province: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100))
    district: Mapped[str | None] = mapped_column(String(100))
    street: Mapped[str | None] = mapped_column(String(300))
    postcode: Mapped[str | None] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    owner_id: Mapped[uuid.UUID | None]
    preferences: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    custom_fields: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    consent: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    notes: Mapped[str | None] = mapped_column(Text)
    # Lower-cased name, code, emails, phone digits and company: a trigram and a bigram index serve search.
    search_text: Mapped[str] = mapped_column(Text)
    # Its pairs of adjacent Chinese (non-ASCII) characters, kept by PostgreSQL (guanxi_bigrams,
    # migration 0024): any two characters of a name or company find the customer, which trigrams cannot.
    search_bigrams: Mapped[list[str]] = mapped_column(
        ARRAY(Text), Computed("guanxi_bigrams(search_text)", persisted=True)
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deleted_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))


# Short searches (one character, e.g. a surname, or two without a pair of Chinese characters) match
# name prefixes, in name order: C collation makes one index serve both the LIKE prefix and the ORDER BY.
Index(
    "ix_customers_workspace_id_name_prefix",
    Customer.workspace_id,
    text('lower(name::text) COLLATE "C"'),
    Customer.id,
    postgresql_where=Customer.deleted_at.is_(None),
)


class CustomerIdentity(Base):
    """One row per normalised email or phone of a live customer; the unique key enforces the
    duplicate rule inside PostgreSQL, so concurrent creates cannot both win."""

    __tablename__ = "customer_identities"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_customer_identities_workspace_id_customer_id", "workspace_id", "customer_id"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    value: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[uuid.UUID]


class CustomerCodeCounter(Base):
    """Last issued sequence number per workspace and code scope (e.g. `KH-2026-`).

    Incremented in the creating transaction, so a rolled-back create returns its number: gap-free."""

    __tablename__ = "customer_code_counters"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger)


class CustomerMerge(TenantKey, Base):
    """A merge: who survived, who was absorbed, and what moved — kept to explain and to undo."""

    __tablename__ = "customer_merges"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("ix_customer_merges_workspace_id_survivor_id", "workspace_id", "survivor_id"),
    )

    survivor_id: Mapped[uuid.UUID]
    absorbed_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid(as_uuid=True)))
    # The absorbed customers as they were, the survivor's fields before, and the rows re-pointed.
    snapshot: Mapped[dict[str, Any]]
    merged_by: Mapped[dict[str, Any]]
    merged_at: Mapped[datetime]
    undone_at: Mapped[datetime | None]
