"""The sandbox as a sender of platform push notices, each built and signed as its platform
documents it, and as the RISC issuer's key server.

``POST /sandbox/push`` ``{"platform", "event", "user_id", "target"?}`` builds the notice,
signs it with the sandbox credentials and sends it to ``target`` (the service's base URL;
default: the one the sandbox was started with) at the path the platform is configured with:

- facebook / instagram / threads, event ``deauthorize`` or ``data_deletion``: a form POST of
  ``signed_request`` to ``/platform-events/{platform}/deauthorize`` (or ``/data-deletion``)
- tiktok, event ``authorization.removed`` (or any other): JSON with ``TikTok-Signature``,
  ``"reason"`` (0-5) goes into ``content``
- twitter, event ``oauth.revoke``: the X Activity API payload, ``x-twitter-webhooks-signature``;
  event ``crc``: the CRC challenge (the answer is checked, ``crc_ok``)
- youtube (Google RISC), event ``token-revoked``, ``tokens-revoked``, ``account-disabled``,
  ``sessions-revoked``, ``account-enabled``, ``account-credential-change-required`` or
  ``verification``: a security event token POSTed to ``/platform-events/google``. Subject:
  ``{"sub"}`` (``iss-sub``; ``user_id`` is the sub) or ``{"subject_type": "oauth_token",
  "token": <refresh token>, "token_identifier_alg": "prefix" | "hash_base64_sha512_sha512"}``
  (the sandbox derives the identifier from the token it is given).

Tests of the receivers' refusals can bend one thing: ``secret`` (sign with another secret),
``timestamp`` (TikTok ``t``), ``kid``, ``alg`` (``none``), ``aud``, ``iss``, ``forge`` (sign
with a key that is not the issuer's), ``unsigned`` (no signature header), ``body_extra``.

``GET /google/oauth2/v3/certs`` is the JWKS; ``GET /google/.well-known/risc-configuration``
the discovery document; ``POST /sandbox/risc/rotate`` adds a new signing key (new kid).
The answer: ``{"url", "status", "response"}`` (what the receiver said).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devkit.sandbox.credentials import RISC_ISSUER, SANDBOX_CREDENTIALS, SANDBOX_X_APP_ID

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
RISC_EVENTS = {
    "token-revoked": OAUTH,
    "tokens-revoked": OAUTH,
    "account-disabled": RISC,
    "sessions-revoked": RISC,
    "account-enabled": RISC,
    "account-credential-change-required": RISC,
    "verification": RISC,
}
META = ("facebook", "instagram", "threads")
# method, path, headers, body
Built = tuple[str, str, dict[str, str], bytes]


class PushError(ValueError):
    pass


@dataclass
class Pusher:
    credentials: Mapping[str, str]
    target: str | None = None
    keys: list[tuple[str, rsa.RSAPrivateKey]] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None

    def signing_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        if not self.keys:  # made on first use: most sandboxes never sign a RISC token
            self.rotate()
        return self.keys[-1]

    def rotate(self) -> str:
        kid = f"sandbox-risc-{len(self.keys) + 1}-{secrets.token_hex(4)}"
        self.keys.append((kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        return kid

    def jwks(self) -> dict[str, Any]:
        self.signing_key()
        out = []
        for kid, key in self.keys:
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": out}

    # --- building -------------------------------------------------------------------------

    def build(self, ask: dict[str, Any]) -> Built:
        """(method, path, headers, body) of the notice the platform would send."""
        platform = ask.get("platform")
        event = ask.get("event")
        if not isinstance(platform, str) or not isinstance(event, str):
            raise PushError('"platform" and "event" are required')
        if platform in META:
            return self._meta(platform, event, ask)
        if platform == "tiktok":
            return self._tiktok(event, ask)
        if platform == "twitter":
            return self._twitter(event, ask)
        if platform in ("youtube", "google"):
            return self._risc(event, ask)
        raise PushError(f"{platform} pushes nothing (it stays on polling)")

    def _secret(self, name: str, ask: dict[str, Any]) -> str:
        value = ask.get("secret", self.credentials[name])
        return str(value)

    def _meta(self, platform: str, event: str, ask: dict[str, Any]) -> Built:
        if event not in ("deauthorize", "data_deletion"):
            raise PushError("Meta events: deauthorize, data_deletion")
        now = int(ask.get("timestamp", time.time()))
        payload: dict[str, Any] = {
            "user_id": _user(ask),
            "algorithm": ask.get("algorithm", "HMAC-SHA256"),
            "issued_at": now,
        }
        if event == "data_deletion":
            payload["expires"] = now + 3600
        encoded = _b64url(orjson.dumps(payload))
        secret = self._secret(f"{platform}_app_secret", ask)
        sig = _b64url(hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).digest())
        signed = encoded if ask.get("unsigned") else f"{sig}.{encoded}"
        body = urlencode({"signed_request": signed}).encode()
        path = "deauthorize" if event == "deauthorize" else "data-deletion"
        return (
            "POST",
            f"/platform-events/{platform}/{path}",
            {"Content-Type": "application/x-www-form-urlencoded"},
            body,
        )

    def _tiktok(self, event: str, ask: dict[str, Any]) -> Built:
        now = int(time.time())
        document = {
            "client_key": self.credentials["tiktok_client_key"],
            "event": event,
            "create_time": now,
            "user_openid": _user(ask),
            "content": orjson.dumps({"reason": int(ask.get("reason", 1))}).decode(),
            **ask.get("body_extra", {}),
        }
        body = orjson.dumps(document)
        t = str(int(ask.get("timestamp", now)))
        secret = self._secret("tiktok_client_secret", ask)
        s = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json"}
        if not ask.get("unsigned"):
            headers["TikTok-Signature"] = f"t={t},s={s}"
        return "POST", "/platform-events/tiktok", headers, body

    def _twitter(self, event: str, ask: dict[str, Any]) -> Built:
        secret = self._secret("twitter_consumer_secret", ask)
        if event == "crc":
            return "GET", "/platform-events/twitter", {}, b""
        document = {
            "data": {
                "event_uuid": str(ask.get("event_uuid", secrets.randbelow(10**19))),
                "filter": {},
                "event_type": event,
                "payload": {
                    "date_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                    "user_id": _user(ask),
                    "app_id": SANDBOX_X_APP_ID,
                },
            }
        }
        body = orjson.dumps(document)
        mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        headers = {"Content-Type": "application/json"}
        if not ask.get("unsigned"):
            headers["x-twitter-webhooks-signature"] = "sha256=" + base64.b64encode(mac).decode()
        return "POST", "/platform-events/twitter", headers, body

    def _risc(self, event: str, ask: dict[str, Any]) -> Built:
        if event not in RISC_EVENTS:
            raise PushError(f"RISC events: {', '.join(RISC_EVENTS)}")
        body: dict[str, Any] = {"subject": _risc_subject(ask)}
        if event == "account-disabled":
            body["reason"] = ask.get("reason", "hijacking")
        if event == "verification":
            body = {"state": ask.get("state", "sandbox-state")}
        claims = {
            "iss": ask.get("iss", RISC_ISSUER),
            "aud": ask.get("aud", self.credentials["youtube_client_id"]),
            "iat": int(time.time()),
            "jti": ask.get("jti", secrets.token_hex(16)),
            "events": {RISC_EVENTS[event] + event: body},
        }
        kid, key = self.signing_key()
        if ask.get("forge"):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        headers = {"kid": ask.get("kid", kid), "typ": "secevent+jwt"}
        if ask.get("alg") == "none":
            token = jwt.encode(claims, "", algorithm="none", headers=headers)
        else:
            token = jwt.encode(claims, key, algorithm="RS256", headers=headers)
        return (
            "POST",
            "/platform-events/google",
            {"Content-Type": "application/secevent+jwt", "Accept": "application/json"},
            token.encode(),
        )

    # --- sending --------------------------------------------------------------------------

    async def send(self, ask: dict[str, Any]) -> dict[str, Any]:
        target = ask.get("target", self.target)
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            raise PushError('"target" (the service base URL) is required')
        method, path, headers, body = self.build(ask)
        url = target.rstrip("/") + path
        params: dict[str, str] = {}
        crc = ""
        if method == "GET":
            crc = str(ask.get("crc_token", secrets.token_urlsafe(24)))
            params["crc_token"] = crc
        assert self.http is not None
        async with self.http.request(
            method, url, headers=headers, data=body or None, params=params
        ) as r:
            raw = await r.read()
            try:
                answer: Any = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                answer = raw.decode(errors="replace")
        out = {"url": url, "status": r.status, "response": answer}
        if crc:
            secret = self._secret("twitter_consumer_secret", ask)
            mac = hmac.new(secret.encode(), crc.encode(), hashlib.sha256).digest()
            expected = "sha256=" + base64.b64encode(mac).decode()
            out["crc_ok"] = isinstance(answer, dict) and answer.get("response_token") == expected
        return out


def _user(ask: dict[str, Any]) -> str:
    user = ask.get("user_id")
    if not isinstance(user, str) or not user:
        raise PushError('"user_id" is required')
    return user


def _risc_subject(ask: dict[str, Any]) -> dict[str, Any]:
    if ask.get("subject_type") == "oauth_token":
        token = ask.get("token")
        if not isinstance(token, str) or not token:
            raise PushError('an oauth_token subject needs "token" (the refresh token)')
        alg = ask.get("token_identifier_alg", "hash_base64_sha512_sha512")
        if alg == "prefix":
            identifier = token[:16]
        elif alg == "hash_base64_sha512_sha512":
            inner = hashlib.sha512(token.encode()).digest()
            identifier = base64.b64encode(hashlib.sha512(inner).digest()).decode()
        else:
            raise PushError("token_identifier_alg: prefix or hash_base64_sha512_sha512")
        return {
            "subject_type": "oauth_token",
            "token_type": "refresh_token",
            "token_identifier_alg": alg,
            "token": identifier,
        }
    sub = ask.get("sub", ask.get("user_id"))
    if not isinstance(sub, str) or not sub:
        raise PushError('an iss-sub subject needs "sub" (or "user_id")')
    return {"subject_type": "iss-sub", "iss": ask.get("subject_iss", RISC_ISSUER), "sub": sub}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


PUSHER = web.AppKey("sandbox_pusher", Pusher)


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def push(request: web.Request) -> web.Response:
    try:
        ask = orjson.loads(await request.read())
        if not isinstance(ask, dict):
            raise PushError("the body must be a JSON object")
        return _json(200, await request.app[PUSHER].send(ask))
    except (orjson.JSONDecodeError, PushError, KeyError, TypeError, ValueError) as exc:
        return _json(400, {"error": str(exc)})
    except aiohttp.ClientError as exc:
        return _json(502, {"error": f"the target did not answer: {exc}"})


async def jwks(request: web.Request) -> web.Response:
    return _json(200, request.app[PUSHER].jwks())


async def risc_configuration(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}"
    return _json(200, {"issuer": RISC_ISSUER, "jwks_uri": f"{base}/google/oauth2/v3/certs"})


async def rotate(request: web.Request) -> web.Response:
    return _json(200, {"kid": request.app[PUSHER].rotate()})


def add_push(
    app: web.Application,
    *,
    credentials: Mapping[str, str] | None = None,
    target: str | None = None,
) -> None:
    pusher = Pusher(dict(credentials or SANDBOX_CREDENTIALS), target)
    app[PUSHER] = pusher

    async def client(_: web.Application) -> AsyncIterator[None]:
        pusher.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        yield
        await pusher.http.close()

    app.cleanup_ctx.append(client)
    app.router.add_post("/sandbox/push", push)
    app.router.add_post("/sandbox/risc/rotate", rotate)
    app.router.add_get("/google/oauth2/v3/certs", jwks)
    app.router.add_get("/google/.well-known/risc-configuration", risc_configuration)
