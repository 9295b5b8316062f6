"""A signed HTTP call: the message POSTed as JSON to the channel's URL, signed per Standard Webhooks
with the channel's secret (the webhooks' own signer); the URL obeys the webhooks' target rules."""

import aiohttp
import orjson

from app.core import clock
from app.services.events import webhook_signing
from app.services.outreach.providers.base import HTTP_ERRORS, Account, Outgoing, Result, post, transport_failure

# Answers that say the request was not processed: a retry cannot duplicate it.
NOT_PROCESSED = frozenset({408, 425, 429, 502, 503, 504})


class HttpCall:
    def __init__(self, account: Account, http: aiohttp.ClientSession) -> None:
        self.account = account
        self.http = http

    async def send(self, outgoing: Outgoing) -> Result:
        body = orjson.dumps({"id": outgoing.reference, "to": outgoing.to, "content": outgoing.content}).decode()
        headers = {
            **webhook_signing.headers(
                message_id=outgoing.reference,
                at=clock.now(),
                body=body,
                secrets_in_use=[self.account.secrets["signing_secret"]],
            ),
            "content-type": "application/json",
        }
        try:
            answer = await post(self.http, str(self.account.settings["url"]), data=body, headers=headers)
        except HTTP_ERRORS as exc:
            return transport_failure(exc, self.account)
        status = answer.status
        if 200 <= status < 300:
            parsed = answer.json() or {}
            return Result.accepted(str(parsed["id"]) if parsed.get("id") else None, str(status))
        if status in NOT_PROCESSED:
            return Result.rejected(str(status), answer.text, retryable=True)
        if status >= 500:
            return Result.unknown(f"HTTP {status}: {answer.text}")
        return Result.rejected(str(status), answer.text, retryable=False)

    async def close(self) -> None:
        return None
