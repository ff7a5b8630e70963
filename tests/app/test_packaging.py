"""Packaging: the core dependencies, the extras and their errors, and where the demo's example is.

The wheel itself is built and installed in a fresh virtual environment by
scripts/check_wheel.py, a step of the test command; these tests pin the pieces it relies on.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from choreo._extras import require
from choreo.app import example
from choreo.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def test_core_dependencies_leave_the_optional_clients_to_extras() -> None:
    project = _project()
    dependencies = project["dependencies"]
    assert isinstance(dependencies, list)
    core = " ".join(dependencies)
    for optional in ("kafka-python", "crc32c", "pyyaml"):
        assert optional not in core.lower()
    for needed in ("confluent-kafka", "fastavro", "click", "rich"):
        assert needed in core
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    assert any(d.startswith("kafka-python") for d in extras["kafka-python"])
    assert any(d.startswith("crc32c") for d in extras["kafka-python"])
    assert any(d.startswith("pyyaml") for d in extras["yaml"])


def test_the_wheel_packages_only_choreo() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        found = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["choreo*"]


def test_a_missing_extra_is_named_with_the_command_that_installs_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        require("choreo_no_such_module", "kafka-python", "the kafka-python transport")
    message = str(caught.value)
    assert "the kafka-python transport needs" in message
    assert "pip install 'choreo[kafka-python]'" in message
    assert require("json", "none", "nothing").__name__ == "json"


def test_the_demo_runs_the_checkouts_example() -> None:
    assert example.example_root() == REPO
    demo = example.import_demo()
    assert Path(str(demo.__file__)).resolve() == REPO / "services" / "demo.py"


def _bundle(root: Path) -> Path:
    """Lay out a wheel's ``choreo/`` with the example under ``_example`` in ``root``."""
    package = root / "site-packages" / "choreo"
    (package / "_example" / "services").mkdir(parents=True)
    (package / "_example" / "services" / "demo.py").write_text("")
    (package / "_example" / "schemas" / "shop").mkdir(parents=True)
    return package


def test_an_installed_choreo_runs_the_example_it_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _bundle(tmp_path)
    monkeypatch.setattr(example, "_PACKAGE", package)
    assert example.example_root() == package / "_example"


def test_without_the_example_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "choreo"
    package.mkdir(parents=True)
    monkeypatch.setattr(example, "_PACKAGE", package)
    with pytest.raises(ConfigurationError, match="install choreo from its wheel"):
        example.example_root()


def test_another_services_package_is_not_mistaken_for_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = ModuleType("services")
    theirs.__file__ = str(tmp_path / "services" / "__init__.py")
    monkeypatch.setitem(sys.modules, "services", theirs)
    with pytest.raises(ConfigurationError, match="different 'services' package"):
        example.import_demo()
