"""Test data: tenants with a user per role, API keys and customers, created through the services."""

import uuid
from dataclasses import dataclass, field
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Role, Scope
from app.core.settings import get_settings
from app.models import Team, User, Workspace
from app.services.identity import api_keys, tokens, users

PASSWORD = "correct horse battery"
# Hashed once: Argon2 is slow by design, and tests create many users.
PASSWORD_HASH = PasswordHash.recommended().hash(PASSWORD)


@dataclass
class Tenant:
    workspace: Workspace
    team: Team
    users: dict[str, User] = field(default_factory=dict)

    @property
    def id(self) -> uuid.UUID:
        return self.workspace.id

    def headers(self, who: str = "admin") -> dict[str, str]:
        """Bearer headers for the user named `who` (a role name, or `sales2`, `manager2`...)."""
        user = self.users[who]
        token, _ = tokens.issue(
            get_settings(),
            token_type="access",
            user_id=user.id,
            workspace_id=user.workspace_id,
            role=Role(user.role),
            team_id=user.team_id,
        )
        return {"Authorization": f"Bearer {token}"}


async def make_user(
    session: AsyncSession, workspace_id: uuid.UUID, role: Role, *, team_id: uuid.UUID | None, email: str
) -> User:
    user = User(
        workspace_id=workspace_id,
        email=email,
        email_key=users.email_key(email),
        name=email.split("@")[0],
        password_hash=PASSWORD_HASH,
        role=role.value,
        team_id=team_id,
        is_active=True,
        created_at=clock.now(),
        updated_at=clock.now(),
        version=1,
    )
    session.add(user)
    return user


async def make_tenant(session: AsyncSession, slug: str | None = None) -> Tenant:
    slug = slug or f"t-{uuid.uuid4().hex[:12]}"
    workspace = Workspace(slug=slug, name=slug, customer_code_pattern="KH-{yyyy}-{seq:06}", created_at=clock.now())
    session.add(workspace)
    await session.flush()
    team = Team(workspace_id=workspace.id, name="East", created_at=clock.now(), updated_at=clock.now(), version=1)
    other_team = Team(workspace_id=workspace.id, name="West", created_at=clock.now(), updated_at=clock.now(), version=1)
    session.add_all([team, other_team])
    await session.flush()
    tenant = Tenant(workspace=workspace, team=team)
    people: list[tuple[str, Role, uuid.UUID | None]] = [
        ("admin", Role.ADMIN, None),
        ("manager", Role.MANAGER, team.id),
        ("sales", Role.SALES, team.id),
        ("sales2", Role.SALES, team.id),
        ("sales_west", Role.SALES, other_team.id),
        ("support", Role.SUPPORT, None),
        ("readonly", Role.READONLY, None),
    ]
    for name, role, team_id in people:
        tenant.users[name] = await make_user(session, workspace.id, role, team_id=team_id, email=f"{name}@{slug}.test")
    await session.flush()
    return tenant


async def make_api_key(session: AsyncSession, tenant: Tenant, scopes: list[Scope] | None = None) -> str:
    _, key = await api_keys.issue(session, tenant.id, name="test key", scopes=scopes or list(Scope))
    await session.flush()
    return key


def customer_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "张伟", "emails": [f"{uuid.uuid4().hex[:10]}@example.com"]}
    body.update(overrides)
    return body
