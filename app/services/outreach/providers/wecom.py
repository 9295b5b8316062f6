"""WeCom (企业微信) group robot: a text message to the robot's webhook, for staff notices."""

import aiohttp
import orjson

from app.services.outreach.providers.base import HTTP_ERRORS, Account, Outgoing, Result, post, transport_failure

# -1: system busy; 45009: the robot's rate limit (20 a minute). Anything else will fail again.
RETRYABLE = frozenset({-1, 45009})
JSON = {"content-type": "application/json"}


class WecomRobot:
    def __init__(self, account: Account, http: aiohttp.ClientSession) -> None:
        self.account = account
        self.http = http

    async def send(self, outgoing: Outgoing) -> Result:
        content = outgoing.content
        text = content.get("text") or content.get("body") or ""
        try:
            answer = await post(
                self.http,
                str(self.account.settings["endpoint"]),
                params={"key": self.account.secrets["key"]},
                data=orjson.dumps({"msgtype": "text", "text": {"content": text}}),
                headers=JSON,
            )
        except HTTP_ERRORS as exc:
            return transport_failure(exc, self.account)
        body = answer.json()
        if body is None or "errcode" not in body:
            if answer.status >= 500:
                return Result.unknown(f"HTTP {answer.status} without an answer")
            return Result.rejected(f"http_{answer.status}", None, retryable=False)
        code = int(body["errcode"])
        if code == 0:
            return Result.accepted(None, "0")
        return Result.rejected(str(code), str(body.get("errmsg")), retryable=code in RETRYABLE)

    async def close(self) -> None:
        return None
