"""Webhook delivery: deliveries per second of one worker process, change -> delivered latency
at a steady rate of changes, and both again with a dead endpoint among the live ones.

    python -m bench.webhooks                 # the full run, about two minutes
    python -m bench.webhooks --quick         # small sizes: to see that it works

Three processes: this one (PostgreSQL writes, the clock), the receiver (aiohttp, every
answer after --receiver-delay-ms, 50 by default; it timestamps each arrival), and one
dispatcher process: the worker's WebhookDispatcher, nothing else in it. PostgreSQL is an
embedded one of its own (no shared server is touched). Endpoints live in their own
workspaces, one each, so a change is one delivery; the dead endpoint accepts the connection
and never answers, so each of its attempts holds a slot for the whole timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    BIN,
    HOST,
    BenchError,
    Table,
    cores,
    fmt,
    load_average,
    run_async,
    running,
    say,
    wait_for_port,
)
from devkit.embedded import free_port

PYTHON = str(BIN / "python")


# --- the receiver process ----------------------------------------------------------------------


async def _receiver(port: int, delay: float) -> None:
    from aiohttp import web

    arrivals: dict[str, float] = {}  # account id (or event id) -> arrival, wall clock
    counts: dict[str, int] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        name = request.match_info["name"]
        if name == "dead":
            await asyncio.sleep(3600)
        counts[name] = counts.get(name, 0) + 1
        payload = json.loads(body)
        account = payload["data"].get("account")
        arrivals.setdefault(account["id"] if account else payload["id"], now)
        await asyncio.sleep(delay)
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"counts": counts, "arrivals": arrivals})

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        counts.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=4096).start()
    await asyncio.Event().wait()


# --- the dispatcher process --------------------------------------------------------------------


async def _dispatcher() -> None:
    from service.core.db import create_pool
    from service.core.keyring import load_vault
    from service.core.settings import Settings
    from worker.metrics import WorkerMetrics
    from worker.webhooks import WebhookDispatcher

    settings = Settings()
    pool = await create_pool(settings, min_size=2)
    dispatcher = WebhookDispatcher(settings, pool, load_vault(settings), WorkerMetrics())
    profile_to = os.environ.get("BENCH_PROFILE")
    profiler = None
    if profile_to:  # where the dispatcher's CPU goes: BENCH_PROFILE=file (pstats)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await dispatcher.start()
    print("dispatcher ready", flush=True)
    try:
        await stop.wait()
    finally:
        await dispatcher.close()
        await pool.close()
        if profiler is not None and profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)


# --- the harness ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stats(session: Any, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/stats") as r:
        result: dict[str, Any] = await r.json()
        return result


async def _setup(
    conn: asyncpg.Connection, vault: Any, receiver: str, live: int, dead: bool
) -> None:
    from service.core.repository import webhooks as repo
    from service.core.webhooks import ACCOUNT_EVENT_TYPES, new_endpoint_id, new_secret

    await conn.execute("TRUNCATE workspaces RESTART IDENTITY CASCADE")
    names = [f"live{n}" for n in range(live)] + (["dead"] if dead else [])
    for name in names:
        workspace_id = await conn.fetchval(
            "INSERT INTO workspaces (name) VALUES ($1) RETURNING id", name
        )
        endpoint_id = new_endpoint_id()
        sealed = vault.seal(endpoint_id, new_secret().encode())
        await repo.insert_endpoint(
            conn,
            endpoint_id,
            workspace_id,
            url=f"{receiver}/hook/{'dead' if name == 'dead' else 'live'}",
            events=list(ACCOUNT_EVENT_TYPES),
            description=name,
            key_id=sealed.key_id,
            sealed=sealed.blob,
        )


async def _accounts(conn: asyncpg.Connection, per_workspace: int) -> list[str]:
    """Accounts in every workspace, interleaved so consecutive changes hit every endpoint."""
    rows = await conn.fetch(
        """
        INSERT INTO accounts (id, workspace_id, platform, platform_user_id, username,
                              display_name)
        SELECT 'acc_' || w.id || '_' || n, w.id, 'twitter', w.id || '-' || n, 'u' || n, 'U'
        FROM workspaces w CROSS JOIN generate_series(1, $1) n
        ORDER BY n, w.id
        RETURNING id
        """,
        per_workspace,
    )
    return [r["id"] for r in rows]


async def _throughput(
    conn: asyncpg.Connection, session: Any, receiver: str, per_workspace: int, live: int
) -> tuple[float, int]:
    """Every workspace gets `per_workspace` events at once (one commit); the dispatcher is
    woken by it; deliveries/s over the live endpoints from the first to the last arrival."""
    await session.post(f"{receiver}/reset")
    await conn.execute(
        """
        SELECT emit_webhook_events(array_agg(w.id), array_agg('account.connected'::text),
                                   array_agg(NULL::text),
                                   array_agg(json_build_object('n', n)))
        FROM workspaces w CROSS JOIN generate_series(1, $1) n
        """,
        per_workspace,
    )
    want = per_workspace * live
    deadline = time.monotonic() + 600
    while True:
        stats = await _stats(session, receiver)
        if stats["counts"].get("live", 0) >= want:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"only {stats['counts']} of {want} deliveries arrived in 600 s")
        await asyncio.sleep(0.2)
    times = sorted(stats["arrivals"].values())
    return want / max(times[-1] - times[0], 1e-9), want


async def _latency(
    conn: asyncpg.Connection,
    session: Any,
    receiver: str,
    accounts: list[str],
    rate: float,
    live_suffix: str | None,
) -> tuple[list[float], int]:
    """`rate` changes per second, each its own transaction through the trail (the outbox
    write every change path uses); the latency of each from its commit to its arrival."""
    from service.core.repository.webhooks import TrailEvent, record_account_events

    await session.post(f"{receiver}/reset")
    committed: dict[str, float] = {}
    started = time.monotonic()
    for n, account_id in enumerate(accounts):
        due = started + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        async with conn.transaction():
            await conn.execute(
                "UPDATE accounts SET is_active = false, health_status = 'revoked' WHERE id = $1",
                account_id,
            )
            await record_account_events(
                conn, [TrailEvent(account_id, "deactivated", "token_revoked")]
            )
        committed[account_id] = time.time()
    wanted = [a for a in accounts if live_suffix is None or not a.startswith(live_suffix)]
    deadline = time.monotonic() + 120
    while True:
        arrivals = (await _stats(session, receiver))["arrivals"]
        if all(a in arrivals for a in wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    return sorted(arrivals[a] - committed[a] for a in wanted if a in arrivals), len(wanted)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


async def _run(args: argparse.Namespace) -> Table:
    import aiohttp

    from devkit.embedded import EmbeddedPostgres
    from service.core.db import migrate
    from service.core.vault import Vault, new_key

    keys = f"b1:{new_key()}"
    vault = Vault.from_config(keys)
    with tempfile.TemporaryDirectory(prefix="octopost-bench-webhooks-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        database_url = pg.start()
        try:
            await migrate(database_url)
            receiver_port = free_port()
            receiver = f"http://{HOST}:{receiver_port}"
            env = {
                "DATABASE_URL": database_url,
                "OCTOPOST_TOKEN_KEYS": keys,
                "OCTOPOST_ENV": "test",
                "OCTOPOST_ALLOW_PRIVATE_HOSTS": "true",
                "OCTOPOST_WEBHOOK_TIMEOUT_SECONDS": str(args.timeout),
                "OCTOPOST_WEBHOOK_RELAY_SECONDS": "5",
                "OCTOPOST_DB_POOL_MAX": "10",
                "OCTOPOST_LOG_LEVEL": "WARNING",
            }
            table = Table(
                "Webhook delivery (one dispatcher process, receiver answers after "
                f"{args.receiver_delay_ms:g} ms)",
                [
                    "run",
                    "endpoints",
                    "deliveries",
                    "deliveries/s",
                    "dispatcher CPU s",
                    "deliveries per dispatcher CPU s",
                    f"latency p50 at {args.rate:g}/s",
                    "p99",
                    "max",
                ],
            )
            conn = await asyncpg.connect(database_url)
            results: dict[bool, list[tuple[float, float, float]]] = {}
            with running(
                "receiver",
                [
                    PYTHON,
                    "-m",
                    "bench.webhooks",
                    "--serve-receiver",
                    str(receiver_port),
                    "--receiver-delay-ms",
                    str(args.receiver_delay_ms),
                ],
                env,
            ) as rproc:
                wait_for_port(rproc, receiver_port)
                async with aiohttp.ClientSession() as session:
                    for rep, dead in [(r, d) for r in range(args.repeat) for d in (False, True)]:
                        await _setup(conn, vault, receiver, args.endpoints, dead)
                        accounts = await _accounts(conn, args.changes // (args.endpoints + dead))
                        await conn.execute("ANALYZE")
                        with running(
                            "dispatcher",
                            [PYTHON, "-m", "bench.webhooks", "--serve-dispatcher"],
                            env,
                        ) as dproc:
                            for _ in range(600):
                                dproc.check_alive()
                                if "dispatcher ready" in dproc.output():
                                    break
                                await asyncio.sleep(0.05)
                            await asyncio.sleep(1.0)  # the listener is up
                            cpu0 = _cpu_seconds(dproc.pid)
                            say(
                                f"throughput, {args.endpoints} live endpoints"
                                f"{' + 1 dead' if dead else ''} ..."
                            )
                            rate, n = await _throughput(
                                conn, session, receiver, args.per_endpoint, args.endpoints
                            )
                            cpu = _cpu_seconds(dproc.pid) - cpu0
                            say(f"  {rate:,.0f} deliveries/s; latency at {args.rate:g}/s ...")
                            lat, wanted = await _latency(
                                conn,
                                session,
                                receiver,
                                accounts,
                                args.rate,
                                f"acc_{args.endpoints + 1}_" if dead else None,
                            )
                            dproc.check_alive()
                        results.setdefault(dead, []).append((rate, _pct(lat, 0.99), n / cpu))
                        table.add(
                            rep + 1,
                            f"{args.endpoints}{' + 1 dead' if dead else ''}",
                            fmt(n),
                            fmt(rate),
                            fmt(cpu, 1),
                            fmt(n / cpu),
                            f"{_pct(lat, 0.5) * 1000:,.0f} ms",
                            f"{_pct(lat, 0.99) * 1000:,.0f} ms",
                            f"{(lat[-1] if lat else float('nan')) * 1000:,.0f} ms",
                        )
                        if len(lat) < wanted:
                            table.notes.append(
                                f"only {len(lat)} of {wanted} changes arrived within 120 s"
                            )
            await conn.close()
        finally:
            pg.stop()
    live, dead_runs = results[False], results[True]
    best_live, best_dead = max(r[0] for r in live), max(r[0] for r in dead_runs)
    p99_live = min(r[1] for r in live)
    p99_dead = min(r[1] for r in dead_runs)
    table.notes += [
        f"best of {args.repeat} runs: {best_live:,.0f} deliveries/s without the dead endpoint, "
        f"{best_dead:,.0f} with it ({(best_dead / best_live - 1) * 100:+.0f} %); p99 "
        f"{p99_live * 1000:,.0f} ms and {p99_dead * 1000:,.0f} ms",
        f"{cores()} cores shared with other work; load average at the end {load_average()}",
        f"throughput: {args.per_endpoint} events per endpoint committed at once; latency: "
        f"{args.changes} changes, each its own transaction, from commit to arrival",
        f"dead endpoint: accepts, never answers; timeout {args.timeout:g} s",
    ]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--per-endpoint", type=int, default=200)
    parser.add_argument("--changes", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--receiver-delay-ms", type=float, default=50.0)
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-dispatcher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_receiver:
        run_async(_receiver(args.serve_receiver, args.receiver_delay_ms / 1000))
        return 0
    if args.serve_dispatcher:
        run_async(_dispatcher())
        return 0
    if args.quick:
        args.endpoints, args.per_endpoint, args.changes, args.repeat = 10, 50, 300, 1
    table = run_async(_run(args))
    print(table.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
