"""users and teams: one user per email however it is spelled (NFKC case-folded `email_key`), and
versions on teams and users' updates for ETags, and the time a user's password last changed (tokens
issued before it are refused)

Rows whose addresses collide once normalised (possible only with Unicode spellings the old
`lower(email)` index told apart) keep the oldest user on the plain key; each later one gets its id
appended to the key, so it stays stored and listed but signs in only after an admin corrects its email.

Revision ID: b81d4e0c9a27
Revises: ea548bfad438
Create Date: 2026-12-07 20:20:00
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b81d4e0c9a27"
down_revision: str | None = "ea548bfad438"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _email_key(email: str) -> str:
    # Frozen copy of app.services.identity.users.email_key as of this revision.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).casefold())


def upgrade() -> None:
    op.add_column("users", sa.Column("email_key", sa.String(length=1024), nullable=True))
    op.add_column("users", sa.Column("credentials_changed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()))
    op.alter_column("users", "updated_at", nullable=False)
    op.add_column("teams", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()))
    op.alter_column("teams", "updated_at", nullable=False)
    op.add_column("teams", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT workspace_id, id, email FROM users ORDER BY workspace_id, created_at, id"))
    taken: set[tuple[str, str]] = set()
    for workspace_id, user_id, email in rows.all():
        key = _email_key(email)
        if (str(workspace_id), key) in taken:
            key = f"{key}#{user_id}"
        taken.add((str(workspace_id), key))
        bind.execute(
            sa.text("UPDATE users SET email_key = :key WHERE workspace_id = :ws AND id = :id"),
            {"key": key, "ws": workspace_id, "id": user_id},
        )
    op.alter_column("users", "email_key", nullable=False)
    op.drop_index("uq_users_workspace_id_email", table_name="users")
    op.create_index("uq_users_workspace_id_email_key", "users", ["workspace_id", "email_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_workspace_id_email_key", table_name="users")
    op.create_index("uq_users_workspace_id_email", "users", ["workspace_id", sa.text("lower(email)")], unique=True)
    op.drop_column("teams", "version")
    op.drop_column("teams", "updated_at")
    op.drop_column("users", "updated_at")
    op.drop_column("users", "email_key")
    op.drop_column("users", "credentials_changed_at")
