"""The app credentials the sandbox's platforms are registered with.

One definition for the demo stack, the tests and the benchmarks: the sandbox accepts these,
and a service pointed at the sandbox uses them.
"""

from __future__ import annotations

SANDBOX_CREDENTIALS: dict[str, str] = {
    "twitter_client_id": "sandbox-x-client",
    "twitter_client_secret": "sandbox-x-secret",
    "linkedin_client_id": "sandbox-li-client",
    "linkedin_client_secret": "sandbox-li-secret",
    "facebook_app_id": "sandbox-fb-app",
    "facebook_app_secret": "sandbox-fb-secret",
    "tiktok_client_key": "sandbox-tt-key",
    "tiktok_client_secret": "sandbox-tt-secret",
    "youtube_client_id": "sandbox-yt-client",
    "youtube_client_secret": "sandbox-yt-secret",
}


def sandbox_environment() -> dict[str, str]:
    """The same credentials as the `OCTOPOST_*` variables a service process reads."""
    return {f"OCTOPOST_{name.upper()}": value for name, value in SANDBOX_CREDENTIALS.items()}
