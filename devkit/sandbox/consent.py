# ruff: noqa: E501
"""The platforms' consent screens, code exchanges and profile answers, played by the sandbox.

- ``POST /sandbox/login`` ``{"platform", "user": {"id", "username", "name", "avatar_url"},
  "decision": "allow" | "deny", "pages": [...] (facebook), "app_password": "..." (bluesky)}``
  says who is signed in at that platform and what they answer at the consent screen.
- Each platform's authorize path checks the client id and redirect_uri (a bad one is an
  error page, as on the platforms: no redirect), then redirects at once to the redirect_uri
  with a code (or the platform's own "declined" error) and the state.
- The code exchange checks what the platform checks: single use, 30 seconds, bound to the
  client id and redirect_uri, the PKCE verifier against the challenge (S256 or plain), and
  the platform's own client authentication (X: HTTP Basic; Facebook: the query; the others:
  the form; Mastodon: the app registered on the instance).
- Tokens it issues are ordinary sandbox tokens (valid for verify, refresh and revoke like
  any other); the profile endpoints answer with the user each token was issued to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from devkit.sandbox.state import SandboxState

CODE_SECONDS = 30.0  # X documents 30 s; the others are "short-lived"
PLATFORMS = (
    "twitter",
    "bluesky",
    "mastodon",
    "linkedin",
    "threads",
    "instagram",
    "facebook",
    "tiktok",
    "youtube",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
User = dict[str, Any]


@dataclass(slots=True)
class Login:
    user: User
    decision: str = "allow"
    pages: list[User] = field(default_factory=list)
    app_password: str | None = None


@dataclass(slots=True)
class Grant:
    platform: str
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    login: Login
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class MastodonApp:
    client_secret: str
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]


class ConsentState:
    def __init__(self) -> None:
        self.logins: dict[str, Login] = {}
        self.codes: dict[str, Grant] = {}
        self.users: dict[str, tuple[str, User]] = {}  # token root -> (kind, user or page)
        self.pages: dict[str, list[User]] = {}  # Facebook user token root -> their Pages
        self.mastodon_apps: dict[str, MastodonApp] = {}
        self.mastodon_clients: dict[str, str] = {}  # token root -> the app it was issued to

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def user_of(self, token: str) -> tuple[str, User] | None:
        return self.users.get(token.split("~", 1)[0]) if token else None

    def issue(self, platform: str, kind: str, user: User) -> str:
        """A new token root (refreshes derive ``root~aN`` from it) bound to ``user``."""
        token = f"sbx-{platform}-{secrets.token_urlsafe(18)}"
        self.users[token] = (kind, user)
        return token


# --- helpers -----------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
    )


def _redirect(uri: str, params: Mapping[str, str], fragment: str = "") -> web.Response:
    separator = "&" if "?" in uri else "?"
    return web.Response(
        status=302, headers={"Location": f"{uri}{separator}{urlencode(params)}{fragment}"}
    )


def _pkce_ok(grant: Grant, verifier: str | None) -> bool:
    if grant.challenge is None:
        return True
    if not verifier:
        return False
    if grant.method == "plain":
        return hmac.compare_digest(verifier, grant.challenge)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return hmac.compare_digest(digest.decode(), grant.challenge)


def _basic(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'sandbox'})}.{part(claims)}.sandbox"


def _avatar(user: User) -> str | None:
    value = user.get("avatar_url")
    return value if isinstance(value, str) else None


def _name(user: User) -> str:
    return str(user.get("name") or user.get("username") or user["id"])


# --- /sandbox/login ----------------------------------------------------------------------


def _user(item: Any, what: str) -> User:
    if not isinstance(item, dict) or not all(
        isinstance(item.get(k), str) and item[k] for k in ("id", "username")
    ):
        raise ValueError(f'{what} needs non-empty "id" and "username" strings')
    return {k: item.get(k) for k in ("id", "username", "name", "avatar_url", "sub")} | {
        "granted": item.get("granted", True) is not False
    }


def parse_login(body: Any) -> tuple[str, Login]:
    if not isinstance(body, dict) or body.get("platform") not in PLATFORMS:
        raise ValueError(f'"platform" must be one of {", ".join(PLATFORMS)}')
    decision = body.get("decision", "allow")
    if decision not in ("allow", "deny"):
        raise ValueError('"decision" must be "allow" or "deny"')
    pages = body.get("pages") or []
    if not isinstance(pages, list):
        raise ValueError('"pages" must be a list')
    password = body.get("app_password")
    if password is not None and not isinstance(password, str):
        raise ValueError('"app_password" must be a string')
    login = Login(
        _user(body.get("user"), '"user"'),
        decision,
        [_user(page, "each page") for page in pages],
        password,
    )
    return body["platform"], login


# --- the consent screens -------------------------------------------------------------------

# platform -> the client id parameter, PKCE required, the "declined" redirect parameters
_DECLINED_META = {
    "error": "access_denied",
    "error_code": "200",
    "error_description": "Permissions error",
    "error_reason": "user_denied",
}
_DECLINED = {
    "linkedin": {
        "error": "user_cancelled_authorize",
        "error_description": "The user cancelled the authorization",
    },
    "facebook": _DECLINED_META,
    "instagram": _DECLINED_META,
    "threads": _DECLINED_META,
}
AUTHORIZE_PATHS = {
    "twitter": "/i/oauth2/authorize",
    "linkedin": "/oauth/v2/authorization",
    "facebook": "/{version}/dialog/oauth",
    "instagram": "/oauth/authorize",
    "threads": "/oauth/authorize",
    "tiktok": "/v2/auth/authorize/",
    "youtube": "/o/oauth2/v2/auth",
    "mastodon": "/oauth/authorize",
}


def authorize_handler(
    consent: SandboxState, platform: str, apps: Mapping[str, tuple[str, str]]
) -> Handler:
    state = consent.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        q = request.query
        client_id = q.get("client_key" if platform == "tiktok" else "client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if platform == "mastodon":
            app = state.mastodon_apps.get(client_id)
            if app is None:
                return _page(consent, platform, request, 401, "invalid_client")
            if redirect_uri not in app.redirect_uris:
                return _page(consent, platform, request, 400, "invalid_redirect_uri")
            if not set(q.get("scope", "read").split()) <= app.scopes:
                return _page(consent, platform, request, 400, "invalid_scope")
        elif not hmac.compare_digest(client_id, apps[platform][0]):
            return _page(consent, platform, request, 400, "invalid_client")
        if not redirect_uri.startswith(("http://", "https://")) or q.get("response_type") != "code":
            return _page(consent, platform, request, 400, "invalid_request")
        challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
        if platform == "twitter" and not challenge:
            return _page(consent, platform, request, 400, "pkce_required")
        allowed = ("S256",) if platform == "mastodon" else ("S256", "plain")
        if challenge and (method or "plain") not in allowed:
            return _page(consent, platform, request, 400, "invalid_code_challenge_method")
        login = state.logins.get(platform)
        if login is None:
            return _page(consent, platform, request, 401, "nobody_signed_in (POST /sandbox/login)")
        params = {"state": q["state"]} if "state" in q else {}
        fragment = "#_" if platform == "instagram" else ""
        consent.record(platform, request.method, request.path, "", 302)
        if login.decision == "deny":
            declined = _DECLINED.get(platform, {"error": "access_denied"})
            return _redirect(redirect_uri, declined | params, fragment)
        code = secrets.token_urlsafe(24)
        state.codes[code] = Grant(
            platform,
            client_id,
            redirect_uri,
            challenge,
            method or ("plain" if challenge else None),
            login,
            time.monotonic() + CODE_SECONDS,
        )
        return _redirect(redirect_uri, {"code": code} | params, fragment)

    return handle


def _page(
    sandbox: SandboxState, platform: str, request: web.Request, status: int, error: str
) -> web.Response:
    sandbox.record(platform, request.method, request.path, "", status)
    return _json(status, {"error": error, "where": "the platform's consent screen"})


def redeem(
    state: ConsentState,
    platform: str,
    code: str,
    client_id: str,
    redirect_uri: str,
    verifier: str | None,
) -> Grant | None:
    """The grant a code stands for, spent; None for anything a platform would refuse."""
    grant = state.codes.get(code)
    if grant is None or grant.platform != platform or grant.used:
        return None
    grant.used = True  # spent even when the rest fails: a code is presented once
    if (
        time.monotonic() > grant.expires_at
        or not hmac.compare_digest(grant.client_id, client_id)
        or grant.redirect_uri != redirect_uri
        or not _pkce_ok(grant, verifier)
    ):
        return None
    return grant


# --- code exchanges ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One platform's token endpoint for the authorization_code grant."""

    client: Callable[[web.Request, Mapping[str, str]], tuple[str, str]]  # (id, secret) sent
    bad_client: tuple[int, Any]
    bad_code: tuple[int, Any]
    answer: Callable[[ConsentState, Grant, str], Any]  # the 200 body


