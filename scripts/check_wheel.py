"""Build choreo's wheel and check it as a user gets it: in a fresh virtual environment.

Run by the test command (scripts/test.sh). The wheel is built from this checkout
(``pip wheel --no-deps``), installed with its core dependencies only into a new virtual
environment, and from an empty directory:

1. the wheel installs only the ``choreo`` package (no top-level ``services`` or
   ``schemas``), and the example the demo runs is inside it, under ``choreo/_example/``;
2. ``import choreo`` and the public names work without the extras (kafka-python, crc32c,
   PyYAML absent), and asking for what needs an extra names the extra to install;
3. ``choreo demo --no-ui`` runs the example saga to the end and exits 0.

Needs only the package registry (pip's cache makes a second run faster). Exits non-zero
naming the failed check. ``--keep`` leaves the temporary directory for a look.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs inside the fresh environment, from the empty directory.
IMPORT_CHECK = r"""
import importlib.util, sys
for extra in ("kafka", "crc32c", "yaml"):
    assert importlib.util.find_spec(extra) is None, f"{extra} is installed: not a core install"
for stray in ("services", "schemas"):
    assert importlib.util.find_spec(stray) is None, f"the wheel installed a top-level {stray!r}"
import choreo
skip = {"PostgresStore"}  # needs the postgres extra; resolved lazily, on use
missing = [n for n in choreo.__all__ if n not in skip and getattr(choreo, n) is None]
assert not missing, missing
from choreo import App, ConfigurationError, open_transport
import choreo.transports.confluent  # the default transport needs no extra
from choreo.app.example import example_root
root = example_root()
assert root.name == "_example" and root.parent.name == "choreo", root
try:
    open_transport("kafka-python", bootstrap="127.0.0.1:9")
except ConfigurationError as exc:
    assert "pip install 'choreo[kafka-python]'" in str(exc), exc
else:
    raise AssertionError("the kafka-python transport opened without kafka-python")
from choreo.choreography.asyncapi import dump_asyncapi
try:
    dump_asyncapi({"asyncapi": "3.0.0"})
except ConfigurationError as exc:
    assert "pip install 'choreo[yaml]'" in str(exc), exc
else:
    raise AssertionError("YAML output worked without PyYAML")
print("imports: ok (no extras; each missing one named)")
"""


def run(
    args: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a command, print it, and raise SystemExit with its output when it fails."""
    shown = " ".join(a if "\n" not in a else "<script>" for a in args)
    print("$", shown, flush=True)
    result = subprocess.run(
        args, capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=timeout
    )
    if result.returncode != 0:
        raise SystemExit(f"FAILED ({result.returncode}): {shown}\n{result.stdout}\n{result.stderr}")
    return result


def build_wheel(out: Path) -> Path:
    """Build the wheel of this checkout into ``out``; return its path."""
    shutil.rmtree(REPO / "build", ignore_errors=True)  # no stale files from an older build
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)])
    (wheel,) = out.glob("choreo-*.whl")
    return wheel


def check_contents(wheel: Path) -> None:
    """Fail unless the wheel's only package is ``choreo`` and it carries the example."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    if tops != {"choreo"}:
        raise SystemExit(f"FAILED: the wheel installs {sorted(tops)}, not only choreo")
    for needed in (
        "choreo/_example/services/demo.py",
        "choreo/_example/schemas/shop/orders/OrderCreated.v1.avsc",
        "choreo/viewer/static/index.html",
    ):
        if needed not in names:
            raise SystemExit(f"FAILED: {needed} is not in the wheel")
    print(f"contents: ok ({len(names)} files, one package: choreo)")


def main() -> None:
    """Build, install and check the wheel (see the module docs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args()
    started = time.monotonic()
    temp = Path(tempfile.mkdtemp(prefix="choreo-wheel-"))
    try:
        wheel = build_wheel(temp / "dist")
        check_contents(wheel)
        venv = temp / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
        run([python, "-m", "pip", "install", "-q", str(wheel)], env=env)
        empty = temp / "empty"
        empty.mkdir()
        print(run([python, "-c", IMPORT_CHECK], cwd=empty, env=env).stdout.strip())
        demo = run(
            [str(venv / "bin" / "choreo"), "demo", "--no-ui", "--orders", "40"],
            cwd=empty,
            env=env,
            timeout=180,
        )
        if "every saga ended" not in demo.stdout:
            raise SystemExit(f"FAILED: choreo demo did not end every saga:\n{demo.stdout}")
        left = sorted(p.name for p in empty.iterdir())
        if left:
            raise SystemExit(f"FAILED: choreo demo left files in the working directory: {left}")
        print("choreo demo in an empty directory: ok")
    finally:
        if options.keep:
            print(f"kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)
    print(f"wheel check passed in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
