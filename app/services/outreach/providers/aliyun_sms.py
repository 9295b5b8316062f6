"""Alibaba Cloud SMS: the documented RPC API `SendSms` (version 2017-05-25), signed with HMAC-SHA1
as Alibaba Cloud specifies for RPC-style APIs (signature version 1.0)."""

import base64
import functools
import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from app.services.outreach.providers.base import HTTP_ERRORS, Account, Answer, Outgoing, Result, post, transport_failure

VERSION = "2017-05-25"
FORM = {"content-type": "application/x-www-form-urlencoded"}
# Codes that say "not now": flow control and throttling. Anything else will fail again.
RETRYABLE = frozenset(
    {"isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable"}
)


@functools.lru_cache(maxsize=8192)
def percent_encode(value: str) -> str:
    """RFC 3986 encoding as the RPC signature requires: only A-Z a-z 0-9 - _ . ~ stay as they are.
    Cached: names, sign names and template codes repeat message after message."""
    return quote(value, safe="-_.~")


def _canonical(params: dict[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))


def _sign(canonical: str, method: str, secret: str) -> str:
    string_to_sign = f"{method}&{percent_encode('/')}&{quote(canonical, safe='-_.~')}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature(params: dict[str, str], method: str, secret: str) -> str:
    return _sign(_canonical(params), method, secret)


def signed_form(params: dict[str, str], secret: str) -> str:
    """The POST body: the canonical query string, which is already a form encoding, and its signature."""
    canonical = _canonical(params)
    return f"{canonical}&Signature={percent_encode(_sign(canonical, 'POST', secret))}"


def national(phone: str) -> str:
    """Mainland numbers without +86, as the API takes them; others with their country code."""
    digits = phone.lstrip("+")
    return digits[2:] if phone.startswith("+86") else ("00" + digits if phone.startswith("+") else digits)


class AliyunSms:
    def __init__(self, account: Account, http: aiohttp.ClientSession) -> None:
        self.account = account
        self.http = http

    def request(self, outgoing: Outgoing, *, now: datetime | None = None) -> str:
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
        return signed_form(params, self.account.secrets["access_key_secret"])

    async def send(self, outgoing: Outgoing) -> Result:
        if not outgoing.to:
            return Result.rejected("no_recipient", "the customer has no phone number", retryable=False)
        try:
            answer = await post(
                self.http, str(self.account.settings["endpoint"]), data=self.request(outgoing), headers=FORM
            )
        except HTTP_ERRORS as exc:
            return transport_failure(exc, self.account)
        return outcome(answer)

    async def close(self) -> None:
        return None


def outcome(response: Answer) -> Result:
    body: dict[str, Any] | None = response.json()
    code = str(body.get("Code")) if body and body.get("Code") is not None else None
    if code == "OK":
        return Result.accepted(str(body.get("BizId")) if body else None, code)
    if code is None:
        if response.status >= 500:
            return Result.unknown(f"HTTP {response.status} without an answer")
        return Result.rejected(f"http_{response.status}", response.text, retryable=False)
    message = str(body.get("Message")) if body else None
    return Result.rejected(code, message, retryable=code in RETRYABLE or response.status == 503)
