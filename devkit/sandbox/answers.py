"""What each platform answers, per endpoint kind and token state, in the shapes of the
adapters' tables (``service/platforms/<platform>.py``, indexed in service/platforms/README.md).
Every platform knows the common states (valid, expired, revoked,
rotated, error, rate_limited; slow and flaky are resolved before these functions run) plus
its own scenarios for the traps; a state a platform does not model gets its "unknown 4xx".
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from devkit.sandbox.state import SandboxState

Answer = tuple[int, Any, dict[str, str]]  # status, JSON body (None: empty), headers

DEAD = frozenset({"expired", "revoked", "rotated"})


@dataclass(slots=True)
class Ask:
    kind: str  # verify | verify_app | verify_me | refresh | revoke
    state: str
    token: str
    retry_after: float
    sandbox: SandboxState
    rotates: bool

    def issue(self) -> tuple[str, str]:
        return self.sandbox.issue(self.token, rotate=self.rotates)

    def reset_epoch(self) -> int:
        return int(time.time() + self.retry_after)


def ok(body: Any) -> Answer:
    return 200, body, {}


# --- X ---------------------------------------------------------------------------------


def _x_problem(title: str, kind: str, status: int) -> dict[str, Any]:
    problem = "about:blank" if kind == "about:blank" else f"https://api.x.com/2/problems/{kind}"
    return {"title": title, "type": problem, "status": status, "detail": title}


def twitter(a: Ask) -> Answer:
    s, k = a.state, a.kind
    if s == "valid":
        if k == "verify":
            return ok({"data": {"id": "2244994945", "name": "Sandbox", "username": "sandbox"}})
        if k == "refresh":
            access, refresh = a.issue()
            return ok(
                {
                    "token_type": "bearer",
                    "expires_in": 7200,
                    "access_token": access,
                    "scope": "tweet.read users.read offline.access",
                    "refresh_token": refresh,
                }
            )
        return ok({"revoked": True})
    if s in DEAD:
        if k == "refresh":
            body = {
                "error": "invalid_request",
                "error_description": "Value passed for the token was invalid.",
            }
            return 400, body, {}
        return 401, _x_problem("Unauthorized", "about:blank", 401), {}
    if s == "invalid_v1":
        return 401, {"errors": [{"code": 89, "message": "Invalid or expired token."}]}, {}
    if s == "rate_limited":
        headers = {
            "x-rate-limit-limit": "75",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(a.reset_epoch()),
        }
        return 429, {"errors": [{"code": 88, "message": "Rate limit exceeded"}]}, headers
    if s == "error":
        return 503, _x_problem("Service Unavailable", "about:blank", 503), {}
    if s == "usage_capped":
        return 403, _x_problem("Usage cap exceeded", "usage-capped", 403), {}
    if s == "suspended":
        return 403, _x_problem("Forbidden", "user-suspended", 403), {}
    if s == "forbidden":
        return 403, _x_problem("Client Forbidden", "client-forbidden", 403), {}
    return 400, _x_problem("Invalid Request", "invalid-request", 400), {}


# --- Bluesky ---------------------------------------------------------------------------

_DID = "did:plc:sandbox"


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256K', 'typ': 'at+jwt'})}.{part(claims)}.sandbox"


def bluesky(a: Ask) -> Answer:
    s, k = a.state, a.kind

    def err(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Answer:
        return status, {"error": error, "message": message}, headers or {}

    if s == "valid":
        session = {"handle": "sandbox.bsky.social", "did": _DID, "active": True}
        if k == "verify":
            return ok(session)
        if k == "refresh":
            access, refresh = a.issue()
            now = int(time.time())
            return ok(
                session
                | {
                    "accessJwt": _jwt(
                        {"scope": "com.atproto.access", "exp": now + 7200, "jti": access}
                    ),
                    "refreshJwt": _jwt(
                        {"scope": "com.atproto.refresh", "exp": now + 90 * 86400, "jti": refresh}
                    ),
                }
            )
        return 200, None, {}
    if s == "expired":
        return err(400, "ExpiredToken", "Token has expired")
    if s in DEAD:  # revoked, rotated
        if k == "verify":
            return err(400, "InvalidToken", "Token could not be verified")
        return err(400, "ExpiredToken", "Token has been revoked")
    if s == "deactivated":
        if k == "verify":
            return ok(
                {
                    "handle": "sandbox.bsky.social",
                    "did": _DID,
                    "active": False,
                    "status": "deactivated",
                }
            )
        return err(401, "AccountDeactivated", "Account is deactivated")
    if s == "takendown":
        return err(401, "AccountTakedown", "Account has been taken down")
    if s == "invalid_did":
        return err(400, "InvalidDID", "Invalid DID")
    if s == "dpop_nonce":
        body = {
            "error": "use_dpop_nonce",
            "error_description": "Authorization server requires nonce",
        }
        return 401, body, {"DPoP-Nonce": "sandbox-nonce"}
    if s == "rate_limited":
        reset = a.reset_epoch()
        headers = {
            "RateLimit-Limit": "3000",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": "3000;w=300",
        }
        return err(429, "RateLimitExceeded", "Rate Limit Exceeded", headers)
    if s == "error":
        return err(500, "InternalServerError", "Internal Server Error")
    return err(400, "InvalidRequest", "Input/handle must be a valid handle")


# --- Mastodon --------------------------------------------------------------------------


def mastodon(a: Ask) -> Answer:
    s, k = a.state, a.kind
    if s == "valid" or (s == "scope_missing" and k == "verify_app"):
        if k == "verify":
            return ok({"id": "109", "username": "sandbox", "acct": "sandbox"})
        if k == "verify_app":
            return ok({"name": "Octopost", "website": None, "scopes": ["write"]})
        return ok({})
    if k == "revoke" and s in DEAD:
        return ok({})  # idempotent
    if s == "expired":
        return 401, {"error": "The access token is invalid"}, {}
    if s in DEAD:
        return 401, {"error": "The access token was revoked"}, {}
    if s == "login_disabled":
        return 403, {"error": "Your login is currently disabled"}, {}
    if s == "scope_missing":
        return 403, {"error": "This action is outside the authorized scopes"}, {}
    if s == "app_token":
        return 422, {"error": "This method requires an authenticated user"}, {}
    if s == "unauthorized_client":
        body = {
            "error": "unauthorized_client",
            "error_description": "You are not authorized to revoke this token",
        }
        return 403, body, {}
    if s == "rate_limited":
        reset = datetime.fromtimestamp(time.time() + a.retry_after, UTC)
        headers = {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        return 429, {"error": "Too many requests"}, headers
    if s == "error":
        return 503, {"error": "Service Unavailable"}, {}
    return 404, {"error": "Record not found"}, {}


# --- LinkedIn --------------------------------------------------------------------------


def linkedin(a: Ask) -> Answer:
    s, k = a.state, a.kind
    body: dict[str, Any]
    now = int(time.time())
    if s == "valid":
        if k == "verify":
            return ok(
                {
                    "active": True,
                    "client_id": "sandbox",
                    "authorized_at": now - 86400,
                    "created_at": now - 86400,
                    "status": "active",
                    "expires_at": now + 60 * 86400,
                    "auth_type": "3L",
                    "scope": "openid,profile,w_member_social",
                }
            )
        if k == "refresh":
            access, refresh = a.issue()
            return ok(
                {
                    "access_token": access,
                    "expires_in": 5184000,
                    "refresh_token": refresh,
                    "refresh_token_expires_in": 30000000,
                    "scope": "openid,profile,w_member_social",
                }
            )
        return 200, None, {}
    if s in DEAD:
        if k == "verify":
            status = "expired" if s == "expired" else "revoked"
            return ok({"active": False, "status": status, "expires_at": now - 60})
        if k == "refresh":
            body = {
                "error": "invalid_request",
                "error_description": "The provided authorization grant or refresh token is "
                "invalid, expired or revoked",
            }
            return 400, body, {}
        return 200, None, {}
    if s == "invalid_client":
        return (
            401,
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            {},
        )
    if s == "rate_limited":  # LinkedIn sends no rate-limit headers
        body = {
            "status": 429,
            "serviceErrorCode": 101,
            "code": "TOO_MANY_REQUESTS",
            "message": "Resource level throttle APPLICATION DAY limit is reached.",
        }
        return 429, body, {}
    if s == "error":
        body = {
            "status": 500,
            "serviceErrorCode": 0,
            "code": "INTERNAL_SERVER_ERROR",
            "message": "Internal Server Error",
        }
        return 500, body, {}
    return (
        400,
        {
            "error": "invalid_request",
            "error_description": 'A required parameter "token" is missing',
        },
        {},
    )


# --- Meta (Facebook, Instagram, Threads) -----------------------------------------------


def _graph(
    code: int, message: str, subcode: int | None = None, *, transient: bool = False
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "SandboxTrace",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    return {"error": error}


_GRAPH_DEAD = {
    "expired": (463, "Error validating access token: Session has expired on Tuesday, 01-Jan-24."),
    "revoked": (458, "Error validating access token: The user has not authorized application 1."),
    "rotated": (467, "Error validating access token: The session is invalid."),
    "checkpoint": (
        459,
        "Error validating access token: You cannot access the app till you log in.",
    ),
    "password_changed": (
        460,
        "Error validating access token: The session has been invalidated because the user "
        "changed their password.",
    ),
}


def meta(a: Ask) -> Answer:
    s, k = a.state, a.kind
    if s == "valid":
        if k == "verify":  # debug_token
            return ok(
                {
                    "data": {
                        "app_id": "1",
                        "type": "PAGE",
                        "application": "Octopost",
                        "data_access_expires_at": int(time.time()) + 90 * 86400,
                        "expires_at": 0,
                        "is_valid": True,
                        "scopes": ["pages_manage_posts"],
                        "user_id": "1",
                    }
                }
            )
        if k == "refresh":
            access, _ = a.issue()
            return ok({"access_token": access, "token_type": "bearer", "expires_in": 5183944})
        if k == "revoke":
            return ok({"success": True})
        return ok({"id": "1", "user_id": "1", "username": "sandbox"})
    if s in _GRAPH_DEAD:
        subcode, message = _GRAPH_DEAD[s]
        if k == "verify":
            expires = int(time.time()) - 3600 if s == "expired" else 0
            error = {"code": 190, "message": message, "subcode": subcode}
            return ok(
                {
                    "data": {
                        "app_id": "1",
                        "is_valid": False,
                        "expires_at": expires,
                        "error": error,
                        "scopes": [],
                    }
                }
            )
        return 400, _graph(190, message, subcode), {}
    if s == "app_token_invalid":
        return 400, _graph(190, "Invalid OAuth access token - Cannot parse access token"), {}
    if s == "session_invalid":  # code 102 without subcode
        return 400, _graph(102, "Session key invalid or no longer valid"), {}
    if s == "rate_limited":  # app-level throttle: code 4 and the usage headers
        minutes = max(1, round(a.retry_after / 60))
        buc = {
            "1": [
                {
                    "type": "pages",
                    "call_count": 100,
                    "total_cputime": 10,
                    "total_time": 10,
                    "estimated_time_to_regain_access": minutes,
                }
            ]
        }
        headers = {
            "X-App-Usage": orjson.dumps(
                {"call_count": 100, "total_cputime": 20, "total_time": 30}
            ).decode(),
            "X-Business-Use-Case-Usage": orjson.dumps(buc).decode(),
        }
        return 403, _graph(4, "(#4) Application request limit reached", transient=True), headers
    if s == "throttled_user":
        return 403, _graph(17, "(#17) User request limit reached", transient=True), {}
    if s == "throttled_page":
        return 403, _graph(32, "(#32) Page request limit reached"), {}
    if s == "throttled_app_341":
        return 403, _graph(341, "(#341) Application limit reached"), {}
    if s == "policy_block":
        return (
            403,
            _graph(368, "The action attempted has been deemed abusive or is otherwise disallowed"),
            {},
        )
    if s == "custom_limit":
        return 403, _graph(613, "Calls to this api have exceeded the rate limit."), {}
    if s == "unknown_error":
        return 400, _graph(1, "An unknown error occurred"), {}
    if s == "transient_flag":
        return 400, _graph(131000, "Something went wrong", transient=True), {}
    if s == "permission_removed":
        return (
            403,
            _graph(200, "(#200) Requires pages_manage_posts permission to manage the object"),
            {},
        )
    if s == "error":
        return (
            500,
            _graph(
                2,
                "An unexpected error has occurred. Please retry your request later.",
                transient=True,
            ),
            {},
        )
    return (
        400,
        _graph(100, "(#100) Tried accessing nonexisting field (sandbox) on node type (User)"),
        {},
    )


# --- TikTok ----------------------------------------------------------------------------


def _tiktok_error(status: int, code: str, message: str) -> Answer:
    return (
        status,
        {"data": {}, "error": {"code": code, "message": message, "log_id": "sandbox"}},
        {},
    )


def tiktok(a: Ask) -> Answer:
    s, k = a.state, a.kind
    if s == "valid":
        if k == "verify":
            return ok(
                {
                    "data": {"user": {"open_id": "sandbox-open-id"}},
                    "error": {"code": "ok", "message": "", "log_id": "sandbox"},
                }
            )
        if k == "refresh":
            access, refresh = a.issue()
            return ok(
                {
                    "access_token": access,
                    "expires_in": 7200,
                    "open_id": "sandbox-open-id",
                    "refresh_expires_in": 15552000,
                    "refresh_token": refresh,
                    "scope": "user.info.basic,video.publish",
                    "token_type": "Bearer",
                }
            )
        return ok({})
    if s in DEAD:
        if k == "refresh":  # the HTTP status is UNCONFIRMED; the body is documented
            body = {
                "error": "invalid_grant",
                "error_description": "Refresh token is invalid or expired.",
                "log_id": "sandbox",
            }
            return 400, body, {}
        return _tiktok_error(
            401, "access_token_invalid", "The access token is invalid or not found in the request."
        )
    if s == "scope_missing":
        return _tiktok_error(
            401, "scope_not_authorized", "The user did not authorize the scope required."
        )
    if s == "user_cap":
        return _tiktok_error(
            403, "reached_active_user_cap", "The daily active user cap has been reached."
        )
    if s == "spam_risk":
        return _tiktok_error(
            403, "spam_risk_too_many_posts", "The daily post cap has been reached."
        )
    if s == "rate_limited":
        return _tiktok_error(429, "rate_limit_exceeded", "Rate limit exceeded.")
    if s == "error":
        return _tiktok_error(500, "internal_error", "Something went wrong.")
    return _tiktok_error(400, "invalid_params", "The request parameters are invalid.")


# --- YouTube (Google) ------------------------------------------------------------------


def _google_api_error(status: int, reason: str, message: str, grpc: str) -> Answer:
    errors = [
        {
            "message": message,
            "domain": "youtube.quota" if reason == "quotaExceeded" else "global",
            "reason": reason,
        }
    ]
    return (
        status,
        {"error": {"code": status, "message": message, "errors": errors, "status": grpc}},
        {},
    )


def youtube(a: Ask) -> Answer:
    s, k = a.state, a.kind
    if k == "verify":
        if s == "valid":
            return ok(
                {
                    "kind": "youtube#channelListResponse",
                    "items": [{"kind": "youtube#channel", "id": "UCsandbox"}],
                }
            )
        if s == "no_channel":
            return ok({"kind": "youtube#channelListResponse", "items": []})
        if s in DEAD:
            return _google_api_error(
                401,
                "authError",
                "Request had invalid authentication credentials.",
                "UNAUTHENTICATED",
            )
        if s == "quota_exceeded":
            return _google_api_error(
                403,
                "quotaExceeded",
                "The request cannot be completed because you have exceeded your quota.",
                "PERMISSION_DENIED",
            )
        if s == "rate_limited":
            return _google_api_error(
                403, "rateLimitExceeded", "Rate limit exceeded.", "PERMISSION_DENIED"
            )
        if s == "account_closed":
            return _google_api_error(
                403,
                "authenticatedUserAccountClosed",
                "The YouTube account has been closed.",
                "PERMISSION_DENIED",
            )
        if s == "error":
            return _google_api_error(
                503, "backendError", "The service is currently unavailable.", "UNAVAILABLE"
            )
        return _google_api_error(400, "invalidParameter", "Invalid parameter.", "INVALID_ARGUMENT")
    if s == "valid":
        if k == "refresh":
            access, _ = a.issue()
            return ok(
                {
                    "access_token": access,
                    "expires_in": 3599,
                    "scope": "https://www.googleapis.com/auth/youtube.upload",
                    "token_type": "Bearer",
                }
            )
        return ok({})
    if s in DEAD:
        if k == "refresh":
            return (
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                },
                {},
            )
        return 400, {"error": "invalid_token", "error_description": "Token expired or revoked"}, {}
    if s == "temporarily_unavailable":
        return (
            400,
            {"error": "temporarily_unavailable", "error_description": "Try again later."},
            {},
        )
    if s == "invalid_client":
        return (
            401,
            {"error": "invalid_client", "error_description": "The OAuth client was not found."},
            {},
        )
    if s == "rate_limited":
        return (
            429,
            {"error": "rate_limit_exceeded", "error_description": "Rate limit exceeded."},
            {"Retry-After": str(int(a.retry_after))},
        )
    if s == "error":
        return 500, {"error": "internal_failure", "error_description": "Internal failure."}, {}
    return 400, {"error": "invalid_request", "error_description": "Bad Request"}, {}


# --- the platforms, their routes and where each endpoint carries the token -------------

Route = tuple[str, str, str, str]  # method, path, kind, where the token is


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    answer: Callable[[Ask], Answer]
    routes: tuple[Route, ...]
    rotates: bool = False


PLATFORMS = (
    Platform(
        "twitter",
        twitter,
        (
            ("GET", "/2/users/me", "verify", "bearer"),
            ("POST", "/2/oauth2/token", "refresh", "form:refresh_token"),
            ("POST", "/2/oauth2/revoke", "revoke", "form:token"),
        ),
        rotates=True,
    ),
    Platform(
        "bluesky",
        bluesky,
        (
            ("GET", "/xrpc/com.atproto.server.getSession", "verify", "bearer"),
            ("POST", "/xrpc/com.atproto.server.refreshSession", "refresh", "bearer"),
            ("POST", "/xrpc/com.atproto.server.deleteSession", "revoke", "bearer"),
        ),
        rotates=True,
    ),
    Platform(
        "mastodon",
        mastodon,
        (
            ("GET", "/api/v1/accounts/verify_credentials", "verify", "bearer"),
            ("GET", "/api/v1/apps/verify_credentials", "verify_app", "bearer"),
            ("POST", "/oauth/revoke", "revoke", "form:token"),
        ),
    ),
    Platform(
        "linkedin",
        linkedin,
        (
            ("POST", "/oauth/v2/introspectToken", "verify", "form:token"),
            ("POST", "/oauth/v2/accessToken", "refresh", "form:refresh_token"),
            ("POST", "/oauth/v2/revoke", "revoke", "form:token"),
        ),
    ),
    Platform(
        "facebook",
        meta,
        (
            ("GET", "/{version}/debug_token", "verify", "query:input_token"),
            ("GET", "/{version}/me", "verify_me", "query:access_token"),
            ("DELETE", "/{version}/{user_id}/permissions", "revoke", "query:access_token"),
        ),
    ),
    Platform(
        "instagram",
        meta,
        (
            ("GET", "/{version}/me", "verify_me", "query:access_token"),
            ("GET", "/refresh_access_token", "refresh", "query:access_token"),
        ),
    ),
    Platform(
        "threads",
        meta,
        (
            ("GET", "/{version}/me", "verify_me", "query:access_token"),
            ("GET", "/refresh_access_token", "refresh", "query:access_token"),
        ),
    ),
    Platform(
        "tiktok",
        tiktok,
        (
            ("GET", "/v2/user/info/", "verify", "bearer"),
            ("POST", "/v2/oauth/token/", "refresh", "form:refresh_token"),
            ("POST", "/v2/oauth/revoke/", "revoke", "form:token"),
        ),
        rotates=True,
    ),
    Platform(
        "youtube",
        youtube,
        (
            ("GET", "/youtube/v3/channels", "verify", "bearer"),
            ("POST", "/token", "refresh", "form:refresh_token"),
            ("POST", "/revoke", "revoke", "query:token"),
        ),
    ),
)

# every state a client may set: the common ones and each platform's scenarios
SCENARIOS = frozenset(
    {
        "invalid_v1", "usage_capped", "suspended", "forbidden",  # twitter
        "deactivated", "takendown", "invalid_did", "dpop_nonce",  # bluesky
        "login_disabled", "scope_missing", "app_token", "unauthorized_client",  # mastodon
        "invalid_client",  # linkedin, youtube
        "checkpoint", "password_changed", "app_token_invalid", "session_invalid",  # meta
        "throttled_user", "throttled_page", "throttled_app_341", "policy_block",
        "custom_limit", "unknown_error", "transient_flag", "permission_removed",
        "user_cap", "spam_risk",  # tiktok
        "no_channel", "quota_exceeded", "account_closed", "temporarily_unavailable",  # youtube
        "bad_request",  # any: the platform's own unknown 4xx
    }
)  # fmt: skip
