"""Email over SMTP (aiosmtplib). One adapter is one connection, kept open across messages; the
worker opens a few per channel and sends on each in turn.

The SMTP dialogue tells exactly when a message was taken: a refusal before DATA (or a connection
that never opened) is `rejected`, retryable on a 4xx; a 250 after DATA is `accepted`; a connection
lost while the DATA was being written or answered is `unknown`.

TLS (from the start, or upgraded with STARTTLS, never silently skipped) always verifies the server's
certificate and name: against the system's roots, or only the channel's own `ca_certificate` when it
gives one (a private CA). A failed verification is `tls_certificate` with OpenSSL's reason."""

import email.utils
import ssl
from email.message import EmailMessage

import aiosmtplib

from app.services.outreach.providers.base import Account, Outgoing, Result, redacted

TIMEOUT_SECONDS = 15.0


class SmtpProvider:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.account.settings
        client = aiosmtplib.SMTP(
            hostname=settings["host"],
            port=settings["port"],
            use_tls=settings["tls"] == "tls",
            start_tls=settings["tls"] == "starttls",
            tls_context=tls_context(settings.get("ca_certificate")) if settings["tls"] != "none" else None,
            timeout=TIMEOUT_SECONDS,
        )
        await client.connect()
        password = self.account.secrets.get("password")
        if settings.get("username") and password:
            await client.login(settings["username"], password)
        return client

    def _message(self, outgoing: Outgoing) -> EmailMessage:
        settings = self.account.settings
        message = EmailMessage()
        message["From"] = email.utils.formataddr((settings.get("from_name") or "", settings["from_address"]))
        message["To"] = outgoing.to or ""
        message["Subject"] = outgoing.content.get("subject") or ""
        message["Date"] = email.utils.formatdate(usegmt=True)
        # Our id, so that a bounce or a reply can be matched to the message.
        message["Message-ID"] = f"<{outgoing.reference}@guanxi>"
        message.set_content(outgoing.content.get("body") or outgoing.content.get("text") or "")
        if outgoing.content.get("html"):
            message.add_alternative(outgoing.content["html"], subtype="html")
        return message

    async def send(self, outgoing: Outgoing) -> Result:
        if not outgoing.to:
            return Result.rejected("no_recipient", "the customer has no email address", retryable=False)
        message = self._message(outgoing)
        for fresh in (False, True):
            try:
                if self.client is None or not self.client.is_connected:
                    fresh = True
                    self.client = await self._connect()
                await self.client.mail(self.account.settings["from_address"])
                await self.client.rcpt(outgoing.to)
                break
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()
                return Result.rejected(str(exc.code), self._text(exc.message), retryable=400 <= exc.code < 500)
            except (aiosmtplib.SMTPException, OSError) as exc:
                # Before DATA nothing was taken: a kept connection the server closed is opened again once.
                await self.close()
                if fresh:
                    return self._not_connected(exc)
        assert self.client is not None
        try:
            code, _ = await self.client.data(message.as_bytes())
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            return Result.rejected(str(exc.code), self._text(exc.message), retryable=400 <= exc.code < 500)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            return Result.unknown(self._text(f"connection lost during DATA: {type(exc).__name__}: {exc}"))
        return Result.accepted(message["Message-ID"].strip("<>"), str(code))

    def _not_connected(self, exc: Exception) -> Result:
        tls = _tls_error(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            reason = tls.verify_message or tls.reason or str(tls)
            text = f"the server's certificate failed verification: {reason}"
            return Result.rejected("tls_certificate", self._text(text), retryable=True)
        if tls is not None:
            return Result.rejected(
                "tls_failed", self._text(f"TLS handshake failed: {tls.reason or tls}"), retryable=True
            )
        return Result.rejected("connect_failed", self._text(f"{type(exc).__name__}: {exc}"), retryable=True)

    async def _reset(self) -> None:
        try:
            if self.client is not None:
                await self.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self.close()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    def _text(self, text: str) -> str:
        return redacted(text, self.account.secrets)


def tls_context(ca_certificate: str | None) -> ssl.SSLContext:
    """Verification on (certificate and host name): the system's roots, or only the given CA."""
    if ca_certificate:
        return ssl.create_default_context(cadata=ca_certificate)
    return ssl.create_default_context()


def _tls_error(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind `exc` (aiosmtplib wraps a failed handshake in its own connect error)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
