"""Refresh-token fingerprints: what a Google RISC `oauth_token` subject can be matched on,
without keeping any part of the token in plaintext."""

from __future__ import annotations

import base64
import hashlib

# Google: `prefix` is "the first 16 characters of the refresh token".
PREFIX_LENGTH = 16


def sha512_sha512(token: str) -> str:
    """`hash_base64_sha512_sha512`: base64(SHA-512(SHA-512(token))), as RISC sends it."""
    inner = hashlib.sha512(token.encode()).digest()
    return base64.b64encode(hashlib.sha512(inner).digest()).decode()


def prefix_digest(prefix: str) -> bytes:
    """SHA-256 of a token prefix (or of a token's first 16 characters)."""
    return hashlib.sha256(prefix[:PREFIX_LENGTH].encode()).digest()


def refresh_fingerprints(refresh_token: str | None) -> tuple[str | None, bytes | None]:
    """(refresh_digest, refresh_prefix_digest) to store beside a sealed refresh token."""
    if not refresh_token:
        return None, None
    return sha512_sha512(refresh_token), prefix_digest(refresh_token)
