"""The secrets the sandbox signs its push notices with, and the settings that make the API's
push receivers accept them.

They derive from the sandbox's app credentials (``SANDBOX_APPS`` in
``service/platforms/config.py``, which a service pointed at the sandbox uses by default), so
``octopost dev``, the tests and the benchmarks agree with no configuration.
"""

from __future__ import annotations

from pydantic import SecretStr

from service.platforms.config import SANDBOX_APPS

# X signs webhooks with the app's consumer secret (OAuth 1.0a), not its OAuth 2.0 secret.
SANDBOX_TWITTER_CONSUMER_SECRET = "sandbox-twitter-consumer-secret"  # noqa: S105 - a fake
# X's app id as its oauth.revoke payload names it
SANDBOX_X_APP_ID = "29820954"
# Google's RISC issuer, as Google's tokens name it (the sandbox only serves the keys)
RISC_ISSUER = "https://accounts.google.com/"

# The names are the OCTOPOST_* settings each value is read from (lower case).
SANDBOX_CREDENTIALS = {
    "facebook_app_secret": SANDBOX_APPS["facebook"][1],
    "instagram_app_secret": SANDBOX_APPS["instagram"][1],
    "threads_app_secret": SANDBOX_APPS["threads"][1],
    "tiktok_client_key": SANDBOX_APPS["tiktok"][0],
    "tiktok_client_secret": SANDBOX_APPS["tiktok"][1],
    "twitter_consumer_secret": SANDBOX_TWITTER_CONSUMER_SECRET,
    "youtube_client_id": SANDBOX_APPS["youtube"][0],
}


def push_receiver_settings(sandbox_url: str) -> dict[str, object]:
    """Settings fields (for ``Settings.model_copy(update=...)``) that make the API's push
    receivers accept what this sandbox sends: its secrets, its client id, its JWKS."""
    c = SANDBOX_CREDENTIALS
    return {
        "facebook_app_secret": SecretStr(c["facebook_app_secret"]),
        "instagram_app_secret": SecretStr(c["instagram_app_secret"]),
        "threads_app_secret": SecretStr(c["threads_app_secret"]),
        "tiktok_client_secret": SecretStr(c["tiktok_client_secret"]),
        "twitter_consumer_secret": SecretStr(c["twitter_consumer_secret"]),
        "youtube_client_id": c["youtube_client_id"],
        "google_risc_issuer": RISC_ISSUER,
        "google_risc_jwks_url": f"{sandbox_url}/google/oauth2/v3/certs",
    }
