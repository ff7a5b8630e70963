"""Shared fixtures: a real Kafka broker for the session and unique topic/group names.

``kafka_bootstrap`` finds a broker in this order:

1. ``$CHOREO_KAFKA_BOOTSTRAP`` (an already running broker, e.g. the shared dev broker);
2. testcontainers' Kafka module, when a Docker engine answers a ping;
3. ``scripts/kafka_broker.py``: a local KRaft broker on free ports (needs Java 17+ and,
   once, Maven to fetch the jars).

When none can be had the Kafka tests are skipped with the reason, except under CI
(``$CI`` set), where they fail: CI never passes by skipping Kafka.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# CI explores the same examples on every run, so a red build is reproducible and never a
# coin toss; local runs keep hypothesis' randomness (and its example database).
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO_ROOT / "scripts" / "kafka_broker.py"
_BROKER_NOTE = pytest.StashKey[str]()


def load_kafka_broker_module() -> ModuleType:
    """Import ``scripts/kafka_broker.py`` as the module ``kafka_broker`` (once) and return it."""
    module = sys.modules.get("kafka_broker")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("kafka_broker", BROKER_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BROKER_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_broker"] = module
    spec.loader.exec_module(module)
    return module


def _docker_engine_answers() -> bool:
    """Return whether a Docker engine answers a ping within a couple of seconds."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _no_broker(reason: str) -> None:
    """Fail under CI, skip elsewhere: no Kafka broker could be had."""
    if os.environ.get("CI"):
        pytest.fail(f"no Kafka broker under CI: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker: {reason}")


def _from_testcontainers(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start testcontainers' KRaft Kafka; return (bootstrap, note) and push its stop."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    started = time.monotonic()
    container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    try:
        container.start()
    except Exception:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    stack.append(container.stop)
    seconds = time.monotonic() - started
    return container.get_bootstrap_server(), f"started in {seconds:.1f} s (testcontainers)"


def _from_script(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start scripts/kafka_broker.py's broker on free ports; return (bootstrap, note)."""
    module = load_kafka_broker_module()
    broker = module.KafkaBroker(port=0)
    stack.append(broker.stop)
    broker.start()
    note = f"started in {broker.startup_seconds:.1f} s (scripts/kafka_broker.py)"
    return str(broker.bootstrap), note


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the ``host:port`` of a real Kafka broker that lives for the whole session."""
    configured = os.environ.get("CHOREO_KAFKA_BOOTSTRAP")
    if configured:
        request.config.stash[_BROKER_NOTE] = f"{configured} (CHOREO_KAFKA_BOOTSTRAP)"
        yield configured
        return

    stops: list[Callable[[], Any]] = []
    errors: list[str] = []
    bootstrap = ""
    note = ""
    try:
        if _docker_engine_answers():
            try:
                bootstrap, note = _from_testcontainers(stops)
            except Exception as error:
                errors.append(f"testcontainers: {error}")
        else:
            errors.append("testcontainers: no Docker engine answers")
        if not bootstrap:
            try:
                bootstrap, note = _from_script(stops)
            except Exception as error:
                errors.append(f"scripts/kafka_broker.py: {error}")
        if not bootstrap:
            _no_broker("; ".join(errors))
        request.config.stash[_BROKER_NOTE] = note
        yield bootstrap
    finally:
        for stop in reversed(stops):
            stop()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Return a factory of unique names: ``unique_name("orders")`` -> ``"orders-1a2b3c4d5e6f"``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Report where the session's Kafka broker came from and how long it took to start."""
    note = config.stash.get(_BROKER_NOTE, None)
    if note is not None:
        terminalreporter.write_line(f"kafka broker: {note}")
