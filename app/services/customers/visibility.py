"""Record visibility in one place: every customer query starts from the caller's visible set."""

import uuid
from typing import Any, TypeVar

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, false, select
from sqlalchemy.dialects.postgresql import psycopg2
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller, Visibility
from app.core.errors import NotFound
from app.models import Customer, User
from app.models.base import Base

# Any table with `workspace_id` and `customer_id`, keyed by `id` or not (a survey's answers are keyed
# by their customer).
Row = TypeVar("Row", bound=Base)


def effective_visibility(ctx: Caller) -> Visibility:
    # A manager outside any team sees what a salesperson sees: its own customers.
    return "own" if ctx.visibility == "team" and ctx.team_id is None else ctx.visibility


def _clauses(
    visibility: Visibility, include_deleted: bool, workspace_id: Any, user_id: Any, team_id: Any
) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [Customer.workspace_id == workspace_id]
    if not include_deleted:
        clauses.append(Customer.deleted_at.is_(None))
    if visibility == "own":
        clauses.append(Customer.owner_id == user_id)
    elif visibility == "team":
        team_members = select(User.id).where(User.workspace_id == workspace_id, User.team_id == team_id)
        clauses.append(Customer.owner_id.in_(team_members))
    return clauses


def visible_customer_clauses(ctx: Caller, *, include_deleted: bool = False) -> list[ColumnElement[bool]]:
    visibility = effective_visibility(ctx)
    if visibility == "own" and ctx.user_id is None:
        return [false()]
    return _clauses(visibility, include_deleted, ctx.workspace_id, ctx.user_id, ctx.team_id)


SCOPE_PARAMS: dict[str, BindParameter[Any]] = {
    "workspace_id": bindparam("scope_workspace_id"),
    "user_id": bindparam("scope_user_id"),
    "team_id": bindparam("scope_team_id"),
}


def visible_customer_template(visibility: Visibility, *, include_deleted: bool) -> list[ColumnElement[bool]]:
    """The same clauses with bound parameters, for statements compiled once; see scope_params."""
    return _clauses(
        visibility, include_deleted, SCOPE_PARAMS["workspace_id"], SCOPE_PARAMS["user_id"], SCOPE_PARAMS["team_id"]
    )


def scope_params(ctx: Caller) -> dict[str, Any]:
    return {"scope_workspace_id": ctx.workspace_id, "scope_user_id": ctx.user_id, "scope_team_id": ctx.team_id}


_NAMED = psycopg2.dialect(paramstyle="named")  # type: ignore[no-untyped-call]


def visible_customer_ids_sql(ctx: Caller) -> tuple[str, dict[str, Any]]:
    """The same rule as SQL text with `:named` parameters, for hand-written report queries.
    (The bind casts SQLAlchemy adds, `::UUID`, would read as part of the name in `text()`.)"""
    statement = select(Customer.id).where(*visible_customer_template(effective_visibility(ctx), include_deleted=False))
    sql = str(statement.compile(dialect=_NAMED)).replace("::UUID", "")
    return sql, scope_params(ctx)


def through_customer(model: type[Row], ctx: Caller) -> Select[Row]:
    """Rows that belong to a customer (tasks, interactions, tickets, survey answers): visible as their
    customer is."""
    customer_of: Any = model
    return (
        select(model)
        .join(Customer, (Customer.workspace_id == customer_of.workspace_id) & (Customer.id == customer_of.customer_id))
        .where(customer_of.workspace_id == ctx.workspace_id, *visible_customer_clauses(ctx))
    )


async def require_visible(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> None:
    """404 for a customer the caller may not see, as for one that does not exist."""
    found = await session.scalar(select(Customer.id).where(Customer.id == customer_id, *visible_customer_clauses(ctx)))
    if found is None:
        raise NotFound("No customer with that id.")
