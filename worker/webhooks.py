"""Webhook delivery: the dispatcher each worker process runs beside its arq jobs.

Wake-ups come from PostgreSQL: the outbox statement NOTIFYs `octopost_webhooks` with the
endpoint id, and PostgreSQL delivers a NOTIFY only when its transaction commits, so a change
that rolled back wakes nobody and one that committed wakes every worker. A relay loop looks
every `webhook_relay_seconds` for deliveries that came due (retries) or whose wake-up was
missed (a worker that was down or not listening), so nothing waits on Redis at all.

Each endpoint with work gets one task per process, which claims up to
`webhook_endpoint_concurrency` due deliveries (leased, FOR UPDATE SKIP LOCKED, so processes
split the work), sends them concurrently under the process-wide `webhook_concurrency`
bound, and writes the batch's attempts in one transaction. A slow or dead endpoint only
ever holds its own batch: other endpoints' tasks claim and send on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.core.ids import is_plausible_id
from service.core.repository import webhooks as repo
from service.core.repository.webhooks import Attempt
from service.core.settings import Settings
from service.core.vault import Sealed, Vault, VaultError
from service.core.webhooks import Signer, UrlRefused, address_allowed, check_url
from worker.metrics import WorkerMetrics

log = logging.getLogger("octopost.webhooks")

CHANNEL = "octopost_webhooks"
USER_AGENT = "Octopost-Webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024
MAX_RETRY_AFTER = 86400.0
RELAY_LIMIT = 10_000
PRUNE_PAUSE = 60.0


class BlockedAddress(OSError):
    """The endpoint's name resolved to an address we do not call."""


