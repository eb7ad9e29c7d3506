"""`octopost dev` as a developer runs it: one process with embedded PostgreSQL and Redis, the
API, the platform sandbox and the worker; a second `octopost` process reaches it through
the data dir's dev.env. Embedded servers make this slow, so it is one test."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from devkit.embedded import free_port
from devkit.stack import INTERNAL_PORT_OFFSET, SANDBOX_PORT_OFFSET, load_dev_env
from service.core.ids import PLATFORMS
from tests.conftest import ROOT, SEED_ACCOUNTS

BANNER_TIMEOUT = 120.0


def port_pair() -> int:
    """A free port whose +1 and +10 neighbours (the internal API's, the sandbox's) are free
    too."""
    for _ in range(50):
        port = free_port()
        try:
            for offset in (INTERNAL_PORT_OFFSET, SANDBOX_PORT_OFFSET):
                with closing(socket.socket()) as s:
                    s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair")


def dev_env(data_dir: Path) -> dict[str, str]:
    """A developer's shell: no server URLs, no keys, nothing but the data dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("OCTOPOST_")
    }
    env.update(
        OCTOPOST_DATA_DIR=str(data_dir),
        OCTOPOST_LOG_LEVEL="INFO",
        # the only sweep is the one this test starts
        OCTOPOST_SWEEP_INTERVAL_MINUTES="0",
    )
    return env


def processes_under(data_dir: Path) -> list[psutil.Process]:
    """Live processes working in or started on data_dir (postgres, redis-server)."""
    top = str(data_dir.resolve())
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
            if top in cmdline or (proc.info["cwd"] or "").startswith(top):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """The dev stack's data dir; whatever still runs on it at the end is killed."""
    data = tmp_path / "var"
    yield data
    for proc in processes_under(data):
        if proc.pid != os.getpid():
            proc.kill()


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_for_banner(proc: asyncio.subprocess.Process, log: Path) -> str:
    deadline = time.monotonic() + BANNER_TIMEOUT
    while "stop: Ctrl-C" not in (text := text_of(log)):
        assert proc.returncode is None, text
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.1)
    return text


