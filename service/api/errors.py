"""Typed API errors and the one middleware that renders every error body."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from asyncpg.exceptions import InternalClientError
from redis.exceptions import RedisError

from service.api.appkeys import REQUEST_ID
from service.core.db import UNAVAILABLE_ERRORS

log = logging.getLogger("octopost.api")

JSON = "application/json"

# aiohttp raises these itself (no route, wrong method, body too large, ...).
_TYPE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


def error_type(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "invalid_request" if status < 500 else "internal_error")


def error_response(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = orjson.dumps({"error": {"type": type_ or error_type(status), "message": message}})
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


class ApiError(Exception):
    status = 400
    type = "invalid_request"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.message, type_=self.type, headers=self.headers)


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    status = 401
    type = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="octopost"'})


class Forbidden(ApiError):
    status = 403
    type = "forbidden"


class InvalidSignature(ApiError):
    """A platform notice whose signature does not verify (forged, wrong secret, stale)."""

    status = 401
    type = "invalid_signature"


class NotFound(ApiError):
    status = 404
    type = "not_found"


class AccountInactive(ApiError):
    """The account exists but its tokens are dead: the customer has to reconnect it."""

    status = 409
    type = "account_inactive"


class Conflict(ApiError):
    status = 409
    type = "conflict"


class RequestTimeout(ApiError):
    status = 408
    type = "request_timeout"


class PayloadTooLarge(ApiError):
    status = 413
    type = "payload_too_large"


class TooManyRequests(ApiError):
    status = 429
    type = "rate_limited"


class ServiceUnavailable(ApiError):
    status = 503
    type = "service_unavailable"


class PlatformUnavailable(ApiError):
    """The platform did not answer usefully just now; Retry-After says when to ask again."""

    status = 503
    type = "platform_unavailable"


# A connection the server closed mid-statement (shutdown, crash) can be handed out once more
# before asyncpg has seen its socket close; a statement on it fails with InternalClientError
# ("another operation is in progress"). That is the same outage, not a bug of ours.
_DATABASE_GONE = (*UNAVAILABLE_ERRORS, InternalClientError)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        message = exc.reason
        if exc.status == 405:
            message = f"method {request.method} is not allowed here"
        elif exc.status == 404:
            message = "no such endpoint"
        elif exc.status == 413:
            message = "request body is too large"
        return error_response(exc.status, message, headers=headers)
    except asyncio.CancelledError:
        raise
    except (*_DATABASE_GONE, RedisError) as exc:
        log.warning(
            "%s unavailable request_id=%s error=%s",
            "redis" if isinstance(exc, RedisError) else "database",
            request.get(REQUEST_ID),
            type(exc).__name__,
        )
        return error_response(
            503,
            "the service is temporarily unavailable, retry shortly",
            headers={"Retry-After": "1"},
        )
    except Exception:
        log.exception(
            "unhandled error request_id=%s %s %s",
            request.get(REQUEST_ID),
            request.method,
            request.rel_url.path,
        )
        return error_response(500, "internal error; quote the X-Request-Id header to support")