class GuardedResolver(AbstractResolver):
    """Resolves through the default resolver and refuses a name if any of its addresses is
    not public: the connection then goes to exactly the addresses that were checked, so a
    name rebound to 127.0.0.1 between a check and the connect is never called."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for r in results:
                if not address_allowed(r["host"]):
                    raise BlockedAddress(f"{host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - now).total_seconds(), MAX_RETRY_AFTER))


def _blocked(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddress) or isinstance(
            getattr(seen, "os_error", None), BlockedAddress
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class WebhookDispatcher:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, vault: Vault, metrics: WorkerMetrics
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.vault = vault
        self.metrics = metrics
        self.schedule = settings.webhook_schedule
        self._sem = asyncio.Semaphore(settings.webhook_concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        self._session: aiohttp.ClientSession | None = None
        self.listening = asyncio.Event()
        self._next_prune = 0.0

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.webhook_concurrency,
            limit_per_host=0,
            resolver=GuardedResolver(self.settings.allow_private_hosts),
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            raise_for_status=False,
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._background = [
            asyncio.create_task(self._listen(), name="webhooks-listen"),
            asyncio.create_task(self._relay_loop(), name="webhooks-relay"),
        ]

    async def close(self, wait: float = 5.0) -> None:
        self._closing = True
        for task in self._background:
            task.cancel()
        running = list(self._tasks.values())
        if running:
            # A batch cut short is sent again once its lease ends: receivers dedupe on
            # webhook-id, as Standard Webhooks asks.
            _, pending = await asyncio.wait(running, timeout=wait)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._background, *running, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def wake(self, endpoint_id: str) -> None:
        if self._closing or not is_plausible_id(endpoint_id):
            return
        if endpoint_id in self._tasks:
            self._again.add(endpoint_id)  # the running task claims once more before ending
            return
        self._tasks[endpoint_id] = asyncio.create_task(
            self._serve(endpoint_id), name=f"webhooks-{endpoint_id}"
        )

    async def relay_once(self) -> int:
        """Wake every endpoint with deliveries due; refresh the backlog gauge; prune what
        is past retention (a chunk a tick, at most once a minute per process)."""
        due = await repo.due_endpoints(self.pool, RELAY_LIMIT)
        for endpoint_id in due:
            self.wake(endpoint_id)
        self.metrics.webhook_oldest_undelivered.set(await repo.oldest_pending_age(self.pool))
        now = time.monotonic()
        if now >= self._next_prune:
            pruned = await repo.prune(self.pool, self.settings.webhook_retention_days * 86400)
            # more left: go on next tick; else rest for a minute
            self._next_prune = now if pruned else now + PRUNE_PAUSE
        return len(due)

    async def _relay_loop(self) -> None:
        while True:
            try:
                await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any outage: try again next tick
                log.warning("webhook relay could not read the outbox error=%s", type(exc).__name__)
            await asyncio.sleep(self.settings.webhook_relay_seconds)

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, reconnecting for as long as the process runs."""
        pause = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.settings.database_url, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())

                def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
                    self.wake(payload)

                await conn.add_listener(CHANNEL, on_notify)
                self.listening.set()
                pause = 0.5
                await self.relay_once()  # whatever committed while nobody listened
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 15)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=5)  # a silently dead socket
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect whatever it was; the relay covers the gap
                log.warning("webhook listener lost PostgreSQL error=%s", type(exc).__name__)
            finally:
                self.listening.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    # --- one endpoint ----------------------------------------------------------------------

    async def _serve(self, endpoint_id: str) -> None:
        try:
            while not self._closing:
                self._again.discard(endpoint_id)
                endpoint = await repo.load_for_delivery(self.pool, endpoint_id)
                if endpoint is None or not endpoint["enabled"]:
                    break
                batch = await repo.claim_due(
                    self.pool,
                    endpoint_id,
                    limit=self.settings.webhook_endpoint_concurrency,
                    lease_seconds=2 * self.settings.webhook_timeout_seconds + 60,
                )
                if not batch:
                    if endpoint_id in self._again:
                        continue
                    break
                await self._send_batch(endpoint, batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Leases run out and the relay wakes the endpoint again; no tight loop here.
            log.exception("webhook delivery batch failed endpoint_id=%s", endpoint_id)
        finally:
            self._tasks.pop(endpoint_id, None)
            self._again.discard(endpoint_id)

    def _signer(self, endpoint: asyncpg.Record) -> Signer:
        endpoint_id: str = endpoint["id"]
        secrets = [self.vault.open(endpoint_id, Sealed(endpoint["key_id"], endpoint["sealed"]))]
        if endpoint["previous_sealed"] is not None:
            with contextlib.suppress(VaultError):
                secrets.append(
                    self.vault.open(
                        endpoint_id,
                        Sealed(endpoint["previous_key_id"], endpoint["previous_sealed"]),
                    )
                )
        return Signer([s.decode() for s in secrets])

    async def _send_batch(self, endpoint: asyncpg.Record, batch: list[asyncpg.Record]) -> None:
        signer = self._signer(endpoint)
        url: str = endpoint["url"]
        refused: str | None = None
        try:
            # once a batch; the name's addresses are checked by the resolver at each connect,
            # IP literals (which never reach it) here
            check_url(
                url,
                production=self.settings.is_production,
                allow_private=self.settings.allow_private_hosts,
                delivering=True,
            )
        except UrlRefused as exc:
            refused = f"refused: {exc}"
        attempts = await asyncio.gather(
            *(self._attempt(url, signer, row, refused) for row in batch)
        )
        types = {row["event_id"]: row["type"] for row in batch}
        for a in attempts:
            if a.result != "retrying":
                self.metrics.webhook_deliveries.labels(types[a.event_id], a.result).inc()
        reason = await repo.record_attempts(
            self.pool,
            endpoint["id"],
            list(attempts),
            disable_after_seconds=self.settings.webhook_disable_after_days * 86400,
        )
        if reason is not None:
            log.warning(
                "webhook endpoint disabled endpoint_id=%s reason=%s", endpoint["id"], reason
            )

    async def _attempt(
        self, url: str, signer: Signer, row: asyncpg.Record, refused: str | None
    ) -> Attempt:
        assert self._session is not None
        event_id: str = row["event_id"]
        body: str = row["body"]
        number = int(row["attempts"]) + 1
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        timeout = self.settings.webhook_timeout_seconds
        async with self._sem:
            started = time.perf_counter()
            try:
                if refused is not None:
                    raise UrlRefused(refused)
                now = datetime.now(UTC)
                headers = {
                    "Content-Type": "application/json",
                    "webhook-id": event_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.header(event_id, now, body),
                }
                async with self._session.post(
                    url,
                    data=body.encode(),
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"), now)
                    read = 0
                    while read < MAX_RESPONSE_BYTES and (
                        chunk := await response.content.read(8192)
                    ):
                        read += len(chunk)
            except UrlRefused as exc:
                error = str(exc)
            except TimeoutError:
                error = f"no answer within {timeout:g}s"
            except aiohttp.ClientError as exc:
                error = (
                    "refused: the host resolves to a non-public address"
                    if _blocked(exc)
                    else f"connection failed: {type(exc).__name__}"
                )
            except OSError as exc:
                error = f"connection failed: {type(exc).__name__}"
            duration = time.perf_counter() - started
        self.metrics.webhook_attempt_duration.observe(duration)
        return self._conclude(event_id, number, status, error, retry_after, int(duration * 1000))

    def _conclude(
        self,
        event_id: str,
        number: int,
        status: int | None,
        error: str | None,
        retry_after: float | None,
        duration_ms: int,
    ) -> Attempt:
        if status is not None and 200 <= status < 300:
            self.metrics.webhook_attempts.labels("success").inc()
            return Attempt(event_id, number, "delivered", status, None, None, duration_ms)
        if status is not None:
            error = f"HTTP {status}" + (" (redirects are not followed)" if status < 400 else "")
        self.metrics.webhook_attempts.labels(
            "http_error" if status is not None else "no_response"
        ).inc()
        if status == 410 or number >= len(self.schedule):
            # 410: the receiver says the endpoint is gone (it is disabled with this batch)
            return Attempt(event_id, number, "failed", status, error, None, duration_ms)
        wait = self.schedule[number] * random.uniform(0.9, 1.1)
        wait = max(wait, retry_after or 0.0)
        next_at = datetime.now(UTC) + timedelta(seconds=wait)
        return Attempt(event_id, number, "retrying", status, error, next_at, duration_ms)
