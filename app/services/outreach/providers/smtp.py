"""Email over SMTP (aiosmtplib). One adapter is one connection, kept open across messages; the
worker opens a few per channel and sends on each in turn.

The SMTP dialogue tells exactly when a message was taken: a refusal before DATA (or a connection
that never opened) is `rejected`, retryable on a 4xx; a 250 after DATA is `accepted`; a connection
lost while the DATA was being written or answered is `unknown`."""

import email.utils
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
                    return Result.rejected("connect_failed", self._text(f"{type(exc).__name__}: {exc}"), retryable=True)
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
