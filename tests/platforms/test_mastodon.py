import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T

from .rows import Row, Sandbox, run_row

INVALID = "The access token is invalid"
REVOKED = "The access token was revoked"

# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_revoked", 401, INVALID),
    Row("verify", "revoked", T.dead, "token_revoked", 401, REVOKED),
    # trap: a disabled login is an account state
    Row("verify", "login_disabled", T.unknown, "account_deactivated", 403),
    # no read:accounts scope: the apps endpoint answers instead
    Row("verify", "scope_missing", T.valid, status=200),
    Row("verify", "app_token", T.unknown, "unexpected_response", 422),
    Row("verify", "rate_limited", T.transient, "rate_limited", 429, retry_after=30, extra={"retry_after": 30}),
    Row("verify", "error", T.transient, "server_error", 503),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 404, "Record not found"),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "revoked", R.revoked, status=200),  # idempotent
    Row("revoke", "unauthorized_client", R.failed, status=403, code="unauthorized_client"),
    Row("revoke", "error", R.transient, status=503, code="server_error"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_mastodon(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["mastodon"], row)
