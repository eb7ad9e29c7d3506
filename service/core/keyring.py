"""Where the token encryption keys come from: the environment, or a development key file."""

from __future__ import annotations

import os
import sys

from service.core.settings import Settings
from service.core.vault import Vault, new_key

DEV_KEY_FILE = "token-keys"


class MissingTokenKeys(SystemExit):
    pass


def load_vault(settings: Settings) -> Vault:
    """The vault from OCTOPOST_TOKEN_KEYS; outside production, from a local key file.

    Production refuses to run without configured keys: a generated key that lives on one
    machine's disk would make every stored token unreadable elsewhere.
    """
    if settings.token_keys.strip():
        return Vault.from_config(settings.token_keys)
    if settings.is_production:
        raise MissingTokenKeys(
            "OCTOPOST_TOKEN_KEYS is required when OCTOPOST_ENV=production "
            "(comma-separated ID:KEY, KEY = 32 random bytes, URL-safe base64)"
        )
    path = settings.data_dir / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"dev1:{new_key()}\n")
        print(
            f"octopost: no OCTOPOST_TOKEN_KEYS set; created a development token key in {path} "
            "(never use it in production)",
            file=sys.stderr,
        )
    return Vault.from_config(path.read_text().strip())
