import pytest

from service.platforms.base import PlatformAdapter
from service.platforms.base import TokenOutcome as T

from .rows import Row, Sandbox, run_row

# fmt: off
ROWS = [
    Row("verify", "valid", T.valid, status=200),
    Row("verify", "expired", T.dead, "token_expired", 400, "190/463"),
    Row("verify", "revoked", T.dead, "token_revoked", 400, "190/458"),
    Row("verify", "rate_limited", T.transient, "throttled", 403, "4", 60, True),
    Row("verify", "throttled_user", T.transient, "throttled", 403, "17"),
    Row("verify", "error", T.transient, "server_error", 500),
    Row("verify", "bad_request", T.unknown, "unexpected_response", 400, "100"),
    Row("refresh", "valid", T.valid, status=200),
    Row("refresh", "expired", T.dead, "token_expired", 400, "190/463"),
    Row("refresh", "rate_limited", T.transient, "throttled", 403, "4", 60, True),
    Row("refresh", "error", T.transient, "server_error", 500),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_threads(row: Row, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]) -> None:
    await run_row(sandbox, adapters["threads"], row)
