"""Lead scoring: the workspace's rules document and each customer's score."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class LeadScoringRules(Base):
    """One versioned document per workspace: its rules and the half-life of their decay. A workspace
    without a row scores nobody (the default document, version 0)."""

    __tablename__ = "lead_scoring_rules"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    document: Mapped[dict[str, Any]]
    version: Mapped[int]
    updated_at: Mapped[datetime]
    # Set by a save, cleared by the recompute that applies it.
    recompute_requested_at: Mapped[datetime | None]
    scored_at: Mapped[datetime | None]


class CustomerLeadScore(Base):
    """A customer's score, written only by the recompute and only when it changed. No row is a
    score of 0."""

    __tablename__ = "customer_lead_scores"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_customer_lead_scores_workspace_id_score", "workspace_id", "score", "customer_id"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime]
