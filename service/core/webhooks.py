"""Outgoing webhooks, what the API and the worker share: event types, endpoint secrets,
Standard Webhooks signatures, and which URLs and addresses may be called."""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
from datetime import datetime
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from service.core.ids import random_string

ACCOUNT_EVENT_TYPES = (
    "account.connected",
    "account.reconnected",
    "account.deactivated",
    "account.reactivated",
    "account.disconnected",
    "account.revocation_failed",
)
TEST_EVENT_TYPE = "webhook.test"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
MAX_URL_LENGTH = 2048


def new_endpoint_id() -> str:
    return "we_" + random_string(16)


def new_secret() -> str:
    """A Standard Webhooks symmetric secret: whsec_ + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


class Signer:
    """`webhook-signature` values: one `v1,<base64 HMAC-SHA256>` per secret, space-separated
    (the previous secret signs too for a while after a rotation), by the reference library."""

    def __init__(self, secrets: list[str]) -> None:
        self._hooks = [Webhook(secret) for secret in secrets]

    def header(self, msg_id: str, timestamp: datetime, body: str) -> str:
        return " ".join(hook.sign(msg_id, timestamp, body) for hook in self._hooks)


class UrlRefused(ValueError):
    """An endpoint URL (or the address its host resolves to) that must not be called."""


def address_allowed(address: str) -> bool:
    """Only globally routable unicast addresses: no loopback, private, link-local, CGNAT,
    multicast, reserved or unspecified ones, IPv4-mapped IPv6 judged as the IPv4 inside."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    # inet_aton takes what browsers and libcs take as IPv4: "127.1", "0x7f.1", "2130706433"
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def check_url(url: str, *, production: bool, allow_private: bool, delivering: bool = False) -> str:
    """The URL's host, or UrlRefused saying why it cannot be an endpoint. The addresses a
    name resolves to are checked at every delivery (the name may change meanwhile), where
    `delivering` leaves names to that check."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"url must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        raise UrlRefused("url is not a valid URL") from None
    allowed_schemes = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed_schemes:
        raise UrlRefused("url must use https" if production else "url must be http(s)")
    if not host:
        raise UrlRefused("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("url must not carry credentials")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise UrlRefused("url must not contain whitespace or control characters")
    if allow_private:
        return host
    if _is_ip_literal(host):
        raise UrlRefused("url host must be a name, not an IP address")
    name = host.rstrip(".").lower()
    if not delivering and (
        name == "localhost" or name.endswith((".localhost", ".local", ".internal"))
    ):
        raise UrlRefused("url host must be a public name")
    return host
