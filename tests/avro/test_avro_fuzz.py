"""Fuzz the Avro layer with hypothesis: random and crafted bytes, schemas and export files.

Each target runs in a child process (``fuzz_avro_cases.py``) that caps its own address
space at 2 GiB and every case at 5 s: a crash (a segfault, an abort) shows as a non-zero
exit status, a runaway allocation or an exception outside the contract as a listed
failure, a hang as a case over time. The contract under test: codecs and the container
reader raise only ``DecodeError``; the schema parser and the compiler only
``SchemaError``; compiled encoders and decoders agree with fastavro on valid data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from avro_fuzz_count import AVRO_FUZZ_TRIED

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# target: (examples, inputs tried per example)
TARGETS = {
    "codec": (1200, 3),
    "schemas": (1000, 1),
    "container": (700, 4),
    "registry": (150, 1),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target(target: str) -> None:
    """Every input of the target stays within the contract; none crashes or hangs."""
    examples, per_example = TARGETS[target]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(HERE / "fuzz_avro_cases.py"), target, str(examples)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    tried = sum(report["outcomes"].values())
    assert tried >= examples * per_example  # hypothesis ran every example of every kind
    AVRO_FUZZ_TRIED[target] += tried
