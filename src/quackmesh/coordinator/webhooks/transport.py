"""The HTTP transport of webhook deliveries, with the SSRF guard applied at connect time.

A webhook URL is checked when it is registered (:func:`..service.check_url`), but a host
name can resolve to anything later (DNS rebinding), so outside development the transport
itself refuses to open a connection to a non-public address: its network backend resolves
the host, refuses when *any* address is loopback, private, link-local, multicast or
otherwise not globally routable, and connects to the address it checked, never to a
second lookup. TLS still verifies the certificate against the host name in the URL.
Redirects are never followed and proxies from the environment are ignored (the guard
would otherwise check the proxy, not the receiver).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx
from httpcore import AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream

__all__ = ["PublicOnlyBackend", "is_public_ip", "make_transport"]

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast (an IPv4-mapped IPv6 address is judged as its IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicOnlyBackend(AsyncNetworkBackend):
    """An httpcore network backend that only connects to public addresses."""

    def __init__(self, inner: AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or AnyIOBackend()

    async def _resolve(self, host: str, port: int) -> str:
        """The checked address to connect to (ConnectError when it is not public)."""
        if _is_literal(host):
            _check(host)
            return host
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            _check(address, name=host)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return addresses[0]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        address = await self._resolve(host, port)
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _check(address: str, *, name: str | None = None) -> None:
    """Raise ConnectError unless ``address`` (an IP literal) is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not public
    if not is_public_ip(ip):
        target = f"{name} ({address})" if name else address
        raise httpcore.ConnectError(f"refused: {target} is not a public address")


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx does not take a network backend, so swap in a pool that has one; the rest
        # of the transport (request mapping, exception mapping) is httpx's own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(),
        )


def make_transport(*, allow_private: bool, max_connections: int) -> httpx.AsyncBaseTransport:
    """The dispatcher's transport: guarded unless private addresses are allowed."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    if allow_private:
        return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    return _GuardedTransport(limits=limits)
