"""Message templates: input and output models, the variable catalogue and previews."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import Actor, InputModel, Name, NoNul
from app.schemas.segment import FilterFieldType

# Sizes of the template texts as sent; a rendered text has its own limit (RENDERED_LIMIT in the service).
SUBJECT_LIMIT, TEXT_LIMIT, HTML_LIMIT, PARAM_LIMIT = 1_000, 20_000, 100_000, 500
MAX_SMS_PARAMS, MAX_VARIABLES = 30, 50


class TemplateChannel(StrEnum):
    """What a template renders for: `email` (subject, text, optional HTML), `sms` (a provider template
    code and sign name with its parameters, and a local text), `wecom` (a WeCom group robot's
    message) or `http` (the body of a signed HTTP call). Alibaba Cloud and Tencent Cloud SMS
    channels both take `sms` templates."""

    EMAIL = "email"
    SMS = "sms"
    WECOM = "wecom"
    HTTP = "http"


# Template texts are kept as sent: whitespace and line breaks are part of a message.
SubjectTemplate = Annotated[str, StringConstraints(min_length=1, max_length=SUBJECT_LIMIT), NoNul]
TextTemplate = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_LIMIT), NoNul]
HtmlTemplate = Annotated[str, StringConstraints(min_length=1, max_length=HTML_LIMIT), NoNul]
ParamTemplate = Annotated[str, StringConstraints(max_length=PARAM_LIMIT), NoNul]
SmsParamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
SmsCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["SMS_154950909"])]
SignName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True), NoNul]
VariableName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["coupon_code"])]
Locale = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", examples=["zh-CN"])]

_SMS_PARAMS = (
    "SMS only: the provider template's parameters, each a template, in the order the provider takes "
    "them. Alibaba Cloud names them (`name`, `code`); for Tencent Cloud name them `1`, `2`, ... "
    "in their positional order."
)


class MessageTemplateIn(InputModel):
    """A template. Each text is a Jinja template over `customer.*`, `workspace.name` and the
    declared `vars.*` (GET /message-templates/variables lists them); every variable is checked
    when the template is saved."""

    name: Name = Field(examples=["生日祝福"])
    channel: TemplateChannel
    locale: Locale | None = None
    subject: SubjectTemplate | None = Field(
        default=None, description="Email only, required there.", examples=["{{ customer.name }}，生日快乐"]
    )
    body: TextTemplate = Field(
        description=(
            "Email: the text part. SMS: the local text the provider template stands for (for previews and the "
            "timeline's record of what was sent). WeCom and HTTP: the message body."
        ),
        examples=["{{ customer.name }}，祝您生日快乐！"],
    )
    html: HtmlTemplate | None = Field(default=None, description="Email only: an HTML part; values are HTML-escaped.")
    sms_template_code: SmsCode | None = Field(default=None, description="SMS only, required there.")
    sms_sign_name: SignName | None = Field(
        default=None, description="SMS only, required there: the approved signature.", examples=["关系科技"]
    )
    sms_params: dict[SmsParamName, ParamTemplate] | None = Field(
        default=None, max_length=MAX_SMS_PARAMS, description=_SMS_PARAMS, examples=[{"name": "{{ customer.name }}"}]
    )
    variables: list[VariableName] = Field(
        default_factory=list,
        max_length=MAX_VARIABLES,
        description="Names of the values a sender supplies, used as `vars.<name>`; each is required at render.",
    )


class MessageTemplatePatch(InputModel):
    """The fields to change; the channel is fixed. `null` clears `locale` and `html`."""

    name: Name | None = None
    locale: Locale | None = None
    subject: SubjectTemplate | None = None
    body: TextTemplate | None = None
    html: HtmlTemplate | None = None
    sms_template_code: SmsCode | None = None
    sms_sign_name: SignName | None = None
    sms_params: dict[SmsParamName, ParamTemplate] | None = Field(default=None, max_length=MAX_SMS_PARAMS)
    variables: list[VariableName] | None = Field(default=None, max_length=MAX_VARIABLES)


class MessageTemplateContent(BaseModel):
    """What a template says at one version."""

    name: str = Field(examples=["生日祝福"])
    channel: TemplateChannel
    locale: str | None = Field(examples=["zh-CN"])
    subject: str | None
    body: str = Field(examples=["{{ customer.name }}，祝您生日快乐！"])
    html: str | None
    sms_template_code: str | None = Field(examples=["SMS_154950909"])
    sms_sign_name: str | None = Field(examples=["关系科技"])
    sms_params: dict[str, str] = Field(examples=[{"name": "{{ customer.name }}"}])
    variables: list[str] = Field(examples=[["coupon_code"]])


class MessageTemplateOut(MessageTemplateContent):
    id: uuid.UUID
    version: int = Field(description="The ETag; each version stays readable under /versions.")
    created_at: datetime
    updated_at: datetime
    created_by: Actor


class MessageTemplatePage(BaseModel):
    items: list[MessageTemplateOut]
    next_cursor: str | None


class MessageTemplateRevisionOut(BaseModel):
    template_id: uuid.UUID
    version: int
    created_at: datetime
    created_by: Actor
    content: MessageTemplateContent


class MessageTemplateRevisionPage(BaseModel):
    items: list[MessageTemplateRevisionOut]
    next_cursor: str | None


class TemplateVariable(BaseModel):
    path: str = Field(examples=["customer.custom_fields.vip_level"])
    type: FilterFieldType = Field(examples=["string"], description="The filter catalogue's type of the field.")
    label: str = Field(examples=["VIP level"])
    personal: bool = Field(description="Personal data: masked in previews for callers without `customers:pii`.")


class TemplateVariableList(BaseModel):
    items: list[TemplateVariable]


class PreviewIn(InputModel):
    customer_id: uuid.UUID
    variables: dict[VariableName, Annotated[str, StringConstraints(max_length=1_000), NoNul] | int | float | bool] = (
        Field(default_factory=dict, max_length=MAX_VARIABLES, examples=[{"coupon_code": "BDAY-2026"}])
    )


class SmsPreview(BaseModel):
    template_code: str
    sign_name: str
    params: dict[str, str]
    characters: int = Field(description="Characters of the text as the phone shows it: 【sign】 and the text.")
    encoding: Literal["gsm7", "ucs2"] = Field(
        examples=["ucs2"], description="`gsm7`, or `ucs2` for any other character (Chinese)."
    )
    segments: int = Field(
        description="Messages billed: GSM-7 160 characters (153 each when split), UCS-2 70 (67 each when split)."
    )


class PreviewOut(BaseModel):
    template_id: uuid.UUID
    template_version: int
    channel: TemplateChannel
    subject: str | None
    text: str
    html: str | None
    sms: SmsPreview | None
    pii_masked: bool = Field(description="Personal values were masked: the caller lacks `customers:pii`.")
