"""The `octopost` command: migrate, serve, manage keys and accounts, run the dev stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import logging
import os
import socket
import sys
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TextIO

import asyncpg
import pydantic
import redis.exceptions

from service.core import api_keys, ids
from service.core.db import MigrationsMissing, migrate
from service.core.importer import ImportRejected, import_accounts, parse_lines
from service.core.jobs import enqueue_sweep
from service.core.keyring import load_vault
from service.core.repository import accounts, tokens, workspaces
from service.core.settings import Settings
from service.core.vault import Sealed

Command = Callable[[argparse.Namespace, Settings], Awaitable[int] | int]


class CommandError(Exception):
    """An expected failure: printed as one line, `octopost: <message>`, with exit status 1
    (2 for a usage error). Commands raise it; `main` prints it."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


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
    try:
        applied = await migrate(settings.database_url)
    except MigrationsMissing as exc:
        print(f"octopost: {exc}", file=sys.stderr)
        return 1
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("database is up to date")
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.server import (
        MULTIPROC_ENV,
        SecondListener,
        multiprocess_metrics_dir,
        serve_processes,
    )

    if args.processes > 1:
        # before prometheus_client is imported (by the app): it picks its storage then
        os.environ[MULTIPROC_ENV] = multiprocess_metrics_dir()
    from service.api.app import create_app

    if settings.is_production or args.internal_port:
        # refuse to start without configured keys (the internal API opens tokens)
        load_vault(settings)
    second = None
    if args.internal_port:
        from service.api.internal_app import create_internal_app

        if (args.internal_host, args.internal_port) == (args.host, args.port):
            print("octopost: --internal-port must differ from --port", file=sys.stderr)
            return 2
        second = SecondListener(
            args.internal_host,
            args.internal_port,
            lambda public: create_internal_app(settings, shared=public),
        )
    serve_processes(
        lambda: create_app(settings), args.host, args.port, args.processes, second=second
    )
    return 0


def _scopes(text: str) -> list[str] | None:
    from service.api.service_auth import SCOPES

    scopes = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not scopes or any(s not in SCOPES for s in scopes):
        return None
    return scopes


async def cmd_service_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.service_auth import SCOPES
    from service.core.repository import service_keys

    name = args.name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        print("octopost: --name must be 1 to 100 printable characters", file=sys.stderr)
        return 2
    scopes = _scopes(args.scope)
    if scopes is None:
        print(
            f"octopost: --scope takes a comma-separated list of: {', '.join(SCOPES)}",
            file=sys.stderr,
        )
        return 2
    key = api_keys.new_service_key()
    key_id = api_keys.new_service_key_id()
    conn = await _connect(settings)
    try:
        await service_keys.insert_service_key(
            conn,
            key_id,
            name,
            api_keys.service_key_display_prefix(key),
            api_keys.hash_api_key(key),
            scopes,
        )
    finally:
        await conn.close()
    print(
        f"created service key {key_id} {name!r} with scopes {','.join(scopes)}; "
        "it is shown only once:"
    )
    print(key)
    return 0


async def cmd_service_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.repository import service_keys

    conn = await _connect(settings)
    try:
        rows = await service_keys.revoke_service_key(
            conn, args.key, api_keys.hash_api_key(args.key.strip())
        )
    finally:
        await conn.close()
    if not rows:
        print(f"octopost: no active service key matches {args.key!r}", file=sys.stderr)
        return 1
    for row in rows:
        print(f"revoked {row['id']} {row['name']!r} ({row['prefix']}...)")
    print(
        f"(API processes that saw it in the last {settings.key_cache_seconds:g} s may accept it "
        "that much longer)",
        file=sys.stderr,
    )
    return 0


