"""Standard Webhooks signing (`webhook-id`, `webhook-timestamp`, `webhook-signature`), by the
reference `standardwebhooks` library."""

import base64
import secrets
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def headers(*, message_id: str, at: datetime, body: str, secrets_in_use: list[str]) -> dict[str, str]:
    """During a rotation both secrets sign: receivers on either one verify."""
    signature = " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets_in_use)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
