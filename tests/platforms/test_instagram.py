import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import TokenOutcome as T

from .rows import Row, Sandbox, run_row

ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_expired", 400, "190/463"),
    Row("verify", "revoked", T.dead, "token_revoked", 400, "190/458"),
    Row("verify", "password_changed", T.dead, "token_revoked", 400, "190/460"),
    Row("verify", "checkpoint", T.dead, "user_action_required", 400, "190/459"),
    Row("verify", "rate_limited", T.transient, "throttled", 403, "4", 60, True),
    Row("verify", "throttled_page", T.transient, "throttled", 403, "32"),
    # "An unknown error occurred" is retryable (Postiz)
    Row("verify", "unknown_error", T.transient, "server_error", 400, "1"),
    Row("verify", "error", T.transient, "server_error", 500),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "100"),
    Row("refresh", "valid", T.valid, status=200),
    Row("refresh", "expired", T.dead, "token_expired", 400, "190/463"),
    Row("refresh", "error", T.transient, "server_error", 500),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_instagram(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["instagram"], row)
