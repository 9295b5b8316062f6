"""Roles, scopes and the caller's context that every service receives."""

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Visibility = Literal["own", "team", "all"]


class Scope(StrEnum):
    CUSTOMERS_READ = "customers:read"
    CUSTOMERS_WRITE = "customers:write"
    CUSTOMERS_DELETE = "customers:delete"
    CUSTOMERS_PII = "customers:pii"
    CUSTOM_FIELDS_WRITE = "custom_fields:write"
    AUDIT_READ = "audit:read"
    # The whole workspace's log, records the caller may not see included: admins only by default.
    AUDIT_WORKSPACE = "audit:workspace"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    API_KEYS_WRITE = "api_keys:write"
    EVENTS_READ = "events:read"
    WEBHOOKS_WRITE = "webhooks:write"
    ORDERS_WRITE = "orders:write"
    REPORTS_READ = "reports:read"
    VALUE_ADMIN = "value:admin"
    PLANS_WRITE = "plans:write"
    SERVICE_ADMIN = "service:admin"
    # The workspace's own settings (name, time zone, codes, currency, default assignee): admins only.
    WORKSPACE_ADMIN = "workspace:admin"
    # Channels (and their secrets), message templates and the suppression list.
    OUTREACH_ADMIN = "outreach:admin"
    # Sending a message to a customer the caller can see.
    MESSAGES_SEND = "messages:send"
    # Automation rules: what runs on its own for every customer, so not for sales or support.
    AUTOMATION_WRITE = "automation:write"
    # The loyalty program and levels, points adjusted by hand, level reviews run now.
    LOYALTY_ADMIN = "loyalty:admin"
    # Sales pipelines and their stages: how every salesperson's deals are staged and weighted.
    PIPELINES_ADMIN = "pipelines:admin"


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    SALES = "sales"
    SUPPORT = "support"
    READONLY = "readonly"


ALL_SCOPES = frozenset(Scope)

ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.ADMIN: ALL_SCOPES,
    Role.MANAGER: frozenset(
        {
            Scope.CUSTOMERS_READ,
            Scope.CUSTOMERS_WRITE,
            Scope.CUSTOMERS_DELETE,
            Scope.CUSTOMERS_PII,
            Scope.AUDIT_READ,
            Scope.USERS_READ,
            Scope.ORDERS_WRITE,
            Scope.REPORTS_READ,
            Scope.PLANS_WRITE,
            Scope.SERVICE_ADMIN,
            Scope.OUTREACH_ADMIN,
            Scope.MESSAGES_SEND,
            Scope.AUTOMATION_WRITE,
            Scope.LOYALTY_ADMIN,
            Scope.PIPELINES_ADMIN,
        }
    ),
    Role.SALES: frozenset(
        {
            Scope.CUSTOMERS_READ,
            Scope.CUSTOMERS_WRITE,
            Scope.CUSTOMERS_PII,
            Scope.USERS_READ,
            Scope.ORDERS_WRITE,
            Scope.MESSAGES_SEND,
        }
    ),
    Role.SUPPORT: frozenset(
        {
            Scope.CUSTOMERS_READ,
            Scope.CUSTOMERS_WRITE,
            Scope.CUSTOMERS_PII,
            Scope.AUDIT_READ,
            Scope.USERS_READ,
            Scope.REPORTS_READ,
            Scope.MESSAGES_SEND,
        }
    ),
    Role.READONLY: frozenset({Scope.CUSTOMERS_READ, Scope.USERS_READ}),
}

ROLE_VISIBILITY: dict[Role, Visibility] = {
    Role.ADMIN: "all",
    Role.MANAGER: "team",
    Role.SALES: "own",
    Role.SUPPORT: "all",
    Role.READONLY: "all",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the workspace every query is scoped to, and what they may see and do."""

    workspace_id: uuid.UUID
    actor_type: Literal["user", "api_key", "system", "automation"]
    actor_id: uuid.UUID | None
    scopes: frozenset[str]
    visibility: Visibility
    user_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    # An automation rule's actions: how many automation runs led to this one (1 for a run on a
    # person's change). Written into the actor of every event they emit, so a chain can be stopped.
    chain_depth: int = 0

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def sees_all_jobs(self) -> bool:
        """An admin (or a key holding every scope): reads every caller's exports and imports, which
        otherwise belong to whoever created them."""
        return self.scopes >= ALL_SCOPES

    @property
    def actor(self) -> dict[str, str | int | None]:
        actor: dict[str, str | int | None] = {
            "type": self.actor_type,
            "id": str(self.actor_id) if self.actor_id else None,
        }
        if self.actor_type == "automation":
            actor["depth"] = self.chain_depth
        return actor


def user_caller(*, workspace_id: uuid.UUID, user_id: uuid.UUID, role: Role, team_id: uuid.UUID | None) -> Caller:
    return Caller(
        workspace_id=workspace_id,
        actor_type="user",
        actor_id=user_id,
        scopes=frozenset(ROLE_SCOPES[role]),
        visibility=ROLE_VISIBILITY[role],
        user_id=user_id,
        team_id=team_id,
    )


def system_caller(workspace_id: uuid.UUID) -> Caller:
    return Caller(workspace_id=workspace_id, actor_type="system", actor_id=None, scopes=ALL_SCOPES, visibility="all")


def automation_caller(workspace_id: uuid.UUID, rule_id: uuid.UUID, depth: int) -> Caller:
    """The actions of an automation rule's run: the rule is the actor, `depth` its place in a chain."""
    return Caller(
        workspace_id=workspace_id,
        actor_type="automation",
        actor_id=rule_id,
        scopes=ALL_SCOPES,
        visibility="all",
        chain_depth=depth,
    )
