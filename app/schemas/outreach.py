"""Outreach: channels (their settings and write-only secrets), messages, suppressions, provider callbacks."""

import ssl
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from app.schemas.common import EmailText, InputModel, Label, LongText, MediumText, NoNul, Reason, ShortText
from app.schemas.message_template import MAX_VARIABLES, VariableName

ChannelKind = Literal["email", "sms_aliyun", "sms_tencent", "wecom_robot", "http"]
Purpose = Literal["transactional", "marketing"]
MessageStatus = Literal["queued", "sending", "sent", "delivered", "failed", "unknown"]
Medium = Literal["email", "sms"]
SuppressionReason = Literal["bounce", "unsubscribe", "complaint", "manual"]
Outcome = Literal["accepted", "rejected", "unknown"]

Secret = Annotated[str, StringConstraints(min_length=1, max_length=500), NoNul]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")]
Url = Annotated[AnyHttpUrl, Field(max_length=2048)]


class QuietHours(InputModel):
    """Local times in the workspace's zone; `start` after `end` spans midnight."""

    start: ClockTime = Field(examples=["21:00"])
    end: ClockTime = Field(examples=["08:00"])


class FrequencyCap(InputModel):
    count: int = Field(ge=1, le=1000, examples=[2], description="Marketing messages per customer...")
    hours: int = Field(ge=1, le=8760, examples=[24], description="...in this rolling window.")


class SmtpSettings(InputModel):
    host: Host = Field(examples=["smtp.exmail.qq.com"])
    port: int = Field(default=465, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = Field(
        default="tls", description="`tls`: TLS from the start (465); `starttls`: upgraded (587); `none`: plain."
    )
    username: ShortText | None = Field(default=None, examples=["crm@example.com"])
    from_address: EmailText = Field(examples=["crm@example.com"])
    from_name: ShortText | None = Field(default=None, examples=["关系 CRM"])
    ca_certificate: Annotated[str, StringConstraints(min_length=1, max_length=50_000), NoNul] | None = Field(
        default=None,
        description="PEM certificate(s) of the CA (or the server's own self-signed certificate) to trust for "
        "this server instead of the system's roots, for a mail server with a private CA. The server's "
        "certificate and its name are always verified; there is no way to turn that off.",
    )

    @field_validator("ca_certificate")
    @classmethod
    def _loads(cls, pem: str | None) -> str | None:
        if pem is not None:
            try:
                ssl.create_default_context(cadata=pem)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"not a PEM certificate OpenSSL can load ({exc})") from exc
        return pem


class SmtpSecrets(InputModel):
    password: Secret | None = None


class AliyunSmsSettings(InputModel):
    access_key_id: Identifier = Field(examples=["LTAI5tExampleKeyId"])
    sign_name: ShortText = Field(examples=["关系科技"])
    endpoint: Url = Field(default=AnyHttpUrl("https://dysmsapi.aliyuncs.com/"))
    region: Label = "cn-hangzhou"


class AliyunSmsSecrets(InputModel):
    access_key_secret: Secret


class TencentSmsSettings(InputModel):
    secret_id: Identifier = Field(examples=["AKIDExampleSecretId"])
    sdk_app_id: Identifier = Field(examples=["1400006666"])
    sign_name: ShortText = Field(examples=["关系科技"])
    endpoint: Url = Field(default=AnyHttpUrl("https://sms.tencentcloudapi.com/"))
    region: Label = "ap-guangzhou"


class TencentSmsSecrets(InputModel):
    secret_key: Secret


class WecomRobotSettings(InputModel):
    endpoint: Url = Field(default=AnyHttpUrl("https://qyapi.weixin.qq.com/cgi-bin/webhook/send"))


class WecomRobotSecrets(InputModel):
    key: Secret = Field(description="The `key` of the robot's webhook address.")


class HttpSettings(InputModel):
    url: Url = Field(examples=["https://partner.example.com/guanxi/messages"])


class HttpSecrets(InputModel):
    signing_secret: Annotated[str, StringConstraints(pattern=r"^whsec_[A-Za-z0-9+/=]{24,200}$")] = Field(
        description="Standard Webhooks secret (`whsec_…`) the receiver verifies with."
    )


class _ChannelIn(InputModel):
    name: ShortText = Field(examples=["会员短信"])
    quiet_hours: QuietHours | None = Field(
        default=None,
        description="Marketing on this channel waits out these hours. Null: the workspace's default quiet hours "
        "apply; equal `start` and `end`: none on this channel, whatever the default.",
    )
    frequency_cap: FrequencyCap | None = None


class EmailChannelIn(_ChannelIn):
    kind: Literal["email"]
    settings: SmtpSettings
    secrets: SmtpSecrets = Field(default_factory=SmtpSecrets)


class AliyunSmsChannelIn(_ChannelIn):
    kind: Literal["sms_aliyun"]
    settings: AliyunSmsSettings
    secrets: AliyunSmsSecrets


