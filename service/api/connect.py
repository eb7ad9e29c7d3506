"""Connecting and reconnecting accounts through each platform's own authorization flow.

A connect session (internal API, scope ``connect``) yields the platform's authorize URL with
a state of 256 random bits (only its SHA-256 is stored) and, where the platform takes it, a
PKCE S256 challenge (the verifier is sealed in the session). The public callback claims the
session by its state with one UPDATE (single use), exchanges the code while the browser
waits, reads the profile and upserts through the importer's reconnect logic (same workspace
+ platform + platform user: same id, fresh tokens, health cleared, a ``reconnected`` event;
a missing refresh token never erases the stored one). It then sends the browser back to the
session's ``redirect_url`` with the outcome.

No token, code, state or app password is ever logged: log lines carry the session id, the
platform, the outcome and the platform's error code only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import asyncpg
from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, ValidationError
from yarl import URL

from service.api.errors import ApiError, BadRequest, NotFound
from service.core.ids import Platform, random_string
from service.core.importer import ImportLine, ParsedLine, import_accounts
from service.core.keyring import load_vault
from service.core.repository import connect as repo
from service.core.repository import workspaces
from service.core.settings import Settings
from service.core.vault import Sealed, Vault
from service.platforms.base import PlatformAdapter
from service.platforms.bluesky import BlueskyAdapter
from service.platforms.hosts import HostRefused
from service.platforms.mastodon import MastodonAdapter
from service.platforms.oauth import (
    AuthorizeRequest,
    CodeExchange,
    Connected,
    ConnectFailed,
    OAuthConnect,
    code_challenge,
    new_code_verifier,
)

log = logging.getLogger("octopost.connect")

CALLBACK_PATH = "/oauth/callback/{platform}"
EXCHANGE_SECONDS = 25.0  # X's code lives 30 s; the whole exchange must fit in it
ERRORS = ("access_denied", "wrong_account", "expired", "invalid_state", "platform_error")


class InvalidState(ApiError):
    type = "invalid_state"


class InvalidCredentials(ApiError):
    status = 422
    type = "invalid_credentials"


class WrongAccount(ApiError):
    status = 409
    type = "wrong_account"


class PlatformError(ApiError):
    status = 502
    type = "platform_error"


def new_session_id() -> str:
    return "cs_" + random_string(20)


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[!-~]+$")]


class SessionRequest(BaseModel):
    """The body of ``POST /internal/v1/connect-sessions``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Name
    platform: Platform
    redirect_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    account_id: Ref | None = None
    instance: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None
    page_id: Ref | None = None
    handle: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None
    app_password: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the callback sends the browser."""

    location: str


def origin_of(url: str) -> str | None:
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.user is not None:
        return None
    return str(parsed.origin()).lower()


def allowed_origins(settings: Settings) -> set[str]:
    out = set()
    for item in settings.connect_redirect_origins.split(","):
        if item.strip() and (origin := origin_of(item.strip().rstrip("/"))):
            out.add(origin)
    return out


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


class ConnectService:
    """What the connect routes call. Holds the adapters (on their own client session)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        adapters: Mapping[str, PlatformAdapter],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.adapters = adapters
        self._vault: Vault | None = None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = load_vault(self.settings)
        return self._vault

    def callback_url(self, platform: str) -> str:
        base = self.settings.public_base_url.rstrip("/")
        return base + CALLBACK_PATH.format(platform=platform)

    # --- creating a session -------------------------------------------------------------

    async def create(self, body: SessionRequest) -> dict[str, Any]:
        if body.platform == "bluesky":
            return await self._bluesky(body)
        if body.redirect_url is None:
            raise BadRequest("redirect_url is required")
        self._check_redirect(body.redirect_url)
        adapter = self.adapters[body.platform]
        assert isinstance(adapter, OAuthConnect)
        for name, value in (("handle", body.handle), ("app_password", body.app_password)):
            if value is not None:
                raise BadRequest(f"{name} is only for bluesky")
        if body.page_id is not None and body.platform != "facebook":
            raise BadRequest("page_id is only for facebook")
        if body.instance is not None and body.platform != "mastodon":
            raise BadRequest("instance is only for mastodon")
        async with self.pool.acquire() as conn:
            workspace_id = await workspaces.ensure_workspace(conn, body.workspace)
            instance, page_id = body.instance, body.page_id
            if body.account_id is not None:
                target = await self._target(conn, body, workspace_id)
                if body.platform == "mastodon" and instance is None:
                    instance = URL(target["instance_url"] or "").host
                if body.platform == "facebook":
                    page_id = target["platform_user_id"]
        client_id = None
        if body.platform == "mastodon":
            assert isinstance(adapter, MastodonAdapter)
            if instance is None:
                raise BadRequest("instance is required for mastodon (e.g. mastodon.social)")
            try:
                instance = await adapter.checked_host(instance)
            except HostRefused as exc:
                raise BadRequest(f"instance refused: {exc}") from None
            client_id, _ = await self._mastodon_app(adapter, instance)

        session_id = new_session_id()
        state = secrets.token_urlsafe(32)  # 256 bits
        verifier = new_code_verifier() if adapter.uses_pkce else None
        sealed = self.vault.seal(session_id, verifier.encode()) if verifier else None
        url = adapter.authorize_url(
            AuthorizeRequest(
                redirect_uri=self.callback_url(body.platform),
                state=state,
                code_challenge=code_challenge(verifier) if verifier else None,
                instance=instance,
                client_id=client_id,
            )
        )
        row = await repo.insert_session(
            self.pool,
            session_id,
            workspace_id,
            body.platform,
            state_hash(state),
            body.redirect_url,
            body.account_id,
            instance,
            page_id,
            sealed.key_id if sealed else None,
            sealed.blob if sealed else None,
            self.settings.connect_session_seconds,
        )
        log.info("connect session=%s platform=%s created", session_id, body.platform)
        return {
            "id": session_id,
            "platform": body.platform,
            "workspace": body.workspace,
            "status": "pending",
            "authorize_url": url,
            "expires_at": row["expires_at"],
        }

    def _check_redirect(self, redirect_url: str) -> None:
        origin = origin_of(redirect_url)
        if origin is None:
            raise BadRequest("redirect_url must be an absolute http(s) URL")
        if origin not in allowed_origins(self.settings):
            raise BadRequest(
                "redirect_url is not under an allowed origin (OCTOPOST_CONNECT_REDIRECT_ORIGINS)"
            )

    async def _target(
        self, conn: asyncpg.Connection, body: SessionRequest, workspace_id: int
    ) -> asyncpg.Record:
        assert body.account_id is not None
        target = await repo.live_account(conn, body.account_id, workspace_id)
        if target is None:
            raise NotFound(f"no account {body.account_id!r} in workspace {body.workspace!r}")
        if target["platform"] != body.platform:
            raise BadRequest(f"account {body.account_id!r} is a {target['platform']} account")
        return target

    async def _mastodon_app(self, adapter: MastodonAdapter, instance: str) -> tuple[str, str]:
        """The app registered on ``instance``, registering it the first time (one per
        instance, whatever the concurrency: the registration runs under a lock)."""
        redirect_uri = self.callback_url("mastodon")
        row = await repo.get_mastodon_app(self.pool, instance)
        if row is None or row["redirect_uri"] != redirect_uri:
            async with self.pool.acquire() as conn, conn.transaction():
                await repo.lock_mastodon_instance(conn, instance)
                row = await repo.get_mastodon_app(conn, instance)
                if row is None or row["redirect_uri"] != redirect_uri:
                    try:
                        client_id, secret = await adapter.register_app(instance, redirect_uri)
                    except ConnectFailed as exc:
                        log.warning(
                            "connect mastodon app registration failed instance=%s step=%s "
                            "status=%s code=%s",
                            instance,
                            exc.step,
                            exc.status,
                            exc.code,
                        )
                        raise PlatformError(
                            f"the instance {instance} refused the app registration"
                        ) from None
                    sealed = self.vault.seal(f"mastodon:{instance}", secret.encode())
                    await repo.put_mastodon_app(
                        conn, instance, client_id, sealed.key_id, sealed.blob, redirect_uri
                    )
                    log.info("connect mastodon app registered instance=%s", instance)
                    return client_id, secret
        secret = self.vault.open(
            f"mastodon:{instance}", Sealed(row["key_id"], row["sealed_secret"])
        ).decode()
        return row["client_id"], secret

    # --- Bluesky: app password, no redirect -------------------------------------------------

    async def _bluesky(self, body: SessionRequest) -> dict[str, Any]:
        if body.handle is None or body.app_password is None:
            raise BadRequest("bluesky connects with handle and app_password")
        if body.redirect_url is not None:
            self._check_redirect(body.redirect_url)
        for name, value in (("instance", body.instance), ("page_id", body.page_id)):
            if value is not None:
                raise BadRequest(f"{name} is not for bluesky")
        adapter = self.adapters["bluesky"]
        assert isinstance(adapter, BlueskyAdapter)
        async with self.pool.acquire() as conn:
            workspace_id = await workspaces.ensure_workspace(conn, body.workspace)
            target = None
            if body.account_id is not None:
                target = await self._target(conn, body, workspace_id)
        session_id = new_session_id()
        try:
            connected = await asyncio.wait_for(
                adapter.connect_app_password(body.handle, body.app_password.get_secret_value()),
                EXCHANGE_SECONDS,
            )
        except (ConnectFailed, TimeoutError) as exc:
            failed = exc if isinstance(exc, ConnectFailed) else ConnectFailed("timeout")
            self._log_failure(session_id, "bluesky", failed.error, failed)
            if failed.error == "invalid_credentials":
                raise InvalidCredentials(
                    "the handle did not resolve or its server refused the app password"
                ) from None
            if failed.error == "host_refused":
                raise BadRequest("the handle's server is not a public host") from None
            raise PlatformError("the handle's server did not answer usably") from None
        if target is not None and connected.profile.platform_user_id != target["platform_user_id"]:
            self._log_failure(session_id, "bluesky", "wrong_account", None)
            raise WrongAccount(f"that handle is not the account {target['id']!r}")
        async with self.pool.acquire() as conn, conn.transaction():
            account_ids = await self._upsert(conn, workspace_id, "bluesky", [connected])
            row = await repo.insert_finished_session(
                conn,
                session_id,
                workspace_id,
                "bluesky",
                body.redirect_url or "",
                body.account_id,
                account_ids,
            )
        log.info("connect session=%s platform=bluesky status=connected", session_id)
        return {
            "id": session_id,
            "platform": "bluesky",
            "workspace": body.workspace,
            "status": "connected",
            "account_id": account_ids[0],
            "expires_at": row["expires_at"],
        }

    # --- the callback ---------------------------------------------------------------------

    async def callback(self, platform: str, query: Mapping[str, str]) -> Outcome:
        state = query.get("state")
        if not state:
            raise InvalidState("the callback carries no state")
        session = await repo.claim_by_state(self.pool, state_hash(state))
        if session is None:
            raise InvalidState("unknown or already used state")
        if session["platform"] != platform:
            return await self._fail(session, "invalid_state")
        if session["expired"]:
            return await self._fail(session, "expired")
        adapter = self.adapters[platform]
        assert isinstance(adapter, OAuthConnect)
        if adapter.denied(query):
            return await self._fail(session, "access_denied")
        code = query.get("code")
        if "error" in query or not code:
            failed = ConnectFailed("authorize", code=(query.get("error") or "no_code")[:100])
            return await self._fail(session, "platform_error", failed)
        try:
            connected = await asyncio.wait_for(
                adapter.exchange(await self._exchange_request(session, code)), EXCHANGE_SECONDS
            )
        except ConnectFailed as exc:
            return await self._fail(session, exc.error, exc)
        except (TimeoutError, aiohttp.ClientError):
            return await self._fail(session, "platform_error", ConnectFailed("timeout"))
        if not connected:  # Facebook: no Page granted (or not the one asked for)
            error = "wrong_account" if session["page_id"] else "access_denied"
            return await self._fail(session, error)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if session["account_id"] is not None:
                    target = await repo.live_account(
                        conn, session["account_id"], session["workspace_id"]
                    )
                    if target is None or target["platform_user_id"] not in {
                        c.profile.platform_user_id for c in connected
                    }:
                        return await self._fail(session, "wrong_account", conn=conn)
                    connected = [
                        c
                        for c in connected
                        if c.profile.platform_user_id == target["platform_user_id"]
                    ]
                workspace_id = session["workspace_id"]
                account_ids = await self._upsert(conn, workspace_id, platform, connected)
                await repo.finish_session(conn, session["id"], "connected", None, account_ids)
        except ConnectFailed as exc:  # a profile the importer refuses: nothing was written
            return await self._fail(session, "platform_error", exc)
        log.info(
            "connect session=%s platform=%s status=connected accounts=%s",
            session["id"],
            platform,
            ",".join(account_ids),
        )
        params = {"connect_session": session["id"], "status": "connected"}
        params["account_id"] = account_ids[0]
        if len(account_ids) > 1:
            params["account_ids"] = ",".join(account_ids)
        return Outcome(str(URL(session["redirect_url"]).update_query(params)))

    async def _exchange_request(self, session: asyncpg.Record, code: str) -> CodeExchange:
        verifier = None
        if session["sealed_verifier"] is not None:
            blob = Sealed(session["key_id"], session["sealed_verifier"])
            verifier = self.vault.open(session["id"], blob).decode()
        client_id = client_secret = None
        if session["platform"] == "mastodon":
            row = await repo.get_mastodon_app(self.pool, session["instance"])
            if row is None:
                raise ConnectFailed("mastodon_app", code="app_missing")
            client_id = row["client_id"]
            client_secret = self.vault.open(
                f"mastodon:{session['instance']}", Sealed(row["key_id"], row["sealed_secret"])
            ).decode()
        return CodeExchange(
            code=code,
            redirect_uri=self.callback_url(session["platform"]),
            code_verifier=verifier,
            instance=session["instance"],
            client_id=client_id,
            client_secret=client_secret,
            page_id=session["page_id"],
        )

    async def _fail(
        self,
        session: asyncpg.Record,
        error: str,
        exc: ConnectFailed | None = None,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> Outcome:
        error = error if error in ERRORS else "platform_error"
        await repo.finish_session(conn or self.pool, session["id"], "failed", error, [])
        self._log_failure(session["id"], session["platform"], error, exc)
        params = {"connect_session": session["id"], "status": "failed", "error": error}
        return Outcome(str(URL(session["redirect_url"]).update_query(params)))

    def _log_failure(
        self, session_id: str, platform: str, error: str, exc: ConnectFailed | None
    ) -> None:
        log.info(
            "connect session=%s platform=%s status=failed error=%s step=%s http=%s code=%s",
            session_id,
            platform,
            error,
            exc.step if exc else "-",
            exc.status if exc else "-",
            exc.code if exc else "-",
        )

    async def _upsert(
        self,
        conn: asyncpg.Connection,
        workspace_id: int,
        platform: str,
        connected: list[Connected],
    ) -> list[str]:
        """Through the importer: its validation, reconnect and refresh-keeping rules."""
        lines = []
        for number, c in enumerate(connected, start=1):
            p, t = c.profile, c.tokens
            try:
                line = ImportLine(
                    platform=platform,
                    platform_user_id=p.platform_user_id,
                    username=p.username,
                    display_name=p.display_name,
                    avatar_url=p.avatar_url,
                    is_active=True,
                    access_token=t.access_token,
                    refresh_token=t.refresh_token,
                    token_expires_at=t.access_expires_at,
                    refresh_token_expires_at=t.refresh_expires_at,
                    scopes=list(t.scopes),
                    instance_url=p.instance_url,
                    authorizing_user_id=p.authorizing_user_id,
                )
            except ValidationError as exc:
                raise ConnectFailed("profile", code=describe(exc)[:200]) from None
            lines.append(ParsedLine(number, line))
        return await import_accounts(conn, self.vault, workspace_id, lines)

    # --- reading a session ----------------------------------------------------------------

    async def get(self, session_id: str) -> dict[str, Any] | None:
        row = await repo.get_session(self.pool, session_id)
        if row is None:
            return None
        status, error = row["status"], row["error"]
        if row["expired"]:
            status, error = "failed", "expired"
        ids: list[str] = list(row["account_ids"])
        out: dict[str, Any] = {
            "id": row["id"],
            "platform": row["platform"],
            "workspace": row["workspace"],
            "status": status,
            "account_id": ids[0] if ids else None,
            "account_ids": ids,
            "error": error,
            "created_at": row["created_at"],
            "expires_at": row["expires_at"],
        }
        return out
