"""Typed configuration: every knob and every external URL is an environment variable."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCTOPOST_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/octopost",
        validation_alias="DATABASE_URL",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")

    # "ID:KEY,ID:KEY": KEY is 32 random bytes, URL-safe base64. The first one encrypts.
    token_keys: str = ""

    db_pool_min: int = 2
    db_pool_max: int = 10
    db_acquire_timeout: float = 5.0
    db_command_timeout: float = 10.0

    # API keys resolved within this many seconds are served from memory; a revoked key
    # stops working at most this long after revocation.
    key_cache_seconds: float = 5.0
    key_cache_size: int = 10_000
    # Failed authentications allowed per client address per minute before 429 (0: off).
    auth_failures_per_minute: int = 30
    # Largest request body accepted, in bytes (the public API takes none; the internal one
    # takes small JSON reports).
    max_body_bytes: int = 64 * 1024
    public_base_url: str = "http://localhost:8080"
    # --- connect ---
    # Origins (comma-separated, e.g. "https://app.octopost.example") a connect session may
    # send the browser back to; a redirect_url under any other origin is refused.
    connect_redirect_origins: str = ""
    # A connect session (and its state) is good for this long.
    connect_session_seconds: float = 600.0
    # --- token health (worker) ---
    # Scheduled sweeps start every N minutes (arq cron); 0 turns the schedule off.
    sweep_interval_minutes: int = 5
    sweep_batch_size: int = 250
    # How many claimed-but-unchecked accounts one sweep lets queue up before it waits.
    sweep_max_ahead: int = 10_000
    # A claimed account is left alone by other sweeps this long (crashed worker recovery).
    check_lease_seconds: float = 600.0
    # A healthy token is checked again after this long (X bills per call: keep it rare).
    check_interval_seconds: float = 6 * 3600.0
    # Refresh a token with a refresh grant when its access expiry is this close.
    refresh_margin_seconds: float = 1800.0
    # Backoff for transient failures: base * 2^(n-1), capped, never below the platform's ask.
    backoff_base_seconds: float = 60.0
    backoff_max_seconds: float = 6 * 3600.0
    degraded_after_failures: int = 3
    # Requests in flight per platform per worker process, and requests per second per
    # platform shared by all workers (through Redis).
    # 64 x 9 platforms in flight: at 150 ms a call that is ~3,800 calls/s per process, more
    # than its CPU allows (BENCHMARKS.md); each connection costs the client about 45 KB.
    platform_concurrency: int = 64
    platform_rate_per_second: int = 1000
    worker_max_jobs: int = 8
    # The worker's HTTP client for platform calls: reqwest (pyreqwest, a third of
    # aiohttp's CPU per call) or aiohttp (what the API uses).
    worker_http_client: Literal["reqwest", "aiohttp"] = "reqwest"
    worker_metrics_port: int = 0
    # --- the publisher's reports (internal API) ---
    # After a check an auth_failed report asked for, further reports for the account queue
    # no other check for this long (a burst of failed posts makes one check).
    reported_check_window_seconds: float = 30.0
    # --- revocations ---
    # Platform calls per revocation before it is given up as failed (its ciphertext erased).
    revoke_max_attempts: int = 8
    # Backoff between transient failures: base * 2^(n-1) (+-20 %), capped, never below the
    # platform's Retry-After.
    revoke_backoff_base_seconds: float = 5.0
    revoke_backoff_max_seconds: float = 3600.0
    # The relay re-queues revocations still pending this long after their last touch.
    revoke_relay_grace_seconds: float = 60.0

    # --- platform push notices (receivers under /platform-events on the public listener) ---
    # The same variables the worker's platform adapters read (service/platforms/config.py):
    # one value per credential, whoever uses it. An empty secret turns its receiver off.
    facebook_app_secret: SecretStr = SecretStr("")
    instagram_app_secret: SecretStr = SecretStr("")
    threads_app_secret: SecretStr = SecretStr("")
    tiktok_client_secret: SecretStr = SecretStr("")
    # X signs webhooks with the app's consumer secret (OAuth 1.0a API secret), not the
    # OAuth 2.0 client secret.
    twitter_consumer_secret: SecretStr = SecretStr("")
    # Google RISC: security event tokens must name this client id as their audience.
    youtube_client_id: str = ""
    google_risc_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    google_risc_issuer: str = "https://accounts.google.com/"
    # An unknown `kid` refetches the key set at most once per this many seconds.
    google_risc_jwks_refetch_seconds: float = 30.0
    # A TikTok-Signature timestamp further than this from now is refused (replay).
    tiktok_signature_tolerance_seconds: float = 300.0
    # The relay re-queues notices still pending this long after they were received.
    notice_relay_grace_seconds: float = 30.0

    # --- outgoing webhooks ---
    # A delivery succeeds on a 2xx answered within this many seconds (redirects not followed).
    webhook_timeout_seconds: float = 15.0
    # Seconds before each attempt (the first is the initial try), +-10 % jitter, never
    # below the receiver's Retry-After; after the last one the delivery is failed.
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,50400,72000,86400"
    # An endpoint whose every attempt failed for this long is disabled.
    webhook_disable_after_days: float = 5.0
    # Requests in flight per endpoint, and for all endpoints, per worker process.
    webhook_endpoint_concurrency: int = 64
    webhook_concurrency: int = 512
    # The relay: how often each worker looks for deliveries that came due (retries, or a
    # wake-up it missed while PostgreSQL was unreachable).
    webhook_relay_seconds: float = 5.0
    # Finished deliveries, their events and attempts are deleted after this many days.
    webhook_retention_days: float = 30.0
    # Loopback, private, link-local and IP-literal endpoint hosts (development and tests).
    allow_private_hosts: bool = False

    # Where `octopost dev` keeps its embedded databases and the development token key.
    data_dir: Path = Path(".var")

    @cached_property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_schedule)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value


def parse_schedule(value: str) -> tuple[float, ...]:
    """ "0, 5, 300" -> (0.0, 5.0, 300.0); at least one attempt, none negative."""
    try:
        steps = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("must be seconds separated by commas, e.g. 0,5,300") from None
    if not steps or any(s < 0 or s != s for s in steps):
        raise ValueError("must list at least one non-negative number of seconds")
    return steps