class TencentSmsChannelIn(_ChannelIn):
    kind: Literal["sms_tencent"]
    settings: TencentSmsSettings
    secrets: TencentSmsSecrets


class WecomRobotChannelIn(_ChannelIn):
    kind: Literal["wecom_robot"]
    settings: WecomRobotSettings = Field(default_factory=WecomRobotSettings)
    secrets: WecomRobotSecrets


class HttpChannelIn(_ChannelIn):
    kind: Literal["http"]
    settings: HttpSettings
    secrets: HttpSecrets


ChannelIn = Annotated[
    EmailChannelIn | AliyunSmsChannelIn | TencentSmsChannelIn | WecomRobotChannelIn | HttpChannelIn,
    Field(discriminator="kind"),
]

SETTINGS: dict[str, type[InputModel]] = {
    "email": SmtpSettings,
    "sms_aliyun": AliyunSmsSettings,
    "sms_tencent": TencentSmsSettings,
    "wecom_robot": WecomRobotSettings,
    "http": HttpSettings,
}
SECRETS: dict[str, type[InputModel]] = {
    "email": SmtpSecrets,
    "sms_aliyun": AliyunSmsSecrets,
    "sms_tencent": TencentSmsSecrets,
    "wecom_robot": WecomRobotSecrets,
    "http": HttpSecrets,
}


class ChannelPatch(InputModel):
    """Only what is sent changes. `settings` and `secrets` merge key by key and are checked as the
    channel's kind requires; null clears quiet hours or the cap."""

    name: ShortText | None = None
    settings: dict[str, Any] | None = Field(default=None, max_length=20)
    secrets: dict[str, Secret | None] | None = Field(default=None, max_length=10)
    quiet_hours: QuietHours | None = Field(
        default=None,
        description="Marketing on this channel waits out these hours. Null: the workspace's default quiet hours "
        "apply; equal `start` and `end`: none on this channel, whatever the default.",
    )
    frequency_cap: FrequencyCap | None = None


class QuietHoursOut(BaseModel):
    start: str
    end: str


class FrequencyCapOut(BaseModel):
    count: int
    hours: int


class CallbackUrls(BaseModel):
    """Paths (under this service's address) to give the provider; the token in them is the credential."""

    receipts: str | None = Field(description="Delivery receipts (SMS) or bounces (email).")
    replies: str | None = Field(description="Replies (SMS).")


class ChannelOut(BaseModel):
    id: uuid.UUID
    kind: ChannelKind
    name: str
    settings: dict[str, Any] = Field(description="What is not secret; secrets are never shown.")
    secrets_set: list[str] = Field(description="Names of the secrets this kind of channel keeps (never their values).")
    quiet_hours: QuietHoursOut | None
    frequency_cap: FrequencyCapOut | None
    callback_urls: CallbackUrls
    created_at: datetime
    updated_at: datetime
    version: int


class ChannelPage(BaseModel):
    items: list[ChannelOut]
    next_cursor: str | None


class ChannelTestIn(InputModel):
    to: Annotated[str, StringConstraints(min_length=3, max_length=254), NoNul] | None = Field(
        default=None, description="An email address or phone number; not for a robot or URL channel.", examples=[None]
    )
    content: "MessageContent | None" = None


class ChannelTestOut(BaseModel):
    outcome: Outcome = Field(description="`accepted`, `rejected` (not taken), `unknown` (sent, no answer).")
    provider_message_id: str | None
    code: str | None = Field(description="The provider's code (SMTP reply code, `isv.…`, `LimitExceeded.…`).")
    message: str | None
    retryable: bool


class MessageContent(InputModel):
    """Per channel kind: `subject` and `body` for email; `template_code` and `template_params` for
    SMS (the provider's approved template); `text` for a WeCom robot or an HTTP channel."""

    subject: MediumText | None = Field(default=None, examples=["生日快乐"])
    body: LongText | None = Field(default=None, examples=["张先生，祝您生日快乐！"])
    text: Annotated[str, StringConstraints(min_length=1, max_length=4000), NoNul] | None = None
    template_code: Identifier | None = Field(default=None, examples=["SMS_123456789"])
    html: Annotated[str, StringConstraints(min_length=1, max_length=100_000), NoNul] | None = Field(
        default=None, description="Email only: an HTML alternative to `body`."
    )
    sign_name: ShortText | None = Field(default=None, description="SMS only: instead of the channel's sign name.")
    template_params: dict[Label, Annotated[str, StringConstraints(max_length=200), NoNul]] | None = Field(
        default=None,
        max_length=20,
        examples=[{"name": "张伟"}],
        description="Named for Alibaba Cloud; for Tencent Cloud `1`, `2`… (its {1}, {2}…), sent in that order.",
    )


