"""WeCom (企业微信) group robot: a text message to the robot's webhook, for staff notices."""

import httpx

from app.services.outreach.providers.base import Account, Outgoing, Result, json_body, transport_failure

# -1: system busy; 45009: the robot's rate limit (20 a minute). Anything else will fail again.
RETRYABLE = frozenset({-1, 45009})


class WecomRobot:
    def __init__(self, account: Account, http: httpx.AsyncClient) -> None:
        self.account = account
        self.http = http

    async def send(self, outgoing: Outgoing) -> Result:
        content = outgoing.content
        text = content.get("text") or content.get("body") or ""
        try:
            response = await self.http.post(
                str(self.account.settings["endpoint"]),
                params={"key": self.account.secrets["key"]},
                json={"msgtype": "text", "text": {"content": text}},
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            return transport_failure(exc, self.account)
        body = json_body(response)
        if body is None or "errcode" not in body:
            if response.status_code >= 500:
                return Result.unknown(f"HTTP {response.status_code} without an answer")
            return Result.rejected(f"http_{response.status_code}", None, retryable=False)
        code = int(body["errcode"])
        if code == 0:
            return Result.accepted(None, "0")
        return Result.rejected(str(code), str(body.get("errmsg")), retryable=code in RETRYABLE)

    async def close(self) -> None:
        return None
