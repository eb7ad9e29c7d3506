"""``octopost worker``, counting the statements it sends to PostgreSQL (for bench/sweep.py).

The worker is the production one (``service.cli.main(["worker"])``). The only addition is an
asyncpg query logger (asyncpg's public hook, called once per statement executed, BEGIN and
COMMIT included) on every connection the process opens. On SIGUSR1 the process writes
``<serial> <statements>`` to ``$OCTOPOST_BENCH_COUNT_FILE``; the harness reads it before
and after a sweep.

    OCTOPOST_BENCH_COUNT_FILE=/tmp/n python -m bench.worker
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg

COUNT_FILE = "OCTOPOST_BENCH_COUNT_FILE"

_statements = 0
_serial = 0


def _count(_record: Any) -> None:
    global _statements
    _statements += 1


def _report(_signum: int, _frame: FrameType | None) -> None:
    global _serial
    _serial += 1
    path = Path(os.environ[COUNT_FILE])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{_serial} {_statements}\n")
    tmp.replace(path)


def main() -> int:
    original_init = asyncpg.Connection.__init__

    def counting_init(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.add_query_logger(_count)

    asyncpg.Connection.__init__ = counting_init
    if os.environ.get(COUNT_FILE):
        signal.signal(signal.SIGUSR1, _report)
    from service.cli import main as octopost

    return octopost(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
