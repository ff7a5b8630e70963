"""Build hook: the wheel carries the example shop as data of the ``choreo`` package.

Everything else about the package is in pyproject.toml. The repository keeps the example
application at its top level (``services/``, ``schemas/shop/``), where its tests, the
docs and ``choreo run services.payment:service`` use it; a wheel must not install a
top-level ``services`` package, yet ``choreo demo`` must work after ``pip install`` in an
empty directory. So the build copies those files, as they are, into
``choreo/_example/services/`` and ``choreo/_example/schemas/shop/`` of the wheel (never
into the repository: there is one copy to maintain), and ``choreo demo`` imports the
example from there when it does not run from a checkout (``choreo/app/example.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
EXAMPLE = (("services", "*.py"), ("schemas/shop", "**/*.avsc"))


class BuildWithExample(build_py):
    """``build_py`` that also copies the example shop under ``choreo/_example/``."""

    def run(self) -> None:
        """Build the packages, then add the example's files to the build directory."""
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install runs the checkout's
            return
        target = Path(self.build_lib) / "choreo" / "_example"
        for folder, pattern in EXAMPLE:
            source = ROOT / folder
            files = sorted(source.glob(pattern))
            if not files:
                raise SystemExit(f"the example is missing from the source tree: {source}")
            for path in files:
                destination = target / folder / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)


setup(cmdclass={"build_py": BuildWithExample})
