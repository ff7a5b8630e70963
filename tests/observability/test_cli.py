"""The observability options of ``choreo run``, ``choreo watch`` and ``choreo ui``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime.fixtures.events import OrderPlaced
from runtime.fixtures.serdes import avro_serde
from runtime.fixtures.shop import SCHEMAS_DIR, build_shop

from choreo.cli._observability import worker_observability
from choreo.cli.run_cmd import run
from choreo.runtime import Publisher, WorkerConfig
from choreo.transports.factory import open_transport

from .shop import REPO, samples, value
from .test_worker_process import free_port

APP = "tests.observability.app:stock"
WITHOUT_EXTRAS = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry"] = None  # as if choreo[otel] were not installed
    sys.modules["prometheus_client"] = None  # as if choreo[metrics] were not installed
    from choreo.cli import main
    main()
    """
)


def choreo(*args: str, without_extras: bool = False) -> subprocess.Popen[str]:
    """Start ``python -m choreo ARGS`` in the repository (optionally without the extras)."""
    command = ["-c", WITHOUT_EXTRAS, *args] if without_extras else ["-m", "choreo", *args]
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_without_options_the_worker_keeps_its_fast_path() -> None:
    """No --metrics-port and no tracer provider: no middleware is added (default only)."""
    setup = worker_observability(metrics_address=None, stall_after=60.0, tracing=None)
    assert setup.middleware() is None


def test_tracing_needs_a_tracer_provider(tmp_path: Path) -> None:
    """--tracing without an OpenTelemetry SDK provider set up is refused with the remedy."""
    result = CliRunner().invoke(
        run,
        [APP, "--transport", "memory", "--schemas", str(SCHEMAS_DIR), "--tracing",
         "--inbox", str(tmp_path / "x.db")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "opentelemetry-instrument" in result.output


def test_metrics_port_without_prometheus_client_names_the_extra(tmp_path: Path) -> None:
    """Without prometheus-client, --metrics-port fails at once and says what to install."""
    process = choreo(
        "run", APP, "--transport", "memory", "--schemas", str(SCHEMAS_DIR),
        "--inbox", str(tmp_path / "x.db"), "--metrics-port", "0",
        without_extras=True,
    )  # fmt: skip
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "pip install 'choreo[metrics]'" in err


def test_a_worker_runs_without_the_extras_and_logs_json(tmp_path: Path) -> None:
    """Without either extra the worker runs; --log-format json writes one object per line."""
    process = choreo(
        "--log-level", "INFO", "run", APP, "--transport", "memory",
        "--schemas", str(SCHEMAS_DIR), "--inbox", str(tmp_path / "x.db"), "--log-format", "json",
        without_extras=True,
    )  # fmt: skip
    time.sleep(0.5)
    deadline = time.monotonic() + 60
    assert process.stderr is not None
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(json.loads(line))
        if "worker started" in str(lines[-1]["message"]):
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    lines += [json.loads(line) for line in rest.splitlines()]
    assert process.returncode == 0
    assert any("worker started" in str(line["message"]) for line in lines)
    assert all(line["service"] == "stock" for line in lines)
    assert any("worker closed" in str(line["message"]) for line in lines)


@pytest.mark.kafka
@pytest.mark.parametrize("command", ["watch", "ui"])
def test_watch_and_ui_serve_saga_metrics(kafka_bootstrap: str, command: str) -> None:
    """``choreo watch``/``ui --metrics-port`` serve the tracker's saga counts over HTTP."""
    prefix = f"obs{uuid.uuid4().hex[:10]}."
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    shop = build_shop()
    config = WorkerConfig(topic_naming=lambda t: f"{prefix}{t}")
    publisher = Publisher(shop.orders, transport, avro_serde(), config=config)
    for number in range(3):
        publisher.start(shop.saga, OrderPlaced(f"o-{number}", "book", 1, 100))
    publisher.close()
    transport.close()  # type: ignore[attr-defined]
    port = free_port()
    topics = f"^{prefix.replace('.', '[.]')}.*"
    args = {
        "watch": ["watch", "--topics", topics, "--duration", "60"],
        "ui": ["ui", "--topics", topics, "--port", "0"],
    }[command]
    process = choreo(*args, "--bootstrap", kafka_bootstrap, "--metrics-port", f"127.0.0.1:{port}")
    started = {"saga": "Fulfilment", "status": "Started"}
    try:
        deadline = time.monotonic() + 60
        found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while value(found, "choreo_sagas", **started) != 3:
            assert time.monotonic() < deadline and process.poll() is None, found
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    found = samples(r.read().decode())
            except OSError:
                continue
        assert value(found, "choreo_sagas", saga="Fulfilment", status="Completed") == 0
        assert value(found, "choreo_sagas_stuck", saga="Fulfilment") == 0
    finally:
        process.send_signal(signal.SIGTERM if command == "ui" else signal.SIGINT)
        process.communicate(timeout=30)