def _form_client(
    id_field: str = "client_id",
) -> Callable[[web.Request, Mapping[str, str]], tuple[str, str]]:
    def client(request: web.Request, form: Mapping[str, str]) -> tuple[str, str]:
        return form.get(id_field, ""), form.get("client_secret", "")

    return client


def _twitter_client(request: web.Request, form: Mapping[str, str]) -> tuple[str, str]:
    sent = _basic(request.headers.get("Authorization", ""))
    return sent if sent is not None else (form.get("client_id", ""), "")


def _oauth_tokens(
    state: ConsentState, grant: Grant, *, expires: int | None, refresh: bool, scope: str
) -> dict[str, Any]:
    access = state.issue(grant.platform, "user", grant.login.user)
    body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "scope": scope}
    if expires is not None:
        body["expires_in"] = expires
    if refresh:
        body["refresh_token"] = state.issue(grant.platform, "user", grant.login.user)
    return body


def _graph_error(code: int, message: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Sbx"}
    }


EXCHANGES: dict[str, Exchange] = {
    "twitter": Exchange(
        _twitter_client,
        (
            401,
            {
                "error": "unauthorized_client",
                "error_description": "Missing valid authorization header",
            },
        ),
        (
            400,
            {
                "error": "invalid_request",
                "error_description": "Value passed for the authorization code was invalid.",
            },
        ),
        lambda s, g, scope: _oauth_tokens(
            s, g, expires=7200, refresh="offline.access" in scope, scope=scope
        ),
    ),
    "linkedin": Exchange(
        _form_client(),
        (401, {"error": "invalid_client", "error_description": "Client authentication failed"}),
        (
            400,
            {
                "error": "invalid_request",
                "error_description": "Unable to retrieve access token: appid/redirect uri/code verifier does not match authorization code. Or authorization code expired.",
            },
        ),
        # no refresh token: those are for Marketing Developer Platform partners only
        lambda s, g, scope: _oauth_tokens(s, g, expires=5183999, refresh=False, scope=scope),
    ),
    "tiktok": Exchange(
        _form_client("client_key"),
        (
            401,
            {
                "error": "invalid_client",
                "error_description": "Client key or secret is invalid.",
                "log_id": "sbx",
            },
        ),
        (
            400,
            {
                "error": "invalid_grant",
                "error_description": "Authorization code is expired.",
                "log_id": "sbx",
            },
        ),
        lambda s, g, scope: (
            _oauth_tokens(s, g, expires=7200, refresh=True, scope=scope)
            | {
                "open_id": g.login.user["id"],
                "refresh_expires_in": 15552000,
                "token_type": "Bearer",
            }
        ),
    ),
    "youtube": Exchange(
        _form_client(),
        (401, {"error": "invalid_client", "error_description": "Unauthorized"}),
        (400, {"error": "invalid_grant", "error_description": "Bad Request"}),
        lambda s, g, scope: (
            _oauth_tokens(s, g, expires=3599, refresh=True, scope=scope)
            | {"token_type": "Bearer", "id_token": _google_id_token(g)}
        ),
    ),
    "mastodon": Exchange(
        _form_client(),
        (
            401,
            {
                "error": "invalid_client",
                "error_description": "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
            },
        ),
        (
            400,
            {
                "error": "invalid_grant",
                "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
            },
        ),
        lambda s, g, scope: (
            _oauth_tokens(s, g, expires=None, refresh=False, scope=scope)
            | {"token_type": "Bearer", "created_at": int(time.time())}
        ),
    ),
    "instagram": Exchange(
        _form_client(),
        (
            400,
            {"error_type": "OAuthException", "code": 400, "error_message": "Invalid platform app"},
        ),
        (
            400,
            {
                "error_type": "OAuthException",
                "code": 400,
                "error_message": "Invalid authorization code",
            },
        ),
        lambda s, g, scope: {
            "access_token": s.issue("instagram", "short", g.login.user),
            "user_id": g.login.user["id"],
            "permissions": scope.replace(" ", ","),
        },
    ),
    "threads": Exchange(
        _form_client(),
        (400, _graph_error(101, "Error validating application. Invalid application ID.")),
        (400, _graph_error(100, "Invalid verification code format.")),
        lambda s, g, scope: {
            "access_token": s.issue("threads", "short", g.login.user),
            "user_id": g.login.user["id"],
        },
    ),
}
SCOPES = {  # what each sandbox platform grants (the service asks for these)
    "twitter": "tweet.read tweet.write users.read media.write offline.access",
    "linkedin": "email,openid,profile,w_member_social",
    "tiktok": "user.info.basic,user.info.profile,video.publish,video.upload",
    "youtube": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/youtube.upload https://www.googleapis.com/auth/youtube.readonly",
    "mastodon": "read:accounts write:statuses write:media",
    "instagram": "instagram_business_basic instagram_business_content_publish",
    "threads": "threads_basic,threads_content_publish",
}
EXCHANGE_PATHS = {
    "twitter": ("POST", "/2/oauth2/token"),
    "linkedin": ("POST", "/oauth/v2/accessToken"),
    "tiktok": ("POST", "/v2/oauth/token/"),
    "youtube": ("POST", "/token"),
    "mastodon": ("POST", "/oauth/token"),
    "instagram": ("POST", "/oauth/access_token"),
    "threads": ("POST", "/oauth/access_token"),
}


