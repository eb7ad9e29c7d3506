#!/usr/bin/env python3
"""Bootstrap for a fresh machine with only Python 3.11+: no Docker, no system services.

    python3 dev.py              run the whole service (installs into .venv on the first run)
    python3 dev.py test [...]   run the test suite (pytest arguments pass through: -k accounts)
    python3 dev.py octopost ... run any `octopost` command (`octopost --help` lists them)

Options of `python3 dev.py` (the whole service, `octopost dev`):
    --port P          the API's port (8080); the platform sandbox takes P+10
    --sandbox-port Q  the sandbox's port, if P+10 does not suit
    --host H          the address the API listens on (127.0.0.1)
    --reset           delete the embedded databases' data and start from the demo data again

Ports: the API (8080) and the sandbox (8090) as above; the embedded PostgreSQL and Redis
listen on 127.0.0.1 on free ports picked on the first start and kept in .var/*/embedded.port.
Data lives in .var/ (OCTOPOST_DATA_DIR): the embedded servers' data (pg/, redis/), the demo
workspace's API key (demo-key), the development token key (token-keys). `--reset` (or
stopping the stack and removing .var/pg and .var/redis) starts again from the demo data.
One stack per data dir: a second start refuses and names the first one.
The virtualenv is .venv/ (OCTOPOST_VENV); an interrupted first run is repaired by the next.
Set DATABASE_URL / REDIS_URL to use existing servers instead of the embedded ones.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("OCTOPOST_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".octopost-installed"
# The dev tooling (embedded servers, dev stack, platform sandbox) is left out of the wheel
# (setup.py); this file in the venv's site-packages puts the checkout on sys.path instead.
SOURCE_PTH = "octopost-source-tree.pth"


def _install_fingerprint() -> str:
    files = [ROOT / "pyproject.toml", ROOT / "setup.py"]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _put_checkout_on_path(python: Path) -> None:
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site_packages) / SOURCE_PTH).write_text(f"{ROOT}\n")


def _has_working_pip(python: Path) -> bool:
    """The interpreter runs and imports pip: what a Ctrl-C during creation (or during the
    pip upgrade) leaves half-made fails this."""
    try:
        done = subprocess.run(
            [str(python), "-c", "import pip"], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# What a virtualenv holds at its top, complete or cut short (venv makes the directories
# before it writes pyvenv.cfg): a directory with anything else is not ours to clear.
VENV_ENTRIES = frozenset(
    {"bin", "Scripts", "lib", "lib64", "Lib", "include", "Include", "share", "pyvenv.cfg",
     ".gitignore", STAMP.name}
)  # fmt: skip


def _create_venv() -> None:
    if (
        VENV.exists()
        and not (VENV / "pyvenv.cfg").exists()
        and any(entry.name not in VENV_ENTRIES for entry in VENV.iterdir())
    ):
        sys.exit(
            f"dev.py: {VENV} exists but is not a virtualenv, so it is left alone; move it "
            "away, or set OCTOPOST_VENV to another directory"
        )
    if VENV.exists():
        print(
            f"dev.py: the virtualenv in {VENV} is incomplete (an interrupted first run?); "
            "rebuilding it",
            file=sys.stderr,
        )
    else:
        print(f"dev.py: creating virtualenv in {VENV}", file=sys.stderr)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    except (subprocess.CalledProcessError, OSError) as exc:
        sys.exit(
            f"dev.py: could not create a virtualenv with pip ({exc}). On Debian/Ubuntu "
            "install the python3-venv package, then run this again."
        )


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"octopost needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    python = BIN / "python"
    fingerprint = _install_fingerprint()
    # The stamp is written last, after a complete install: with it (and the interpreter
    # and the command it installed) the environment is whole.
    if (
        STAMP.exists()
        and STAMP.read_text() == fingerprint
        and python.exists()
        and (BIN / "octopost").exists()
    ):
        return
    STAMP.unlink(missing_ok=True)
    try:
        if not _has_working_pip(python):
            _create_venv()
        print(
            "dev.py: installing octopost and its dependencies into the virtualenv",
            file=sys.stderr,
        )
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", "--upgrade", "pip"], check=False)
        installed = subprocess.run([*pip, "install", "-e", f"{ROOT}[dev,embedded]"], check=False)
    except KeyboardInterrupt:
        sys.exit("\ndev.py: interrupted; the next run repairs or finishes the virtualenv")
    if installed.returncode != 0:
        sys.exit(
            f"dev.py: installing into {VENV} failed (pip's message above); fix that and run "
            "this again: it picks up where it stopped"
        )
    _put_checkout_on_path(python)
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(__doc__)
        return 0
    ensure_venv()
    os.chdir(ROOT)
    command, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("up", argv)
    if command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "up":
        args = [str(BIN / "octopost"), "dev", *rest]
    elif command == "octopost":
        args = [str(BIN / "octopost"), *rest]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    os.execv(args[0], args)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