async def cmd_service_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.repository import service_keys

    conn = await _connect(settings)
    try:
        rows = await service_keys.list_service_keys(conn)
    finally:
        await conn.close()
    print(
        f"{'id':<18} {'prefix':<17} {'name':<20} {'scopes':<20} {'created':<20} "
        f"{'last used':<20} state"
    )
    for r in rows:
        print(
            f"{r['id']:<18} {r['prefix'] + '...':<17} {r['name'][:20]:<20} "
            f"{','.join(r['scopes'])[:20]:<20} {_ts(r['created_at']):<20} "
            f"{_ts(r['last_used_at']):<20} "
            f"{'revoked ' + _ts(r['revoked_at']) if r['revoked_at'] else 'active'}"
        )
    return 0


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    key = api_keys.new_api_key()
    key_id = api_keys.new_key_id()
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, args.workspace)
            await workspaces.insert_key(
                conn,
                key_id,
                workspace_id,
                api_keys.key_display_prefix(key),
                api_keys.hash_api_key(key),
            )
    finally:
        await conn.close()
    print(f"created API key {key_id} for workspace {args.workspace!r}; it is shown only once:")
    print(key)
    return 0


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    given = args.key.strip()
    conn = await _connect(settings)
    try:
        if api_keys.is_well_formed_key(given):  # the key itself, as a user (or a leak) has it
            rows = await workspaces.revoke_key_by_hash(conn, api_keys.hash_api_key(given))
            shown = f"{api_keys.key_display_prefix(given)}... (the key given)"
        else:  # an id, or the prefix `keys list` shows (its "..." allowed)
            shown = repr(given)
            rows = await workspaces.revoke_key(conn, given.removesuffix("...").rstrip("."))
    finally:
        await conn.close()
    if not rows:
        raise CommandError(
            f"no active key matches {shown}: it is revoked already or never existed here; "
            "`octopost keys list` shows the keys of this database"
        )
    for row in rows:
        print(f"revoked {row['id']} ({row['prefix']}...)")
    return 0


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        rows = await workspaces.list_keys(conn)
    finally:
        await conn.close()
    if not rows:
        print(
            "no API keys yet; create one with `octopost keys create --workspace NAME`",
            file=sys.stderr,
        )
        return 0
    print(f"{'id':<18} {'prefix':<17} {'workspace':<20} {'created':<20} {'last used':<20} state")
    for r in rows:
        print(
            f"{r['id']:<18} {r['prefix']:<17} {r['workspace'][:20]:<20} "
            f"{_ts(r['created_at']):<20} {_ts(r['last_used_at']):<20} "
            f"{'revoked ' + _ts(r['revoked_at']) if r['revoked_at'] else 'active'}"
        )
    return 0


def _ts(value: object) -> str:
    from datetime import datetime

    from service.api.models import format_timestamp

    return format_timestamp(value) if isinstance(value, datetime) else "-"


def _open_input(path: str) -> TextIO:
    if path == "-":
        return sys.stdin
    return open(path, encoding="utf-8")


async def cmd_accounts_import(args: argparse.Namespace, settings: Settings) -> int:
    vault = load_vault(settings)
    source = _open_input(args.file)  # a missing file is the one error path's (exit 1)
    try:
        parsed = parse_lines(source)
    except ImportRejected as exc:
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
    except ImportRejected as exc:
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
    from service.api.app import redis_client
    from service.core.jobs import Enqueued, enqueue_revocation

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
            ("webhook secrets", tokens.webhook_secrets_not_under_key),
            ("previous webhook secrets", tokens.previous_webhook_secrets_not_under_key),
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
    from worker.assembly import make_worker

    load_vault(settings)  # fail before connecting anything if keys are missing
    with contextlib.suppress(ImportError):  # arq runs on the current loop: make it uvloop's
        import uvloop

        asyncio.set_event_loop(uvloop.new_event_loop())
    worker = make_worker(settings, burst=args.burst, job_completion_wait=args.shutdown_wait)
    worker.run()
    return 0


