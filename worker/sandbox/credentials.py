"""The app credentials of the sandbox's fake platforms. `octopost dev` hands the same values
to the worker's adapters and to the API's push receivers, and the sandbox signs its push
notices with them: every part agrees with no configuration."""

from __future__ import annotations

SANDBOX_CREDENTIALS = {
    "twitter_client_id": "sandbox-client",
    "twitter_client_secret": "sandbox-secret",
    "twitter_consumer_secret": "sandbox-consumer-secret",
    "linkedin_client_id": "sandbox-client",
    "linkedin_client_secret": "sandbox-secret",
    "facebook_app_id": "sandbox-app",
    "facebook_app_secret": "sandbox-secret",
    "instagram_app_secret": "sandbox-instagram-secret",
    "threads_app_secret": "sandbox-threads-secret",
    "tiktok_client_key": "sandbox-client",
    "tiktok_client_secret": "sandbox-secret",
    "youtube_client_id": "sandbox-client",
    "youtube_client_secret": "sandbox-secret",
}
# X's app id as its oauth.revoke payload names it
SANDBOX_X_APP_ID = "29820954"
# Google's RISC issuer, as Google's tokens name it (the sandbox only serves the keys)
RISC_ISSUER = "https://accounts.google.com/"


def push_receiver_settings(sandbox_url: str) -> dict[str, object]:
    """Settings fields (for ``Settings.model_copy(update=...)``) that make the API's push
    receivers accept what this sandbox sends: its secrets, its client id, its JWKS."""
    from pydantic import SecretStr

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
