"""Reads batched per event-loop turn (service.core.db.BatchedStatement): every caller gets exactly
its own answer, as if it had sent its own statement."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from service.api.models import ACCOUNT_FIELDS, Account, AccountList, account_json, account_list_json
from service.core.db import Pool
from service.core.repository import accounts
from tests.conftest import SEED_ACCOUNTS, with_tokens


async def workspace_id(pool: asyncpg.Pool, name: str) -> int:
    value: int = await pool.fetchval("SELECT id FROM workspaces WHERE name = $1", name)
    return value


async def test_concurrent_gets_share_one_statement_and_see_only_their_workspace(
    pool: Pool, seeded: str, make_key: Any, import_lines: Any
) -> None:
    await make_key("beta")
    (beta_account,) = await import_lines(
        "beta", [with_tokens({**SEED_ACCOUNTS[0], "id": "acc_beta1", "platform_user_id": "b"})]
    )
    acme, beta = await workspace_id(pool, "acme"), await workspace_id(pool, "beta")
    asks = [(a["id"], ws) for a in SEED_ACCOUNTS for ws in (acme, beta)] + [
        (beta_account, acme),
        (beta_account, beta),
        ("acc_nothing", acme),
    ]
    statement = pool.batched(accounts.GET_ACCOUNT_BATCHED)
    sent = statement.sent
    rows = await asyncio.gather(*(accounts.get_account(pool, i, ws) for i, ws in asks * 5))
    assert statement.sent == sent + 1
    for (account_id, ws), row in zip(asks * 5, rows, strict=True):
        owner = beta if account_id == beta_account else acme
        if account_id == "acc_nothing" or ws != owner:
            assert row is None, (account_id, ws)
        else:
            assert row is not None and row["id"] == account_id
    async with pool.acquire() as conn:  # one statement each, unbatched: the same answers
        for (account_id, ws), row in zip(asks, rows, strict=False):
            alone = await accounts.get_account(conn, account_id, ws)
            assert (alone is None) == (row is None)
            if alone is not None and row is not None:
                assert account_json(alone) == account_json(row)


async def test_concurrent_lists_keep_each_workspaces_filters_and_order(
    pool: Pool, seeded: str, make_key: Any, import_lines: Any
) -> None:
    await make_key("beta")
    await import_lines(
        "beta",
        [with_tokens({**a, "id": a["id"] + "b", "platform_user_id": "b" + a["id"]})
         for a in reversed(SEED_ACCOUNTS)],
    )  # fmt: skip
    acme, beta = await workspace_id(pool, "acme"), await workspace_id(pool, "beta")
    asks: list[dict[str, Any]] = [
        {"workspace_id": ws, "platform": platform, "is_active": active}
        for ws in (acme, beta, 999_999)
        for platform in (None, "twitter", "youtube")
        for active in (None, True, False)
    ]
    statement = pool.batched(accounts.LIST_ACCOUNTS_BATCHED)
    sent = statement.sent
    batched = await asyncio.gather(
        *(accounts.list_accounts(pool, a.pop("workspace_id"), **a) for a in [dict(a) for a in asks])
    )
    assert statement.sent == sent + 1
    assert len(batched[0]) == 3
    async with pool.acquire() as conn:
        for ask, rows in zip(asks, batched, strict=True):
            alone = await accounts.list_accounts(conn, ask.pop("workspace_id"), **ask)
            assert [account_json(r) for r in rows] == [account_json(r) for r in alone], ask


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_works(
    pool: Pool, seeded: str
) -> None:
    acme = await workspace_id(pool, "acme")
    # a workspace id PostgreSQL cannot take (bigint): the whole statement is refused
    results = await asyncio.gather(
        accounts.get_account(pool, "acc_abc123", acme),
        accounts.get_account(pool, "acc_def456", 2**70),
        return_exceptions=True,
    )
    assert all(isinstance(r, asyncpg.DataError | OverflowError) for r in results), results
    row = await accounts.get_account(pool, "acc_abc123", acme)
    assert row is not None and row["id"] == "acc_abc123"


async def test_a_cancelled_caller_leaves_the_others_their_answers(pool: Pool, seeded: str) -> None:
    acme = await workspace_id(pool, "acme")
    tasks = [
        asyncio.ensure_future(accounts.get_account(pool, a["id"], acme)) for a in SEED_ACCOUNTS
    ]
    await asyncio.sleep(0)  # every task has joined the batch
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [r["id"] for r in (done[0], done[2])] == ["acc_abc123", "acc_ghi789"]  # type: ignore[index]


@pytest.mark.parametrize("batched", [True, False])
async def test_list_bodies_are_what_the_models_write(
    pool: Pool, seeded: str, batched: bool
) -> None:
    acme = await workspace_id(pool, "acme")
    if batched:
        rows = await accounts.list_accounts(pool, acme)
    else:
        async with pool.acquire() as conn:
            rows = await accounts.list_accounts(conn, acme)
    models = [Account.model_validate(dict(zip(ACCOUNT_FIELDS, r, strict=False))) for r in rows]
    expected = AccountList(accounts=models).model_dump_json().encode()
    assert account_list_json(rows, next_cursor=None) == expected
