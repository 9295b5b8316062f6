"""Record visibility in one place: every customer query starts from the caller's visible set."""

from sqlalchemy import ColumnElement, false, select

from app.access import Caller
from app.models import Customer, User


def visible_customer_clauses(ctx: Caller, *, include_deleted: bool = False) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [Customer.workspace_id == ctx.workspace_id]
    if not include_deleted:
        clauses.append(Customer.deleted_at.is_(None))
    if ctx.visibility == "own":
        clauses.append(Customer.owner_id == ctx.user_id if ctx.user_id else false())
    elif ctx.visibility == "team":
        if ctx.team_id is None:
            clauses.append(Customer.owner_id == ctx.user_id if ctx.user_id else false())
        else:
            team_members = select(User.id).where(User.workspace_id == ctx.workspace_id, User.team_id == ctx.team_id)
            clauses.append(Customer.owner_id.in_(team_members))
    return clauses