def _dev_tooling(module: str) -> ModuleType | None:
    """A dev-tooling module, or None where it is not installed (the production wheel)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(f"{exc.name}.")):
            return None
        raise


def _no_dev_tooling(command: str) -> int:
    print(
        f"octopost: `octopost {command}` is dev tooling, which this install does not carry; "
        "run it from a source checkout (python3 dev.py octopost ...)",
        file=sys.stderr,
    )
    return 1


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    sandbox = _dev_tooling("devkit.sandbox.app")
    if sandbox is None:
        return _no_dev_tooling("sandbox")
    sandbox.serve(args.host, args.port, args.latency_ms)
    return 0


def cmd_webhook_receiver(args: argparse.Namespace, settings: Settings) -> int:
    from devkit.sandbox.receiver import serve

    serve(args.host, args.port, args.secret)
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

    from service.api.app import redis_client
    from service.core.repository import sweeps

    conn = await _connect(settings)
    redis = redis_client(settings.redis_url)
    try:
        if args.account and await accounts.workspace_of(conn, args.account) is None:
            raise CommandError(
                f"no connected account {args.account!r}; `GET /v1/accounts` lists a "
                "workspace's accounts (a disconnected one is never checked again)"
            )
        sweep_id = await sweeps.create_sweep(conn, "manual", args.platform, args.account)
        await enqueue_sweep(redis, sweep_id)
        scope = args.account or args.platform or "all accounts"
        print(f"sweep {sweep_id} queued ({scope})")
        if not args.wait:
            return 0
        started = time.monotonic()
        hinted = False
        while True:
            row = await sweeps.get_sweep(conn, sweep_id)
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
    from service.core.repository import sweeps

    conn = await _connect(settings)
    try:
        rows = await sweeps.list_sweeps(conn, args.limit)
    finally:
        await conn.close()
    if not rows:
        print("no sweeps yet; start one with `octopost sweep`", file=sys.stderr)
        return 0
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
    from service.core.repository import revocations

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
    if not rows:
        print(f"no {' or '.join(statuses)} revocations", file=sys.stderr)
        return 0
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
    return 0


async def cmd_notices(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.repository import notices

    statuses = [args.status] if args.status else ["pending", "applied"]
    conn = await _connect(settings)
    try:
        rows = await notices.list_notices(conn, statuses, args.limit)
    finally:
        await conn.close()
    print(
        f"{'received':<20} {'platform':<10} {'event':<22} {'action':<12} {'status':<8} "
        f"{'accounts':>8} id"
    )
    for r in rows:
        matched = "-" if r["matched"] is None else str(r["matched"])
        print(
            f"{_ts(r['received_at']):<20} {r['platform']:<10} {r['event'][:22]:<22} "
            f"{r['action']:<12} {r['status']:<8} {matched:>8} {r['id']}"
        )
    if not rows:
        print(f"no {' or '.join(statuses)} platform notices", file=sys.stderr)
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    devstack = _dev_tooling("devkit.stack")
    if devstack is None:
        return _no_dev_tooling("dev")
    result: int = devstack.run_dev(
        settings, host=args.host, port=args.port, sandbox_port=args.sandbox_port, reset=args.reset
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="octopost",
        description=__doc__,
        epilog="An expected failure (a server down, a missing database or file) is one line "
        "and exit status 1 (2 for a usage error); --debug, anywhere on the line, adds the "
        "traceback.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
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
    p.add_argument(
        "--internal-port",
        type=int,
        default=0,
        metavar="PORT",
        help="also serve the internal API (/internal/v1, service keys) on this port, "
        "in the same processes",
    )
    p.add_argument(
        "--internal-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address of the internal listener (default 127.0.0.1)",
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

    svc = sub.add_parser(
        "service-keys", help="keys of other Octopost services (the internal API)"
    ).add_subparsers(dest="action", required=True)
    p = svc.add_parser("create", help="create a service key; prints it on the last line")
    p.add_argument("--name", required=True, help="who holds it (audited on every use)")
    p.add_argument(
        "--scope", required=True, metavar="SCOPE[,SCOPE...]", help="credentials and/or connect"
    )
    p.set_defaults(func=cmd_service_keys_create)
    p = svc.add_parser("list", help="list service keys (never the keys themselves)")
    p.set_defaults(func=cmd_service_keys_list)
    p = svc.add_parser("revoke", help="revoke a service key by id, display prefix, or the key")
    p.add_argument("key", metavar="ID_OR_PREFIX_OR_KEY")
    p.set_defaults(func=cmd_service_keys_revoke)

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

    p = sub.add_parser(
        "worker", help="run the token-health, revocation and webhook delivery worker (arq)"
    )
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

    p = sub.add_parser("notices", help="list recent platform push notices (newest first)")
    p.add_argument("--status", default=None, choices=("pending", "applied"))
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_notices)

    p = sub.add_parser("sandbox", help="serve the platform sandbox (fake platform APIs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser(
        "webhook-receiver", help="print the webhooks sent to a local port (for trying them out)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--secret", help="the endpoint's whsec_... secret: verify each signature")
    p.set_defaults(func=cmd_webhook_receiver)

    p = sub.add_parser(
        "dev",
        help="run everything locally (embedded PostgreSQL and Redis)",
        description=DEV_DESCRIPTION,
        epilog=DEV_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address the API listens on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="the API's port (8080)")
    p.add_argument(
        "--sandbox-port",
        type=int,
        default=None,
        metavar="PORT",
        help="the platform sandbox's port on 127.0.0.1 (default: the API's port + 10)",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="delete the embedded PostgreSQL and Redis data (every account, key and event in "
        "the data dir) and start from the demo data again",
    )
    p.set_defaults(func=cmd_dev)
    return parser


DEV_DESCRIPTION = """\
Run the whole service in one process: embedded PostgreSQL and Redis (unless DATABASE_URL /
REDIS_URL name servers to use), migrations, a `demo` workspace with demo accounts and one
API key, the API, the platform sandbox (fake platforms) and the token-health worker."""
DEV_EPILOG = """\
ports:
  API            --host/--port (127.0.0.1:8080); /metrics there shows the worker's too
  sandbox        127.0.0.1, --sandbox-port (the API's port + 10)
  PostgreSQL     127.0.0.1, a free port chosen on first start and kept (DATA/pg/embedded.port)
  Redis          127.0.0.1, likewise (DATA/redis/embedded.port)
data (DATA = OCTOPOST_DATA_DIR, default .var in the current directory):
  DATA/pg, DATA/redis   the embedded servers' data: kept between runs
  DATA/demo-key         the demo workspace's API key, printed at every start
  DATA/token-keys       the development token encryption key
  DATA/dev.env          how other octopost commands find this stack (while it runs)
reset:
  octopost dev --reset  (python3 dev.py --reset) starts again from the demo data
one stack per data dir: a second start on the same DATA refuses and names the first;
for a second stack use another OCTOPOST_DATA_DIR and --port."""


# ------------------------------------------------------------------ expected failures
#
# One error path for every command: an exception that is an expected failure (a server
# that is down or refuses us, a missing database or file, a bad argument) becomes one line
# naming what failed and what to do, exit status 1 (2 for usage). Anything else is a bug
# and keeps its traceback; --debug shows the traceback of the expected ones too.


@dataclass(frozen=True, slots=True)
class _Context:
    database_url: str
    redis_url: str
    # development, no live dev.env, and these variables unset: the defaults were tried
    no_stack_for: frozenset[str]
    dev_env: str


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _origin(exc: BaseException) -> str | None:
    """Which dependency raised ``exc``: the innermost asyncpg or redis/arq frame of its
    traceback (or of its causes')."""
    seen: BaseException | None = exc
    while seen is not None:
        tb = seen.__traceback__
        modules = []
        while tb is not None:
            modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
            tb = tb.tb_next
        for module in reversed(modules):
            if module.split(".")[0] == "asyncpg":
                return "PostgreSQL"
            if module.split(".")[0] in ("redis", "arq"):
                return "Redis"
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if (
        isinstance(exc, ConnectionRefusedError)
        or getattr(exc, "errno", None) == errno.ECONNREFUSED
        or "Connect call failed" in text
        or "Connection refused" in text
    ):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror}"
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return "timed out"
    return text or type(exc).__name__


def _no_stack(var: str, url: str, what: str, ctx: _Context) -> str:
    return (
        f"no running `octopost dev` was found ({ctx.dev_env} is missing or its process is "
        f"gone) and {var} is not set, so the default {_redact(url)} was tried: {what}; start "
        f"the stack with `python3 dev.py` in another shell, or set {var}"
    )


def _unreachable(service: str, var: str, url: str, reason: str, ctx: _Context) -> str:
    if var in ctx.no_stack_for:
        return _no_stack(var, url, reason, ctx)
    return f"cannot reach {service} at {_redact(url)} ({reason}); is it running? check {var}"


def _postgres_refused(answer: str, advice: str, ctx: _Context) -> str:
    if "DATABASE_URL" in ctx.no_stack_for:
        return _no_stack("DATABASE_URL", ctx.database_url, answer, ctx)
    return f"PostgreSQL at {_redact(ctx.database_url)} answered: {answer}{advice}"


def explain(exc: BaseException, ctx: _Context) -> tuple[str, int] | None:
    """One sentence and an exit status for an expected failure; None for a bug."""
    embedded = sys.modules.get("devkit.embedded")
    if isinstance(exc, CommandError):
        return str(exc), exc.status
    if embedded is not None and isinstance(exc, embedded.EmbeddedServerError):
        return f"an embedded server failed: {exc}", 1
    if isinstance(exc, pydantic.ValidationError):
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]).upper()
        return f"invalid configuration: {name}: {error['msg']}; fix that variable", 1
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return f"Redis at {_redact(ctx.redis_url)} refused us ({exc}); check REDIS_URL", 1
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return _unreachable("Redis", "REDIS_URL", ctx.redis_url, _reason(exc), ctx), 1
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return _postgres_refused(str(exc), "; check the user and password in DATABASE_URL", ctx), 1
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        advice = "; create it (`createdb NAME`) or point DATABASE_URL at an existing one"
        return _postgres_refused(str(exc), advice, ctx), 1
    if isinstance(exc, asyncpg.UndefinedTableError):
        return (
            f"the database at {_redact(ctx.database_url)} has no octopost tables ({exc}); "
            "run `octopost migrate` first"
        ), 1
    if isinstance(
        exc,
        asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InsufficientPrivilegeError,
    ):
        return _postgres_refused(str(exc), "", ctx), 1
    if isinstance(exc, FileNotFoundError):
        return f"no such file or directory: {exc.filename or exc}", 1
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}; check who owns it", 1
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"{exc.strerror}: another program listens there; pick another --port", 1
    if isinstance(exc, OSError):  # TimeoutError included
        origin = _origin(exc)
        if origin == "PostgreSQL":
            return _unreachable(
                "PostgreSQL", "DATABASE_URL", ctx.database_url, _reason(exc), ctx
            ), 1
        if origin == "Redis":
            return _unreachable("Redis", "REDIS_URL", ctx.redis_url, _reason(exc), ctx), 1
        return f"{exc}", 1
    return None


