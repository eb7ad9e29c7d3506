"""Connecting an account through a platform's own authorization flow: the types every
connecting adapter shares, PKCE, and small helpers to read token and profile answers.

An adapter that connects implements ``OAuthConnect``: ``authorize_url`` (where the browser
goes), ``exchange`` (code -> tokens -> profile, while the callback request waits) and
``denied`` (did the user decline at the consent screen). Adapters still never touch the
database: the service decides what a ``Connected`` becomes.

``ConnectFailed`` carries only the step and the platform's error code, never a token or a
code, so it is safe to log.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from service.platforms.base import TokenSet
from service.platforms.http import Reply, dig, expires_in

Endpoint = tuple[str, str]  # the real base URL, and the path (also the sandbox's path)


@dataclass(frozen=True, slots=True)
class Profile:
    """Who came back from the platform, in our Account object's terms."""

    platform_user_id: str
    username: str
    display_name: str
    avatar_url: str | None = None
    instance_url: str | None = None
    # the person who authorized, when not the account itself (the Facebook user behind a
    # Page, the Google account behind a channel): push revocations name them
    authorizing_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    profile: Profile
    tokens: TokenSet

    def __repr__(self) -> str:
        return f"Connected({self.profile!r}, {self.tokens!r})"


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    redirect_uri: str
    state: str
    code_challenge: str | None = None  # S256 of the session's verifier
    instance: str | None = None  # Mastodon: the instance host
    client_id: str | None = None  # Mastodon: the app registered on that instance


@dataclass(frozen=True, slots=True)
class CodeExchange:
    code: str
    redirect_uri: str
    code_verifier: str | None = None
    instance: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    page_id: str | None = None  # Facebook: connect only this Page

    def __repr__(self) -> str:
        return f"CodeExchange(instance={self.instance!r}, page_id={self.page_id!r})"


class ConnectFailed(Exception):
    """The platform refused or answered something unusable. ``error`` is what the session
    reports (``platform_error``, ``invalid_credentials``, ``host_refused``, ...); ``step``
    and ``code`` (the platform's own error code) are for the log line."""

    def __init__(
        self, step: str, *, code: str | None = None, status: int = 0, error: str = "platform_error"
    ) -> None:
        super().__init__(f"{step} failed (status={status}, code={code})")
        self.step = step
        self.code = code
        self.status = status
        self.error = error


class OAuthConnect:
    """The connect half of an adapter. ``connect_endpoints`` names the URLs the flow needs
    besides the adapter's base URL (``authorize`` at least); the registry resolves them
    into ``endpoints`` (the platform's, or the sandbox's when one is configured)."""

    uses_pkce: ClassVar[bool] = False
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {}
    endpoints: dict[str, str]

    def endpoint(self, name: str) -> str:
        return self.endpoints[name]

    def authorize_url(self, request: AuthorizeRequest) -> str:
        raise NotImplementedError

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        raise NotImplementedError

    def denied(self, query: Mapping[str, str]) -> bool:
        """The user declined at the consent screen (the redirect's ``error``)."""
        return query.get("error") == "access_denied"


# --- PKCE (RFC 7636, S256 only) ----------------------------------------------------------


def new_code_verifier() -> str:
    return secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --- URLs and answers --------------------------------------------------------------------


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    """``url?params`` with spaces as %20 (X's documented form), None values left out."""
    present = {k: v for k, v in params.items() if v is not None}
    return f"{url}?{urlencode(present, quote_via=quote)}"


def error_code(reply: Reply) -> str | None:
    for path in (("error", "code"), ("error",), ("error", "message"), ("message",)):
        value = dig(reply.body, *path)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)[:100]
    return None


def require_ok(reply: Reply, step: str) -> Any:
    """The body of a 200 answer without an ``error`` object, else ``ConnectFailed``."""
    if reply.status != 200 or isinstance(dig(reply.body, "error"), dict | str):
        raise ConnectFailed(step, code=reply.failure or error_code(reply), status=reply.status)
    return reply.body


def text(body: Any, *path: str) -> str | None:
    value = dig(body, *path)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value else None


def required_text(body: Any, step: str, *path: str) -> str:
    value = text(body, *path)
    if value is None:
        raise ConnectFailed(step, code="missing_" + "_".join(path), status=200)
    return value


def token_set(body: Any, step: str, *, scope_separator: str | None = " ") -> TokenSet:
    """A token endpoint's answer: ``access_token``, ``refresh_token``, ``expires_in``,
    ``refresh_expires_in`` / ``refresh_token_expires_in``, ``scope``."""
    access = required_text(body, step, "access_token")
    scope = dig(body, "scope")
    scopes: tuple[str, ...] = ()
    if isinstance(scope, str):
        scopes = tuple(s for s in scope.replace(",", " ").split() if s)
    elif isinstance(scope, list):
        scopes = tuple(s for s in scope if isinstance(s, str))
    return TokenSet(
        access_token=access,
        refresh_token=text(body, "refresh_token"),
        access_expires_at=expires_in(dig(body, "expires_in")),
        refresh_expires_at=expires_in(dig(body, "refresh_expires_in"))
        or expires_in(dig(body, "refresh_token_expires_in")),
        scopes=scopes,
    )


def unverified_claims(jwt: str) -> dict[str, Any]:
    """The payload of a JWT received straight from the token endpoint over TLS (OpenID
    Connect Core 3.1.3.7: the signature need not be checked then)."""
    import orjson

    parts = jwt.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}
