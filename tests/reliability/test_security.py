"""Security at the API edge: tenant isolation over every endpoint and id form, API keys
(revocation within the cache bound, brute force throttled per client, comparison time
independent of how much of a key is right) and hostile input at the byte level."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from yarl import URL

from devkit.embedded import free_port
from service.api import app as app_module
from service.api import cursor
from service.api.app import create_app
from service.api.auth import Authenticator
from service.api.errors import ApiError
from service.api.models import HEALTH_STATUSES
from service.api.server import AppRunner
from service.core import api_keys, ids
from service.core.repository import workspaces
from service.core.settings import Settings
from tests.reliability.conftest import account_line, assert_error_body

FIGURES: Counter[str] = Counter()

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(settings: Settings, pool: asyncpg.Pool, redis: ArqRedis) -> AsyncIterator[Serve]:
    """Start the real app on a real port with some settings changed; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> str:
        app = create_app(settings.model_copy(update=overrides), pool=pool, redis=redis)
        runner = AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    print(f"\nsecurity figures: {dict(sorted(FIGURES.items()))}")


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, key: str | None = None, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(kw.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    # encoded=True: the path goes out exactly as written, percent escapes and all
    async with session.request(method, URL(url, encoded=True), headers=headers, **kw) as r:
        return r.status, dict(r.headers), await r.read()


# --------------------------------------------------------------- tenant isolation


def id_forms(account_id: str) -> list[str]:
    """Ways to write an id in a path: exact, case-changed, percent-encoded, padded, with
    path and SQL tricks. Raw path text, sent as is (yarl encoded=True)."""
    encoded = "".join(f"%{b:02X}" for b in account_id.encode())
    return [
        account_id,
        account_id.upper(),
        account_id.lower(),
        encoded,
        account_id[:4] + quote(account_id[4:], safe=""),
        f"{account_id}%20",
        f"%20{account_id}",
        f"{account_id}%00",
        f"{account_id}%0A",
        f"{account_id}'--",
        f"{account_id}'%20OR%20'1'='1",
        f"{account_id}%27%20OR%20workspace_id%3C%3E0--",
        f"..%2F{account_id}",
        f"x%2F..%2F{account_id}",
        f"{account_id}%2F",
        f"{account_id};",
        f"{account_id}%3Bselect",
        f"{account_id}*",
        f"{account_id}%25",
        account_id[:-1],
        account_id + account_id[-1],
    ]


SUFFIXES = ("", "/health", "/events", "/events?limit=1")


def _answer(status: int, headers: dict[str, str], body: bytes) -> tuple[Any, ...]:
    keep = {k.lower(): v for k, v in headers.items() if k.lower() not in ("x-request-id", "date")}
    return status, keep, body


async def test_key_a_never_reaches_workspace_b(
    serve: Serve, make_key: Any, import_lines: Any, pool: asyncpg.Pool
) -> None:
    base = await serve()
    key_a = await make_key("tenant-a")
    key_b = await make_key("tenant-b")
    a_ids = await import_lines("tenant-a", [account_line(p, f"a-{p}") for p in ids.PLATFORMS])
    b_lines = [account_line(p, f"b-{p}") for p in ids.PLATFORMS]
    b_lines[1]["is_active"] = False
    # B also holds the very same platform identities as A: they are B's own accounts
    b_lines += [account_line("twitter", "a-twitter"), account_line("youtube", "a-youtube")]
    b_ids = await import_lines("tenant-b", b_lines)
    async with aiohttp.ClientSession() as session:
        # one of B's accounts is disconnected (its tombstone is B's too)
        assert (await fetch(session, "DELETE", f"{base}/v1/accounts/{b_ids[0]}", key_b))[0] == 204
        status, _, body = await fetch(
            session, "GET", f"{base}/v1/accounts/{b_ids[2]}/events?limit=1", key_b
        )
        assert status == 200
        b_events_cursor = cursor.encode("evt", str(orjson.loads(body)["events"][0]["id"] + 1))
        b_page = orjson.loads(
            (await fetch(session, "GET", f"{base}/v1/accounts?limit=2", key_b))[2]
        )
        before = await pool.fetch(
            "SELECT a.*, t.sealed FROM accounts a LEFT JOIN account_tokens t "
            "ON t.account_id = a.id ORDER BY a.id"
        )

        tried = 0
        never = "acc_" + ids.random_string(16)
        for victim in b_ids:
            for form, ghost in zip(id_forms(victim), id_forms(never), strict=True):
                for suffix in SUFFIXES:
                    for method in ("GET", "DELETE") if suffix == "" else ("GET",):
                        theirs = await fetch(
                            session,
                            method,
                            f"{base}/v1/accounts/{form}{suffix}",
                            key_a,
                        )
                        nothing = await fetch(
                            session, method, f"{base}/v1/accounts/{ghost}{suffix}", key_a
                        )
                        tried += 1
                        assert theirs[0] == 404, (method, form, suffix, theirs)
                        # byte for byte the answer for an id that never existed
                        assert _answer(*theirs) == _answer(*nothing), (method, form, suffix)
                        assert orjson.loads(theirs[2]) == {
                            "error": {"type": "not_found", "message": "account not found"}
                        }
        # B's events cursor on A's account: positions only, in A's own trail
        status, _, body = await fetch(
            session,
            "GET",
            f"{base}/v1/accounts/{a_ids[0]}/events?cursor={b_events_cursor}",
            key_a,
        )
        assert status == 200 and all(e["kind"] == "connected" for e in orjson.loads(body)["events"])
        # listing, every filter, and B's cursor: only A's accounts, all of them
        queries = [""] + [f"platform={p}" for p in ids.PLATFORMS]
        queries += ["is_active=true", "is_active=false"]
        queries += [f"status={s}" for s in HEALTH_STATUSES]
        queries += ["limit=500", f"cursor={b_page['next_cursor']}", "limit=1"]
        for query in queries:
            status, _, body = await fetch(session, "GET", f"{base}/v1/accounts?{query}", key_a)
            assert status == 200, (query, body)
            listed = [a["id"] for a in orjson.loads(body)["accounts"]]
            assert set(listed) <= set(a_ids), query
            tried += 1
        everything = orjson.loads((await fetch(session, "GET", f"{base}/v1/accounts", key_a))[2])
        assert sorted(a["id"] for a in everything["accounts"]) == sorted(a_ids)  # the count
    after = await pool.fetch(
        "SELECT a.*, t.sealed FROM accounts a LEFT JOIN account_tokens t "
        "ON t.account_id = a.id ORDER BY a.id"
    )
    assert [dict(r) for r in after] == [dict(r) for r in before]  # nothing of B's touched
    assert await pool.fetchval("SELECT count(*) FROM revocations") == 1  # B's own DELETE
    FIGURES["tenant isolation: requests with A's key at B"] += tried


# ------------------------------------------------------------------- API keys


async def test_revoked_key_stops_working_within_the_cache_bound(
    serve: Serve, make_key: Any, pool: asyncpg.Pool
) -> None:
    cache_seconds = 1.0
    base = await serve(key_cache_seconds=cache_seconds)
    key = await make_key("revoke-me")
    async with aiohttp.ClientSession() as session:
        assert (await fetch(session, "GET", f"{base}/v1/accounts", key))[0] == 200  # cached
        async with pool.acquire() as conn:
            assert await workspaces.revoke_key(conn, api_keys.key_display_prefix(key))
        revoked_at = time.monotonic()
        while True:
            status, headers, body = await fetch(session, "GET", f"{base}/v1/accounts", key)
            if status != 200:
                break
            assert time.monotonic() - revoked_at < cache_seconds + 1.0, "still accepted"
            await asyncio.sleep(0.02)
        stopped_after = time.monotonic() - revoked_at
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert stopped_after <= cache_seconds + 0.5
    FIGURES["revoked key refused after ms"] = round(stopped_after * 1000)


async def test_brute_force_is_throttled_per_client(serve: Serve, make_key: Any) -> None:
    limit = 5
    base = await serve(auth_failures_per_minute=limit)
    key = await make_key("brute")
    attempts = 200
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as attacker:
        for i in range(attempts):
            bad = api_keys.new_api_key() if i % 3 else "not-a-key"
            status, headers, body = await fetch(attacker, "GET", f"{base}/v1/accounts", bad)
            statuses[status] += 1
            error = assert_error_body(status, headers, body)
            if i < limit:
                assert status == 401, (i, body)
            else:
                assert status == 429, (i, body)
                assert error["type"] == "rate_limited"
                assert 1 <= int(headers["Retry-After"]) <= 61
        # the throttled address is throttled for its good key too, until the window ends
        assert (await fetch(attacker, "GET", f"{base}/v1/accounts", key))[0] == 429
    # another client (another source address) is not affected, and has its own budget
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        assert (await fetch(other, "GET", f"{base}/v1/accounts", key))[0] == 200
        for _ in range(limit):
            bad = api_keys.new_api_key()
            assert (await fetch(other, "GET", f"{base}/v1/accounts", bad))[0] == 401
        assert (await fetch(other, "GET", f"{base}/v1/accounts", api_keys.new_api_key()))[0] == 429
    assert statuses == {401: limit, 429: attempts - limit}
    FIGURES["brute force: bad keys tried"] += attempts
    FIGURES["brute force: 429 answers"] += statuses[429]


async def test_key_check_time_does_not_depend_on_how_much_is_right(
    pool: asyncpg.Pool, make_key: Any
) -> None:
    """A key wrong in its last character is refused no slower or faster than one wrong in
    its first: no code path compares the plaintext key piece by piece (lookup by SHA-256,
    then hmac.compare_digest). Measured on the authenticator itself, interleaved, by
    median, so the machine's noise cancels out."""
    key = await make_key("timing")
    auth = Authenticator(pool, cache_seconds=0, cache_size=0, failures_per_minute=0)
    swap = {c: "A" if c != "A" else "B" for c in set(key)}
    wrong_last = key[:-1] + swap[key[-1]]
    wrong_first_secret = key[:9] + swap[key[9]] + key[10:]
    random_key = api_keys.new_api_key()
    samples: dict[str, list[float]] = {"last": [], "first": [], "random": []}

    async def refused(candidate: str) -> float:
        started = time.perf_counter()
        with pytest.raises(ApiError):
            await auth.authenticate(f"Bearer {candidate}", "timing")
        return time.perf_counter() - started

    for _ in range(20):  # warm up the connections and the statement cache
        await refused(random_key)
    for _ in range(300):
        samples["last"].append(await refused(wrong_last))
        samples["first"].append(await refused(wrong_first_secret))
        samples["random"].append(await refused(api_keys.new_api_key()))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    assert 0.67 < medians["last"] / medians["first"] < 1.5, medians
    assert 0.67 < medians["last"] / medians["random"] < 1.5, medians
    FIGURES["key check median us, wrong last char"] = round(medians["last"] * 1e6)
    FIGURES["key check median us, wrong first char"] = round(medians["first"] * 1e6)


# ------------------------------------------------------------------ hostile input


def _exchange(port: int, data: bytes, timeout: float = 15.0) -> bytes:
    """Send raw bytes, read one response (head and Content-Length body)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                if head.startswith(b"HTTP/1.1 100"):
                    out = body
                    continue
                if data.startswith(b"HEAD "):
                    break
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
        return out


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return status, headers, body


# Requests aiohttp answers itself, before any middleware runs (its parser, its router's
# Expect check): its own short text/plain body. No public aiohttp API lets the app write
# those (the 431/414 of an oversized header or request line are a 400 there too).
ANSWERED_BY_AIOHTTP = {
    "header line over 8 KiB", "Authorization over 8 KiB", "500 headers",
    "request line over 16 KiB", "Content-Length beyond 64 bits", "negative Content-Length",
    "Content-Length and chunked", "two Content-Lengths", "malformed chunk",
    "Transfer-Encoding gzip", "raw 0xFF in path", "raw 0xFF in query", "NUL in path",
    "control byte in header", "bare LF line ends", "space in header name",
    "obsolete line folding", "TLS hello", "HTTP/2 preface", "HTTP/9.9", "no Host on HTTP/1.1",
    "unknown Expect", "made-up method", "lower-case method",
}  # fmt: skip


def hostile_requests(key: str, account_id: str) -> list[tuple[str, bytes, int]]:
    """(name, raw request, the one right status)."""
    auth = f"Authorization: Bearer {key}\r\n".encode()
    get = b"GET /v1/accounts HTTP/1.1\r\nHost: t\r\n"

    def req(first: bytes, *headers: bytes, body: bytes = b"") -> bytes:
        return first + b"\r\nHost: t\r\n" + b"".join(headers) + auth + b"\r\n" + body

    acc = account_id.encode()
    big_chunks = b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" for _ in range(3))
    return [
        # oversized
        ("header line over 8 KiB", req(b"GET /v1/accounts HTTP/1.1", b"X-Big: " + b"a" * 9000 + b"\r\n"), 400),
        ("Authorization over 8 KiB", get + b"Authorization: Bearer oct_live_" + b"a" * 9000 + b"\r\n\r\n", 400),
        ("500 headers", req(b"GET /v1/accounts HTTP/1.1", *(b"X-H%d: v\r\n" % i for i in range(500))), 400),
        ("request line over 16 KiB", req(b"GET /v1/accounts/" + b"a" * 17000 + b" HTTP/1.1"), 400),
        ("10 KB id", req(b"GET /v1/accounts/" + b"a" * 10000 + b" HTTP/1.1"), 404),
        ("Content-Length over the limit", req(b"DELETE /v1/accounts/" + acc + b" HTTP/1.1", b"Content-Length: 200000\r\n"), 413),
        ("chunked body over the limit", req(b"DELETE /v1/accounts/" + acc + b" HTTP/1.1", b"Transfer-Encoding: chunked\r\n", body=big_chunks + b"0\r\n\r\n"), 413),
        ("Content-Length beyond 64 bits", req(b"DELETE /v1/accounts/x HTTP/1.1", b"Content-Length: 99999999999999999999\r\n"), 400),
        ("negative Content-Length", req(b"GET /v1/accounts HTTP/1.1", b"Content-Length: -1\r\n"), 400),
        ("Content-Length and chunked", req(b"GET /v1/accounts HTTP/1.1", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400),
        ("two Content-Lengths", req(b"GET /v1/accounts HTTP/1.1", b"Content-Length: 1\r\nContent-Length: 2\r\n", body=b"x"), 400),
        ("malformed chunk", req(b"DELETE /v1/accounts/x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", body=b"zz\r\n"), 400),
        ("Transfer-Encoding gzip", req(b"GET /v1/accounts HTTP/1.1", b"Transfer-Encoding: gzip\r\n"), 400),
        # invalid UTF-8 and control bytes
        ("raw 0xFF in path", req(b"GET /v1/accounts/acc_\xff\xfe HTTP/1.1"), 400),
        ("raw 0xFF in query", req(b"GET /v1/accounts?platform=\xff HTTP/1.1"), 400),
        ("%FF in path", req(b"GET /v1/accounts/acc_%ff HTTP/1.1"), 404),
        ("%FF in query", req(b"GET /v1/accounts?platform=%ff HTTP/1.1"), 400),
        ("%FF in cursor", req(b"GET /v1/accounts?cursor=%ff%fe HTTP/1.1"), 400),
        ("UTF-16 surrogate in path", req(b"GET /v1/accounts/%ED%A0%80 HTTP/1.1"), 404),
        ("0xFF in Authorization", get + b"Authorization: Bearer oct_live_\xff\xfe\r\n\r\n", 401),
        ("0xFF in a header", req(b"GET /v1/accounts HTTP/1.1", b"X-Foo: \xff\xfe\r\n"), 200),
        ("NUL in path", req(b"GET /v1/accounts/acc_\x00 HTTP/1.1"), 400),
        ("%00 in path", req(b"GET /v1/accounts/" + acc + b"%00 HTTP/1.1"), 404),
        ("control byte in header", req(b"GET /v1/accounts HTTP/1.1", b"X-A: a\x01b\r\n"), 400),
        ("bare LF line ends", get.replace(b"\r\n", b"\n") + auth.replace(b"\r\n", b"\n") + b"\n", 400),
        ("space in header name", req(b"GET /v1/accounts HTTP/1.1", b"Bad Header: 1\r\n"), 400),
        ("obsolete line folding", req(b"GET /v1/accounts HTTP/1.1", b"X-A: 1\r\n  folded\r\n"), 400),
        ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        ("HTTP/9.9", req(b"GET /v1/accounts HTTP/9.9"), 400),
        ("no Host on HTTP/1.1", b"GET /v1/accounts HTTP/1.1\r\n" + auth + b"\r\n", 400),
        ("unknown Expect", req(b"GET /v1/accounts HTTP/1.1", b"Expect: 999-nope\r\n"), 417),
        # ids with SQL and path tricks
        ("SQL in id", req(b"GET /v1/accounts/" + acc + b"'%20OR%20'1'='1 HTTP/1.1"), 404),
        ("SQL in DELETE id", req(b"DELETE /v1/accounts/x'%3B%20DELETE%20FROM%20accounts%3B-- HTTP/1.1"), 404),
        ("SQL in filter", req(b"GET /v1/accounts?platform=twitter'%20OR%201=1-- HTTP/1.1"), 400),
        ("SQL in limit", req(b"GET /v1/accounts?limit=1%3BSELECT%201 HTTP/1.1"), 400),
        ("dot segments", req(b"GET /v1/accounts/../../etc/passwd HTTP/1.1"), 404),
        ("encoded dot segments", req(b"GET /v1/accounts/..%2f..%2fetc%2fpasswd HTTP/1.1"), 404),
        ("encoded slash to a sub-route", req(b"GET /v1/accounts/" + acc + b"%2Fhealth HTTP/1.1"), 404),
        ("backslashes", req(b"GET /v1/accounts/..\\..\\windows HTTP/1.1"), 404),
        ("double slashes", req(b"GET //v1//accounts HTTP/1.1"), 404),
        ("absolute URI to elsewhere", req(b"GET http://elsewhere.example/v1/accounts/" + acc + b" HTTP/1.1"), 200),
        ("unicode lookalike id", req(b"GET /v1/accounts/%E2%80%AE" + acc + b" HTTP/1.1"), 404),
        ("percent garbage", req(b"GET /v1/accounts/%zz%%% HTTP/1.1"), 404),
        # methods not allowed
        *[
            (f"{m} on the list", req(m.encode() + b" /v1/accounts HTTP/1.1"), 405)
            for m in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "HEAD")
        ],
        *[
            (f"{m} on an account", req(m.encode() + b" /v1/accounts/" + acc + b" HTTP/1.1"), 405)
            for m in ("POST", "PUT", "PATCH", "OPTIONS", "TRACE", "HEAD")
        ],
        ("POST on health", req(b"POST /v1/accounts/" + acc + b"/health HTTP/1.1"), 405),
        ("DELETE on events", req(b"DELETE /v1/accounts/" + acc + b"/events HTTP/1.1"), 405),
        ("made-up method", req(b"FOO /v1/accounts HTTP/1.1"), 400),
        ("lower-case method", req(b"get /v1/accounts HTTP/1.1"), 400),
        ("CONNECT", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: t\r\n\r\n", 404),
    ]  # fmt: skip


async def test_hostile_input_gets_the_right_4xx_never_a_5xx(
    serve: Serve, make_key: Any, import_lines: Any, pool: asyncpg.Pool
) -> None:
    base = await serve()
    port = int(base.rsplit(":", 1)[1])
    key = await make_key("hostile")
    (account_id,) = await import_lines("hostile", [account_line("twitter", "h")])
    cases = hostile_requests(key, account_id)
    wrong = []
    for name, data, expected in cases:
        raw = await asyncio.to_thread(_exchange, port, data)
        status, headers, body = _parse(raw)
        if status != expected:
            wrong.append((name, expected, status, body[:200]))
            continue
        if name in ANSWERED_BY_AIOHTTP:
            assert headers.get("Content-Type", "").startswith("text/plain"), (name, headers)
            assert b"Traceback" not in body and b"<html" not in body.lower(), (name, body)
        elif status >= 400 and not (data.startswith(b"HEAD ")):
            error = assert_error_body(status, headers, body)
            assert error["type"], name
        assert status < 500, name
    assert not wrong, wrong
    # nothing was disconnected by all that
    assert await pool.fetchval("SELECT count(*) FROM accounts WHERE disconnected_at IS NULL") == 1
    FIGURES["hostile requests tried"] += len(cases)


async def test_a_stalled_chunked_body_is_a_408(
    serve: Serve, make_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "BODY_READ_SECONDS", 0.3)
    base = await serve()
    port = int(base.rsplit(":", 1)[1])
    key = await make_key("stall")
    data = (
        b"DELETE /v1/accounts/acc_x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: Bearer {key}\r\n\r\n5\r\nhello\r\n".encode()
    )
    started = time.monotonic()
    status, headers, body = _parse(await asyncio.to_thread(_exchange, port, data))
    assert status == 408 and time.monotonic() - started < 5
    assert assert_error_body(status, headers, body)["type"] == "request_timeout"
