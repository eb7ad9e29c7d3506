"""Platform credentials and base URLs, from ``OCTOPOST_*`` environment variables.

``OCTOPOST_SANDBOX_URL=http://host:port`` points every adapter at the platform sandbox
(``{sandbox_url}/{platform}``), including the per-account Mastodon instance and Bluesky PDS.
"""

from __future__ import annotations

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MastodonApp(BaseModel):
    """The OAuth app registered on one Mastodon instance (apps are per instance)."""

    client_id: str
    client_secret: SecretStr


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCTOPOST_", extra="ignore")

    sandbox_url: str | None = None
    request_timeout_seconds: float = 10.0

    twitter_client_id: str = ""
    twitter_client_secret: SecretStr = SecretStr("")
    twitter_base_url: str | None = None

    bluesky_base_url: str | None = None  # PDS for accounts that carry none

    # keyed by instance host, e.g. {"mastodon.social": {"client_id": ..., "client_secret": ...}}
    mastodon_apps: dict[str, MastodonApp] = {}
    mastodon_base_url: str | None = None  # instance for accounts that carry none

    linkedin_client_id: str = ""
    linkedin_client_secret: SecretStr = SecretStr("")
    linkedin_base_url: str | None = None

    facebook_app_id: str = ""
    facebook_app_secret: SecretStr = SecretStr("")
    facebook_base_url: str | None = None

    instagram_base_url: str | None = None
    threads_base_url: str | None = None

    tiktok_client_key: str = ""
    tiktok_client_secret: SecretStr = SecretStr("")
    tiktok_base_url: str | None = None

    youtube_client_id: str = ""
    youtube_client_secret: SecretStr = SecretStr("")
    youtube_base_url: str | None = None  # OAuth: token, revoke
    youtube_api_base_url: str | None = None  # Data API: channels
