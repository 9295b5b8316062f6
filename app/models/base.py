"""Declarative base, constraint naming and the column shapes every table shares."""

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, Uuid, event, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from app.core.ids import new_id

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        uuid.UUID: Uuid(as_uuid=True),
    }


@event.listens_for(Base, "mapper_configured", propagate=True)
def _hold_times_in_utc(mapper: Mapper[Any], class_: type) -> None:
    """Every time set on a row is held in UTC, as the database hands times back: whatever is
    presented from a row just written (a deadline counted in the workspace's business hours, say)
    then says `Z` like a read, and the JSON encoder never meets another offset."""
    for prop in mapper.column_attrs:
        if isinstance(prop.columns[0].type, DateTime):
            event.listen(getattr(class_, prop.key), "set", _in_utc, retval=True)


def _in_utc(_target: object, value: Any, *_event: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


class TenantKey:
    """Primary key `(workspace_id, id)`: a cross-tenant link cannot exist in the database itself."""

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
