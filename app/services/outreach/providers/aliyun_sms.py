"""Alibaba Cloud SMS: the documented RPC API `SendSms` (version 2017-05-25), signed with HMAC-SHA1
as Alibaba Cloud specifies for RPC-style APIs (signature version 1.0)."""

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from app.services.outreach.providers.base import Account, Outgoing, Result, json_body, transport_failure

VERSION = "2017-05-25"
FORM = {"content-type": "application/x-www-form-urlencoded"}
# Codes that say "not now": flow control and throttling. Anything else will fail again.
RETRYABLE = frozenset(
    {"isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable"}
)


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as the RPC signature requires: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(value, safe="-_.~")


def signature(params: dict[str, str], method: str, secret: str) -> str:
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def national(phone: str) -> str:
    """Mainland numbers without +86, as the API takes them; others with their country code."""
    digits = phone.lstrip("+")
    return digits[2:] if phone.startswith("+86") else ("00" + digits if phone.startswith("+") else digits)


class AliyunSms:
    def __init__(self, account: Account, http: httpx.AsyncClient) -> None:
        self.account = account
        self.http = http

    def request(self, outgoing: Outgoing, *, now: datetime | None = None) -> dict[str, str]:
        settings, content = self.account.settings, outgoing.content
        params = {
            "AccessKeyId": settings["access_key_id"],
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": outgoing.reference,
            "PhoneNumbers": national(outgoing.to or ""),
            "RegionId": settings.get("region") or "cn-hangzhou",
            "SignName": content.get("sign_name") or settings["sign_name"],
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": str(uuid.uuid4()),
            "SignatureVersion": "1.0",
            "TemplateCode": content.get("template_code") or "",
            "Timestamp": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": VERSION,
        }
        if content.get("template_params"):
            params["TemplateParam"] = orjson.dumps(content["template_params"]).decode()
        params["Signature"] = signature(params, "POST", self.account.secrets["access_key_secret"])
        return params

    async def send(self, outgoing: Outgoing) -> Result:
        if not outgoing.to:
            return Result.rejected("no_recipient", "the customer has no phone number", retryable=False)
        try:
            # Encoded here: httpx's form encoder costs more than the request it goes in.
            response = await self.http.post(
                str(self.account.settings["endpoint"]),
                content=urlencode(self.request(outgoing)),
                headers=FORM,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            return transport_failure(exc, self.account)
        return outcome(response)

    async def close(self) -> None:
        return None


def outcome(response: httpx.Response) -> Result:
    body: dict[str, Any] | None = json_body(response)
    code = str(body.get("Code")) if body and body.get("Code") is not None else None
    if code == "OK":
        return Result.accepted(str(body.get("BizId")) if body else None, code)
    if code is None:
        if response.status_code >= 500:
            return Result.unknown(f"HTTP {response.status_code} without an answer")
        return Result.rejected(f"http_{response.status_code}", response.text[:200], retryable=False)
    message = str(body.get("Message")) if body else None
    return Result.rejected(code, message, retryable=code in RETRYABLE or response.status_code == 503)
