"""Secrets stored encrypted (channel passwords and keys): cryptography's MultiFernet over the keys of
`GUANXI_SECRET_KEYS`. The first key encrypts; every key decrypts, so keys rotate without downtime."""

from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.core.errors import ServiceUnavailable
from app.core.settings import DEVELOPMENT_SECRET_KEY, Settings


class SecretKeysInvalid(ValueError):
    """GUANXI_SECRET_KEYS holds something that is not a Fernet key."""


class SecretKeysMissing(ServiceUnavailable):
    """A production deployment without GUANXI_SECRET_KEYS: it runs, but stores and opens no secret."""

    def __init__(self) -> None:
        super().__init__("Channel secrets need GUANXI_SECRET_KEYS, which this deployment has not set.")


class SecretBox:
    def __init__(self, keys: str | None) -> None:
        self._fernet: MultiFernet | None = None
        if keys is None:
            return
        try:
            fernets = [Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()]
        except ValueError as exc:
            raise SecretKeysInvalid("GUANXI_SECRET_KEYS: each key must be 32 url-safe base64-encoded bytes") from exc
        if not fernets:
            raise SecretKeysInvalid("GUANXI_SECRET_KEYS is empty")
        self._fernet = MultiFernet(fernets)

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            raise SecretKeysMissing()
        return self._fernet

    def seal(self, secrets: dict[str, str]) -> str:
        return self._keys().encrypt(orjson.dumps(secrets)).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        """The secrets; InvalidToken when no key of the list opens them (a key removed too early)."""
        opened = orjson.loads(self._keys().decrypt(sealed.encode()))
        assert isinstance(opened, dict)
        return opened

    def reseal(self, sealed: str) -> str:
        """The same secrets under the first key (MultiFernet.rotate)."""
        return self._keys().rotate(sealed.encode()).decode()


def box(settings: Settings) -> SecretBox:
    if settings.secret_keys is None and settings.environment != "production":
        return SecretBox(DEVELOPMENT_SECRET_KEY)
    return SecretBox(settings.secret_keys)


__all__ = ["InvalidToken", "SecretBox", "SecretKeysInvalid", "SecretKeysMissing", "box"]
