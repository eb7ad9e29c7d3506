"""Token states and the call log of one sandbox process. Unknown tokens are valid."""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

# states a client may set; "rotated" is set by the sandbox on a rotating refresh
SETTABLE_STATES = frozenset(
    {"valid", "expired", "revoked", "error", "rate_limited", "slow", "flaky"}
)


@dataclass(slots=True)
class TokenState:
    state: str
    fail_times: int = 0  # flaky: answer 5xx this many more times, then valid
    retry_after: float = 60.0  # rate_limited: seconds the platform's headers announce
    delay: float = 5.0  # slow: seconds before answering (valid)


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    platform: str
    method: str
    path: str
    token: str
    status: int

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "platform": self.platform,
            "method": self.method,
            "path": self.path,
            "token": self.token,
            "status": self.status,
        }


class SandboxState:
    def __init__(self, max_calls: int = 100_000) -> None:
        from devkit.sandbox.consent import ConsentState

        self.consent = ConsentState()  # who is signed in where, codes, who holds each token
        self.tokens: dict[str, TokenState] = {}
        self.calls: deque[Call] = deque(maxlen=max_calls)
        # slow calls received and not answered yet, by token (tests wait on this)
        self.in_flight: Counter[str] = Counter()
        self.total = 0
        self._serial = itertools.count(1)

    def resolve(self, token: str) -> tuple[str, TokenState | None]:
        """The state this request is answered in; counts down a flaky token's failures."""
        entry = self.tokens.get(token)
        if entry is None:
            return "valid", None
        if entry.state == "flaky":
            if entry.fail_times > 0:
                entry.fail_times -= 1
                return "error", entry
            return "valid", entry
        return entry.state, entry

    def issue(self, old: str, *, rotate: bool) -> tuple[str, str]:
        """A new (access, refresh) pair derived from the presented refresh token; a rotating
        platform rejects the old refresh token from now on."""
        n = next(self._serial)
        root = old.split("~", 1)[0]
        if rotate:
            self.tokens[old] = TokenState("rotated")
            return f"{root}~a{n}", f"{root}~r{n}"
        return f"{root}~a{n}", old

    def record(self, platform: str, method: str, path: str, token: str, status: int) -> None:
        self.total += 1
        self.calls.append(Call(time.time(), platform, method, path, token, status))

    def reset(self) -> None:
        self.tokens.clear()
        self.calls.clear()
        self.consent.reset()
