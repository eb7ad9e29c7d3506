#!/usr/bin/env python3
"""Bootstrap for a fresh machine with only Python 3.11+: no Docker, no system services.

    python3 dev.py           install into .venv (first run), then run the whole service
    python3 dev.py test      install into .venv (first run), then run the whole test suite

Anything after the command is passed on (`python3 dev.py test -k accounts`,
`python3 dev.py --port 9000`). `python3 dev.py octopost ...` runs any CLI command.
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


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"octopost needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    python = BIN / "python"
    if not python.exists():
        print(f"dev.py: creating virtualenv in {VENV}", file=sys.stderr)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        except (subprocess.CalledProcessError, OSError) as exc:
            sys.exit(
                f"dev.py: could not create a virtualenv with pip ({exc}). On Debian/Ubuntu "
                "install the python3-venv package, then run this again."
            )
    fingerprint = _install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    print("dev.py: installing octopost and its dependencies into the virtualenv", file=sys.stderr)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=False)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev,embedded]"], check=True)
    _put_checkout_on_path(python)
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
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
