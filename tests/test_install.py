"""The project installed the way its image installs it, and run from another folder.

The Dockerfile's build stage copies a few files and builds a wheel from them; the image
installs that wheel and nothing else. Here the same files (read from the Dockerfile's COPY
lines) are copied to a temporary folder outside the source tree, built into a wheel, and
installed with its dependencies into a fresh virtualenv (pip's cache makes that quick).
Every command then runs from yet another folder with a bare environment, against an empty
database of its own on the suite's PostgreSQL and the suite's Redis: nothing of ours is
importable from the checkout, so a file the package fails to carry fails here.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from yarl import URL

from devkit.embedded import free_port
from devkit.sandbox.app import create_sandbox_app
from tests.conftest import ROOT, SEED_ACCOUNTS, TABLES, with_tokens

# What the image must not carry: the dev tooling (embedded servers, the demo stack, the
# platform sandbox) and anything else of the source checkout.
DEV_TOOLING = ("devkit/",)
NOT_SHIPPED = (*DEV_TOOLING, "tests/", "bench/", "sql/")
COMMAND_TIMEOUT = 60.0


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def copy_build_context(dest: Path) -> None:
    """Copy what the build stage COPYs from the context, to where it puts it."""
    build = dockerfile_stages()[0]
    workdir = Path("/")
    for instruction in build:
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() == "WORKDIR":
            workdir = workdir / rest.strip()
        if keyword.upper() != "COPY":
            continue
        *sources, target = rest.split()
        assert not any(s.startswith("--") for s in sources), instruction
        for source in sources:
            where = workdir / target
            if target.endswith("/") or len(sources) > 1:
                where = where / Path(source).name
            local = dest / where.relative_to(workdir)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, local, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, local)


def pip(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pip_done(proc: subprocess.Popen[str]) -> None:
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"pip {proc.args!r}:\n{out}"


@dataclass
class Install:
    venv: Path
    site_packages: Path
    files: list[str]  # every path the package installed, relative to site-packages

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("install")
    context, wheels, venv = base / "context", base / "wheels", base / "venv"
    copy_build_context(context)
    build = pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies meanwhile (they take longest); installing the wheel afterwards then
    # checks its own requirements against them and adds whatever they lack.
    dependencies = tomllib.loads((context / "pyproject.toml").read_text())["project"]
    pip_done(pip("--python", str(python), "install", *dependencies["dependencies"]))
    pip_done(build)
    (wheel,) = wheels.glob("*.whl")
    pip_done(pip("--python", str(python), "install", str(wheel)))
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (record,) = site_packages.glob("octopost_accounts-*.dist-info/RECORD")
    files = [line.split(",", 1)[0] for line in record.read_text().splitlines() if line]
    return Install(venv, site_packages, files)


def test_the_package_carries_the_migrations_and_no_dev_tooling(installed: Install) -> None:
    files = set(installed.files)
    migrations = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert migrations, "no migrations in sql/"
    for name in migrations:
        assert f"service/migrations/{name}" in files
        assert (installed.site_packages / "service" / "migrations" / name).read_bytes() == (
            ROOT / "sql" / name
        ).read_bytes()
    shipped_dev = sorted(f for f in files if f.startswith(NOT_SHIPPED))
    assert shipped_dev == []
    # and every production module is there (a package left out of setup.py would not be)
    for package in ("service", "worker"):
        for module in (ROOT / package).rglob("*.py"):
            relative = module.relative_to(ROOT).as_posix()
            if not relative.startswith(DEV_TOOLING):
                assert relative in files


def test_the_image_carries_only_the_installed_package() -> None:
    """No COPY into the image besides the built wheel (a copied sql/ would hide a package
    without migrations again), and the image runs as a user other than root."""
    image = dockerfile_stages()[-1]
    copies = [i for i in image if i.upper().startswith(("COPY ", "ADD "))]
    assert copies and all("--from=" in c for c in copies), copies
    users = [i.split()[1] for i in image if i.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    # .dockerignore admits only named paths: each one the build stage copies is among them
    admitted = (ROOT / ".dockerignore").read_text().splitlines()
    for instruction in dockerfile_stages()[0]:
        if instruction.upper().startswith("COPY "):
            for source in instruction.split()[1:-1]:
                assert f"!{source}" in admitted, source


@dataclass
class Run:
    install: Install
    cwd: Path
    env: dict[str, str]

    async def __call__(
        self, *args: str, stdin: str | None = None, **env: str
    ) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(self.install.bin / "octopost"),
            *args,
            cwd=self.cwd,
            env={**self.env, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin else None), COMMAND_TIMEOUT
            )
        finally:
            if proc.returncode is None:  # timed out: never leave it running
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *args: str, stdin: str | None = None) -> str:
        code, out, err = await self(*args, stdin=stdin)
        assert code == 0, f"octopost {' '.join(args)} exited {code}:\n{out}\n{err}"
        return out


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    name = f"octopost_install_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield str(URL(database_url).with_path(f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def sandbox_url() -> AsyncIterator[str]:
    """The platforms, for the installed worker: the sandbox served from this process."""
    runner = web.AppRunner(create_sandbox_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    yield folder


@pytest.fixture
def run(
    installed: Install,
    elsewhere: Path,
    empty_database: str,
    redis_url: str,
    token_keys: str,
    sandbox_url: str,
) -> Run:
    """`octopost` as the image runs it: production, configured only by its environment."""
    env = {
        "PATH": f"{installed.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(elsewhere),
        "LANG": "C.UTF-8",
        "DATABASE_URL": empty_database,
        "REDIS_URL": redis_url,
        "OCTOPOST_ENV": "production",
        "OCTOPOST_TOKEN_KEYS": token_keys,
        "OCTOPOST_SANDBOX_URL": sandbox_url,
        # every sweep here is one the test started
        "OCTOPOST_SWEEP_INTERVAL_MINUTES": "0",
    }
    return Run(installed, elsewhere, env)


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + COMMAND_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.returncode is None, f"octopost api exited:\n{text_of(log)}"
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"{url} not ready:\n{text_of(log)}"
            await asyncio.sleep(0.1)


async def test_a_plain_install_migrates_serves_and_checks_from_any_folder(
    run: Run, empty_database: str, redis: ArqRedis, sandbox_url: str
) -> None:
    await redis.flushdb()
    migrations = sorted(p.stem for p in (ROOT / "sql").glob("*.sql"))
    out = await run.ok("migrate")
    assert out.splitlines() == [f"applied {m}" for m in migrations]
    assert (await run.ok("migrate")).splitlines() == ["database is up to date"]
    conn = await asyncpg.connect(empty_database)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables >= {*TABLES, "schema_migrations"}

        key = (await run.ok("keys", "create", "--workspace", "acme")).splitlines()[-1]
        lines = "".join(orjson.dumps(with_tokens(a)).decode() + "\n" for a in SEED_ACCOUNTS)
        (run.cwd / "accounts.jsonl").write_text(lines)
        out = await run.ok("accounts", "import", "--workspace", "acme", "accounts.jsonl")
        assert out.splitlines() == [a["id"] for a in SEED_ACCOUNTS]

        port = free_port()
        log = run.cwd.parent / "api.log"
        with log.open("wb") as out_file:
            api = await asyncio.create_subprocess_exec(
                str(run.install.bin / "octopost"),
                *("api", "--host", "127.0.0.1", "--port", str(port)),
                cwd=run.cwd,
                env=run.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_file,
                stderr=out_file,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(f"{base}/readyz", api, log)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{base}/v1/accounts", headers={"Authorization": f"Bearer {key}"}) as r,
            ):
                assert r.status == 200, await r.text()
                assert await r.json() == {"accounts": SEED_ACCOUNTS}
        finally:
            if api.returncode is None:
                api.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(api.wait(), COMMAND_TIMEOUT)
            finally:
                if api.returncode is None:
                    api.kill()
                    await api.wait()
        assert api.returncode == 0, text_of(log)

        # the worker: a sweep queued by the CLI, checked at the sandbox by a burst worker
        out = await run.ok("sweep")
        sweep_id = int(out.split()[1])
        await run.ok("worker", "--burst")
        sweep = await conn.fetchrow("SELECT * FROM sweeps WHERE id = $1", sweep_id)
        ids = [a["id"] for a in SEED_ACCOUNTS]
        assert (sweep["status"], sweep["checked"], sweep["healthy"]) == ("done", 3, 3), sweep
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{sandbox_url}/sandbox/calls") as r,
        ):
            calls = (await r.json())["calls"]
        assert len(calls) == len(ids), calls
        checked = await conn.fetch(
            "SELECT id FROM accounts WHERE last_checked_at IS NOT NULL ORDER BY id"
        )
        assert [r["id"] for r in checked] == sorted(ids)
    finally:
        await conn.close()
        await redis.flushdb()


@pytest.mark.parametrize(
    ("command", "env"),
    [("dev", "production"), ("sandbox", "production"), ("sandbox", "development")],
)
async def test_dev_tooling_is_not_installed_and_says_so(run: Run, command: str, env: str) -> None:
    code, out, err = await run(command, OCTOPOST_ENV=env)
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1 and "dev tooling" in err, err


async def test_migrate_without_migration_files_is_an_error(
    installed: Install, tmp_path: Path, run: Run, empty_database: str
) -> None:
    """The installed package, copied without its migrations and put first on the path:
    exit 1, one line naming where it looked, and the database untouched."""
    broken = tmp_path / "broken"
    shutil.copytree(installed.site_packages / "service", broken / "service")
    migrations = broken / "service" / "migrations"

    def migrate() -> str:
        proc = subprocess.run(
            [str(installed.bin / "python"), "-m", "service.cli", "migrate"],
            cwd=run.cwd,
            env={**run.env, "PYTHONPATH": str(broken)},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        return proc.stderr

    for sql in migrations.glob("*.sql"):
        sql.unlink()
    assert f"no migration files (*.sql) in {migrations};" in migrate()
    shutil.rmtree(migrations)
    assert "the package service.migrations is not installed" in migrate()
    conn = await asyncpg.connect(empty_database)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or the standalone `docker-compose`: either checks a
    compose file offline, without a Docker engine."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


@pytest.mark.skipif(compose_command() is None, reason="neither docker compose nor docker-compose")
def test_the_compose_file_is_valid_and_wants_the_token_keys(tmp_path: Path) -> None:
    command = compose_command()
    assert command is not None
    no_env_file = tmp_path / "empty.env"
    no_env_file.write_text("")

    def config(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "--env-file", str(no_env_file), "-f", "docker-compose.yml", "config", "-q"],
            cwd=ROOT,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    r = config(OCTOPOST_TOKEN_KEYS="k1:key")
    assert r.returncode == 0, r.stdout + r.stderr
    r = config()
    assert r.returncode != 0 and "OCTOPOST_TOKEN_KEYS" in r.stdout + r.stderr
