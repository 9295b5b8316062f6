"""Loyalty membership beyond the account: points awarded for the workspace's named actions (once per
customer, action and reference) and the customers who left the program."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class LoyaltyActionAward(Base):
    """One award per (customer, action, reference): the primary key is the guarantee that a retried
    or concurrent award credits once."""

    __tablename__ = "loyalty_action_awards"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["workspace_id", "entry_id"], ["loyalty_entries.workspace_id", "loyalty_entries.id"], ondelete="CASCADE"
        ),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str] = mapped_column(String(200), primary_key=True)
    entry_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime]


class LoyaltyDeparture(Base):
    """A customer who left the program: automatic enrolment does not take them back; enrolling
    explicitly does (and removes this row)."""

    __tablename__ = "loyalty_departures"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    forfeited: Mapped[int] = mapped_column(BigInteger)
    left_at: Mapped[datetime]
