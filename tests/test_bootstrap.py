"""`python3 dev.py` on a fresh machine: an interrupted or half-made virtualenv is repaired by
the next run, a directory that is not a virtualenv is left alone, --help needs no install.

The real dev.py runs, copied next to a stand-in project (same extras, an `octopost` script
that prints its arguments), so that each bootstrap installs one tiny package instead of the
service's dependencies; OCTOPOST_VENV points it at a temporary virtualenv."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

PYTHON = getattr(sys, "_base_executable", sys.executable)  # a python3 outside any venv
INSTALL_TIMEOUT = 600.0

PROBE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "octopost-bootstrap-probe"
version = "0"
requires-python = ">=3.11"

[project.optional-dependencies]
dev = []
embedded = []

[project.scripts]
octopost = "bootstrap_probe:main"

[tool.setuptools]
py-modules = ["bootstrap_probe"]
"""
PROBE_MODULE = """\
import sys


def main() -> int:
    print("probe ran", *sys.argv[1:])
    return 0
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "dev.py", root / "dev.py")
    (root / "pyproject.toml").write_text(PROBE_PYPROJECT)
    # dev.py's install fingerprint covers setup.py, which the real project has
    (root / "setup.py").write_text("from setuptools import setup\n\nsetup()\n")
    (root / "bootstrap_probe.py").write_text(PROBE_MODULE)
    return root


def env_for(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["OCTOPOST_VENV"] = str(venv)
    return env


def dev_py(project: Path, venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(project / "dev.py"), *args],
        cwd=project,
        env=env_for(venv),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


def assert_recovered(project: Path, venv: Path) -> None:
    r = dev_py(project, venv, "octopost", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "probe ran hello", r.stdout
    assert "Traceback" not in r.stderr
    # ... and whole now: the next run goes straight to the command
    again = dev_py(project, venv, "octopost", "again")
    assert again.returncode == 0 and again.stdout.strip() == "probe ran again"
    assert "installing" not in again.stderr and "virtualenv" not in again.stderr, again.stderr


@pytest.mark.parametrize("cut", ["before pyvenv.cfg", "before pip"])
def test_a_half_made_virtualenv_is_rebuilt(project: Path, tmp_path: Path, cut: str) -> None:
    """What a Ctrl-C during creation leaves: venv's directories without pyvenv.cfg (it
    writes that after them), or a virtualenv without pip."""
    venv = tmp_path / "venv"
    if cut == "before pip":
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        assert (venv / "pyvenv.cfg").exists()
    else:
        (venv / "bin").mkdir(parents=True)
        (venv / "lib" / "python3").mkdir(parents=True)
    r = dev_py(project, venv, "octopost", "hello")
    assert r.returncode == 0, r.stderr
    assert f"dev.py: the virtualenv in {venv} is incomplete" in r.stderr, r.stderr
    assert r.stdout.strip() == "probe ran hello"
    assert_recovered(project, venv)


def test_ctrl_c_during_the_first_run_is_repaired_by_the_next(project: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = subprocess.Popen(
        [PYTHON, str(project / "dev.py"), "octopost", "hello"],
        cwd=project,
        env=env_for(venv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # written just before the virtualenv is created
        assert first.startswith("dev.py: creating virtualenv"), first
        deadline = time.monotonic() + 60
        while not venv.exists():  # interrupt once creation has begun
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=INSTALL_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:  # the whole install beat the signal: nothing to repair
        pytest.skip("the bootstrap finished before the interrupt arrived")
    assert "Traceback" not in err, err
    assert "the next run repairs or finishes the virtualenv" in err, err
    assert not (venv / ".octopost-installed").exists()
    assert_recovered(project, venv)


def test_a_directory_that_is_not_a_virtualenv_is_left_alone(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.txt").write_text("years of work")
    r = dev_py(project, target, "octopost", "hello")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"dev.py: {target} exists but is not a virtualenv, so it is left alone" in r.stderr
    assert (target / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in target.iterdir()) == ["thesis.txt"]


def test_help_describes_flags_ports_data_and_reset_without_installing(
    project: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    for flag in ("--help", "-h"):
        r = dev_py(project, venv, flag)
        assert r.returncode == 0, r.stderr
        for expected in ("--port P", "--sandbox-port", "--reset", "8090", ".var/", "OCTOPOST_VENV"):
            assert expected in r.stdout, (expected, r.stdout)
    assert not venv.exists()
