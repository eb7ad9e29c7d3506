import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T

from .rows import Row, Sandbox, run_row

INVALID = "access_token_invalid"

# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_expired", 401, INVALID, try_refresh=True, expired=True),
    Row("verify", "revoked", T.dead, "token_revoked", 401, INVALID, try_refresh=True),
    Row("verify", "scope_missing", T.unknown, "permission_missing", 401, "scope_not_authorized"),
    # traps: app caps and content errors are not token deaths
    Row("verify", "user_cap", T.transient, "quota_exceeded", 403, "reached_active_user_cap", platform_wide=True),
    Row("verify", "spam_risk", T.unknown, "unexpected_response", 403, "spam_risk_too_many_posts"),
    Row("verify", "rate_limited", T.transient, "rate_limited", 429),
    Row("verify", "error", T.transient, "server_error", 500),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "invalid_params"),
    Row("refresh", "valid", T.valid, status=200),
    Row("refresh", "expired", T.dead, "refresh_failed", 400, "invalid_grant"),
    Row("refresh", "revoked", T.dead, "refresh_failed", 400, "invalid_grant"),
    Row("refresh", "rate_limited", T.transient, "rate_limited", 429),
    Row("refresh", "error", T.transient, "server_error", 500),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "revoked", R.already_invalid, status=401, code=INVALID),
    Row("revoke", "error", R.transient, status=500, code="server_error"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_tiktok(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["tiktok"], row)