def _google_id_token(grant: Grant) -> str:
    user = grant.login.user
    return _unsigned_jwt(
        {
            "iss": "https://accounts.google.com",
            "aud": grant.client_id,
            "sub": user.get("sub") or google_sub(user["id"]),
            "email": f"{user['username']}@gmail.example",
            "iat": int(time.time()),
            "exp": int(time.time()) + 3600,
        }
    )


def google_sub(channel_id: str) -> str:
    """The Google account id the sandbox puts behind a channel (digits, as Google's are)."""
    return "1" + str(int.from_bytes(hashlib.sha256(channel_id.encode()).digest()[:8], "big"))


def exchange_handler(
    sandbox: SandboxState, platform: str, apps: Mapping[str, tuple[str, str]]
) -> Handler:
    spec = EXCHANGES[platform]
    state = sandbox.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        code = form.get("code", "")
        client_id, secret = spec.client(request, form)
        if platform == "mastodon":
            app = state.mastodon_apps.get(client_id)
            client_ok = app is not None and hmac.compare_digest(secret, app.client_secret)
        else:
            want_id, want_secret = apps[platform]
            # the service is a confidential client everywhere: the secret must match too
            client_ok = hmac.compare_digest(client_id, want_id) and hmac.compare_digest(
                secret, want_secret
            )
        if not client_ok:
            status, body = spec.bad_client
        elif form.get("grant_type") != "authorization_code":
            status, body = spec.bad_code
        else:
            grant = redeem(
                state,
                platform,
                code,
                client_id,
                form.get("redirect_uri", ""),
                form.get("code_verifier"),
            )
            if grant is None:
                status, body = spec.bad_code
            else:
                status, body = 200, spec.answer(state, grant, SCOPES[platform])
                if platform == "mastodon":
                    state.mastodon_clients[str(body["access_token"])] = client_id
        sandbox.record(platform, request.method, request.path, code, status)
        return _json(status, body)

    return handle


