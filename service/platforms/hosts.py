"""No request to a private address on a customer's say-so: the check for hosts that come
from a connect request (a Mastodon instance) or from a platform's documents (a Bluesky PDS,
a did:web host).

A host is refused when it is not a plain DNS name, when it is an IP literal, or when any
address it resolves to is not global (loopback, private, link-local, shared, reserved...).
``allow_private`` (``OCTOPOST_ALLOW_PRIVATE_HOSTS=true``, for development and tests, where
the sandbox listens on 127.0.0.1) skips the address checks but not the syntax check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


class HostRefused(ValueError):
    """The message says why, in one sentence, without echoing anything secret."""


def normalise_host(value: str) -> str:
    """``Mastodon.Social`` or ``https://mastodon.social/`` -> ``mastodon.social``."""
    host = value.strip()
    for prefix in ("https://", "http://"):
        if host.lower().startswith(prefix):
            host = host[len(prefix) :]
    host = host.rstrip("/").lower()
    if not host or len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise HostRefused("instance must be a host name such as mastodon.social")
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def check_public_host(host: str, *, allow_private: bool) -> str:
    """The normalised host, or ``HostRefused``."""
    if _is_ip(host.strip().strip("[]")):
        if allow_private:
            return host.strip()
        raise HostRefused(f"{host!r} is an IP address; give the host name")
    name = normalise_host(host)
    if allow_private:
        return name
    if name == "localhost" or name.endswith((".localhost", ".local", ".internal")):
        raise HostRefused(f"{name!r} is not a public host")
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(name, 443, type=socket.SOCK_STREAM), timeout=5
        )
    except (OSError, TimeoutError):
        raise HostRefused(f"{name!r} could not be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise HostRefused(f"{name!r} resolves to a non-public address")
    if not infos:
        raise HostRefused(f"{name!r} could not be resolved")
    return name
