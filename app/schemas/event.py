"""Event stream and webhook endpoint models."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, WithJsonSchema, field_validator

from app.schemas.common import Actor, InputModel, NoNul, Timestamp
from app.services.events.event_catalogue import TYPES, is_valid_filter

# A type of the event catalogue: an enum in the document, built from the catalogue.
EventTypeName = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(TYPES)})]
DeliveryState = Literal["pending", "held", "sending", "succeeded", "failed"]


class EventOut(BaseModel):
    id: uuid.UUID = Field(description="Stable: also the `webhook-id` of every delivery of this event.")
    type: EventTypeName = Field(examples=["customer.created"])
    occurred_at: datetime
    workspace_id: uuid.UUID
    actor: Actor
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class EventTypeOut(BaseModel):
    name: EventTypeName
    description: str
    schema_: dict[str, Any] = Field(alias="schema")


class EventTypeList(BaseModel):
    items: list[EventTypeOut]


EventFilter = Annotated[str, Field(min_length=1, max_length=64), NoNul]


class _EventTypes(InputModel):
    @field_validator("event_types", check_fields=False)
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not is_valid_filter(pattern):
                raise ValueError(f"unknown event type or pattern: {pattern}")
        return list(dict.fromkeys(value)) if value is not None else None


class EndpointCreate(_EventTypes):
    url: AnyHttpUrl = Field(examples=["https://erp.example.com/hooks/guanxi"])
    event_types: list[EventFilter] = Field(min_length=1, max_length=50, examples=[["customer.*"]])
    description: Annotated[str, Field(max_length=500), NoNul] | None = None
    enabled: bool = True


class EndpointPatch(_EventTypes):
    url: AnyHttpUrl | None = None
    event_types: list[EventFilter] | None = Field(default=None, min_length=1, max_length=50)
    description: Annotated[str, Field(max_length=500), NoNul] | None = None
    enabled: bool | None = Field(
        default=None,
        description="Re-enabling clears the failing streak and sends the deliveries held while the endpoint was "
        "disabled, each with a fresh retry schedule.",
    )


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool = Field(description="A disabled endpoint's deliveries are recorded and held, not sent.")
    disabled_reason: str | None = Field(examples=["every attempt failed for 48 hours"])
    consecutive_failures: int = Field(description="Failed attempts since the last success.")
    failing_since: datetime | None = Field(
        description="The first failed attempt since the last success: every attempt has failed since. An endpoint "
        "failing for `GUANXI_WEBHOOK_DISABLE_AFTER_HOURS` is disabled. Null while the latest attempt succeeded."
    )
    secret_rotating_until: datetime | None = Field(
        description="Until then secrets replaced by rotations sign each delivery beside the current one (each for "
        "its own overlap)."
    )
    created_at: datetime
    updated_at: datetime
    version: int


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="`whsec_…`, shown on create and rotate only.")


class EndpointList(BaseModel):
    items: list[EndpointOut]


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: EventTypeName
    state: DeliveryState = Field(
        examples=["succeeded"],
        description="`held`: recorded while the endpoint is disabled, sent once it is enabled again. `failed`: "
        "its retry schedule ran out (or the endpoint answered 410); `redeliver` sends it again.",
    )
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    succeeded_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int | None
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class AttemptList(BaseModel):
    items: list[AttemptOut]


class Redeliver(InputModel):
    """One event by id, or every event of the endpoint in a time range."""

    event_id: uuid.UUID | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None


class RedeliverOut(BaseModel):
    scheduled: int