async def octopost(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def get_json(http: aiohttp.ClientSession, url: str, key: str) -> Any:
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_dev_runs_api_sandbox_and_worker_and_stops_cleanly(
    data_dir: Path, tmp_path: Path
) -> None:
    port = port_pair()
    env = dev_env(data_dir)
    log = tmp_path / "dev.log"
    with log.open("wb") as log_out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "dev",
            "--port",
            str(port),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
        )
    try:
        banner = await wait_for_banner(proc, log)
        key_match = re.search(r"^(oct_live_\S+)$", banner, re.M)
        sandbox_match = re.search(r"^  sandbox +(http://\S+)", banner, re.M)
        assert key_match and sandbox_match, banner
        key, sandbox = key_match[1], sandbox_match[1]
        assert sandbox == f"http://127.0.0.1:{port + SANDBOX_PORT_OFFSET}"
        assert "python3 dev.py octopost sweep --wait" in banner
        dev_env_file = data_dir / "dev.env"
        assert f"OCTOPOST_SANDBOX_URL={sandbox}" in text_of(dev_env_file)
        assert oct(dev_env_file.stat().st_mode & 0o777) == "0o600"
        api = f"http://localhost:{port}/v1/accounts"

        async with aiohttp.ClientSession() as http:
            # the seed's curl requests, answered with the seed's bodies
            listed = await get_json(http, api, key)
            assert listed["accounts"][:3] == SEED_ACCOUNTS
            assert await get_json(http, f"{api}/acc_abc123", key) == SEED_ACCOUNTS[0]

            # the publisher's loop from the banner: a token, then the report
            service_key = re.search(r"^(oct_svc_\S+)$", banner, re.M)
            assert service_key and f"http://localhost:{port + INTERNAL_PORT_OFFSET}" in banner
            internal = f"http://localhost:{port + INTERNAL_PORT_OFFSET}/internal/v1/accounts"
            svc = {"Authorization": f"Bearer {service_key[1]}"}
            async with http.post(f"{internal}/acc_abc123/credentials", headers=svc) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["access_token"] == "demo-twitter-access"
            async with http.post(
                f"{internal}/acc_abc123/usage",
                headers=svc,
                json={"result": "published", "at": "2026-04-05T09:00:00Z"},
            ) as r:
                assert r.status == 202, await r.text()
            used = await get_json(http, f"{api}/acc_abc123", key)
            assert used["last_used_at"] == "2026-04-05T09:00:00Z"
            async with http.post(
                f"http://localhost:{port}/internal/v1/accounts/acc_abc123/credentials", headers=svc
            ) as r:
                assert r.status == 404

            # a second shell: `octopost sweep --wait` finds the servers through dev.env
            rc, out, err = await octopost(env, "sweep", "--wait", "--timeout", "60")
            assert rc == 0, err
            assert "using the running `octopost dev`" in err
            assert re.search(
                r"^sweep \d+ done: checked=9 healthy=8 deactivated=1 refreshed=0 "
                r"transient=0 unknown=0 skipped=0$",
                out,
                re.M,
            ), out
            # every demo token was checked at the sandbox; the seed's inactive account's
            # token is revoked there, so the sweep agrees with the seed
            async with http.get(f"{sandbox}/sandbox/calls") as r:
                calls = (await r.json())["calls"]
            assert {c["platform"] for c in calls} == set(PLATFORMS)
            listed = await get_json(http, api, key)
            assert listed["accounts"][:3] == [
                {**SEED_ACCOUNTS[0], "last_used_at": "2026-04-05T09:00:00Z"},
                *SEED_ACCOUNTS[1:],
            ]

            async with http.delete(
                f"{api}/acc_ghi789", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status == 204, await r.text()
            async with http.delete(
                f"{api}/acc_ghi789", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status == 404
            # ... and the worker inside `octopost dev` took the revocation to the sandbox
            deadline = time.monotonic() + 20
            while True:
                async with http.get(f"{sandbox}/sandbox/calls?platform=linkedin") as r:
                    paths = [c["path"] for c in (await r.json())["calls"]]
                if any("revoke" in p for p in paths):
                    break
                assert time.monotonic() < deadline, (paths, text_of(log)[-3000:])
                await asyncio.sleep(0.2)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    text = text_of(log)
    assert proc.returncode == 0, text[-3000:]
    assert "octopost dev: stopping" in text
    assert "Traceback" not in text, text[-3000:]
    assert not (data_dir / "dev.env").exists()
    assert processes_under(data_dir) == []


def test_dev_env_fills_only_unset_variables_of_a_live_stack(tmp_path: Path) -> None:
    live = "\n".join(
        [
            "# comment",
            f"OCTOPOST_DEV_PID={os.getpid()}",
            "DATABASE_URL=postgresql://postgres@127.0.0.1:5999/octopost",
            "REDIS_URL=redis://127.0.0.1:6999/0",
            "OCTOPOST_SANDBOX_URL=http://127.0.0.1:8090",
        ]
    )
    (tmp_path / "dev.env").write_text(live + "\n")
    env = {"OCTOPOST_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://elsewhere:6379/1"}
    assert load_dev_env(env) == ["DATABASE_URL", "OCTOPOST_SANDBOX_URL"]
    assert env == {
        "OCTOPOST_DATA_DIR": str(tmp_path),
        "REDIS_URL": "redis://elsewhere:6379/1",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/octopost",
        "OCTOPOST_SANDBOX_URL": "http://127.0.0.1:8090",
    }
    # not outside development
    for other in ("test", "production"):
        env = {"OCTOPOST_DATA_DIR": str(tmp_path), "OCTOPOST_ENV": other}
        assert load_dev_env(env) == [] and "DATABASE_URL" not in env
    # not from a stack that is gone (its pid no longer runs)
    gone = psutil.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "dev.env").write_text(live.replace(str(os.getpid()), str(gone.pid)) + "\n")
    env = {"OCTOPOST_DATA_DIR": str(tmp_path)}
    assert load_dev_env(env) == [] and env == {"OCTOPOST_DATA_DIR": str(tmp_path)}
    # nothing to read
    assert load_dev_env({"OCTOPOST_DATA_DIR": str(tmp_path / "none")}) == []


async def start_dev(env: dict[str, str], log: Path, *args: str) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "dev",
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


async def stop_dev(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def banner_key(banner: str) -> str:
    match = re.search(r"^(oct_live_\S+)$", banner, re.M)
    assert match, banner
    return match[1]


async def test_a_second_start_never_harms_the_first_and_state_is_kept_or_reset(
    data_dir: Path, tmp_path: Path
) -> None:
    """A second `octopost dev` on the same data dir refuses at once, naming the first (on
    its port or another), and the first keeps serving; a port clash names the service that
    wanted the port. Across restarts the demo workspace keeps its one key; --reset starts
    again from the demo data. /metrics carries the worker's metrics; the worker's stop names
    the signal that stopped it."""
    port = port_pair()
    env = dev_env(data_dir)
    data_path = str(data_dir.resolve())  # noqa: ASYNC240 - before anything runs
    first = await start_dev(env, tmp_path / "first.log", "--port", str(port))
    try:
        key = banner_key(await wait_for_banner(first, tmp_path / "first.log"))
        env_file_before = text_of(data_dir / "dev.env")
        api = f"http://localhost:{port}/v1/accounts"
        for args in (("--port", str(port)), ("--port", str(port_pair())), ("--reset",)):
            rc, out, err = await octopost(env, "dev", *args)
            assert rc == 1, (args, out, err)
            assert "Traceback" not in err
            assert err.strip().splitlines()[-1] == (
                f"octopost: another `octopost dev` (pid {first.pid}, API on 127.0.0.1:{port}, "
                f"sandbox on 127.0.0.1:{port + SANDBOX_PORT_OFFSET}) already runs on the data "
                f"dir {data_path}; use that one, or stop it first (Ctrl-C in its "
                "shell). A second stack needs a data dir of its own: "
                "OCTOPOST_DATA_DIR=.var2 python3 dev.py --port 8180"
            ), err
        # another data dir, the same port: the clash names who wanted which port
        other = dev_env(tmp_path / "other")
        rc, _, err = await octopost(other, "dev", "--port", str(port))
        assert rc == 1 and "Traceback" not in err
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith(
                f"octopost: the API wants 127.0.0.1:{port}, but another program listens there; "
                "pick other ports: `python3 dev.py --port P`"
            )
        ), err
        free = port_pair()
        rc, _, err = await octopost(
            other, "dev", "--port", str(free), "--sandbox-port", str(port + SANDBOX_PORT_OFFSET)
        )
        assert rc == 1 and err.strip().splitlines()[-1].startswith(
            f"octopost: the platform sandbox wants 127.0.0.1:{port + SANDBOX_PORT_OFFSET}, "
        ), err
        assert processes_under(tmp_path / "other") == []  # refused before starting anything

        # the first is untouched: serving, its dev.env its own
        assert first.returncode is None
        assert text_of(data_dir / "dev.env") == env_file_before
        async with aiohttp.ClientSession() as http:
            assert len((await get_json(http, api, key))["accounts"]) == 9
            async with http.get(f"http://localhost:{port}/metrics") as r:
                metrics = await r.text()
            assert "octopost_http_requests_total" in metrics
            assert "# TYPE octopost_checks_total counter" in metrics  # the worker's
            async with http.delete(
                f"{api}/acc_ghi789", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status == 204
    finally:
        await stop_dev(first, signal.SIGINT)
    text = text_of(tmp_path / "first.log")
    assert first.returncode == 0, text[-3000:]
    assert "shutdown on SIGINT" in text and "SIGUSR1" not in text, text[-3000:]

    # again: the same key, still the workspace's only one; the deletion persisted
    second = await start_dev(env, tmp_path / "second.log", "--port", str(port))
    try:
        assert banner_key(await wait_for_banner(second, tmp_path / "second.log")) == key
        rc, out, err = await octopost(env, "keys", "list")
        assert rc == 0, err
        demo_rows = [line for line in out.splitlines()[1:] if " demo " in line]
        assert len(demo_rows) == 1 and demo_rows[0].endswith("active"), out
        async with aiohttp.ClientSession() as http:
            ids_ = [a["id"] for a in (await get_json(http, api, key))["accounts"]]
            assert "acc_ghi789" not in ids_
    finally:
        await stop_dev(second, signal.SIGTERM)
    assert second.returncode == 0
    assert "shutdown on SIGTERM" in text_of(tmp_path / "second.log")

    # --reset: the demo data again, and a new key
    third = await start_dev(env, tmp_path / "third.log", "--port", str(port), "--reset")
    try:
        banner = await wait_for_banner(third, tmp_path / "third.log")
        assert "octopost dev: reset: removed " in banner
        new_key = banner_key(banner)
        assert new_key != key
        async with aiohttp.ClientSession() as http:
            listed = await get_json(http, api, new_key)
            assert listed["accounts"][:3] == SEED_ACCOUNTS
    finally:
        await stop_dev(third, signal.SIGINT)
    assert third.returncode == 0


async def test_dev_outlives_restarts_of_its_embedded_redis_and_postgres(
    data_dir: Path, tmp_path: Path
) -> None:
    """`octopost dev` runs the worker in its own process: when its embedded Redis, then its
    embedded PostgreSQL, are stopped and started again (on their ports, by this test), the
    same process reports each outage once, serves again, and sweeps and revokes after."""
    from devkit.embedded import EmbeddedPostgres, EmbeddedRedis

    port = port_pair()
    env = dev_env(data_dir)
    log = tmp_path / "dev.log"
    with log.open("wb") as log_out:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "service.cli", "dev", "--port", str(port)),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
        )
    base = f"http://127.0.0.1:{port}"

    async def until_logged(text: str) -> None:
        deadline = time.monotonic() + 60
        while text not in text_of(log):
            assert proc.returncode is None, text_of(log)[-3000:]
            assert time.monotonic() < deadline, (text, text_of(log)[-3000:])
            await asyncio.sleep(0.05)

    try:
        banner = await wait_for_banner(proc, log)
        key_match = re.search(r"^(oct_live_\S+)$", banner, re.M)
        assert key_match, banner
        key = key_match[1]
        async with aiohttp.ClientSession() as http:

            async def ready() -> None:
                deadline = time.monotonic() + 60
                while True:
                    async with http.get(f"{base}/readyz") as r:
                        if r.status == 200:
                            break
                    assert time.monotonic() < deadline, text_of(log)[-3000:]
                    await asyncio.sleep(0.05)
                assert (await get_json(http, f"{base}/v1/accounts", key))["accounts"]

            servers = (
                ("Redis", EmbeddedRedis(data_dir / "redis")),
                ("PostgreSQL", EmbeddedPostgres(data_dir / "pg")),
            )
            for name, server in servers:
                await asyncio.to_thread(server.start)  # adopts the running one: its port
                await asyncio.to_thread(server.stop)
                await until_logged(f"{name} unreachable")
                async with http.get(f"{base}/readyz") as r:
                    assert r.status == 503
                await asyncio.to_thread(server.start)
                await until_logged(f"{name} is back")
                await ready()
            rc, out, err = await octopost(env, "sweep", "--wait", "--timeout", "60")
            assert rc == 0 and re.search(r"^sweep \d+ done: checked=9 ", out, re.M), (out, err)
            async with http.delete(
                f"{base}/v1/accounts/acc_ghi789", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status == 204, await r.text()
            sandbox = f"http://127.0.0.1:{port + SANDBOX_PORT_OFFSET}"
            deadline = time.monotonic() + 60
            while True:
                async with http.get(f"{sandbox}/sandbox/calls?platform=linkedin") as r:
                    paths = [c["path"] for c in (await r.json())["calls"]]
                if any("revoke" in p for p in paths):
                    break
                assert time.monotonic() < deadline, (paths, text_of(log)[-3000:])
                await asyncio.sleep(0.05)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    text = text_of(log)
    assert proc.returncode == 0, text[-3000:]
    for name in ("Redis", "PostgreSQL"):
        assert text.count(f"{name} unreachable") == 1, text[-4000:]
        assert text.count(f"{name} is back") == 1, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
