"""Tencent Cloud SMS: API 3.0 `SendSms` (version 2021-01-11), signed with TC3-HMAC-SHA256 as
Tencent Cloud specifies."""

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from app.services.outreach.providers.base import HTTP_ERRORS, Account, Answer, Outgoing, Result, post, transport_failure

VERSION = "2021-01-11"
SERVICE = "sms"
CONTENT_TYPE = "application/json; charset=utf-8"
# Error codes that say "not now"; anything else will fail again.
RETRYABLE_PREFIXES = ("LimitExceeded", "RequestLimitExceeded")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def authorization(*, secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int) -> str:
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signed_headers = "content-type;host;x-tc-action"
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-tc-action:sendsms\n",
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{SERVICE}/tc3_request"
    string_to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), SERVICE), "tc3_request")
    sig = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={sig}"


def _position(key: str) -> tuple[int, str]:
    """Tencent templates number their parameters {1}, {2}...: keys "1", "2"... in number order
    (a stored JSON object keeps no order of its own), other keys after them by name."""
    return (int(key), "") if key.isdigit() else (1 << 30, key)


class TencentSms:
    def __init__(self, account: Account, http: aiohttp.ClientSession) -> None:
        self.account = account
        self.http = http

    def request(self, outgoing: Outgoing, *, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        settings, content = self.account.settings, outgoing.content
        params = content.get("template_params") or {}
        body = orjson.dumps(
            {
                "PhoneNumberSet": [outgoing.to],
                "SmsSdkAppId": settings["sdk_app_id"],
                "SignName": content.get("sign_name") or settings["sign_name"],
                "TemplateId": content.get("template_code") or "",
                "TemplateParamSet": [str(params[k]) for k in sorted(params, key=_position)],
                "SessionContext": outgoing.reference,
            }
        )
        at = timestamp or int(datetime.now(UTC).timestamp())
        host = urlsplit(str(settings["endpoint"])).netloc
        headers = {
            "Authorization": authorization(
                secret_id=settings["secret_id"],
                secret_key=self.account.secrets["secret_key"],
                host=host,
                body=body,
                timestamp=at,
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(at),
            "X-TC-Region": settings.get("region") or "ap-guangzhou",
        }
        return headers, body

    async def send(self, outgoing: Outgoing) -> Result:
        if not outgoing.to:
            return Result.rejected("no_recipient", "the customer has no phone number", retryable=False)
        headers, body = self.request(outgoing)
        try:
            answer = await post(self.http, str(self.account.settings["endpoint"]), data=body, headers=headers)
        except HTTP_ERRORS as exc:
            return transport_failure(exc, self.account)
        return outcome(answer)

    async def close(self) -> None:
        return None


def outcome(response: Answer) -> Result:
    body: dict[str, Any] | None = response.json()
    answer = body.get("Response") if body else None
    if not isinstance(answer, dict):
        if response.status >= 500:
            return Result.unknown(f"HTTP {response.status} without an answer")
        return Result.rejected(f"http_{response.status}", response.text, retryable=False)
    error = answer.get("Error")
    if isinstance(error, dict):
        code = str(error.get("Code"))
        return Result.rejected(code, str(error.get("Message")), retryable=code.startswith(RETRYABLE_PREFIXES))
    statuses = answer.get("SendStatusSet") or [{}]
    first = statuses[0] if isinstance(statuses[0], dict) else {}
    code = str(first.get("Code"))
    if code == "Ok":
        return Result.accepted(str(first.get("SerialNo")), code)
    return Result.rejected(code, str(first.get("Message")), retryable=code.startswith(RETRYABLE_PREFIXES))
