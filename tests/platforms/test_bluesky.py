import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T

from .rows import Row, Sandbox, run_row

# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    # trap: 400 ExpiredToken on the access token means refresh, never dead
    Row("verify", "expired", T.unknown, "token_expired", 400, "ExpiredToken", try_refresh=True),
    Row("verify", "revoked", T.unknown, "token_revoked", 400, "InvalidToken", try_refresh=True),
    # active=false and takedowns are account states, not token deaths
    Row("verify", "deactivated", T.unknown, "account_deactivated", 200, "deactivated"),
    Row("verify", "takendown", T.unknown, "account_deactivated", 401, "AccountTakedown"),
    Row("verify", "dpop_nonce", T.transient, "dpop_nonce", 401, "use_dpop_nonce", retry_after=0),
    Row("verify", "rate_limited", T.transient, "rate_limited", 429, retry_after=30, extra={"retry_after": 30}),
    Row("verify", "error", T.transient, "server_error", 500),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "InvalidRequest"),
    Row("refresh", "valid", T.valid, status=200),
    Row("refresh", "expired", T.dead, "refresh_failed", 400, "ExpiredToken"),
    Row("refresh", "revoked", T.dead, "refresh_failed", 400, "ExpiredToken"),
    Row("refresh", "invalid_did", T.dead, "refresh_failed", 400, "InvalidDID"),
    Row("refresh", "deactivated", T.unknown, "account_deactivated", 401, "AccountDeactivated"),
    Row("refresh", "takendown", T.unknown, "account_deactivated", 401, "AccountTakedown"),
    Row("refresh", "rate_limited", T.transient, "rate_limited", 429, retry_after=60),
    Row("refresh", "error", T.transient, "server_error", 500),
    Row("refresh", "bad_request", T.unknown, "unexpected_response", 400, "InvalidRequest"),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "revoked", R.already_invalid, status=400, code="ExpiredToken"),
    Row("revoke", "error", R.transient, status=500, code="server_error"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_bluesky(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["bluesky"], row)
