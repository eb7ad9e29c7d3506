"""Token encryption at rest: AES-256-GCM, keys by id so they can rotate.

A sealed blob is ``nonce (12 bytes) || ciphertext+tag``; the key id is stored beside it and
the account id is bound in as associated data, so a blob copied onto another account does
not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class VaultError(Exception):
    """Configuration is wrong or a blob cannot be opened."""


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    blob: bytes


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _decode_key(text: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise VaultError("token key is not URL-safe base64") from exc
    if len(raw) != 32:
        raise VaultError(f"token key must be 32 bytes, got {len(raw)}")
    return raw


class Vault:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise VaultError("no token encryption key configured (OCTOPOST_TOKEN_KEYS)")
        self._ciphers = {key_id: AESGCM(raw) for key_id, raw in keys}
        if len(self._ciphers) != len(keys):
            raise VaultError("token key ids must be unique")
        self.current_key_id = keys[0][0]

    @classmethod
    def from_config(cls, spec: str) -> Vault:
        keys: list[tuple[str, bytes]] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key_id, sep, key = item.partition(":")
            if not sep or not key_id.strip():
                raise VaultError("OCTOPOST_TOKEN_KEYS entries must look like ID:KEY")
            keys.append((key_id.strip(), _decode_key(key)))
        return cls(keys)

    def seal(self, account_id: str, plaintext: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self.current_key_id]
        return Sealed(
            self.current_key_id, nonce + cipher.encrypt(nonce, plaintext, account_id.encode())
        )

    def open(self, account_id: str, sealed: Sealed) -> bytes:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise VaultError(f"no token key with id {sealed.key_id!r} is configured")
        nonce, body = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, body, account_id.encode())
        except InvalidTag as exc:
            raise VaultError("token blob failed authentication") from exc

    def seal_tokens(self, account_id: str, access_token: str, refresh_token: str | None) -> Sealed:
        return self.seal(account_id, orjson.dumps({"a": access_token, "r": refresh_token}))

    def open_tokens(self, account_id: str, sealed: Sealed) -> tuple[str, str | None]:
        data = orjson.loads(self.open(account_id, sealed))
        return data["a"], data["r"]
