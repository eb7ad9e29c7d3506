"""Summarise py-spy's collapsed stacks (``bench.sweep --profile PREFIX`` writes them): where
a worker's samples went, by the package that ran (self time) and by what our code called
(inclusive), so a profile before and after a change can be compared in a few lines.

    python -m bench.profile PREFIX-100000-1w-091500.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# frame text is "function (path:line)"; some frames have no path
FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^:()]+)(?::\d+)?\)$")

# Inclusive groups: a sample counts for a group when any frame of its stack matches.
GROUPS = [
    ("check_account (our check logic, the call included)", "worker/checks.py", "check_account"),
    ("platform adapters' verify (request, answer, classify)", "service/platforms/", "verify"),
    ("aiohttp client (request, connection, response parsing)", "aiohttp/client", ""),
    ("pyreqwest transport (request, await, body)", "service/platforms/reqwest.py", ""),
    ("PlatformLimits.call (semaphore, pause cache, budget)", "worker/limits.py", "call"),
    ("  of which paused_until", "worker/limits.py", "paused_until"),
    ("  of which _take_permit", "worker/limits.py", "_take_permit"),
    ("vault: open_tokens (AES-GCM)", "service/core/vault.py", "open_tokens"),
    ("prometheus metrics", "prometheus_client/", ""),
    ("asyncpg (statements, records)", "asyncpg/", ""),
    ("arq (polling, job bookkeeping)", "arq/", ""),
    ("redis client", "redis/", ""),
    ("logging", "logging/", ""),
    ("decide (outcome rows)", "worker/checks.py", "decide"),
]


def package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    for ours in ("worker/", "service/", "bench/", "devkit/"):
        if ours in path:
            return ours + path.split(ours, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in path:
        return "stdlib:" + path.rsplit("/", 1)[-1].removesuffix(".py")
    return path or "?"


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        text, _, count = line.rpartition(" ")
        if not text or not count.isdigit():
            continue
        frames = []
        for raw in text.split(";"):
            m = FRAME.match(raw.strip())
            frames.append((m["func"], m["path"]) if m else (raw.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def summary(path: Path, top: int = 25) -> str:
    stacks = parse(path)
    total = sum(n for _, n in stacks) or 1
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for frames, n in stacks:
        func, where = frames[-1]
        by_package[package(where)] += n
        by_function[f"{func} ({package(where)})"] += n
        for name, file_part, func_name in GROUPS:
            if any(
                file_part in p and (not func_name or f == func_name or f.endswith("." + func_name))
                for f, p in frames
            ):
                groups[name] += n
    lines = [f"{path.name}: {total:,} samples", "", "inclusive (any frame of the stack):"]
    lines += [f"  {100 * groups[name] / total:5.1f} %  {name}" for name, _, _ in GROUPS]
    lines += ["", "self time by package:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_package.most_common(top)]
    lines += ["", "self time by function:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_function.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for f in args.files:
        print(summary(f, args.top))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
