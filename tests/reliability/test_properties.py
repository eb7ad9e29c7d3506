"""Hypothesis over the two parsers that take raw client input: the import file and the
pagination cursor. Whatever comes in, the answer is a clear error (a line number, a 400)
or a faithful result, never a crash; and what the import parser accepts, PostgreSQL stores
exactly as given."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from service.api import cursor
from service.api.errors import BadRequest
from service.core import ids
from service.core.importer import ImportRejected, import_accounts, parse_lines
from service.core.repository import workspaces
from service.core.settings import Settings
from service.core.vault import Sealed, Vault
from tests.reliability.conftest import run_sync

PROPERTY = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
STORED = settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip

FIELDS = (
    "id", "platform", "platform_user_id", "username", "display_name", "avatar_url",
    "is_active", "connected_at", "last_used_at", "access_token", "refresh_token",
    "token_expires_at", "refresh_token_expires_at", "scopes", "instance_url",
)  # fmt: skip

# JSON-encodable text (orjson refuses lone surrogates), NUL included: it is valid JSON.
json_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_text, inner, max_size=3),
    max_leaves=8,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-02-30"]),
    json_text,
)


@st.composite
def near_valid_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-right import lines: known fields with plausible or hostile values."""
    obj: dict[str, Any] = {
        "platform": draw(st.sampled_from([*ids.PLATFORMS, "myspace", ""])),
        "platform_user_id": draw(json_text),
        "username": draw(json_text),
        "display_name": draw(json_text),
        "access_token": draw(json_text),
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6)):
        if name.endswith("_at"):
            obj[name] = draw(timestamps)
        elif name == "scopes":
            obj[name] = draw(json_text | st.lists(json_text, max_size=4))
        else:
            obj[name] = draw(json_values)
    if draw(st.booleans()):
        obj[draw(json_text)] = draw(json_values)
    return obj


raw_lines = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    near_valid_objects().map(lambda o: orjson.dumps(o).decode()),
    near_valid_objects().map(lambda o: orjson.dumps(o)),
)


@given(lines=st.lists(raw_lines, max_size=6))
@PROPERTY
@example(lines=[b'{"platform": "twitter"}\xff'])
@example(lines=['{"platform":"twitter","platform_user_id":"1","username":"u","display_name":"U",'
                '"access_token":"t","connected_at":"0001-01-01T00:00:00+14:00"}'])  # fmt: skip
def test_import_parser_answers_with_a_line_number_or_a_result(lines: list[Any]) -> None:
    try:
        parsed = parse_lines(lines)
    except ImportRejected as exc:
        assert 1 <= exc.line <= len(lines), exc
        assert str(exc).startswith(f"line {exc.line}: ")
        return
    numbers = [p.number for p in parsed]
    assert numbers == sorted(set(numbers)) and all(1 <= n <= len(lines) for n in numbers)
    identities = [(p.data.platform, p.data.platform_user_id) for p in parsed]
    assert len(set(identities)) == len(identities)


# ------------------------------------------------------------------ valid lines

clean_text = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\x00"),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() == s and s != "")
scope = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
# ISO 8601 offsets are whole minutes; zoneinfo's local mean times (+00:53:28) are not.
offsets = st.integers(-14 * 60 + 1, 14 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
aware = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)


# tokens are printable ASCII without spaces (the importer refuses anything else)
token_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@st.composite
def valid_line(draw: st.DrawFn, n: int) -> dict[str, Any]:
    platform = draw(st.sampled_from(ids.PLATFORMS))
    line: dict[str, Any] = {
        "platform": platform,
        "platform_user_id": f"{n}-{draw(clean_text)}",
        "username": draw(clean_text),
        "display_name": draw(st.just("") | clean_text),
        "access_token": draw(token_text),
    }
    if platform == "mastodon":
        line["instance_url"] = (
            f"https://{draw(st.from_regex(r'[a-z]{1,10}', fullmatch=True))}.social"
        )
    optional: dict[str, Any] = {
        "refresh_token": token_text,
        "avatar_url": st.from_regex(
            r"https://[a-z]{1,10}\.example/[a-z0-9/]{0,20}", fullmatch=True
        ),
        "is_active": st.booleans(),
        "connected_at": aware,
        "last_used_at": aware,
        "token_expires_at": aware,
        "refresh_token_expires_at": aware,
        "scopes": st.lists(scope, max_size=5),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            value = draw(strategy)
            line[name] = value.isoformat() if isinstance(value, datetime) else value
    return line


@st.composite
def valid_files(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 5))
    return [draw(valid_line(n)) for n in range(count)]


@given(lines=valid_files() | st.lists(near_valid_objects(), min_size=1, max_size=4))
@STORED
@example(lines=[{"platform": "youtube", "platform_user_id": "u", "username": "a\x00b",
                 "display_name": "", "access_token": "t"}])  # fmt: skip
@example(lines=[{"platform": "youtube", "platform_user_id": "u", "username": "n",
                 "display_name": "", "access_token": "t", "scopes": ["read write"]}])  # fmt: skip
