"""How sweeps claim: a manual sweep resumes from its key and never re-reads what it leased,
scoped sweeps take exactly their scope, and every claim counts itself on the sweep row."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import orjson

from service.core.repository import sweeps
from tests.worker.conftest import SweepRunner
from tests.worker.test_health import account

LEASE = 600.0


async def claim_all(pool: asyncpg.Pool, sweep_id: int, **scope: Any) -> list[list[str]]:
    batches: list[list[str]] = []
    while True:
        batch = await sweeps.claim(
            pool,
            sweep_id,
            manual=True,
            platform=scope.get("platform"),
            account_id=scope.get("account_id"),
            limit=7,
            lease_seconds=LEASE,
        )
        if not batch.ids:
            return batches
        batches.append(batch.ids)
        assert len(batches) < 100, "the claims never ran dry"


async def test_manual_claims_resume_from_the_last_id_and_take_each_account_once(
    import_lines: Any, pool: asyncpg.Pool
) -> None:
    ids = await import_lines("acme", [account("mastodon", f"m-{i}") for i in range(30)])
    sweep_id = await sweeps.create_sweep(pool, "manual")
    batches = await claim_all(pool, sweep_id)
    taken = [i for b in batches for i in b]
    assert sorted(taken) == sorted(ids) and len(taken) == len(set(taken))
    # in key order: every batch lies wholly above the one before it
    order = await pool.fetch("SELECT id FROM accounts ORDER BY id")
    rank = {r["id"]: n for n, r in enumerate(order)}
    for before, after in itertools.pairwise(batches):
        assert max(rank[i] for i in before) < min(rank[i] for i in after)
    row = await sweeps.get_sweep(pool, sweep_id)
    assert row is not None
    assert row["claimed"] == 30 and row["claim_cursor"] == order[-1]["id"]


async def test_a_second_manual_sweep_takes_everything_again(
    sweep: SweepRunner, import_lines: Any, pool: asyncpg.Pool
) -> None:
    """Batch 50, 120 accounts: each sweep checks every one of them exactly once, though
    the first left them all leased-then-released and ordered differently on the due index."""
    await import_lines("acme", [account(p, f"a-{p}-{i}") for p in ("bluesky", "mastodon") for i in range(60)])  # fmt: skip
    for _ in range(2):
        result = await sweep()
        assert (result["status"], result["claimed"], result["checked"]) == ("done", 120, 120)
        assert result["healthy"] == 120
    leased = await pool.fetchval("SELECT count(*) FROM accounts WHERE lease_sweep_id IS NOT NULL")
    assert leased == 0


async def test_platform_and_account_sweeps_take_only_their_scope(
    import_lines: Any, pool: asyncpg.Pool
) -> None:
    blue = await import_lines("acme", [account("bluesky", f"b-{i}") for i in range(10)])
    await import_lines("acme", [account("mastodon", f"m-{i}") for i in range(10)])
    sweep_id = await sweeps.create_sweep(pool, "manual", "bluesky")
    taken = [i for b in await claim_all(pool, sweep_id, platform="bluesky") for i in b]
    assert sorted(taken) == sorted(blue)

    one = await sweeps.create_sweep(pool, "manual", None, blue[3])
    # leased to the bluesky sweep: passed over while that lease runs
    assert await claim_all(pool, one, account_id=blue[3]) == []
    await pool.execute("UPDATE accounts SET next_check_at = now() - interval '1 s'")
    again = await sweeps.create_sweep(pool, "manual", None, blue[3])
    assert await claim_all(pool, again, account_id=blue[3]) == [[blue[3]]]


async def test_manual_claims_pass_over_live_leases_and_take_expired_ones(
    import_lines: Any, pool: asyncpg.Pool
) -> None:
    ids = await import_lines("acme", [account("mastodon", f"l-{i}") for i in range(6)])
    other = await sweeps.create_sweep(pool, "schedule")
    await pool.execute(
        "UPDATE accounts SET lease_sweep_id = $1, next_check_at = now() + interval '1 hour' "
        "WHERE id = ANY($2::text[])",
        other,
        ids[:2],
    )
    await pool.execute(
        "UPDATE accounts SET lease_sweep_id = $1, next_check_at = now() - interval '1 s' "
        "WHERE id = $2",
        other,
        ids[2],
    )
    sweep_id = await sweeps.create_sweep(pool, "manual")
    taken = [i for b in await claim_all(pool, sweep_id) for i in b]
    assert sorted(taken) == sorted(ids[2:])


async def test_a_claim_reads_only_accounts_past_its_resume_key(
    import_lines: Any, pool: asyncpg.Pool
) -> None:
    """With half the accounts claimed, the next claim's scan reads one batch of rows, not
    the half already leased (planner pushed onto the index, as it is at any real size)."""
    await import_lines("acme", [account("mastodon", f"r-{i}") for i in range(60)])
    # as after an earlier sweep: every account due in about six hours, so the ones this
    # sweep leases (due again in ten minutes) sort first on the due index
    await pool.execute(
        "UPDATE accounts SET next_check_at = now() + interval '6 hours' * (0.9 + random() / 5)"
    )
    sweep_id = await sweeps.create_sweep(pool, "manual")
    for _ in range(4):
        await sweeps.claim(pool, sweep_id, manual=True, platform=None, account_id=None,
                           limit=7, lease_seconds=LEASE)  # fmt: skip
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            # a table of 60 rows fits in a page: tell the planner what size makes true
            for knob in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                await conn.execute(f"SET LOCAL {knob} = off")
            text = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {sweeps.CLAIM_SCOPE}", sweep_id, None, 7, LEASE
            )
            (plan,) = orjson.loads(text)
        finally:
            await tx.rollback()
    scans = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "accounts" and "Scan" in node["Node Type"]:
            scans.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    due = [n for n in scans if n.get("Index Name") == "accounts_pkey" and "Index Cond" in n]
    assert due, [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in scans]
    read = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in due)
    assert read <= 7 * 2, due