# --- Meta's second steps -----------------------------------------------------------------


def facebook_token_handler(sandbox: SandboxState, apps: Mapping[str, tuple[str, str]]) -> Handler:
    """``GET /{version}/oauth/access_token``: the code (query client auth), or
    ``grant_type=fb_exchange_token`` for the long-lived user token."""
    state = sandbox.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        q = request.query
        want_id, want_secret = apps["facebook"]
        presented = q.get("fb_exchange_token") or q.get("code", "")
        if not (
            hmac.compare_digest(q.get("client_id", ""), want_id)
            and hmac.compare_digest(q.get("client_secret", ""), want_secret)
        ):
            status, body = (
                400,
                _graph_error(101, "Error validating application. Invalid application ID."),
            )
        elif q.get("grant_type") == "fb_exchange_token":
            found = state.user_of(q.get("fb_exchange_token", ""))
            if found is None or found[0] != "fb_short":
                status, body = (
                    400,
                    _graph_error(190, "Invalid OAuth access token - Cannot parse access token"),
                )
            else:
                token = state.issue("facebook", "fb_user", found[1])
                root = q["fb_exchange_token"].split("~", 1)[0]
                state.pages[token] = state.pages.get(root, [])
                status, body = (
                    200,
                    {"access_token": token, "token_type": "bearer", "expires_in": 5183944},
                )
        else:
            grant = redeem(
                state, "facebook", q.get("code", ""), want_id, q.get("redirect_uri", ""), None
            )
            if grant is None:
                status, body = 400, _graph_error(100, "Invalid verification code format.")
            else:
                token = state.issue("facebook", "fb_short", grant.login.user)
                state.pages[token] = [p for p in grant.login.pages]
                status, body = (
                    200,
                    {"access_token": token, "token_type": "bearer", "expires_in": 5183},
                )
        sandbox.record("facebook", request.method, request.path, presented, status)
        return _json(status, body)

    return handle


