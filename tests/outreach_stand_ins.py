"""Real local stand-ins for the providers: an SMTP server (aiosmtpd) that parses what it receives,
and an HTTP server that speaks Alibaba Cloud SMS, Tencent Cloud SMS and the WeCom robot and checks
each request's signature with the providers' own SDK code, independently of the code under test."""

import asyncio
import contextlib
import email
import email.policy
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import orjson
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from alibabacloud_openapi_util.client import Client as AliyunUtil
from starlette.requests import Request
from starlette.responses import Response
from tencentcloud.common.sign import Sign

from tests.receiver import free_port

ALIYUN_KEY_ID, ALIYUN_SECRET = "LTAI5tStandInKeyId", "aliyun-secret-Zq81xP0e"
TENCENT_ID, TENCENT_KEY = "AKIDStandInSecretId", "tencent-secret-Hy7s9Qw2"
WECOM_KEY = "wecom-robot-key-5c1f0a9d"


@dataclass
class MailServer:
    port: int
    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    # Answers to DATA in order (the last repeats): "250 OK", "451 4.3.0 try later", "550 5.1.1 no such user".
    script: list[str] = field(default_factory=lambda: ["250 OK"])
    connections: int = 0

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if answer.startswith("250"):
            content = envelope.content if isinstance(envelope.content, bytes) else b""
            parsed = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.received.append(parsed)
            self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
        return answer


@contextlib.contextmanager
def mail_server() -> Iterator[MailServer]:
    server = MailServer(port=free_port())
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class SmsServer:
    """Answers as scripted per provider (the last answer repeats); records what it verified."""

    port: int
    aliyun: list[dict[str, Any]] = field(default_factory=lambda: [{"Code": "OK", "Message": "OK", "BizId": "biz-1"}])
    tencent: list[dict[str, Any]] = field(default_factory=list)
    wecom: list[dict[str, Any]] = field(default_factory=lambda: [{"errcode": 0, "errmsg": "ok"}])
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    count: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    @staticmethod
    def _next(script: list[dict[str, Any]]) -> dict[str, Any]:
        return script.pop(0) if len(script) > 1 else script[0]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path.strip("/")
        self.count += 1
        body: dict[str, Any]
        if path == "aliyun":
            form = {k: str(v) for k, v in (await request.form()).items()}
            signature = form.pop("Signature", "")
            expected = AliyunUtil.get_rpcsignature(form, "POST", ALIYUN_SECRET)
            if signature != expected or form.get("AccessKeyId") != ALIYUN_KEY_ID:
                self.unverified.append(f"aliyun: {signature} != {expected}")
                body = {"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched"}
            else:
                body = self._next(self.aliyun)
            self.received.append(("aliyun", form))
        elif path == "tencent":
            raw = await request.body()
            ok = self._tencent_verified(request, raw)
            payload = orjson.loads(raw)
            self.received.append(("tencent", payload))
            if not ok:
                body = {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "bad"}}}
            elif self.tencent:
                body = self._next(self.tencent)
            else:
                serial = f"serial-{len(self.received)}"
                status = {"SerialNo": serial, "PhoneNumber": payload["PhoneNumberSet"][0], "Code": "Ok"}
                body = {"Response": {"SendStatusSet": [status], "RequestId": "req-1"}}
        elif path == "wecom":
            payload = orjson.loads(await request.body())
            self.received.append(("wecom", payload))
            key_ok = request.query_params.get("key") == WECOM_KEY
            body = self._next(self.wecom) if key_ok else {"errcode": 93000, "errmsg": "invalid webhook url"}
        elif path == "drop":
            # Reads the request, then closes the connection without a word.
            await request.body()
            raise ConnectionResetError("dropped")
        else:
            body = {"error": "unknown"}
        await Response(orjson.dumps(body), media_type="application/json")(scope, receive, send)

    def _tencent_verified(self, request: Request, raw: bytes) -> bool:
        """TC3-HMAC-SHA256 rebuilt from what arrived, per Tencent Cloud's published algorithm, with the
        SDK's own key derivation and HMAC (tencentcloud.common.sign.Sign.sign_tc3)."""
        auth = request.headers.get("authorization", "")
        try:
            _, rest = auth.split(" ", 1)
            parts = dict(p.strip().split("=", 1) for p in rest.split(","))
            secret_id, date, service, _ = parts["Credential"].split("/")
            signed = parts["SignedHeaders"].split(";")
            headers = "".join(
                f"{h}:{request.headers[h].lower() if h == 'x-tc-action' else request.headers[h]}\n" for h in signed
            )
            canonical = "\n".join(["POST", "/", "", headers, parts["SignedHeaders"], hashlib.sha256(raw).hexdigest()])
            to_sign = "\n".join(
                [
                    "TC3-HMAC-SHA256",
                    request.headers["x-tc-timestamp"],
                    f"{date}/{service}/tc3_request",
                    hashlib.sha256(canonical.encode()).hexdigest(),
                ]
            )
            expected = Sign.sign_tc3(TENCENT_KEY, date, service, to_sign)
        except (KeyError, ValueError) as exc:
            self.unverified.append(f"tencent: malformed ({exc})")
            return False
        if secret_id != TENCENT_ID or parts["Signature"] != expected or request.headers.get("x-tc-action") != "SendSms":
            self.unverified.append(f"tencent: {parts.get('Signature')} != {expected}")
            return False
        return True


@contextlib.asynccontextmanager
async def sms_server() -> AsyncIterator[SmsServer]:
    stand_in = SmsServer(port=free_port())
    config = uvicorn.Config(
        stand_in.app, host="127.0.0.1", port=stand_in.port, log_config=None, access_log=False, interface="asgi3"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield stand_in
    finally:
        server.should_exit = True
        await task
