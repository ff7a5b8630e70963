"""Finding the example shop that ``choreo demo`` runs: in a checkout, or in the wheel.

The example application (``services/`` and ``schemas/shop/``) lives at the top of the
repository. An installed wheel carries the same files under ``choreo/_example/`` (the
build copies them: setup.py), so ``choreo demo`` works in an empty directory without a
top-level ``services`` package being installed. :func:`example_root` returns the
checkout's top when choreo runs from one (so edits to ``services/`` show at once), else
the wheel's copy; :func:`import_demo` imports the example's ``services.demo`` from there.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from choreo.errors import ConfigurationError

__all__ = ["example_root", "import_demo"]

_PACKAGE = Path(__file__).resolve().parent.parent  # choreo/


def _holds_example(root: Path) -> bool:
    """True when ``root`` has the example's services package and its schemas."""
    return (root / "services" / "demo.py").is_file() and (root / "schemas" / "shop").is_dir()


def example_root() -> Path:
    """Return the directory holding the example's ``services/`` and ``schemas/shop/``.

    The checkout's top (a ``pyproject.toml`` beside the ``choreo`` package) comes first,
    then ``choreo/_example`` of an installed wheel. Raises ConfigurationError when
    neither has the example.
    """
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and _holds_example(checkout):
        return checkout
    bundled = _PACKAGE / "_example"
    if _holds_example(bundled):
        return bundled
    raise ConfigurationError(
        f"the example shop is not installed with choreo (looked in {checkout} and {bundled}): "
        "install choreo from its wheel (pip install choreo) or run from a checkout"
    )


def import_demo() -> ModuleType:
    """Import and return the example's ``services.demo`` module (see the module docs).

    The example's root goes first on ``sys.path`` of this process. Raises
    ConfigurationError when another ``services`` package was imported already.
    """
    root = example_root()
    loaded = sys.modules.get("services")
    if loaded is not None:
        where = Path(getattr(loaded, "__file__", "") or ".").resolve().parent
        if where != (root / "services").resolve():
            raise ConfigurationError(
                f"a different 'services' package ({where}) is imported already; "
                "run choreo demo in its own process"
            )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("services.demo")
