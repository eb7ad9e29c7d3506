"""Typed configuration: every knob and every external URL is an environment variable."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
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
    # Largest request body accepted, in bytes (the API takes no bodies today).
    max_body_bytes: int = 64 * 1024
    public_base_url: str = "http://localhost:8080"
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
    # --- revocations ---
    # Platform calls per revocation before it is given up as failed (its ciphertext erased).
    revoke_max_attempts: int = 8
    # Backoff between transient failures: base * 2^(n-1) (+-20 %), capped, never below the
    # platform's Retry-After.
    revoke_backoff_base_seconds: float = 5.0
    revoke_backoff_max_seconds: float = 3600.0
    # The relay re-queues revocations still pending this long after their last touch.
    revoke_relay_grace_seconds: float = 60.0

    # Where `octopost dev` keeps its embedded databases and the development token key.
    data_dir: Path = Path(".var")

    @cached_property
    def is_production(self) -> bool:
        return self.env == "production"
