import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T
from service.platforms.http import seconds_until_midnight

from .rows import Row, Sandbox, run_row

# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    # verify is introspection: only its word marks a token dead
    Row("verify", "expired", T.dead, "token_expired", 200, "expired", try_refresh=True),
    Row("verify", "revoked", T.dead, "token_revoked", 200, "revoked"),
    Row("verify", "invalid_client", T.unknown, "unexpected_response", 401, "invalid_client"),
    Row("verify", "rate_limited", T.transient, "rate_limited", 429, retry_after=seconds_until_midnight),
    Row("verify", "error", T.transient, "server_error", 500),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "invalid_request"),
    Row("refresh", "valid", T.valid, status=200),
    Row("refresh", "expired", T.unknown, "refresh_rejected", 400, "invalid_request"),
    Row("refresh", "error", T.transient, "server_error", 500),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "invalid_client", R.failed, status=401, code="invalid_client"),
    Row("revoke", "error", R.transient, status=500, code="server_error"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_linkedin(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["linkedin"], row)
