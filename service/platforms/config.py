"""Platform credentials and base URLs, from ``OCTOPOST_*`` environment variables.

``OCTOPOST_SANDBOX_URL=http://host:port`` points every adapter at the platform sandbox
(``{sandbox_url}/{platform}``), including the per-account Mastodon instance and Bluesky PDS.
With a sandbox, app credentials left empty are the sandbox's defaults (``SANDBOX_APPS``),
which the sandbox also expects unless the same ``OCTOPOST_*`` variables say otherwise
(``app_credentials``): ``octopost sandbox`` and a service pointed at it agree with no
further configuration.
"""

from __future__ import annotations

from pydantic import BaseModel, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MastodonApp(BaseModel):
    """The OAuth app registered on one Mastodon instance (apps are per instance)."""

    client_id: str
    client_secret: SecretStr


# platform -> (the setting holding its client id, the one holding its secret)
APP_CREDENTIAL_FIELDS = {
    "twitter": ("twitter_client_id", "twitter_client_secret"),
    "linkedin": ("linkedin_client_id", "linkedin_client_secret"),
    "facebook": ("facebook_app_id", "facebook_app_secret"),
    "instagram": ("instagram_client_id", "instagram_client_secret"),
    "threads": ("threads_client_id", "threads_client_secret"),
    "tiktok": ("tiktok_client_key", "tiktok_client_secret"),
    "youtube": ("youtube_client_id", "youtube_client_secret"),
}
SANDBOX_APPS = {
    platform: (f"sandbox-{platform}-client", f"sandbox-{platform}-secret")
    for platform in APP_CREDENTIAL_FIELDS
}


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCTOPOST_", extra="ignore")

    sandbox_url: str | None = None
    request_timeout_seconds: float = 10.0
    # Mastodon instances, Bluesky PDS and did:web hosts may be private addresses (the
    # sandbox on 127.0.0.1): development and tests only.
    allow_private_hosts: bool = False

    twitter_client_id: str = ""
    twitter_client_secret: SecretStr = SecretStr("")
    twitter_base_url: str | None = None

    bluesky_base_url: str | None = None  # PDS for accounts that carry none; resolves handles
    bluesky_plc_url: str | None = None  # the did:plc directory

    # keyed by instance host, e.g. {"mastodon.social": {"client_id": ..., "client_secret": ...}}
    mastodon_apps: dict[str, MastodonApp] = {}
    mastodon_base_url: str | None = None  # instance for accounts that carry none

    linkedin_client_id: str = ""
    linkedin_client_secret: SecretStr = SecretStr("")
    linkedin_base_url: str | None = None

    facebook_app_id: str = ""
    facebook_app_secret: SecretStr = SecretStr("")
    facebook_base_url: str | None = None

    instagram_client_id: str = ""
    instagram_client_secret: SecretStr = SecretStr("")
    instagram_base_url: str | None = None

    threads_client_id: str = ""
    threads_client_secret: SecretStr = SecretStr("")
    threads_base_url: str | None = None

    tiktok_client_key: str = ""
    tiktok_client_secret: SecretStr = SecretStr("")
    tiktok_base_url: str | None = None

    youtube_client_id: str = ""
    youtube_client_secret: SecretStr = SecretStr("")
    youtube_base_url: str | None = None  # OAuth: token, revoke
    youtube_api_base_url: str | None = None  # Data API: channels

    @model_validator(mode="after")
    def _sandbox_apps(self) -> PlatformSettings:
        if self.sandbox_url:
            for platform, (id_field, secret_field) in APP_CREDENTIAL_FIELDS.items():
                client_id, secret = SANDBOX_APPS[platform]
                # only what was not given at all: an explicit "" stays empty
                if id_field not in self.model_fields_set:
                    setattr(self, id_field, client_id)
                if secret_field not in self.model_fields_set:
                    setattr(self, secret_field, SecretStr(secret))
        return self


def app_credentials(settings: PlatformSettings) -> dict[str, tuple[str, str]]:
    """``platform -> (client id, secret)``: the configured ones, else the sandbox's."""
    out = {}
    for platform, (id_field, secret_field) in APP_CREDENTIAL_FIELDS.items():
        default_id, default_secret = SANDBOX_APPS[platform]
        out[platform] = (
            getattr(settings, id_field) or default_id,
            getattr(settings, secret_field).get_secret_value() or default_secret,
        )
    return out