def test_what_the_parser_accepts_is_stored_exactly(
    lines: list[dict[str, Any]], settings: Settings, vault: Vault, pool: asyncpg.Pool
) -> None:
    try:
        parsed = parse_lines(orjson.dumps(line) for line in lines)
    except ImportRejected:
        assume(False)
    assert [p.number for p in parsed] == list(range(1, len(lines) + 1))

    async def store_and_read() -> list[tuple[asyncpg.Record, asyncpg.Record]]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                workspace_id = await workspaces.ensure_workspace(conn, "props")
                account_ids = await import_accounts(conn, vault, workspace_id, parsed)
                return [
                    (
                        await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", i),
                        await conn.fetchrow(
                            "SELECT * FROM account_tokens WHERE account_id = $1", i
                        ),
                    )
                    for i in account_ids
                ]
            finally:
                await tx.rollback()
        finally:
            await conn.close()

    stored = run_sync(store_and_read)
    for p, (account, tokens) in zip(parsed, stored, strict=True):
        d = p.data
        for name in ("platform", "platform_user_id", "username", "display_name", "avatar_url"):
            assert account[name] == getattr(d, name), name
        assert account["is_active"] is d.is_active
        assert d.connected_at is None or account["connected_at"] == d.connected_at
        assert account["last_used_at"] == d.last_used_at
        assert tokens["access_expires_at"] == d.token_expires_at
        assert tokens["refresh_expires_at"] == d.refresh_token_expires_at
        assert tokens["scopes"] == d.scopes
        access, refresh = vault.open_tokens(
            account["id"], Sealed(tokens["key_id"], tokens["sealed"])
        )
        assert (access, refresh) == (d.access_token, d.refresh_token)


@given(lines=valid_files())
@PROPERTY
def test_valid_lines_parse_to_what_was_written(lines: list[dict[str, Any]]) -> None:
    parsed = parse_lines(orjson.dumps(line) for line in lines)
    for line, p in zip(lines, parsed, strict=True):
        got = p.data.model_dump()
        for name, value in line.items():
            if name.endswith("_at"):
                assert got[name] == datetime.fromisoformat(value), name
            elif name == "instance_url":
                assert got[name] == value.rstrip("/")
            else:
                assert got[name] == value, name


@given(lines=valid_files(), bad=raw_lines, where=st.integers(0, 5))
@PROPERTY
def test_one_bad_line_anywhere_rejects_the_file_at_that_line(
    lines: list[dict[str, Any]], bad: Any, where: int
) -> None:
    text = bad.decode("utf-8", "replace") if isinstance(bad, bytes) else bad
    assume(text.strip())
    try:
        parse_lines([bad])
    except ImportRejected:
        pass
    else:
        assume(False)  # the generated "bad" line happened to be a fine one
    position = min(where, len(lines))
    file = [orjson.dumps(line).decode() for line in lines]
    file.insert(position, bad)
    with pytest.raises(ImportRejected) as info:
        parse_lines(file)
    assert info.value.line == position + 1


# ---------------------------------------------------------------------- cursors

account_ids = st.from_regex(ids.ID_RE, fullmatch=True)


@given(at=st.datetimes(timezones=st.timezones()), account_id=account_ids)
@PROPERTY
def test_account_cursor_round_trips(at: datetime, account_id: str) -> None:
    try:
        encoded = cursor.encode_account(at, account_id)
    except OverflowError:
        assume(False)  # such an instant cannot be an account's connected_at either
    assert cursor.decode_account(encoded) == (at, account_id)
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@given(event_id=st.integers(0, 2**63 - 1))
@PROPERTY
def test_event_cursor_round_trips(event_id: int) -> None:
    assert cursor.decode("evt", cursor.encode("evt", str(event_id)), 1) == [str(event_id)]


@given(value=st.text(max_size=700) | st.binary(max_size=400).map(
    lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
))  # fmt: skip
@PROPERTY
def test_garbage_cursors_are_bad_requests(value: str) -> None:
    for decode in (cursor.decode_account, lambda c: cursor.decode("evt", c, 1)):
        try:
            decode(value)
        except BadRequest as exc:
            assert exc.status == 400 and exc.message == "cursor is not valid"
        else:  # pragma: no cover - a 12-byte signature cannot be guessed
            raise AssertionError(f"{value!r} decoded")


@given(
    at=st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)),
    account_id=account_ids,
    position=st.integers(0, 10_000),
    replacement=st.characters(codec="ascii"),
)
@PROPERTY
def test_a_tampered_cursor_is_refused_or_means_the_same(
    at: datetime, account_id: str, position: int, replacement: str
) -> None:
    genuine = cursor.encode_account(at, account_id)
    i = position % len(genuine)
    tampered = genuine[:i] + replacement + genuine[i + 1 :]
    try:
        decoded = cursor.decode_account(tampered)
    except BadRequest:
        return
    # The last base64 character carries spare bits, so a few edits decode to the same bytes.
    assert decoded == (at, account_id)


@given(parts=st.lists(st.text(max_size=40), max_size=4), kind=st.sampled_from(["acc", "evt", "x"]))
@PROPERTY
@example(parts=["2026-01-01T00:00:00+00:00", "acc_\x00"], kind="acc")
@example(parts=["2026-01-01T00:00:00", "acc_1"], kind="acc")
@example(parts=["\u00b2"], kind="evt")
@example(parts=["9" * 19], kind="evt")
def test_signed_but_forged_cursors_only_yield_safe_values(parts: list[str], kind: str) -> None:
    """The signing key is in the source; what a forged cursor decodes to must still be a
    position the database can be asked about."""
    forged = cursor.encode(kind, *parts)
    try:
        at, account_id = cursor.decode_account(forged)
    except BadRequest:
        pass
    else:
        assert at.tzinfo is not None and ids.is_plausible_id(account_id)
    try:
        (event_id,) = cursor.decode("evt", forged, 1)
    except BadRequest:
        pass
    else:
        assert event_id.isascii() and event_id.isdigit() and 0 <= int(event_id) < 2**63
