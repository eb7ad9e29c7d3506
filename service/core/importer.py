"""`octopost accounts import`: JSON lines in, accounts with sealed tokens out, all or nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

import asyncpg
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from service.core.fingerprints import refresh_fingerprints
from service.core.ids import ID_RE, Platform, new_account_id
from service.core.repository import imports
from service.core.vault import Sealed, Vault


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refuse it here, with the line number, rather
    # than fail the whole import at the INSERT.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _scope(value: str) -> str:
    # Scopes are stored space-separated (and OAuth scope tokens hold no spaces): "a b" in
    # a list would come back as two scopes.
    if len(value.split()) != 1 or "\x00" in value:
        raise ValueError("a scope must be one token without spaces or NUL characters")
    return value


Text = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_nul)]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (use a trailing Z for UTC)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError("timestamp is out of range") from None


Timestamp = Annotated[datetime, AfterValidator(_utc)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return value


def _base_url(value: str) -> str:
    # an instance / PDS is a base URL that paths are appended to
    return value.rstrip("/")


Url = Annotated[
    str, StringConstraints(max_length=2048), AfterValidator(_no_nul), AfterValidator(_http_url)
]
BaseUrl = Annotated[Url, AfterValidator(_base_url)]


# Tokens travel in HTTP headers and form bodies: no whitespace or control characters (OAuth
# tokens are printable ASCII; a CR/LF would be a header injection at the platform call).
_PRINTABLE = r"^[\x21-\x7e]*$"
Secret = Annotated[str, StringConstraints(max_length=16384, pattern=_PRINTABLE)]


class ImportLine(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: Annotated[str, StringConstraints(pattern=ID_RE.pattern, max_length=64)] | None = None
    platform: Platform
    platform_user_id: Text
    username: Text
    display_name: Annotated[str, StringConstraints(max_length=1024), AfterValidator(_no_nul)]
    avatar_url: Url | None = None
    is_active: bool = True
    connected_at: Timestamp | None = None
    last_used_at: Timestamp | None = None
    access_token: Annotated[Secret, StringConstraints(min_length=1)]
    refresh_token: Secret | None = None
    token_expires_at: Timestamp | None = None
    refresh_token_expires_at: Timestamp | None = None
    scopes: list[
        Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_scope)]
    ] = Field(default_factory=list, max_length=200)
    instance_url: BaseUrl | None = None
    # The platform user who granted the connection when it is not the account itself (the
    # Facebook user behind a Page, the Google `sub` behind a YouTube channel): push
    # revocations name that user.
    authorizing_user_id: Text | None = None

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("refresh_token")
    @classmethod
    def _empty_refresh_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _derive_instance(self) -> ImportLine:
        if self.platform == "mastodon" and self.instance_url is None:
            _, at, host = self.username.lstrip("@").partition("@")
            if not at or not host or "/" in host:
                raise ValueError(
                    "mastodon accounts need instance_url or a username of the form name@host"
                )
            self.instance_url = f"https://{host}"
        return self


class ImportRejected(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(slots=True)
class ParsedLine:
    number: int
    data: ImportLine


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def parse_lines(lines: Iterable[str | bytes]) -> list[ParsedLine]:
    """Validate every line first; the first bad one aborts the whole file."""
    parsed: list[ParsedLine] = []
    seen: dict[tuple[str, str], int] = {}
    seen_ids: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            raise ImportRejected(number, "not valid UTF-8") from None
        if not text.strip():
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ImportRejected(number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ImportRejected(number, "each line must be a JSON object")
        try:
            line = ImportLine.model_validate(obj)
        except ValidationError as exc:
            raise ImportRejected(number, _describe(exc)) from None
        identity = (line.platform, line.platform_user_id)
        if identity in seen:
            raise ImportRejected(number, f"same platform account as line {seen[identity]}")
        seen[identity] = number
        if line.id is not None:
            if line.id in seen_ids:
                raise ImportRejected(number, f"same id as line {seen_ids[line.id]}")
            seen_ids[line.id] = number
        parsed.append(ParsedLine(number, line))
    return parsed


async def import_accounts(
    conn: asyncpg.Connection, vault: Vault, workspace_id: int, lines: list[ParsedLine]
) -> list[str]:
    """Write every parsed line in the caller's transaction; returns ids in input order."""
    if not lines:
        return []
    await imports.lock_workspace(conn, workspace_id)
    existing = await imports.live_ids_by_identity(
        conn,
        workspace_id,
        [p.data.platform for p in lines],
        [p.data.platform_user_id for p in lines],
    )
    ids: list[str] = []
    for p in lines:
        known = existing.get((p.data.platform, p.data.platform_user_id))
        ids.append(known or p.data.id or new_account_id())
    new_ids = [
        account_id
        for p, account_id in zip(lines, ids, strict=True)
        if (p.data.platform, p.data.platform_user_id) not in existing
    ]
    clashes = await imports.ids_taken(conn, new_ids)
    if clashes:
        number = next(p.number for p, i in zip(lines, ids, strict=True) if i in clashes)
        raise ImportRejected(number, "id is already used by another account")
    kept = await _stored_refresh_tokens(
        conn,
        vault,
        [
            account_id
            for p, account_id in zip(lines, ids, strict=True)
            if p.data.refresh_token is None
            and (p.data.platform, p.data.platform_user_id) in existing
        ],
    )
    rows = []
    for p, account_id in zip(lines, ids, strict=True):
        d = p.data
        refresh_token, refresh_expires_at = d.refresh_token, d.refresh_token_expires_at
        if refresh_token is None and account_id in kept:
            # new tokens without a refresh token never erase the stored one
            refresh_token, refresh_expires_at = kept[account_id]
        sealed = vault.seal_tokens(account_id, d.access_token, refresh_token)
        # fingerprints of the refresh token that is stored, whichever it is (RISC names it)
        refresh_digest, refresh_prefix_digest = refresh_fingerprints(refresh_token)
        rows.append(
            imports.ImportRow(
                id=account_id,
                platform=d.platform,
                platform_user_id=d.platform_user_id,
                username=d.username,
                display_name=d.display_name,
                avatar_url=d.avatar_url,
                instance_url=d.instance_url,
                is_active=d.is_active,
                connected_at=d.connected_at,
                last_used_at=d.last_used_at,
                key_id=sealed.key_id,
                sealed=sealed.blob,
                has_refresh=refresh_token is not None,
                access_expires_at=d.token_expires_at,
                refresh_expires_at=refresh_expires_at,
                scopes=d.scopes,
                reconnect=(d.platform, d.platform_user_id) in existing,
                authorizing_user_id=d.authorizing_user_id,
                refresh_digest=refresh_digest,
                refresh_prefix_digest=refresh_prefix_digest,
            )
        )
    await imports.upsert_accounts(conn, workspace_id, rows)
    return ids


async def _stored_refresh_tokens(
    conn: asyncpg.Connection, vault: Vault, account_ids: list[str]
) -> dict[str, tuple[str, datetime | None]]:
    kept: dict[str, tuple[str, datetime | None]] = {}
    for row in await imports.stored_refresh(conn, account_ids):
        account_id = row["account_id"]
        _, refresh = vault.open_tokens(account_id, Sealed(row["key_id"], row["sealed"]))
        if refresh:
            kept[account_id] = (refresh, row["refresh_expires_at"])
    return kept
