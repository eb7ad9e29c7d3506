"""Build one adapter per platform on the shared client session."""

from __future__ import annotations

import aiohttp

from service.platforms import (
    bluesky,
    facebook,
    instagram,
    linkedin,
    mastodon,
    threads,
    tiktok,
    twitter,
    youtube,
)
from service.platforms.base import PlatformAdapter
from service.platforms.config import PlatformSettings
from service.platforms.oauth import OAuthConnect


def build_adapters(
    session: aiohttp.ClientSession, settings: PlatformSettings
) -> dict[str, PlatformAdapter]:
    """Adapters keyed by platform name. With ``sandbox_url`` set every base URL, Mastodon
    instance and Bluesky PDS becomes ``{sandbox_url}/{platform}``."""
    sandbox = settings.sandbox_url.rstrip("/") if settings.sandbox_url else None
    timeout = settings.request_timeout_seconds

    def url(platform: str, override: str | None, default: str) -> str:
        return f"{sandbox}/{platform}" if sandbox else (override or default)

    youtube_api = url("youtube", settings.youtube_api_base_url, youtube.API_BASE_URL)
    mastodon_apps = {
        host: (app.client_id, app.client_secret.get_secret_value())
        for host, app in settings.mastodon_apps.items()
    }
    adapters: list[PlatformAdapter] = [
        twitter.TwitterAdapter(
            session,
            url("twitter", settings.twitter_base_url, twitter.BASE_URL),
            {
                "client_id": settings.twitter_client_id,
                "client_secret": settings.twitter_client_secret.get_secret_value(),
            },
            timeout=timeout,
        ),
        bluesky.BlueskyAdapter(
            session,
            url("bluesky", settings.bluesky_base_url, bluesky.BASE_URL),
            timeout=timeout,
            pin_base_url=sandbox is not None,
            plc_url=f"{sandbox}/bluesky/plc"
            if sandbox
            else (settings.bluesky_plc_url or bluesky.PLC_DIRECTORY),
            allow_private_hosts=settings.allow_private_hosts,
        ),
        mastodon.MastodonAdapter(
            session,
            url("mastodon", settings.mastodon_base_url, ""),
            timeout=timeout,
            pin_base_url=sandbox is not None,
            apps=mastodon_apps,
            allow_private_hosts=settings.allow_private_hosts,
        ),
        linkedin.LinkedInAdapter(
            session,
            url("linkedin", settings.linkedin_base_url, linkedin.BASE_URL),
            {
                "client_id": settings.linkedin_client_id,
                "client_secret": settings.linkedin_client_secret.get_secret_value(),
            },
            timeout=timeout,
        ),
        threads.ThreadsAdapter(
            session,
            url("threads", settings.threads_base_url, threads.BASE_URL),
            {
                "client_id": settings.threads_client_id,
                "client_secret": settings.threads_client_secret.get_secret_value(),
            },
            timeout=timeout,
        ),
        instagram.InstagramAdapter(
            session,
            url("instagram", settings.instagram_base_url, instagram.BASE_URL),
            {
                "client_id": settings.instagram_client_id,
                "client_secret": settings.instagram_client_secret.get_secret_value(),
            },
            timeout=timeout,
        ),
        facebook.FacebookAdapter(
            session,
            url("facebook", settings.facebook_base_url, facebook.BASE_URL),
            {
                "app_id": settings.facebook_app_id,
                "app_secret": settings.facebook_app_secret.get_secret_value(),
            },
            timeout=timeout,
        ),
        tiktok.TikTokAdapter(
            session,
            url("tiktok", settings.tiktok_base_url, tiktok.BASE_URL),
            {
                "client_key": settings.tiktok_client_key,
                "client_secret": settings.tiktok_client_secret.get_secret_value(),
            },
            timeout=timeout,
        ),
        youtube.YouTubeAdapter(
            session,
            url("youtube", settings.youtube_base_url, youtube.BASE_URL),
            {
                "client_id": settings.youtube_client_id,
                "client_secret": settings.youtube_client_secret.get_secret_value(),
            },
            timeout=timeout,
            api_base_url=youtube_api,
        ),
    ]
    for adapter in adapters:
        if isinstance(adapter, OAuthConnect):
            # the authorize page, and any host other than the adapter's base URL
            adapter.endpoints = {
                name: f"{sandbox}/{adapter.name}{path}" if sandbox else f"{base}{path}"
                for name, (base, path) in adapter.connect_endpoints.items()
            }
    return {adapter.name: adapter for adapter in adapters}
