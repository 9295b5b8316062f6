"""Where webhooks may be sent: never to loopback, private, link-local or metadata addresses,
unless the operator allows it (GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS, for tests and on-premise use)."""

import asyncio
import errno
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from app.core.errors import ValidationFailed


class TargetBlocked(Exception):
    """The URL resolves to an address webhooks may not reach."""


# NAT64's well-known prefix (RFC 6052) puts an IPv4 address in the last 32 bits; it is a global
# prefix, so without this a gateway would carry a request for 64:ff9b::7f00:1 to 127.0.0.1.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# SIIT's IPv4-translated form (RFC 2765), ::ffff:0:a.b.c.d, which ipaddress does not unwrap.
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
# IPv4-compatible (RFC 4291, deprecated), ::a.b.c.d: stacks that still honour it reach the IPv4 host.
_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Local-use NAT64 (RFC 8215) places the IPv4 address where its operator chose: never a public target.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 spelling carries and a stack or gateway may deliver to."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or ip in _TRANSLATED or (ip in _COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(address: str) -> bool:
    """A public unicast address, and so is every IPv4 address it embeds: the decision is taken on
    what the connection would reach, not on how the address is spelled."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        embedded = embedded_ipv4(ip)
        # An embedded address stands for the target itself: the wrapper prefix (NAT64's is global) says
        # nothing about where the packet ends up.
        candidates = [*embedded] if embedded else [ip]
    return all(c.is_global and not c.is_multicast for c in candidates)


BLOCKED = "the host resolves to a loopback, private, link-local or metadata address"
PRIVATE_TARGETS_HINT = "a receiver on a private network is allowed with GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS=true"


class PublicOnlyResolver(ThreadedResolver):
    """The resolver the delivery connections use when private targets are not allowed: the addresses a
    connection is opened to are the ones judged here, at connect time, so a name that resolved to a
    public address when it was checked and to a private one a moment later (DNS rebinding) is refused."""

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if not results or not all(is_public(str(r["host"])) for r in results):
            raise OSError(errno.EACCES, BLOCKED)
        return results


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
    if not addresses or not all(is_public(str(address)) for address in addresses):
        raise TargetBlocked(f"{BLOCKED}; {PRIVATE_TARGETS_HINT}")


async def validate_for_api(url: str, *, allow_private: bool) -> None:
    try:
        await check_target(url, allow_private=allow_private)
    except TargetBlocked as exc:
        raise ValidationFailed(str(exc), loc=["body", "url"], error_type="blocked_target") from exc
