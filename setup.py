"""What the wheel carries; the rest of the project's metadata is in pyproject.toml.

Two things pyproject.toml cannot say:

- The migrations are written in the top-level ``sql/`` and installed as the data package
  ``service.migrations``, where ``service.core.db`` reads them with ``importlib.resources``: from
  a wheel, a plain ``pip install .`` and the editable install of ``dev.py`` alike.
- The dev tooling (embedded PostgreSQL/Redis, the dev stack, the platform sandbox) never
  ships. ``dev.py`` puts the repository root on the dev venv's path instead, so
  ``octopost dev`` and ``octopost sandbox`` find it there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

# Only in a source checkout: the dev tooling, top-level beside the product's packages.
DEV_PACKAGES = ["devkit", "devkit.*"]
MIGRATIONS_PACKAGE = "service.migrations"


class BuildPy(build_py):
    """build_py that starts from an empty build/lib."""

    def run(self) -> None:
        # setuptools packs whatever build/lib holds: a module an earlier build left there
        # (a dev module from before it was excluded, a deleted one) would ship again.
        if not self.editable_mode:
            for top in {package.partition(".")[0] for package in self.packages} | {"devkit"}:
                shutil.rmtree(Path(self.build_lib, top), ignore_errors=True)
        super().run()


setup(
    packages=[
        *find_namespace_packages(
            include=["service", "service.*", "worker", "worker.*"], exclude=DEV_PACKAGES
        ),
        MIGRATIONS_PACKAGE,
    ],
    package_dir={MIGRATIONS_PACKAGE: "sql"},
    package_data={"service": ["py.typed"], MIGRATIONS_PACKAGE: ["*.sql"]},
    cmdclass={"build_py": BuildPy},
)
