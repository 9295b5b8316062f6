"""Custom field definition models."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from app.schemas.common import InputModel, Label, OutputModel, ShortText

FieldType = Literal["text", "integer", "number", "boolean", "date", "select", "multiselect"]
FieldKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["vip_level"])]
MAX_SAFE = 2**53


class CustomFieldRules(InputModel):
    max_length: int | None = Field(default=None, ge=1, le=2000, description="text: longest value")
    min: float | None = Field(default=None, ge=-MAX_SAFE, le=MAX_SAFE, description="integer/number: lowest")
    max: float | None = Field(default=None, ge=-MAX_SAFE, le=MAX_SAFE, description="integer/number: highest")
    options: list[Label] | None = Field(
        default=None, min_length=1, max_length=200, description="select/multiselect: allowed values"
    )


def check_rules(field_type: FieldType, rules: CustomFieldRules) -> None:
    if field_type in ("select", "multiselect") and not rules.options:
        raise ValueError("select and multiselect fields need rules.options")
    if field_type not in ("select", "multiselect") and rules.options is not None:
        raise ValueError("rules.options applies only to select and multiselect fields")
    if field_type != "text" and rules.max_length is not None:
        raise ValueError("rules.max_length applies only to text fields")
    if field_type not in ("integer", "number") and (rules.min is not None or rules.max is not None):
        raise ValueError("rules.min and rules.max apply only to integer and number fields")
    if rules.min is not None and rules.max is not None and rules.min > rules.max:
        raise ValueError("rules.min must not exceed rules.max")


class CustomFieldCreate(InputModel):
    key: FieldKey
    label: ShortText = Field(examples=["VIP level"])
    type: FieldType = Field(examples=["select"])
    required: bool = False
    rules: CustomFieldRules = Field(default_factory=CustomFieldRules)

    @model_validator(mode="after")
    def _rules_fit_type(self) -> "CustomFieldCreate":
        check_rules(self.type, self.rules)
        return self


class CustomFieldPatch(InputModel):
    """Key and type are fixed once created; label, required and rules can change."""

    label: ShortText | None = None
    required: bool | None = None
    rules: CustomFieldRules | None = None


class CustomFieldOut(OutputModel):
    id: uuid.UUID
    key: str
    label: str
    type: FieldType
    required: bool
    rules: dict[str, object]
    created_at: datetime
    updated_at: datetime
    version: int


class CustomFieldList(OutputModel):
    items: list[CustomFieldOut]
