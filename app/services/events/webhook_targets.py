"""Where webhooks may be sent: never to loopback, private, link-local or metadata addresses,
unless the operator allows it (GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS, for tests and on-premise use)."""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from app.core.errors import ValidationFailed


class TargetBlocked(Exception):
    """The URL resolves to an address webhooks may not reach."""


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_target(url: str, *, allow_private: bool) -> None:
    """Raise TargetBlocked unless every address the host resolves to is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetBlocked("only absolute http(s) URLs can receive webhooks")
    if parts.username or parts.password:
        raise TargetBlocked("URLs with credentials are not accepted; authenticate with the signature")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetBlocked(f"the host {parts.hostname} does not resolve") from exc
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(_is_public(str(address)) for address in addresses):
        raise TargetBlocked("the host resolves to a loopback, private, link-local or metadata address")


async def validate_for_api(url: str, *, allow_private: bool) -> None:
    try:
        await check_target(url, allow_private=allow_private)
    except TargetBlocked as exc:
        raise ValidationFailed(str(exc), loc=["body", "url"], error_type="blocked_target") from exc