class MessageIn(InputModel):
    """Either `content`, or `template_id` (a message template of the channel's kind, rendered for the
    customer now) with its `variables`."""

    customer_id: uuid.UUID
    channel_id: uuid.UUID
    purpose: Purpose = Field(examples=["transactional"])
    content: MessageContent | None = None
    template_id: uuid.UUID | None = None
    variables: dict[VariableName, Annotated[str, StringConstraints(max_length=1_000), NoNul] | int | float | bool] = (
        Field(default_factory=dict, max_length=MAX_VARIABLES, examples=[{"coupon_code": "BDAY-2026"}])
    )
    dedupe_key: Annotated[str, StringConstraints(min_length=1, max_length=255), NoNul] | None = Field(
        default=None, description="The same key in this workspace is the same message: it is never queued twice."
    )

    @model_validator(mode="after")
    def _content_or_template(self) -> "MessageIn":
        if (self.content is None) == (self.template_id is None):
            raise ValueError("give `content`, or `template_id` (with its `variables`), not both")
        if self.variables and self.template_id is None:
            raise ValueError("`variables` go with `template_id`")
        return self


class MessageOut(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    channel_id: uuid.UUID
    purpose: Purpose
    status: MessageStatus
    recipient: str | None = Field(description="The customer's address when queued; masked without customers:pii.")
    content: dict[str, Any]
    dedupe_key: str
    source: str = Field(examples=["api"])
    send_after: datetime = Field(description="Not sent before this (quiet hours, retries).")
    attempts: int
    provider_message_id: str | None
    error_code: str | None
    error_message: str | None
    interaction_id: uuid.UUID | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class SuppressionIn(InputModel):
    medium: Medium
    address: EmailText = Field(examples=["zhang.wei@example.com"])
    reason: SuppressionReason = "manual"
    note: Reason | None = None


class SuppressionOut(BaseModel):
    id: uuid.UUID
    medium: Medium
    address: str = Field(description="Masked without customers:pii.")
    reason: SuppressionReason
    note: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None


class _ProviderPush(BaseModel):
    # Providers add fields over time; what is not named here is ignored.
    model_config = ConfigDict(extra="ignore")


class TencentStatus(_ProviderPush):
    """One item of Tencent Cloud SMS's status report push."""

    mobile: str = Field(max_length=32)
    nationcode: str = Field(default="86", max_length=8)
    report_status: str = Field(max_length=16, examples=["SUCCESS"])
    errmsg: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=500)
    sid: str = Field(max_length=128)


class TencentReply(_ProviderPush):
    mobile: str = Field(max_length=32)
    nationcode: str = Field(default="86", max_length=8)
    text: str = Field(max_length=2000)
    sign: str | None = Field(default=None, max_length=100)
    time: int | None = None


class TencentAck(BaseModel):
    result: int = Field(examples=[0])
    errmsg: str = Field(examples=["OK"])


class AliyunReport(_ProviderPush):
    """One item of Alibaba Cloud SMS's `SmsReport` push."""

    phone_number: str = Field(max_length=32)
    success: bool
    err_code: str | None = Field(default=None, max_length=64)
    err_msg: str | None = Field(default=None, max_length=200)
    biz_id: str = Field(max_length=128)
    out_id: str | None = Field(default=None, max_length=128)


class AliyunReply(_ProviderPush):
    """One item of Alibaba Cloud SMS's `SmsUp` push."""

    phone_number: str = Field(max_length=32)
    content: str = Field(max_length=2000)
    sign_name: str | None = Field(default=None, max_length=100)


class AliyunAck(BaseModel):
    code: int = Field(examples=[0])
    msg: str = Field(examples=["成功"])


class EmailBounce(InputModel):
    """A bounce or complaint from the mail system (or a relay's webhook mapped to this shape)."""

    address: EmailText
    kind: Literal["bounce", "complaint"] = "bounce"
    message_id: uuid.UUID | None = Field(default=None, description="The Guanxi message that bounced, if known.")
    detail: Reason | None = None


class CallbackAccepted(BaseModel):
    accepted: int


ChannelTestIn.model_rebuild()


class MessageEvent(BaseModel):
    """`data` of `message.sent`, `message.delivered` and `message.failed`."""

    id: uuid.UUID
    customer_id: uuid.UUID
    channel_id: uuid.UUID
    purpose: Purpose
    status: MessageStatus
    source: str = Field(examples=["api"])
    dedupe_key: str
    provider_message_id: str | None
    error_code: str | None = Field(examples=["isv.MOBILE_NUMBER_ILLEGAL"])
    error_message: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None


class MessageReplied(BaseModel):
    message_id: uuid.UUID = Field(description="The latest message to that number on the channel.")
    customer_id: uuid.UUID
    channel_id: uuid.UUID
    interaction_id: uuid.UUID = Field(description="The reply, on the customer's timeline (inbound).")
    text: str = Field(examples=["好的，谢谢"])
    unsubscribed: bool = Field(description="The reply was an unsubscribe word (退订, TD, STOP, UNSUBSCRIBE).")


class ConsentChanged(BaseModel):
    customer_id: uuid.UUID
    before: dict[str, bool | None] = Field(examples=[{"sms": True}])
    after: dict[str, bool | None] = Field(examples=[{"sms": False}])
    changed: list[str] = Field(description="The channels whose consent changed.", examples=[["sms"]])
