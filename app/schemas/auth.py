"""Token exchange, users, teams and API key models."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from app.core.access import Role, Scope
from app.schemas.common import EmailText, InputModel, Name, OutputModel, Password, ShortText, Timestamp
from app.schemas.outreach import QuietHours, QuietHoursOut


class PasswordGrant(InputModel):
    grant_type: Literal["password"]
    workspace: Annotated[str, Field(min_length=1, max_length=63, examples=["demo"])]
    email: EmailText = Field(examples=["admin@demo.guanxi.dev"])
    password: Annotated[str, Field(min_length=1, max_length=128)]


class RefreshGrant(InputModel):
    grant_type: Literal["refresh_token"]
    refresh_token: Annotated[str, Field(min_length=1, max_length=4096)]


TokenRequest = Annotated[PasswordGrant | RefreshGrant, Field(discriminator="grant_type")]


class TokenOut(OutputModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(examples=[900], description="Seconds the access token is valid.")


class UserCreate(InputModel):
    email: EmailText = Field(examples=["li.na@example.com"])
    name: Name = Field(examples=["李娜"])
    password: Password
    role: Role = Field(examples=["sales"])
    team_id: uuid.UUID | None = None


class UserPatch(InputModel):
    """Only the fields sent change; `team_id: null` takes the user out of its team."""

    name: Name | None = Field(default=None, examples=["李娜"])
    role: Role | None = Field(default=None, examples=["manager"])
    team_id: uuid.UUID | None = None
    is_active: bool | None = Field(default=None, description="false deactivates: the user's credentials stop working.")

    @model_validator(mode="after")
    def _no_null_but_team(self) -> "UserPatch":
        for name in ("name", "role", "is_active"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class PasswordChange(InputModel):
    current_password: Annotated[str, Field(min_length=1, max_length=128)]
    new_password: Password


class PasswordReset(InputModel):
    new_password: Password


class UserOut(OutputModel):
    id: uuid.UUID
    email: str
    name: str
    role: Role
    team_id: uuid.UUID | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
    version: int


class UserList(OutputModel):
    items: list[UserOut]


class TeamCreate(InputModel):
    name: ShortText = Field(examples=["华南销售部"])


class TeamPatch(InputModel):
    name: ShortText = Field(examples=["华东销售部"])


class TeamOut(OutputModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime
    version: int


class TeamList(OutputModel):
    items: list[TeamOut]


class ApiKeyCreate(InputModel):
    name: ShortText = Field(examples=["ERP sync"])
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope), examples=[["customers:read"]])
    expires_at: Timestamp | None = None


class ApiKeyOut(OutputModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(examples=["gx_3k9d2m1q"], description="The public start of the key.")
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The whole key. Shown once; store it now.")


class ApiKeyList(OutputModel):
    items: list[ApiKeyOut]


class WorkspaceOut(OutputModel):
    id: uuid.UUID
    slug: str
    name: str
    customer_code_pattern: str
    currency: str = Field(examples=["CNY"])
    timezone: str = Field(examples=["Asia/Shanghai"])
    default_assignee_id: uuid.UUID | None = Field(
        description="Who gets tasks for customers without an owner; null: the earliest-created active admin."
    )
    quiet_hours: QuietHoursOut | None = Field(
        description="Marketing waits out these local hours on channels without quiet hours of their own."
    )
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        """A workspace row keeps its quiet hours in two columns."""
        if isinstance(data, dict):
            return data
        start, end = data.quiet_start, data.quiet_end
        fields = {name: getattr(data, name) for name in cls.model_fields if name != "quiet_hours"}
        return {**fields, "quiet_hours": {"start": start, "end": end} if start and end else None}


class WorkspacePatch(InputModel):
    """The settings to change; send the ETag of `GET /workspace` as If-Match."""

    name: Name | None = Field(default=None, examples=["深圳腾达科技"])
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, examples=["Asia/Shanghai"], description="An IANA time zone."
    )
    customer_code_pattern: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None,
        examples=["KH-{yyyy}-{seq:06}"],
        description="For codes issued from now on: one `{seq}` or `{seq:0N}`, and `{yyyy}` `{yy}` `{mm}`, "
        "letters, digits, `-_/.`. Existing codes stay.",
    )
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        default=None, examples=["CNY"], description="ISO 4217; only while the workspace has no orders (409 after)."
    )
    default_assignee_id: uuid.UUID | None = Field(
        default=None, description="An active user; null clears it (tasks then go to the earliest-created active admin)."
    )
    quiet_hours: QuietHours | None = Field(
        default=None,
        description="Local hours (the workspace's time zone) when marketing waits, on every channel without "
        "its own; null clears them. Transactional messages are never held.",
    )
