import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T

from .rows import Row, Sandbox, run_row

# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_expired", 401, "Unauthorized", try_refresh=True, expired=True),
    Row("verify", "revoked", T.dead, "token_revoked", 401, "Unauthorized", try_refresh=True),
    Row("verify", "invalid_v1", T.dead, "token_revoked", 401, "89", try_refresh=True),
    # traps: 403 is never a token death
    Row("verify", "usage_capped", T.transient, "quota_exceeded", 403, "usage-capped", platform_wide=True),
    Row("verify", "suspended", T.unknown, "account_deactivated", 403, "user-suspended"),
    Row("verify", "forbidden", T.unknown, "unexpected_response", 403, "client-forbidden"),
    Row("verify", "rate_limited", T.transient, "rate_limited", 429, retry_after=30, extra={"retry_after": 30}),
    Row("verify", "error", T.transient, "server_error", 503),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "invalid-request"),
    Row("refresh", "valid", T.valid, status=200),
    # the refusal body is UNCONFIRMED: not dead on its own (see test_flows for verify + refresh)
    Row("refresh", "expired", T.unknown, "refresh_rejected", 400, "invalid_request"),
    Row("refresh", "revoked", T.unknown, "refresh_rejected", 400, "invalid_request"),
    Row("refresh", "rate_limited", T.transient, "rate_limited", 429, retry_after=60),
    Row("refresh", "error", T.transient, "server_error", 503),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "revoked", R.already_invalid, status=401),
    Row("revoke", "error", R.transient, status=503, code="server_error"),
    Row("revoke", "bad_request", R.failed, status=400, code="invalid-request"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_twitter(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["twitter"], row)
