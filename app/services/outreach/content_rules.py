"""What a message needs on each kind of channel: its content's fields, its recipient's form, and
the consent key and suppression medium the channel answers to."""

from app.core.errors import ValidationFailed
from app.schemas.customer import normalise_email, normalise_phone
from app.schemas.outreach import MessageContent

# The customer's consent key (app/schemas/customer.py Consent) and the suppression list's medium.
MEDIUM = {"email": "email", "sms_aliyun": "sms", "sms_tencent": "sms"}
# The timeline's channel of the interaction each message is.
INTERACTION_CHANNEL = {"email": "email", "sms_aliyun": "sms", "sms_tencent": "sms", "wecom_robot": "wechat"}


def check(kind: str, content: MessageContent, loc: list[str | int]) -> None:
    if kind == "email":
        if not content.subject or not content.body:
            raise ValidationFailed(
                "Email needs `subject` and `body`.", loc=[*loc, "subject" if not content.subject else "body"]
            )
    elif kind in ("sms_aliyun", "sms_tencent"):
        if not content.template_code:
            raise ValidationFailed(
                "SMS goes out through the provider's approved template: give `template_code`.",
                loc=[*loc, "template_code"],
            )
    elif not content.text and not content.body:
        raise ValidationFailed("This channel sends `text`.", loc=[*loc, "text"])


def recipient_of(kind: str, address: str, loc: list[str | int]) -> str:
    """The address normalised as customers' contacts are (so suppressions and replies match)."""
    try:
        return normalise_email(address) if MEDIUM.get(kind) == "email" else normalise_phone(address)
    except ValueError as exc:
        raise ValidationFailed(str(exc), loc=loc) from exc
