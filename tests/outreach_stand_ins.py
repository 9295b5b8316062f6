"""Real local stand-ins for the providers: an SMTP server (aiosmtpd) that parses what it receives,
and an HTTP server that speaks Alibaba Cloud SMS, Tencent Cloud SMS and the WeCom robot and checks
each request's signature with the providers' own SDK code, independently of the code under test."""

import asyncio
import contextlib
import email
import email.policy
import hashlib
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import orjson
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from alibabacloud_openapi_util.client import Client as AliyunUtil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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
    # Per message received: whether its session was encrypted.
    over_tls: list[bool] = field(default_factory=list)

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
            # STARTTLS leaves its mark on the session; TLS from the start, on the transport.
            transport = server.transport
            implicit = transport is not None and transport.get_extra_info("ssl_object") is not None
            self.over_tls.append(session.ssl is not None or implicit)
        return answer


@contextlib.contextmanager
def mail_server(
    tls: Literal["none", "tls", "starttls"] = "none", context: ssl.SSLContext | None = None
) -> Iterator[MailServer]:
    """`tls`: TLS from the start, or STARTTLS required before MAIL, with `context`'s certificate."""
    server = MailServer(port=free_port())
    options: dict[str, Any] = {}
    if tls == "tls":
        options["ssl_context"] = context
    elif tls == "starttls":
        options.update(tls_context=context, require_starttls=True)
    controller = Controller(server, hostname="127.0.0.1", port=server.port, **options)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass(frozen=True)
class Certificates:
    """A CA of the test's own and a certificate it signed for 127.0.0.1, as a server's TLS context."""

    ca_pem: str
    server: ssl.SSLContext


def certificates(name: str = "Guanxi test CA") -> Certificates:
    now = datetime.now(UTC)

    def issued(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        issued(name, ca_key, ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        issued("127.0.0.1", key, ca_name)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="guanxi-tls-"))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    shutil.rmtree(folder)
    return Certificates(ca.public_bytes(serialization.Encoding.PEM).decode(), server)


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