def facebook_pages_handler(sandbox: SandboxState) -> Handler:
    """``GET /{version}/me/accounts``: the Pages the user granted, each with its own token
    (a Page not ticked at the Page selection is listed without one)."""
    state = sandbox.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token", "")
        found = state.user_of(token)
        if found is None or found[0] not in ("fb_user", "fb_short"):
            body = _graph_error(190, "Invalid OAuth access token - Cannot parse access token")
            sandbox.record("facebook", request.method, request.path, token, 400)
            return _json(400, body)
        data = []
        for page in state.pages.get(token.split("~", 1)[0], []):
            entry: dict[str, Any] = {
                "id": page["id"],
                "name": _name(page),
                "username": page["username"],
                "category": "Brand",
                "tasks": ["ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MANAGE"],
            }
            if avatar := _avatar(page):
                entry["picture"] = {"data": {"url": avatar, "is_silhouette": False}}
            if page.get("granted", True):
                entry["access_token"] = state.issue("facebook", "fb_page", page)
            data.append(entry)
        sandbox.record("facebook", request.method, request.path, token, 200)
        return _json(200, {"data": data, "paging": {"cursors": {"before": "b", "after": "a"}}})

    return handle


def long_lived_handler(
    sandbox: SandboxState, platform: str, apps: Mapping[str, tuple[str, str]]
) -> Handler:
    """Instagram / Threads ``GET /access_token?grant_type={ig,th}_exchange_token``."""
    grant_type = "ig_exchange_token" if platform == "instagram" else "th_exchange_token"
    state = sandbox.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        q = request.query
        short = q.get("access_token", "")
        found = state.user_of(short)
        if not hmac.compare_digest(q.get("client_secret", ""), apps[platform][1]):
            status, body = 400, _graph_error(101, "Error validating client secret.")
        elif q.get("grant_type") != grant_type or found is None or found[0] != "short":
            status, body = (
                400,
                _graph_error(190, "Invalid OAuth access token - Cannot parse access token"),
            )
        else:
            token = state.issue(platform, "user", found[1])
            status, body = (
                200,
                {"access_token": token, "token_type": "bearer", "expires_in": 5183944},
            )
        sandbox.record(platform, request.method, request.path, short, status)
        return _json(status, body)

    return handle


# --- Mastodon app registration -----------------------------------------------------------


