"""Schemathesis against the service's own OpenAPI document, served by a real API process.

Every operation is fuzzed with a valid key (positive and negative data, the coverage phase's
boundary values, the documented examples) and with a well-formed unknown key; the OpenAPI
links drive stateful sequences (list -> get -> health/events/disconnect -> get again).
Besides schemathesis' own checks (no 5xx, statuses, headers and bodies as documented, auth
not ignored, 405 for undocumented methods, no use after free), every error must be in the
one error format and no answer may show another workspace's account.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from service.api import cursor
from service.api.openapi import build_openapi
from service.core import api_keys, ids
from service.core.repository import webhooks, workspaces
from service.core.settings import Settings
from service.core.vault import Vault
from service.core.webhooks import new_secret
from tests.conftest import TABLES
from tests.reliability.conftest import (
    ApiProcess,
    account_line,
    api_env,
    assert_error_body,
    import_into,
    migrated,
    run_sync,
)

# Per operation and generation mode; 14 operations x (valid key + unknown key) + stateful
# runs in about two and a half minutes on the 2-core machine.
MAX_EXAMPLES = 60
STATEFUL_EXAMPLES = 60
PLATFORMS_A = ("twitter", "bluesky", "mastodon", "youtube", "linkedin")
PLATFORMS_B = ("twitter", "tiktok")
OTHER_ENDPOINT = "we_fuzzBendpoint"

# What was sent, for the report (`pytest -s` prints it at the end of the module).
COUNTS: Counter[str] = Counter()

Check = Callable[[Any, schemathesis.Response, schemathesis.Case[Any]], bool | None]


@dataclass
class FuzzTarget:
    api: ApiProcess
    database_url: str
    vault: Vault
    key: str = field(default_factory=api_keys.new_api_key)
    other_key: str = field(default_factory=api_keys.new_api_key)
    own_ids: frozenset[str] = frozenset(f"acc_fuzzA{p}" for p in PLATFORMS_A)
    other_ids: frozenset[str] = frozenset({*(f"acc_fuzzB{p}" for p in PLATFORMS_B), OTHER_ENDPOINT})

    def reseed(self) -> None:
        """The same two workspaces every time, down to ids and timestamps: a stateful
        scenario replayed by Hypothesis must meet the server state it met before."""

        async def seed() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
                for workspace, key, platforms, prefix in (
                    ("fuzz-a", self.key, PLATFORMS_A, "acc_fuzzA"),
                    ("fuzz-b", self.other_key, PLATFORMS_B, "acc_fuzzB"),
                ):
                    async with conn.transaction():
                        workspace_id = await workspaces.ensure_workspace(conn, workspace)
                        await workspaces.insert_key(
                            conn,
                            f"key_{workspace}",
                            workspace_id,
                            api_keys.key_display_prefix(key),
                            api_keys.hash_api_key(key),
                        )
                    lines = [
                        account_line(
                            p,
                            f"{prefix}-{p}",
                            id=f"{prefix}{p}",
                            connected_at=f"2026-01-0{n + 1}T00:00:00Z",
                        )
                        for n, p in enumerate(platforms)
                    ]
                    await import_into(conn, self.vault, workspace, lines)
                # and a webhook endpoint in B, which A must never see either
                sealed = self.vault.seal(OTHER_ENDPOINT, new_secret().encode())
                await webhooks.insert_endpoint(
                    conn,
                    OTHER_ENDPOINT,
                    await workspaces.ensure_workspace(conn, "fuzz-b"),
                    url="https://hooks.example.com/b",
                    events=["account.disconnected"],
                    description="",
                    key_id=sealed.key_id,
                    sealed=sealed.blob,
                )
            finally:
                await conn.close()

        run_sync(seed)


@pytest.fixture(scope="module")
def fuzz_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    run_sync(lambda: migrated(settings.database_url))
    api = ApiProcess(
        # Fuzzing with an unknown key is many failed authentications from one address.
        api_env(settings, OCTOPOST_AUTH_FAILURES_PER_MINUTE="0", OCTOPOST_LOG_LEVEL="INFO"),
        tmp_path_factory.mktemp("fuzz") / "api.log",
    ).start()
    yield api
    api.stop()
    logs = api.logs()
    assert "Traceback" not in logs and "unhandled error" not in logs, logs[-5000:]
    print(f"\nfuzz figures: {dict(sorted(COUNTS.items()))}")


@pytest.fixture
def fuzz_target(
    fuzz_api: ApiProcess, settings: Settings, vault: Vault, pool: asyncpg.Pool
) -> FuzzTarget:
    """Two workspaces with accounts; the fuzzer holds workspace A's key and must never see
    B's accounts."""
    target = FuzzTarget(fuzz_api, settings.database_url, vault)
    target.reseed()
    return target


