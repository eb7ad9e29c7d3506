"""The `octopost` command: migrate, serve, manage keys and accounts, run the dev stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import asyncpg

from service import ids
from service.db import migrate
from service.importer import ImportError_, import_accounts, parse_lines
from service.repository import accounts, tokens, workspaces
from service.settings import Settings
from service.tokenkeys import load_vault
from service.vault import Sealed

Command = Callable[[argparse.Namespace, Settings], Awaitable[int] | int]


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("OCTOPOST_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


async def _connect(settings: Settings) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(settings.database_url)
    return conn


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = await migrate(settings.database_url)
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("database is up to date")
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from service.server import MULTIPROC_ENV, multiprocess_metrics_dir, serve_processes

    if args.processes > 1:
        # before prometheus_client is imported (by the app): it picks its storage then
        os.environ[MULTIPROC_ENV] = multiprocess_metrics_dir()
    from service.app import create_app

    if settings.is_production:
        load_vault(settings)  # refuse to start without configured keys
    serve_processes(lambda: create_app(settings), args.host, args.port, args.processes)
    return 0


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    key = ids.new_api_key()
    key_id = ids.new_key_id()
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, args.workspace)
            await workspaces.insert_key(
                conn, key_id, workspace_id, ids.key_display_prefix(key), ids.hash_api_key(key)
            )
    finally:
        await conn.close()
    print(f"created API key {key_id} for workspace {args.workspace!r}; it is shown only once:")
    print(key)
    return 0


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        rows = await workspaces.revoke_key(conn, args.key)
    finally:
        await conn.close()
    if not rows:
        print(f"no active key matches {args.key!r}", file=sys.stderr)
        return 1
    for row in rows:
        print(f"revoked {row['id']} ({row['prefix']}...)")
    return 0


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        rows = await workspaces.list_keys(conn)
    finally:
        await conn.close()
    print(f"{'id':<18} {'prefix':<17} {'workspace':<20} {'created':<20} {'last used':<20} state")
    for r in rows:
        print(
            f"{r['id']:<18} {r['prefix'] + '...':<17} {r['workspace'][:20]:<20} "
            f"{_ts(r['created_at']):<20} {_ts(r['last_used_at']):<20} "
            f"{'revoked ' + _ts(r['revoked_at']) if r['revoked_at'] else 'active'}"
        )
    return 0


def _ts(value: object) -> str:
    from datetime import datetime

    from service.models import format_timestamp

    return format_timestamp(value) if isinstance(value, datetime) else "-"


def _open_input(path: str) -> TextIO:
    if path == "-":
        return sys.stdin
    return open(path, encoding="utf-8")


async def cmd_accounts_import(args: argparse.Namespace, settings: Settings) -> int:
    vault = load_vault(settings)
    source = _open_input(args.file)
    try:
        parsed = parse_lines(source)
    except ImportError_ as exc:
        print(f"octopost: {args.file}: {exc}; nothing was imported", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"octopost: {args.file}: not UTF-8; nothing was imported", file=sys.stderr)
        return 2
    finally:
        if source is not sys.stdin:
            source.close()
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, args.workspace)
            account_ids = await import_accounts(conn, vault, workspace_id, parsed)
    except ImportError_ as exc:
        print(f"octopost: {args.file}: {exc}; nothing was imported", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    for account_id in account_ids:
        print(account_id)
    return 0


async def cmd_accounts_disconnect(args: argparse.Namespace, settings: Settings) -> int:
    """Disconnect through the API's own statement, then queue each revocation. Prints one
    line per account: id, platform, revocation id (or -), and what happened to it."""
    from service.app import redis_client
    from service.revocations import Enqueued, enqueue_revocation

    if bool(args.ids) == bool(args.workspace) or (args.platform and not args.workspace):
        print(
            "octopost: give account ids, or --workspace NAME (and optionally --platform)",
            file=sys.stderr,
        )
        return 2
    conn = await _connect(settings)
    redis = redis_client(settings.redis_url)
    counts = {"queued": 0, "pending": 0, "no tokens": 0, "not found": 0}
    queue_reachable = True
    try:
        if args.ids:
            targets = [(i, await accounts.workspace_of(conn, i)) for i in dict.fromkeys(args.ids)]
        else:
            if await workspaces.get_workspace_id(conn, args.workspace) is None:
                print(f"octopost: no workspace named {args.workspace!r}", file=sys.stderr)
                return 1
            rows = await accounts.ids_for_disconnect(conn, args.workspace, args.platform)
            targets = [(r["id"], r["workspace_id"]) for r in rows]
        for account_id, workspace_id in targets:
            row = None
            if workspace_id is not None:
                row = await accounts.disconnect(
                    conn, account_id, workspace_id, ids.new_revocation_id(), reason="ops"
                )
            if row is None:
                print(f"{account_id}\tnot found", file=sys.stderr)
                counts["not found"] += 1
                continue
            revocation_id = row["revocation_id"]
            if revocation_id is None:
                state = "no tokens"
            elif queue_reachable:
                enqueued = await enqueue_revocation(redis, revocation_id)
                # one timeout is enough: the rest wait for the relay without trying
                queue_reachable = enqueued is not Enqueued.unreachable
                state = "queued" if queue_reachable else "pending"
            else:
                state = "pending"
            counts[state] += 1
            detail = {
                "queued": "revocation queued",
                "pending": "revocation pending: queue unreachable, the relay will queue it",
                "no tokens": "no tokens to revoke",
            }[state]
            print(f"{account_id}\t{row['platform']}\t{revocation_id or '-'}\t{detail}")
    finally:
        await redis.aclose()
        await conn.close()
    disconnected = counts["queued"] + counts["pending"] + counts["no tokens"]
    print(
        f"disconnected {disconnected}: {counts['queued']} revocations queued, "
        f"{counts['pending']} pending for the relay, {counts['no tokens']} without tokens; "
        f"{counts['not found']} not found",
        file=sys.stderr,
    )
    return 1 if counts["not found"] else 0


async def cmd_tokens_rotate(args: argparse.Namespace, settings: Settings) -> int:
    vault = load_vault(settings)
    conn = await _connect(settings)
    total = 0
    try:
        for table, fetch in (
            ("tokens", tokens.tokens_not_under_key),
            ("revocations", tokens.revocations_not_under_key),
        ):
            after = ""
            while True:
                rows = await fetch(conn, vault.current_key_id, after, 500)
                if not rows:
                    break
                resealed = [vault.seal(r["id"], vault.open(r["id"], _sealed(r))) for r in rows]
                keys_col = "revocation_id" if table == "revocations" else "id"
                await tokens.reseal(
                    conn,
                    table,
                    [r[keys_col] for r in rows],
                    [s.key_id for s in resealed],
                    [s.blob for s in resealed],
                    [r["sealed"] for r in rows],
                )
                total += len(rows)
                after = rows[-1][keys_col]
        counts = await tokens.count_by_key(conn)
    finally:
        await conn.close()
    print(f"re-encrypted {total} sealed token sets under key {vault.current_key_id!r}")
    for r in counts:
        print(f"  key {r['key_id']}: {r['n']}")
    return 0


def _sealed(row: asyncpg.Record) -> Sealed:
    return Sealed(row["key_id"], row["sealed"])


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.settings import make_worker

    load_vault(settings)  # fail before connecting anything if keys are missing
    with contextlib.suppress(ImportError):  # arq runs on the current loop: make it uvloop's
        import uvloop

        asyncio.set_event_loop(uvloop.new_event_loop())
    worker = make_worker(settings, burst=args.burst, job_completion_wait=args.shutdown_wait)
    worker.run()
    return 0


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from worker.sandbox.app import serve

    serve(args.host, args.port, args.latency_ms)
    return 0


SWEEP_COLUMNS = ("checked", "healthy", "deactivated", "refreshed", "transient", "unknown")


def _progress(row: asyncpg.Record, width: int = 30) -> str:
    claimed, done = row["claimed"], row["checked"] + row["skipped"]
    claiming = row["status"] in ("queued", "claiming")
    frac = 0.0 if claimed == 0 else min(1.0, done / claimed)
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    total = f"{claimed}{'+' if claiming else ''}"
    return f"[{bar}] {done}/{total} {row['status']}"


def _summary(row: asyncpg.Record) -> str:
    counts = " ".join(f"{c}={row[c]}" for c in SWEEP_COLUMNS)
    return f"sweep {row['id']} {row['status']}: {counts} skipped={row['skipped']}"


async def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from service.app import redis_client
    from service.repository import health

    conn = await _connect(settings)
    redis = redis_client(settings.redis_url)
    try:
        sweep_id = await health.create_sweep(conn, "manual", args.platform, args.account)
        await redis.enqueue_job("run_sweep", sweep_id, _job_id=f"sweep:{sweep_id}")
        scope = args.account or args.platform or "all accounts"
        print(f"sweep {sweep_id} queued ({scope})")
        if not args.wait:
            return 0
        started = time.monotonic()
        hinted = False
        while True:
            row = await health.get_sweep(conn, sweep_id)
            assert row is not None
            if sys.stderr.isatty():
                print(f"\r{_progress(row)}", end="", file=sys.stderr, flush=True)
            if row["status"] == "done":
                break
            if row["status"] == "queued" and not hinted and time.monotonic() - started > 10:
                print(
                    "\nno worker has picked the sweep up yet; is `octopost worker` running?",
                    file=sys.stderr,
                )
                hinted = True
            if args.timeout and time.monotonic() - started > args.timeout:
                print(f"\ngave up waiting after {args.timeout}s: {_summary(row)}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.25)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(_summary(row))
    finally:
        await redis.aclose()
        await conn.close()
    return 0


async def cmd_sweeps(args: argparse.Namespace, settings: Settings) -> int:
    from service.repository import health

    conn = await _connect(settings)
    try:
        rows = await health.list_sweeps(conn, args.limit)
    finally:
        await conn.close()
    print(
        f"{'id':>6} {'trigger':<9} {'scope':<14} {'status':<9} {'started':<20} {'secs':>7} "
        + " ".join(f"{c:>11}" for c in (*SWEEP_COLUMNS, "skipped"))
    )
    for r in rows:
        secs = (
            f"{(r['finished_at'] - r['started_at']).total_seconds():.1f}"
            if r["finished_at"] and r["started_at"]
            else "-"
        )
        scope = (r["account_id"] or r["platform"] or "all")[:14]
        print(
            f"{r['id']:>6} {r['trigger']:<9} {scope:<14} {r['status']:<9} "
            f"{_ts(r['started_at']):<20} {secs:>7} "
            + " ".join(f"{r[c]:>11}" for c in (*SWEEP_COLUMNS, "skipped"))
        )
    return 0


async def cmd_revocations(args: argparse.Namespace, settings: Settings) -> int:
    from service.repository import revocations

    statuses = (
        ["pending", "failed", "done", "unsupported"]
        if args.all
        else [args.status]
        if args.status
        else ["pending", "failed"]
    )
    conn = await _connect(settings)
    try:
        rows = await revocations.list_revocations(conn, statuses, args.limit)
    finally:
        await conn.close()
    print(
        f"{'id':<21} {'account':<21} {'platform':<10} {'status':<12} {'tries':>5} "
        f"{'created':<20} {'last activity':<20} last error"
    )
    for r in rows:
        print(
            f"{r['id']:<21} {r['account_id']:<21} {r['platform']:<10} {r['status']:<12} "
            f"{r['attempts']:>5} {_ts(r['created_at']):<20} "
            f"{_ts(r['completed_at'] or r['updated_at']):<20} {r['last_error'] or ''}"
        )
    if not rows:
        print(f"no {' or '.join(statuses)} revocations", file=sys.stderr)
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from service.devstack import run_dev

    return run_dev(settings, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="octopost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply pending SQL migrations")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("api", help="serve the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); 0 = one per core",
    )
    p.set_defaults(func=cmd_api)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create", help="create a key (and the workspace if new)")
    p.add_argument("--workspace", required=True)
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("revoke", help="revoke a key by id or display prefix")
    p.add_argument("key", metavar="PREFIX_OR_ID")
    p.set_defaults(func=cmd_keys_revoke)
    p = keys.add_parser("list", help="list keys (never the keys themselves)")
    p.set_defaults(func=cmd_keys_list)

    acc = sub.add_parser("accounts", help="connected accounts").add_subparsers(
        dest="action", required=True
    )
    p = acc.add_parser("import", help="import or reconnect accounts from JSON lines")
    p.add_argument("--workspace", required=True)
    p.add_argument("file", metavar="FILE", help="JSON lines file, or - for stdin")
    p.set_defaults(func=cmd_accounts_import)
    p = acc.add_parser("disconnect", help="disconnect accounts and queue their revocation")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--workspace")
    p.add_argument("--platform", choices=ids.PLATFORMS)
    p.set_defaults(func=cmd_accounts_disconnect)

    tok = sub.add_parser("tokens", help="token encryption keys").add_subparsers(
        dest="action", required=True
    )
    p = tok.add_parser("rotate", help="re-encrypt every stored token under the first key")
    p.set_defaults(func=cmd_tokens_rotate)

    p = sub.add_parser("worker", help="run the token-health and revocation worker (arq)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument(
        "--shutdown-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT let running jobs finish this long; the rest are cancelled "
        "and go back to the queue for another worker (default 30)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("sweep", help="check tokens now (all, one platform, or one account)")
    p.add_argument("--platform", choices=ids.PLATFORMS)
    p.add_argument("--account", metavar="ID")
    p.add_argument("--wait", action="store_true", help="show progress and the final counts")
    p.add_argument("--timeout", type=float, default=0, help="with --wait: give up after N s")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sweeps", help="list recent sweeps")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_sweeps)

    p = sub.add_parser("revocations", help="list pending and failed revocations")
    p.add_argument("--status", default=None, choices=("pending", "failed", "done", "unsupported"))
    p.add_argument("--all", action="store_true", help="every status")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_revocations)

    p = sub.add_parser("sandbox", help="serve the platform sandbox (fake platform APIs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("dev", help="run everything locally (embedded PostgreSQL and Redis)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dev)
    return parser


def _reach_running_dev_stack() -> None:
    """In development, next to a running `octopost dev`: take the URLs of its embedded
    servers from its dev.env for whatever the environment leaves unset."""
    if os.environ.get("OCTOPOST_ENV", "development") != "development":
        return
    from service.devstack import load_dev_env

    applied = load_dev_env()
    if applied:
        print(
            f"octopost: using the running `octopost dev` for {', '.join(applied)} (its dev.env)",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    if args.func is not cmd_dev:
        _reach_running_dev_stack()
    settings = Settings()
    if getattr(args, "processes", 1) == 0:
        args.processes = os.cpu_count() or 1
    result = args.func(args, settings)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return int(result)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