def mastodon_apps_handler(sandbox: SandboxState) -> Handler:
    state = sandbox.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_type == "application/json":
            raw = await request.json()
            form = raw if isinstance(raw, dict) else {}
        else:
            form = {k: str(v) for k, v in (await request.post()).items()}
        uris = form.get("redirect_uris")
        uris = [uris] if isinstance(uris, str) else uris
        if not form.get("client_name") or not uris or not all(isinstance(u, str) for u in uris):
            sandbox.record("mastodon", request.method, request.path, "", 422)
            return _json(
                422,
                {
                    "error": "Validation failed: Application name can't be blank, Redirect URI can't be blank"
                },
            )
        scopes = str(form.get("scopes") or "read")
        client_id, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        state.mastodon_apps[client_id] = MastodonApp(secret, tuple(uris), frozenset(scopes.split()))
        sandbox.record("mastodon", request.method, request.path, "", 200)
        return _json(
            200,
            {
                "id": str(len(state.mastodon_apps)),
                "name": form["client_name"],
                "website": form.get("website"),
                "scopes": scopes.split(),
                "redirect_uri": "\n".join(uris),
                "redirect_uris": uris,
                "client_id": client_id,
                "client_secret": secret,
                "client_secret_expires_at": 0,
            },
        )

    return handle


# --- LinkedIn userinfo -------------------------------------------------------------------


