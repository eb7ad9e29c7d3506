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
    # Where `octopost dev` keeps its embedded databases and the development token key.
    data_dir: Path = Path(".var")

    @cached_property
    def is_production(self) -> bool:
        return self.env == "production"
