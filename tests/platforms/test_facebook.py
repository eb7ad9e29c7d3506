import aiohttp
import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import RevokeOutcome as R
from service.platforms.base import TokenOutcome as T
from service.platforms.registry import build_adapters

from .rows import Row, Sandbox, run_row, sandbox_settings

THROTTLED = T.transient, "throttled", 403

# fmt: off
DEBUG_TOKEN_ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_expired", 200, "190/463"),
    Row("verify", "revoked", T.dead, "token_revoked", 200, "190/458"),
    Row("verify", "password_changed", T.dead, "token_revoked", 200, "190/460"),
    Row("verify", "checkpoint", T.dead, "user_action_required", 200, "190/459"),
    # debug_token's own 190 is about our app token, never the user's
    Row("verify", "app_token_invalid", T.unknown, "app_credentials_rejected", 400, "190"),
    Row("verify", "rate_limited", *THROTTLED, "4", 120, True, extra={"retry_after": 120}),
    Row("verify", "throttled_user", *THROTTLED, "17"),
    Row("verify", "throttled_page", *THROTTLED, "32"),
    Row("verify", "throttled_app_341", *THROTTLED, "341", platform_wide=True),
    Row("verify", "policy_block", *THROTTLED, "368"),
    Row("verify", "custom_limit", *THROTTLED, "613"),
    Row("verify", "unknown_error", T.transient, "server_error", 400, "1"),
    Row("verify", "transient_flag", T.transient, "server_error", 400, "131000"),
    Row("verify", "permission_removed", T.unknown, "permission_missing", 403, "200"),
    Row("verify", "error", T.transient, "server_error", 500),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "100"),
    Row("revoke", "valid", R.revoked, status=200),
    Row("revoke", "revoked", R.already_invalid, status=400, code="190/458"),
    Row("revoke", "throttled_user", R.transient, status=403, code="throttled"),
    Row("revoke", "error", R.transient, status=500, code="server_error"),
]
# fmt: on

# fmt: off
ME_ROWS = [  # without app credentials: GET /me with the token itself
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_expired", 400, "190/463"),
    Row("verify", "revoked", T.dead, "token_revoked", 400, "190/458"),
    Row("verify", "session_invalid", T.dead, "token_revoked", 400, "102"),
    Row("verify", "permission_removed", T.unknown, "permission_missing", 403, "200"),
    Row("verify", "rate_limited", *THROTTLED, "4", 60, True),
]
# fmt: on


@pytest.mark.parametrize("row", DEBUG_TOKEN_ROWS, ids=str)
async def test_facebook(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["facebook"], row)


@pytest.mark.parametrize("row", ME_ROWS, ids=str)
async def test_facebook_without_app_token(
    row: Row, sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    adapter = build_adapters(http, sandbox_settings(sandbox.url, facebook_app_id=""))["facebook"]
    await run_row(sandbox, adapter, row)