def linkedin_userinfo_handler(sandbox: SandboxState) -> Handler:
    state = sandbox.consent

    async def handle(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        name, _ = sandbox.resolve(token)
        found = state.user_of(token)
        if name != "valid" or found is None:
            sandbox.record("linkedin", request.method, request.path, token, 401)
            return _json(
                401, {"serviceErrorCode": 65600, "message": "Invalid access token", "status": 401}
            )
        user = found[1]
        full = _name(user)
        given, _, family = full.partition(" ")
        body = {
            "sub": user["id"],
            "email_verified": True,
            "name": full,
            "locale": {"country": "US", "language": "en"},
            "given_name": given,
            "family_name": family,
            "email": f"{user['username']}@linkedin.example",
        }
        if avatar := _avatar(user):
            body["picture"] = avatar
        sandbox.record("linkedin", request.method, request.path, token, 200)
        return _json(200, body)

    return handle


# --- Bluesky: handle resolution, the DID document, createSession, getProfile ------------


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256K', 'typ': 'at+jwt'})}.{part(claims)}.sandbox"


def _bluesky_login(state: ConsentState, identifier: str) -> Login | None:
    login = state.logins.get("bluesky")
    if login is None or identifier.lower() not in (
        login.user["username"].lower(),
        login.user["id"],
    ):
        return None
    return login


def bluesky_handlers(sandbox: SandboxState) -> dict[tuple[str, str], Handler]:
    state = sandbox.consent

    def xrpc_error(status: int, error: str, message: str) -> web.Response:
        return _json(status, {"error": error, "message": message})

    async def resolve_handle(request: web.Request) -> web.StreamResponse:
        login = _bluesky_login(state, request.query.get("handle", ""))
        sandbox.record("bluesky", request.method, request.path, "", 200 if login else 400)
        if login is None:
            return xrpc_error(400, "InvalidRequest", "Unable to resolve handle")
        return _json(200, {"did": login.user["id"]})

    async def did_document(request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        login = _bluesky_login(state, did)
        sandbox.record("bluesky", request.method, request.path, "", 200 if login else 404)
        if login is None:
            return _json(404, {"message": f"DID not registered: {did}"})
        origin = f"{request.scheme}://{request.host}"
        return _json(
            200,
            {
                "@context": ["https://www.w3.org/ns/did/v1"],
                "id": did,
                "alsoKnownAs": [f"at://{login.user['username']}"],
                "verificationMethod": [],
                "service": [
                    {
                        "id": "#atproto_pds",
                        "type": "AtprotoPersonalDataServer",
                        "serviceEndpoint": f"{origin}/bluesky",
                    }
                ],
            },
        )

    async def create_session(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        identifier = body.get("identifier") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(identifier, str) or not isinstance(password, str):
            sandbox.record("bluesky", request.method, request.path, "", 400)
            return xrpc_error(400, "InvalidRequest", 'Input must have the property "identifier"')
        login = _bluesky_login(state, identifier)
        if (
            login is None
            or login.app_password is None
            or not hmac.compare_digest(password, login.app_password)
        ):
            sandbox.record("bluesky", request.method, request.path, "", 401)
            return xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password")
        now = int(time.time())
        access = _jwt(
            {
                "scope": "com.atproto.appPass",
                "sub": login.user["id"],
                "exp": now + 7200,
                "jti": secrets.token_hex(8),
            }
        )
        refresh = _jwt(
            {
                "scope": "com.atproto.refresh",
                "sub": login.user["id"],
                "exp": now + 90 * 86400,
                "jti": secrets.token_hex(8),
            }
        )
        state.users[access] = ("user", login.user)
        state.users[refresh] = ("user", login.user)
        sandbox.record("bluesky", request.method, request.path, access, 200)
        return _json(
            200,
            {
                "accessJwt": access,
                "refreshJwt": refresh,
                "handle": login.user["username"],
                "did": login.user["id"],
                "active": True,
            },
        )

    async def get_profile(request: web.Request) -> web.StreamResponse:
        login = _bluesky_login(state, request.query.get("actor", ""))
        sandbox.record("bluesky", request.method, request.path, "", 200 if login else 400)
        if login is None:
            return xrpc_error(400, "InvalidRequest", "Profile not found")
        user = login.user
        body = {"did": user["id"], "handle": user["username"], "displayName": _name(user)}
        if avatar := _avatar(user):
            body["avatar"] = avatar
        return _json(200, body)

    return {
        ("GET", "/xrpc/com.atproto.identity.resolveHandle"): resolve_handle,
        ("GET", "/plc/{did}"): did_document,
        ("POST", "/xrpc/com.atproto.server.createSession"): create_session,
        ("GET", "/xrpc/app.bsky.actor.getProfile"): get_profile,
    }


# --- profile answers for tokens the sandbox issued ---------------------------------------


def profile_answer(state: ConsentState, platform: str, kind: str, token: str, body: Any) -> Any:
    """The verify/profile answer for the user a token was issued to (else ``body``)."""
    found = state.user_of(token)
    if found is None:
        return body
    _, user = found
    name, avatar = _name(user), _avatar(user)
    if platform == "twitter" and kind == "verify":
        data = {"id": user["id"], "name": name, "username": user["username"]}
        return {"data": data | ({"profile_image_url": avatar} if avatar else {})}
    if platform == "mastodon" and kind == "verify":
        return {
            "id": user["id"],
            "username": user["username"],
            "acct": user["username"],
            "display_name": user.get("name") or "",
            "avatar": avatar or "https://files.sandbox.example/avatars/original/missing.png",
            "url": f"https://mastodon.sandbox.example/@{user['username']}",
        }
    if platform == "tiktok" and kind == "verify":
        info = {
            "open_id": user["id"],
            "union_id": f"union-{user['id']}",
            "display_name": name,
            "username": user["username"],
        }
        return body | {"data": {"user": info | ({"avatar_url": avatar} if avatar else {})}}
    if platform == "youtube" and kind == "verify":
        snippet: dict[str, Any] = {"title": name, "customUrl": f"@{user['username']}"}
        if avatar:
            snippet["thumbnails"] = {"default": {"url": avatar, "width": 88, "height": 88}}
        channel = {"kind": "youtube#channel", "id": user["id"], "snippet": snippet}
        return {"kind": "youtube#channelListResponse", "items": [channel]}
    if platform == "instagram" and kind == "verify_me":
        out = {"user_id": user["id"], "id": user["id"], "username": user["username"], "name": name}
        return out | ({"profile_picture_url": avatar} if avatar else {})
    if platform == "threads" and kind == "verify_me":
        out = {"id": user["id"], "username": user["username"], "name": name}
        return out | ({"threads_profile_picture_url": avatar} if avatar else {})
    if platform == "facebook" and kind == "verify_me":
        return {"id": user["id"], "name": name}
    if platform == "bluesky" and kind == "verify":
        return body | {"handle": user["username"], "did": user["id"]}
    return body


def mastodon_revoke_refused(state: ConsentState, token: str, form: Mapping[str, str]) -> bool:
    """Mastodon revokes a token only for the app it was issued to (403 unauthorized_client
    otherwise); tokens this sandbox did not issue through an app are not checked."""
    client_id = state.mastodon_clients.get(token.split("~", 1)[0])
    if client_id is None:
        return False
    app = state.mastodon_apps.get(client_id)
    return not (
        app is not None
        and hmac.compare_digest(form.get("client_id", ""), client_id)
        and hmac.compare_digest(form.get("client_secret", ""), app.client_secret)
    )