def fuzz_config(base_url: str) -> schemathesis.Config:
    config = schemathesis.Config()
    config.projects.default.update(base_url=base_url, request_timeout=10)
    config.projects.default.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        # Unknown query parameters are ignored (like ?_=cache-buster), not refused: they are
        # not "invalid data" for this API.
        allow_extra_parameters=False,
    )
    # positive_data_acceptance is replaced by positive_data_accepted below: a cursor is an
    # opaque token the server issued, so a random "schema-valid" string is rightly a 400.
    config.projects.default.checks.update(
        included_check_names=["all"], excluded_check_names=["positive_data_acceptance"]
    )
    return config


# The document the service serves is checked to be this one (test_served_document_...), so
# the operations can be collected before any server runs; requests go to the live process.
schema = schemathesis.openapi.from_dict(build_openapi(), config=fuzz_config("http://127.0.0.1"))

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def one_error_format(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool:
    COUNTS["responses"] += 1
    COUNTS[f"status {response.status_code}"] += 1
    assert response.status_code < 500, (case.method, case.formatted_path, response.content)
    if response.status_code >= 400:
        assert_error_body(response.status_code, response.headers, response.content)
    else:
        assert response.headers.get("x-request-id"), response.headers
    return True


def never_another_workspace(target: FuzzTarget) -> Check:
    def check(ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]) -> bool:
        text = response.content.decode(errors="replace")
        leaked = sorted(i for i in target.other_ids if i in text)
        assert not leaked, f"workspace B's {leaked} answered to A: {case.method} {case.path}"
        return True

    return check