def _reach_running_dev_stack() -> bool:
    """In development, next to a running `octopost dev`: take the URLs of its embedded
    servers from its dev.env for whatever the environment leaves unset. True if found."""
    if os.environ.get("OCTOPOST_ENV", "development") != "development":
        return False
    devstack = _dev_tooling("devkit.stack")
    if devstack is None:  # an installed package: there is no dev stack to reach
        return False
    applied: list[str] = devstack.load_dev_env()
    if applied:
        print(
            f"octopost: using the running `octopost dev` for {', '.join(applied)} (its dev.env)",
            file=sys.stderr,
        )
    return bool(applied)


def _context(found_stack: bool) -> _Context:
    defaults = Settings.model_fields
    development = os.environ.get("OCTOPOST_ENV", "development") == "development"
    unset = frozenset(v for v in ("DATABASE_URL", "REDIS_URL") if v not in os.environ)
    data_dir = os.environ.get("OCTOPOST_DATA_DIR", ".var")
    return _Context(
        database_url=os.environ.get("DATABASE_URL", str(defaults["database_url"].default)),
        redis_url=os.environ.get("REDIS_URL", str(defaults["redis_url"].default)),
        no_stack_for=unset if development and not found_stack else frozenset(),
        dev_env=os.path.join(data_dir, "dev.env"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    _configure_logging()
    found_stack = args.func is not cmd_dev and _reach_running_dev_stack()
    ctx = _context(found_stack)
    try:
        settings = Settings()
        if getattr(args, "processes", 1) == 0:
            args.processes = os.cpu_count() or 1
        result = args.func(args, settings)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except KeyboardInterrupt:
        print("octopost: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        explained = explain(exc, ctx)
        if explained is None:
            raise
        if debug:
            traceback.print_exc()
        message, status = explained
        print(f"octopost: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    # `python -m service.cli`: run the importable module's main, so that the CommandError
    # other modules import (devkit.stack) is the class main() catches
    from service.cli import main as _main

    raise SystemExit(_main())
