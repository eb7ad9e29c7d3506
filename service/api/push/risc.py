"""Google Cross-Account Protection (RISC): security event tokens for YouTube accounts.

The body is a JWT signed RS256 by a key of the issuer's JWKS (found by the header `kid`;
an unknown kid refetches the set once, PyJWKClient's cooldown permitting, then 400), with
`iss` the configured issuer and `aud` our OAuth client id. `exp` is not checked: Google
says security event tokens describe past events and do not expire. `alg` other than RS256
(`none` included) is refused before any key is looked at.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import (
    InvalidSignatureError,
    InvalidTokenError,
    PyJWKClientConnectionError,
    PyJWKClientError,
    PyJWKError,
    PyJWKSetError,
    PyJWTError,
)

from service.api.errors import BadRequest, InvalidSignature, ServiceUnavailable
from service.api.push import plain_id
from service.core.fingerprints import PREFIX_LENGTH, prefix_digest
from service.core.notices import Action, Notice, Subject

log = logging.getLogger("octopost.push")

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
MAX_TOKEN = 16 * 1024

# event type -> (action, reason); `verification` is only logged
EVENTS: dict[str, tuple[Action, str]] = {
    OAUTH + "token-revoked": (Action.revoke, "token_revoked_at_platform"),
    OAUTH + "tokens-revoked": (Action.revoke, "tokens_revoked_at_platform"),
    RISC + "account-disabled": (Action.deactivate, "platform_account_disabled"),
    RISC + "sessions-revoked": (Action.check, "sessions_revoked_at_platform"),
    RISC + "account-enabled": (Action.check, "platform_account_enabled"),
    RISC + "account-credential-change-required": (Action.check, "credential_change_required"),
}
VERIFICATION = RISC + "verification"


class RiscVerifier:
    def __init__(
        self, jwks_url: str, issuer: str, audience: str, *, refetch_seconds: float = 30.0
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        # The key set is cached (5 min); an unknown kid refetches it, at most once per
        # refetch_seconds, so a stream of made-up kids cannot hammer the issuer.
        self.keys = PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=300, timeout=5, cooldown_duration=refetch_seconds
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims; 400 malformed / unknown kid / wrong iss or aud, 401 forged."""
        if not token or len(token) > MAX_TOKEN:
            raise BadRequest("the body must be a security event token (a JWT)")
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            raise BadRequest("the body is not a JWT") from None
        if header.get("alg") != "RS256":
            raise BadRequest("only RS256 security event tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BadRequest("the token header names no kid")
        try:
            key = await asyncio.to_thread(self.keys.get_signing_key, kid)
        except PyJWKClientConnectionError as exc:
            log.warning("RISC key set unreachable error=%s", exc)
            raise ServiceUnavailable("the issuer's keys could not be fetched; retry") from None
        except (PyJWKSetError, PyJWKError) as exc:
            log.warning("RISC key set unusable error=%s", exc)
            raise ServiceUnavailable("the issuer's keys could not be read; retry") from None
        except PyJWKClientError:
            raise BadRequest("no key of the issuer has this kid") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=300,
                options={"verify_exp": False, "require": ["iss", "aud", "jti", "iat"]},
            )
        except InvalidSignatureError:
            raise InvalidSignature("the token's signature does not verify") from None
        except PyJWTError as exc:  # claims (iss, aud, iat, missing ones) or a key of another type
            raise BadRequest(f"the token was refused: {exc}") from None
        return claims


def notices(claims: dict[str, Any], issuer: str) -> list[Notice]:
    jti = plain_id(claims.get("jti"), "jti")
    events = claims.get("events")
    if not isinstance(events, dict) or not events:
        raise BadRequest("the token carries no events")
    out: list[Notice] = []
    for n, (event_type, body) in enumerate(sorted(events.items())):
        if not isinstance(body, dict):
            raise BadRequest("each event must be a JSON object")
        if event_type == VERIFICATION:
            log.info("RISC verification received jti=%s state=%s", jti, body.get("state"))
            continue
        if event_type not in EVENTS:
            log.info("RISC event ignored jti=%s event=%s", jti, event_type)
            continue
        subject = _subject(body.get("subject"), issuer)
        if subject is None:
            log.info("RISC event with a subject we cannot match jti=%s event=%s", jti, event_type)
            continue
        action, reason = EVENTS[event_type]
        detail: dict[str, Any] = {"jti": jti}
        if isinstance(body.get("reason"), str):
            detail["risc_reason"] = body["reason"]
        out.append(
            Notice(
                id=f"google:{jti}" if len(events) == 1 else f"google:{jti}:{n}",
                platform="youtube",
                event=event_type.rsplit("/", 1)[-1],
                action=action,
                subject_type=subject[0],
                subject=subject[1],
                reason=reason,
                detail=detail,
            )
        )
    return out


def _subject(subject: Any, issuer: str) -> tuple[Subject, str] | None:
    if not isinstance(subject, dict):
        raise BadRequest("the event has no subject")
    kind = subject.get("subject_type")
    if kind in ("iss-sub", "id_token_claims"):
        if subject.get("iss", issuer) != issuer:
            return None  # an account of another issuer is none of ours
        return Subject.user, plain_id(subject.get("sub"), "subject.sub")
    if kind == "oauth_token":
        if subject.get("token_type", "refresh_token") != "refresh_token":
            return None  # only refresh tokens are fingerprinted
        token = subject.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest("oauth_token subject without a token")
        alg = subject.get("token_identifier_alg")
        if alg == "hash_base64_sha512_sha512":
            return Subject.refresh_digest, token
        if alg == "prefix":
            if len(token) != PREFIX_LENGTH:
                raise BadRequest(f"a prefix token identifier has {PREFIX_LENGTH} characters")
            return Subject.refresh_prefix_digest, prefix_digest(token).hex()
        return None
    return None
