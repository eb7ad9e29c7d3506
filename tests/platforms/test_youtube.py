import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T
from service.platforms.http import seconds_until_midnight

from .rows import Row, Sandbox, run_row


def until_pacific_midnight() -> float:
    return seconds_until_midnight("America/Los_Angeles")


# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "no_channel", T.unknown, "account_deactivated", 200, "no_channel"),
    Row("verify", "expired", T.dead, "token_expired", 401, "authError", try_refresh=True, expired=True),
    Row("verify", "revoked", T.dead, "token_revoked", 401, "authError", try_refresh=True),
    # trap: the daily project quota is not a revocation
    Row("verify", "quota_exceeded", T.transient, "quota_exceeded", 403, "quotaExceeded", until_pacific_midnight, platform_wide=True),
    Row("verify", "rate_limited", T.transient, "rate_limited", 403, "rateLimitExceeded"),
    Row("verify", "account_closed", T.unknown, "account_deactivated", 403, "authenticatedUserAccountClosed"),
    Row("verify", "error", T.transient, "server_error", 503),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "invalidParameter"),
    Row("refresh", "valid", T.valid, status=200),
    Row("refresh", "expired", T.dead, "refresh_failed", 400, "invalid_grant"),
    Row("refresh", "revoked", T.dead, "refresh_failed", 400, "invalid_grant"),
    Row("refresh", "temporarily_unavailable", T.transient, "server_error", 400, "temporarily_unavailable"),
    Row("refresh", "invalid_client", T.unknown, "unexpected_response", 401, "invalid_client"),
    Row("refresh", "rate_limited", T.transient, "rate_limited", 429, retry_after=30, extra={"retry_after": 30}),
    Row("refresh", "error", T.transient, "server_error", 500),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "revoked", R.already_invalid, status=400, code="invalid_token"),
    Row("revoke", "error", R.transient, status=500, code="server_error"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_youtube(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["youtube"], row)
