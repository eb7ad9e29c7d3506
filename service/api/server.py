"""Running the app: one process in this one, or N supervised by gunicorn.

Only aiohttp's public API: the runner takes the parser limits as keyword arguments, and
aiohttp's own gunicorn worker (``GunicornUVLoopWebWorker``) runs it in each child. What
aiohttp answers before any middleware runs (a request it cannot parse, an oversized line,
an unknown ``Expect``) is its own plain-text answer with the right status: no public API
lets the app write those bodies.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http import HttpProcessingError

log = logging.getLogger("octopost.server")


# Room for a 10 KB id in the request line, so it is judged (404) rather than cut off; 8 KiB
# for one header line, as common proxies allow.
MAX_REQUEST_LINE = 16 * 1024
MAX_HEADER_LINE = 8 * 1024
# Where prometheus_client keeps each child's metrics when there are several (its
# multiprocess mode): set before prometheus_client is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The runner's ``logger``: aiohttp logs every request it cannot parse with a traceback
    at ERROR. That is a client's mistake: one INFO line (without the request's bytes).
    Anything else keeps its traceback."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            # the type only: the message quotes the request, which may carry a credential
            self.info(f"{msg}: %s %s", *args, exc.code, type(exc).__name__)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's runner with the service's parser limits and protocol log."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        kwargs.setdefault("max_field_size", MAX_HEADER_LINE)
        kwargs.setdefault("logger", ProtocolLog(logging.getLogger("aiohttp.server")))
        super().__init__(app, **kwargs)


async def _freeze_heap(_: web.Application) -> None:
    # Everything built so far (modules, models, the app, the pool) lives as long as the
    # process. Frozen, the cyclic collector no longer walks it, and full collections under
    # load stop being the p99 (BENCHMARKS.md).
    gc.collect()
    gc.freeze()


@dataclass(frozen=True, slots=True)
class SecondListener:
    """Another app served by the same process on its own address (the internal API). Its
    factory gets the main app, whose resources (pool, Redis) it borrows: it is set up after
    the main app and cleaned up before it."""

    host: str
    port: int
    factory: Callable[[web.Application], web.Application]


def _with_second(
    app: web.Application, second: SecondListener | None, shutdown_timeout: float, reuse_port: bool
) -> web.Application:
    """Serve ``second`` beside ``app`` in this process: set up after the main app's own
    resources (its cleanup contexts run first) and cleaned up before them."""
    if second is None:
        return app

    async def second_site(main: web.Application) -> AsyncIterator[None]:
        runner = AppRunner(
            second.factory(main),
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            handle_signals=False,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, second.host, second.port, reuse_port=reuse_port, backlog=1024
            )
            await site.start()
            log.info("serving on http://%s:%s pid=%s", second.host, second.port, os.getpid())
            yield
        finally:
            await runner.cleanup()

    app.cleanup_ctx.append(second_site)
    return app


async def serve(
    app_factory: Callable[[], web.Application],
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    shutdown_timeout: float = 30.0,
    second: SecondListener | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting and drain in-flight requests."""
    app = _with_second(app_factory(), second, shutdown_timeout, reuse_port)
    app.on_startup.append(_freeze_heap)
    runner = AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, handle_signals=False
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=1024)
        await site.start()
        log.info("serving on http://%s:%s pid=%s", host, port, os.getpid())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        log.info("shutting down pid=%s", os.getpid())
        await runner.cleanup()


def run(coro_factory: Callable[[], Any]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro_factory())
    else:
        if sys.version_info >= (3, 12):  # pragma: no cover
            uvloop.run(coro_factory())
        else:
            uvloop.install()
            asyncio.run(coro_factory())


def serve_processes(
    app_factory: Callable[[], web.Application],
    host: str,
    port: int,
    processes: int,
    *,
    shutdown_timeout: float = 30.0,
    second: SecondListener | None = None,
) -> None:
    """Serve with N processes: gunicorn's arbiter forks them, shares the listening socket,
    replaces a child that dies, and on SIGTERM lets each drain its requests. Each process also
    serves the second listener, if any (its own socket, SO_REUSEPORT)."""
    if processes <= 1:
        run(
            lambda: serve(app_factory, host, port, shutdown_timeout=shutdown_timeout, second=second)
        )
        return
    from gunicorn.app.base import BaseApplication

    if not os.path.isdir(os.environ.get(MULTIPROC_ENV, "")):
        if "prometheus_client" in sys.modules:
            log.warning("%s was not set before prometheus_client was imported: /metrics"
                        " will describe whichever process answers", MULTIPROC_ENV)  # fmt: skip
        os.environ[MULTIPROC_ENV] = multiprocess_metrics_dir()

    async def runner() -> web.AppRunner:
        # every child serves the second listener too, on a socket of its own (SO_REUSEPORT)
        app = _with_second(app_factory(), second, shutdown_timeout, True)
        app.on_startup.append(_freeze_heap)
        return AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

    def child_started(worker: Any) -> None:
        log.info("serving on http://%s:%s pid=%s", host, port, worker.pid)

    options = {
        "bind": f"{host}:{port}",
        "workers": processes,
        "worker_class": "aiohttp.worker.GunicornUVLoopWebWorker",
        "graceful_timeout": max(1, round(shutdown_timeout)),
        "backlog": 1024,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": logging.getLevelName(logging.getLogger().level).lower(),
        "child_exit": child_exit,
        "post_worker_init": child_started,
        "proc_name": "octopost-api",
        # gunicorn 24+: no control socket (its default path is shared by every instance)
        "control_socket_disable": True,
    }

    class Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings:
                    self.cfg.set(name, value)

        def load(self) -> Callable[[], Any]:
            return runner

    Gunicorn().run()


def multiprocess_metrics_dir() -> str:
    """A fresh directory for prometheus_client's multiprocess files, removed at exit."""
    import atexit

    path = tempfile.mkdtemp(prefix="octopost-metrics-")
    pid = os.getpid()

    def remove() -> None:
        if os.getpid() == pid:  # the arbiter, not a child that inherited the hook
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path