def positive_data_accepted(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return True
    if response.status_code in (200, 201, 202, 204, 404):
        return True
    if response.status_code == 400 and "cursor" in (case.query or {}):
        if orjson.loads(response.content)["error"]["message"] == "cursor is not valid":
            return True
    # A webhook URL the schema cannot judge (it must name a public host, over https in
    # production), and a test or retry on an endpoint that is disabled at the moment.
    if response.status_code == 400 and case.path.startswith("/v1/webhook_endpoints"):
        if orjson.loads(response.content)["error"]["message"].startswith("url"):
            return True
    if response.status_code == 409 and case.path.startswith("/v1/webhook_endpoints"):
        return True
    raise AssertionError(
        f"schema-valid request rejected: {case.method} {case.formatted_path} {case.query}"
        f" -> {response.status_code} {response.content[:300]!r}"
    )


def rejected_as_unauthenticated(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool:
    assert response.status_code == 401, (case.method, case.formatted_path, response.content)
    assert response.headers["www-authenticate"][0].startswith("Bearer")
    return True


def test_served_document_is_the_one_fuzzed(fuzz_target: FuzzTarget) -> None:
    served = requests.get(f"{fuzz_target.api.base}/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == build_openapi()
    loaded = schemathesis.openapi.from_url(f"{fuzz_target.api.base}/v1/openapi.json")

    def labels(operations: Any) -> list[str]:
        found = []
        for op in operations:
            assert isinstance(op, Ok), op  # an Err is a schema the loader could not read
            found.append(op.ok().label)
        return sorted(found)

    assert labels(loaded.get_all_operations()) == labels(schema.get_all_operations())


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_with_a_valid_key(
    case: schemathesis.Case[Any], fuzz_target: FuzzTarget
) -> None:
    COUNTS["examples, valid key"] += 1
    case.call_and_validate(
        base_url=fuzz_target.api.base,
        headers={"Authorization": f"Bearer {fuzz_target.key}"},
        additional_checks=[
            one_error_format,
            never_another_workspace(fuzz_target),
            positive_data_accepted,
        ],
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_with_an_unknown_key(
    case: schemathesis.Case[Any], fuzz_target: FuzzTarget
) -> None:
    COUNTS["examples, unknown key"] += 1
    case.call_and_validate(
        base_url=fuzz_target.api.base,
        headers={"Authorization": f"Bearer {api_keys.new_api_key()}"},
        additional_checks=[
            one_error_format,
            never_another_workspace(fuzz_target),
            rejected_as_unauthenticated,
        ],
    )


def test_stateful_sequences_follow_the_links(fuzz_target: FuzzTarget) -> None:
    base = fuzz_target.api.base
    # The account links (list -> get -> health/events -> delete): the webhook operations are
    # fuzzed one by one above, and in one state machine their creation (which a schema cannot
    # make valid: the URL must be a public host) crowded the account steps out.
    live = schemathesis.openapi.from_url(
        f"{base}/v1/openapi.json", config=fuzz_config(base)
    ).include(path_regex=r"^/v1/accounts")
    steps: Counter[str] = Counter()
    checks = [one_error_format, never_another_workspace(fuzz_target), positive_data_accepted]

    class Workflow(live.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            fuzz_target.reseed()

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {fuzz_target.key}"}}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case[Any]) -> None:
            super().after_call(response, case)
            steps[f"{case.method} {case.path} {response.status_code}"] += 1

        def validate_response(
            self,
            response: schemathesis.Response,
            case: schemathesis.Case[Any],
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            super().validate_response(response, case, [*(additional_checks or []), *checks])

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    COUNTS["stateful steps"] += sum(steps.values())
    # The links really were followed to real accounts, not only to random ids.
    assert steps["GET /v1/accounts/{id} 200"] > 0, steps
    assert steps["GET /v1/accounts/{id}/health 200"] > 0, steps
    assert steps["GET /v1/accounts/{id}/events 200"] > 0, steps
    assert steps["DELETE /v1/accounts/{id} 204"] > 0, steps


# ------------------------------------------------- cursors: hypothesis over real HTTP

_TIMESTAMPS = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: never issued
    st.text(max_size=30),
)
_ACCOUNT_IDS = st.one_of(
    st.from_regex(ids.ID_RE, fullmatch=True),
    st.text(max_size=70),
    st.sampled_from(["acc_\x00", "acc_'--", "../x", "a" * 65, ""]),
)
_EVENT_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="0123456789\u00b2\u0663\uff11 -+_", max_size=30),
    st.text(max_size=30),
)


@st.composite
def hostile_cursors(draw: st.DrawFn, genuine: str) -> tuple[str, bool]:
    """(cursor, for the events listing?): garbage, a genuine cursor with one character
    changed or cut short, or a cursor with a valid signature over a payload the server never
    wrote (the signing key is no secret, so only validation stands between it and SQL)."""
    kind = draw(st.sampled_from(["garbage", "tampered", "truncated", "forged", "forged", "odd"]))
    events = draw(st.booleans())
    if kind == "garbage":
        return draw(st.text(min_size=1, max_size=600)), events
    if kind == "tampered":
        i = draw(st.integers(0, len(genuine) - 1))
        c = draw(st.sampled_from("ABCabc019-_=%~ "))
        return genuine[:i] + c + genuine[i + 1 :], events
    if kind == "truncated":
        return genuine[: draw(st.integers(1, len(genuine) - 1))], events
    if kind == "forged":
        if events:
            return cursor.encode("evt", draw(_EVENT_IDS)), True
        return cursor.encode("acc", draw(_TIMESTAMPS), draw(_ACCOUNT_IDS)), False
    # a signed payload of the wrong shape
    prefix = draw(st.sampled_from(["acc", "evt", "", "x"]))
    return cursor.encode(prefix, *draw(st.lists(st.text(max_size=10), max_size=4))), events


# Found by this test before they were fixed (each was a 500).
KNOWN_NASTY = [
    (cursor.encode("acc", "2026-01-01T00:00:00+00:00", "acc_\x00"), False),
    (cursor.encode("evt", "\u00b2"), True),
    (cursor.encode("evt", "9" * 25), True),
    (cursor.encode("evt", str(2**63)), True),
]


def test_hostile_cursors_are_400_never_500(fuzz_target: FuzzTarget) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {fuzz_target.key}"
    base = fuzz_target.api.base
    first = session.get(f"{base}/v1/accounts", params={"limit": 1}, timeout=10).json()
    genuine = first["next_cursor"]
    some_id = sorted(fuzz_target.own_ids)[0]
    tried: list[str] = []

    @given(case=hostile_cursors(genuine))
    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def probe(case: tuple[str, bool]) -> None:
        value, events = case
        tried.append(value)
        path = f"/v1/accounts/{some_id}/events" if events else "/v1/accounts"
        r = session.get(f"{base}{path}", params={"cursor": value}, timeout=10)
        # A tampered cursor can still decode to a real position: then it is a normal page.
        assert r.status_code in (200, 400), (value, r.status_code, r.text)
        if r.status_code == 400:
            assert_error_body(400, r.headers, r.content)
            assert r.json()["error"]["message"] == "cursor is not valid", r.text

    for nasty in KNOWN_NASTY:
        probe = example(case=nasty)(probe)
    probe()
    COUNTS["hostile cursors"] += len(tried)
    # the genuine cursor still works
    r = session.get(f"{base}/v1/accounts", params={"cursor": genuine}, timeout=10)
    assert r.status_code == 200, r.text
