"""Relations between customers: input and output models."""

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from app.schemas.common import Actor, InputModel, Reason
from app.schemas.customer import CustomerKind


class RelationKind(StrEnum):
    """`contact_of`: a person (individual) works for a company. `subsidiary_of`: a company belongs to
    a parent company (no cycles). `referred_by`: a customer was referred by another (one referrer,
    no cycles). `family_of`: symmetric, either way round is the same relation."""

    CONTACT_OF = "contact_of"
    SUBSIDIARY_OF = "subsidiary_of"
    REFERRED_BY = "referred_by"
    FAMILY_OF = "family_of"


class RelationDirection(StrEnum):
    """Seen from the customer in the path: `outgoing` when it is the relation's `from` end (it is
    `kind` of the other), `incoming` when it is the `to` end, `mutual` for a symmetric kind."""

    OUTGOING = "outgoing"
    INCOMING = "incoming"
    MUTUAL = "mutual"


class RelationIn(InputModel):
    """The customer in the path is `kind` of `to_customer_id`."""

    kind: RelationKind = Field(examples=["contact_of"])
    to_customer_id: uuid.UUID = Field(description="The other customer: the company, parent, referrer or relative.")
    note: Reason | None = Field(default=None, examples=["采购负责人"])


class RelatedCustomer(BaseModel):
    id: uuid.UUID
    code: str = Field(examples=["KH-2026-000042"])
    name: str = Field(examples=["深圳腾达科技有限公司"])
    kind: CustomerKind


class RelationOut(BaseModel):
    id: uuid.UUID
    kind: RelationKind
    direction: RelationDirection
    from_customer_id: uuid.UUID
    to_customer_id: uuid.UUID
    other: RelatedCustomer = Field(description="The customer at the other end, as the caller may see it.")
    note: str | None
    created_at: datetime
    created_by: Actor


class RelationPage(BaseModel):
    items: list[RelationOut]
    next_cursor: str | None
